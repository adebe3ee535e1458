//! The `amqp` sink: RabbitMQ (AMQP 0-9-1) with publisher confirms. Messages are persistent, carry
//! the event id as `message_id` (the consumer's idempotency key) and are published `mandatory`, so
//! one no queue would take comes back instead of vanishing. Confirms are pipelined: up to `window`
//! messages are in flight before their confirms are awaited.

use super::{Outgoing, SinkError};
use crate::config::AmqpSettings;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    PublisherConfirm,
};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long connecting (TCP, TLS, AMQP handshake, declarations) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the broker may take to confirm a window of messages.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

pub struct AmqpSink {
    settings: AmqpSettings,
    link: Mutex<Option<Link>>,
}

impl std::fmt::Debug for AmqpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSink")
            .field("exchange", &self.settings.exchange)
            .finish_non_exhaustive()
    }
}

struct Link {
    connection: Connection,
    channel: Channel,
}

enum Connect {
    /// Our login was refused, or the URL or CA file cannot be read: the operator's turn.
    Refused(String),
    Failed(String),
}

impl AmqpSink {
    pub fn new(settings: AmqpSettings) -> Self {
        Self {
            settings,
            link: Mutex::new(None),
        }
    }

    /// Publishes the events in order, `window` at a time, and reports each one's confirm. Events
    /// of one batch belong to different reports (the outbox hands over one event per report at a
    /// time), so a window in flight never reorders a report's events.
    pub async fn deliver(&self, events: &[Outgoing]) -> Vec<Result<(), SinkError>> {
        let mut guard = self.link.lock().await;
        if !guard.as_ref().is_some_and(Link::usable) {
            if let Some(old) = guard.take() {
                old.close().await;
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
                Ok(Ok(link)) => *guard = Some(link),
                Ok(Err(Connect::Refused(e))) => {
                    return vec![Err(SinkError::Refused(e)); events.len()];
                }
                Ok(Err(Connect::Failed(e))) => return unavailable(events.len(), e),
                Err(_) => {
                    return unavailable(events.len(), "connecting to the broker timed out".into());
                }
            }
        }
        let link = guard.as_ref().expect("connected above");
        let mut results = Vec::with_capacity(events.len());
        let mut broken = None;
        for window in events.chunks(self.settings.window) {
            let mut confirms = Vec::with_capacity(window.len());
            for ev in window {
                match self.publish(&link.channel, ev).await {
                    Ok(c) => confirms.push(c),
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
            let published = confirms.len();
            let settled =
                tokio::time::timeout(CONFIRM_TIMEOUT, futures::future::join_all(confirms)).await;
            match settled {
                Ok(all) => {
                    let returned = returned_ids(&all);
                    let closed = !link.channel.status().connected();
                    for (ev, c) in window.iter().zip(all) {
                        results.push(judge(ev, c, &returned, closed));
                    }
                }
                Err(_) => {
                    let error = "the broker did not confirm in time".to_string();
                    results
                        .extend((0..published).map(|_| Err(SinkError::Transient(error.clone()))));
                    broken = Some(error);
                }
            }
            if broken.is_none() && !link.usable() {
                broken = Some("the broker closed the channel".into());
            }
            if broken.is_some() {
                break;
            }
        }
        if let Some(e) = broken {
            tracing::warn!(error = %e, "Lost the broker connection while publishing; reconnecting.");
            if let Some(old) = guard.take() {
                old.close().await;
            }
            // What was not published yet was not tried: it waits for the next connection.
            let left = events.len() - results.len();
            results.extend(unavailable(left, e));
        }
        results
    }

    async fn publish(&self, channel: &Channel, ev: &Outgoing) -> Result<PublisherConfirm, String> {
        let key = super::routing_key(&self.settings.routing_key, &ev.payload);
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(ev.event_id.clone().into())
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_type(ev.event_type.clone().into())
            .with_app_id("phananh".into())
            .with_timestamp(chrono::Utc::now().timestamp() as u64);
        channel
            .basic_publish(
                self.settings.exchange.clone().into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                ev.payload.as_bytes(),
                props,
            )
            .await
            .map_err(|e| format!("cannot publish: {e}"))
    }

    async fn connect(&self) -> Result<Link, Connect> {
        let url = self.settings.url.resolve().map_err(Connect::Refused)?;
        // Checked here, because lapin's parse error quotes the whole URL, password and all.
        match url::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "amqp" | "amqps") => {}
            _ => {
                return Err(Connect::Refused(
                    "the broker URL is not an amqp:// or amqps:// URL (amqp://user:password@host:5672/vhost)"
                        .into(),
                ));
            }
        }
        let props = ConnectionProperties::default()
            .with_connection_name(format!("phananh {}", env!("CARGO_PKG_VERSION")).into());
        let connection = match &self.settings.ca_file {
            Some(ca) => {
                let pem = std::fs::read_to_string(ca).map_err(|e| {
                    Connect::Refused(format!("cannot read ca_file {}: {e}", ca.display()))
                })?;
                let tls = lapin::tcp::OwnedTLSConfig {
                    identity: None,
                    cert_chain: Some(pem),
                };
                let runtime = lapin::runtime::default_runtime()
                    .map_err(|e| Connect::Failed(e.to_string()))?;
                Connection::connect_with_config(&url, props, tls, runtime).await
            }
            None => Connection::connect(&url, props).await,
        }
        // lapin's errors name the host and port, never the URL's credentials.
        .map_err(|e| {
            let text = format!("cannot connect to the broker: {e}");
            if text.contains("ACCESS_REFUSED") || text.contains("ACCESS-REFUSED") {
                Connect::Refused(text)
            } else {
                Connect::Failed(text)
            }
        })?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| Connect::Failed(format!("cannot open a channel: {e}")))?;
        // A setup the broker refuses (an exchange that does not exist, a queue declared before
        // with other arguments, no permission) is the operator's to fix, not a reason to retry.
        if self.settings.declare {
            self.declare(&channel).await.map_err(Connect::Refused)?;
        } else if !self.settings.exchange.is_empty() {
            channel
                .exchange_declare(
                    self.settings.exchange.clone().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    Connect::Refused(format!(
                        "exchange {:?} cannot be used: {e}; declare it on the broker or set declare = true",
                        self.settings.exchange
                    ))
                })?;
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| Connect::Failed(format!("cannot turn on publisher confirms: {e}")))?;
        tracing::info!(exchange = %self.settings.exchange, "Connected to the broker.");
        Ok(Link {
            connection,
            channel,
        })
    }

    /// The exchange (topic, durable), and with `queue` the queue bound to it; with
    /// `dead_letter_exchange`, a fanout exchange and `QUEUE.dead` for what consumers reject.
    async fn declare(&self, ch: &Channel) -> Result<(), String> {
        let s = &self.settings;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let fail = |what: &str, e: lapin::Error| format!("cannot declare {what}: {e}");
        ch.exchange_declare(
            s.exchange.clone().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(|e| fail(&format!("exchange {:?}", s.exchange), e))?;
        let Some(queue) = &s.queue else {
            return Ok(());
        };
        let mut args = FieldTable::default();
        if let Some(dlx) = &s.dead_letter_exchange {
            ch.exchange_declare(
                dlx.clone().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|e| fail(&format!("exchange {dlx:?}"), e))?;
            let dead = format!("{queue}.dead");
            ch.queue_declare(
                dead.clone().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| fail(&format!("queue {dead:?}"), e))?;
            ch.queue_bind(
                dead.into(),
                dlx.clone().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| fail("the dead-letter binding", e))?;
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(dlx.clone().into()),
            );
        }
        ch.queue_declare(queue.clone().into(), QueueDeclareOptions::durable(), args)
            .await
            .map_err(|e| fail(&format!("queue {queue:?}"), e))?;
        ch.queue_bind(
            queue.clone().into(),
            s.exchange.clone().into(),
            s.binding_key.clone().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| fail(&format!("the binding of {queue:?}"), e))?;
        Ok(())
    }

    /// Closes the connection (at shutdown), so the broker sees a clean goodbye.
    pub async fn close(&self) {
        if let Some(link) = self.link.lock().await.take() {
            link.close().await;
        }
    }
}

impl Link {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    async fn close(self) {
        if self.connection.status().connected() {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                self.connection.close(200, "bye".into()),
            )
            .await;
        }
    }
}

/// The message ids the broker returned as unroutable in one window. lapin hands a returned
/// message to whichever confirm completes next, not to the message's own (a multiple-ack walks its
/// pending confirms in hash order), so a return is matched to its event by `message_id`.
fn returned_ids(all: &[lapin::Result<Confirmation>]) -> HashMap<String, String> {
    all.iter()
        .filter_map(|c| match c {
            Ok(Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r))) => Some((
                r.delivery.properties.message_id().as_ref()?.to_string(),
                format!("{} {}", r.reply_code, r.reply_text),
            )),
            _ => None,
        })
        .collect()
}

/// A broker's answer about one message. Unroutable (returned) is permanent: no queue is bound
/// for its routing key, and trying again changes nothing until an operator binds one and runs
/// `phananh outbox requeue`. A nack is the broker refusing to take it now (a full queue with
/// `reject-publish`, an internal error): retried. No answer because the broker closed the channel
/// (an exchange that does not exist, a permission) is not an attempt: the reconnect checks the
/// setup and says what is wrong.
fn judge(
    ev: &Outgoing,
    c: lapin::Result<Confirmation>,
    returned: &HashMap<String, String>,
    channel_closed: bool,
) -> Result<(), SinkError> {
    if let Some(why) = returned.get(&ev.event_id) {
        return Err(SinkError::Permanent(format!(
            "the broker returned it unroutable ({why}): no queue is bound for its routing key"
        )));
    }
    match c {
        Ok(Confirmation::Ack(_)) => Ok(()),
        Ok(Confirmation::Nack(_)) => {
            Err(SinkError::Transient("the broker refused it (nack)".into()))
        }
        Ok(Confirmation::NotRequested) => Err(SinkError::Transient(
            "the broker did not confirm (confirms are off)".into(),
        )),
        Err(e) if channel_closed => Err(SinkError::Unavailable(format!(
            "the broker closed the channel: {e}"
        ))),
        Err(e) => Err(SinkError::Transient(format!("no confirm: {e}"))),
    }
}

fn unavailable(n: usize, error: String) -> Vec<Result<(), SinkError>> {
    vec![Err(SinkError::Unavailable(error)); n]
}
