//! The outbox dispatcher: one worker per sink reads due outbox rows, hands them to its sink, and
//! records the outcome through the writer. Failures back off with jitter; after `max_attempts` a
//! row is dead (kept, listed by `phananh outbox list`, re-sent by `phananh outbox retry`).

mod spool;

use crate::config::{Config, ContactPolicy, ForwardConfig, SinkConfig, SinkKind};
use crate::store::queries::{self, OutboxRow};
use crate::store::{Delivery, Store, StoreError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use spool::SpoolSink;

/// A sink's verdict on one event.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkError {
    /// Worth trying again later (disk full, timeout, 5xx).
    Transient(String),
    /// Will never succeed as is (rejected): dead at once.
    Permanent(String),
}

#[derive(Debug)]
pub enum Sink {
    Spool(SpoolSink),
}

impl Sink {
    pub fn from_config(cfg: &SinkConfig) -> Sink {
        match cfg.kind {
            SinkKind::Spool => {
                let sink =
                    SpoolSink::new(cfg.dir.clone().expect("validated: spool sinks have a dir"));
                sink.clean_leftovers();
                Sink::Spool(sink)
            }
        }
    }

    async fn deliver(&self, events: Vec<(String, String)>) -> Vec<Result<(), SinkError>> {
        match self {
            Sink::Spool(s) => {
                let s = s.clone();
                let n = events.len();
                tokio::task::spawn_blocking(move || s.write_batch(&events))
                    .await
                    .unwrap_or_else(|e| {
                        vec![Err(SinkError::Transient(format!("spool writer stopped: {e}"))); n]
                    })
            }
        }
    }
}

/// One sink's worker.
pub struct Forwarder {
    name: String,
    sink: Sink,
    contact: ContactPolicy,
    policy: ForwardConfig,
    store: Store,
    reader: Arc<Mutex<rusqlite::Connection>>,
}

impl Forwarder {
    pub fn new(
        name: &str,
        cfg: &SinkConfig,
        policy: &ForwardConfig,
        store: Store,
    ) -> Result<Self, StoreError> {
        let reader = store.reader()?;
        Ok(Self {
            name: name.to_string(),
            sink: Sink::from_config(cfg),
            contact: cfg.contact,
            policy: policy.clone(),
            store,
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// One forwarder per configured sink.
    pub fn all(config: &Config, store: &Store) -> Result<Vec<Forwarder>, StoreError> {
        config
            .daemon
            .sinks
            .iter()
            .map(|(name, cfg)| Forwarder::new(name, cfg, &config.daemon.forward, store.clone()))
            .collect()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delivers everything due now; returns how many events were delivered.
    pub async fn pump(&self) -> Result<usize, StoreError> {
        self.pump_until(&CancellationToken::new()).await
    }

    /// Like `pump`, but stops between batches once `cancel` fires, so shutdown is not held up
    /// by a backlog (what is left stays in the outbox for the next start).
    async fn pump_until(&self, cancel: &CancellationToken) -> Result<usize, StoreError> {
        let mut delivered = 0;
        loop {
            if cancel.is_cancelled() {
                return Ok(delivered);
            }
            let rows = self.due().await?;
            if rows.is_empty() {
                return Ok(delivered);
            }
            let (n, progressed) = self.deliver_rows(rows).await?;
            delivered += n;
            if !progressed {
                return Ok(delivered);
            }
        }
    }

    /// Runs until cancelled, waking on new outbox rows or when a retry falls due. A delivery in
    /// progress finishes before it stops.
    pub async fn run(self, cancel: CancellationToken) {
        let mut watch = self.store.outbox_watch();
        let mut failures = 0u32;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let wait = match self.pump_until(&cancel).await {
                Ok(n) => {
                    failures = 0;
                    if n > 0 {
                        tracing::info!(sink = %self.name, events = n, "Forwarded events.");
                    }
                    self.until_next_due().await
                }
                Err(e) => {
                    failures += 1;
                    let d = crate::backoff::delay(
                        failures,
                        Duration::from_secs(1),
                        Duration::from_secs(60),
                    );
                    tracing::warn!(sink = %self.name, error = %e, retry_in = ?d, "Cannot read or update the outbox.");
                    d
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = watch.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn until_next_due(&self) -> Duration {
        let reader = self.reader.clone();
        let sink = self.name.clone();
        let next = tokio::task::spawn_blocking(move || {
            let conn = reader.lock().expect("reader lock");
            queries::next_due_ms(&conn, &sink)
        })
        .await;
        crate::backoff::until(
            next.ok().and_then(Result::ok).flatten(),
            Duration::from_secs(30),
        )
    }

    async fn due(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let reader = self.reader.clone();
        let sink = self.name.clone();
        let limit = self.policy.batch;
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().expect("reader lock");
            queries::due_outbox(&conn, &sink, chrono::Utc::now().timestamp_millis(), limit)
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("outbox reader stopped: {e}")))?
    }

    /// Returns (delivered, whether any row changed state).
    async fn deliver_rows(&self, rows: Vec<OutboxRow>) -> Result<(usize, bool), StoreError> {
        let events: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.event_id.clone(), shape_payload(&r.payload, self.contact)))
            .collect();
        let results = self.sink.deliver(events).await;
        let now = chrono::Utc::now().timestamp_millis();
        let mut delivered = 0;
        let mut outcomes = Vec::with_capacity(rows.len());
        for (row, result) in rows.iter().zip(results) {
            let attempt = row.attempts + 1;
            let outcome = match result {
                Ok(()) => {
                    delivered += 1;
                    Delivery::Delivered
                }
                Err(SinkError::Permanent(error)) => Delivery::Dead { error },
                Err(SinkError::Transient(error)) if attempt >= self.policy.max_attempts => {
                    Delivery::Dead { error }
                }
                Err(SinkError::Transient(error)) => {
                    let d = crate::backoff::delay(
                        attempt,
                        self.policy.backoff_base,
                        self.policy.backoff_max,
                    );
                    Delivery::Retry {
                        error,
                        next_attempt_ms: now + d.as_millis() as i64,
                    }
                }
            };
            match &outcome {
                Delivery::Dead { error } => {
                    tracing::error!(sink = %self.name, event_id = %row.event_id, attempts = attempt, error = %error, "Event is dead after its last attempt; `phananh outbox retry` re-sends it.")
                }
                Delivery::Retry { error, .. } => {
                    tracing::warn!(sink = %self.name, event_id = %row.event_id, attempts = attempt, error = %error, "Delivery failed; will retry.")
                }
                Delivery::Delivered => {}
            }
            outcomes.push((row.id, outcome));
        }
        let progressed = !outcomes.is_empty();
        self.store.record_deliveries(outcomes).await?;
        Ok((delivered, progressed && delivered > 0))
    }
}

/// The payload as this sink may see it: the stored event has the full reporter; a masked sink gets
/// masked values, a `none` sink gets no reporter at all, and both get the reporter's name, address
/// and phone numbers masked in the text. Full sinks get the stored bytes unchanged.
fn shape_payload(payload: &str, contact: ContactPolicy) -> String {
    if contact == ContactPolicy::Full {
        return payload.to_string();
    }
    let Ok(mut event) = serde_json::from_str::<crate::report::Event>(payload) else {
        return payload.to_string();
    };
    event.report.redact_text();
    event.report.reporter = match contact {
        ContactPolicy::Masked => event.report.reporter.map(|r| r.masked()),
        _ => None,
    };
    serde_json::to_string(&event).unwrap_or_else(|_| payload.to_string())
}
