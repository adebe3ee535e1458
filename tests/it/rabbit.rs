//! The real RabbitMQ on 127.0.0.1:5672 (guest/guest), as the operations centre's consumer sees
//! it: each test declares its own queue (through phananh's `declare = true`) and reads it back.

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub const URL_WITH_LOGIN: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Every test that uses the broker holds this, so the one that stops it disturbs no other test
/// of this binary (nothing else on a CI machine uses the broker).
static BROKER: Mutex<()> = Mutex::new(());

pub fn lock() -> MutexGuard<'static, ()> {
    BROKER.lock().unwrap_or_else(|e| e.into_inner())
}

/// One message as the consumer received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub routing_key: String,
    pub persistent: bool,
    pub content_type: String,
    pub kind: String,
    pub body: serde_json::Value,
}

pub struct Consumer {
    rt: tokio::runtime::Runtime,
    conn: Connection,
}

impl Consumer {
    pub fn connect() -> Consumer {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = rt
            .block_on(Connection::connect(
                URL_WITH_LOGIN,
                ConnectionProperties::default(),
            ))
            .expect("RabbitMQ must answer on 127.0.0.1:5672 (.ci/run starts it)");
        Consumer { rt, conn }
    }

    /// Takes every message now in `queue`, acknowledging each.
    pub fn drain(&self, queue: &str) -> Vec<Received> {
        self.rt.block_on(async {
            let ch = self.conn.create_channel().await.unwrap();
            let mut out = Vec::new();
            while let Some(m) = ch
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .unwrap()
            {
                let p = &m.delivery.properties;
                out.push(Received {
                    message_id: p
                        .message_id()
                        .as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    routing_key: m.delivery.routing_key.to_string(),
                    persistent: *p.delivery_mode() == Some(2),
                    content_type: p
                        .content_type()
                        .as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    kind: p.kind().as_ref().map(|s| s.to_string()).unwrap_or_default(),
                    body: serde_json::from_slice(&m.delivery.data).unwrap(),
                });
                m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            let _ = ch.close(200, "done".into()).await;
            out
        })
    }

    /// Reads `queue` until `n` distinct message ids have arrived or `timeout` passes.
    pub fn drain_until(&self, queue: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let end = std::time::Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            all.extend(self.drain(queue));
            if distinct(&all).len() >= n || std::time::Instant::now() > end {
                return all;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn delete(&self, queues: &[&str]) {
        self.rt.block_on(async {
            let ch = self.conn.create_channel().await.unwrap();
            for q in queues {
                let _ = ch
                    .queue_delete((*q).into(), QueueDeleteOptions::default())
                    .await;
            }
        })
    }
}

/// Messages by message_id: what a consumer that drops repeats keeps.
pub fn distinct(all: &[Received]) -> HashMap<String, Received> {
    all.iter()
        .map(|r| (r.message_id.clone(), r.clone()))
        .collect()
}

/// Stops and starts the broker's application (the node stays up), like a broker restart.
pub fn rabbitmqctl(action: &str) {
    let out = std::process::Command::new("rabbitmqctl")
        .arg(action)
        .output()
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the broker again even when the test fails half-way.
pub struct RestartGuard;

impl Drop for RestartGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .output();
    }
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        ulid::Ulid::new().to_string().to_lowercase()
    )
}
