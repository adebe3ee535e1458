//! The outbox dispatcher: one worker per sink reads due outbox rows, hands them to its sink, and
//! records the outcome through the writer. Failures back off with jitter; after `max_attempts`
//! (or past `max_age`) a row is dead (kept, listed by `phananh outbox list`, re-sent by `phananh
//! outbox retry`). A sink that cannot be reached at all costs its rows no attempts: the worker
//! waits and tries again, and health shows why.

mod amqp;
mod email;
mod http;
mod spool;
mod strip;

use crate::config::{Config, ContactPolicy, ForwardConfig, SinkConfig, SinkKind};
use crate::health::{Health, OutboxCounts, State};
use crate::store::queries::{self, OutboxRow};
use crate::store::{Delivery, Store, StoreError};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use amqp::AmqpSink;
pub use email::EmailSink;
pub use http::{HttpSink, sign};
pub use spool::SpoolSink;
pub use strip::strip_metadata;

/// A sink's verdict on one event.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkError {
    /// Worth trying again later (timeout, 5xx, a nack): counts as an attempt.
    Transient(String),
    /// Transient, and the receiver said when to come back (Retry-After).
    RetryAfter(String, Duration),
    /// Will never succeed as is (rejected, unroutable): dead at once.
    Permanent(String),
    /// Not tried: the sink cannot be reached (connection refused, broker down). The row keeps
    /// its attempts; the worker backs off as a whole.
    Unavailable(String),
    /// Not tried, and waiting alone will not help: our credentials were refused or the secret
    /// cannot be read. Like `Unavailable`, and health says an operator is needed.
    Refused(String),
}

/// One event as a sink receives it: the payload already shaped for the sink's `contact`.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
}

#[derive(Debug)]
pub enum Sink {
    Spool(SpoolSink),
    Amqp(Box<AmqpSink>),
    Http(HttpSink),
    Email(Box<EmailSink>),
}

impl Sink {
    pub fn from_config(cfg: &SinkConfig) -> Result<Sink, String> {
        Ok(match cfg.kind {
            SinkKind::Spool => {
                let sink =
                    SpoolSink::new(cfg.dir.clone().expect("validated: spool sinks have a dir"));
                sink.clean_leftovers();
                Sink::Spool(sink)
            }
            SinkKind::Amqp => Sink::Amqp(Box::new(AmqpSink::new(cfg.amqp()))),
            SinkKind::Http => Sink::Http(HttpSink::new(cfg.http())?),
            SinkKind::Email => Sink::Email(Box::new(EmailSink::new(cfg.email())?)),
        })
    }

    pub async fn deliver(&self, events: Vec<Outgoing>) -> Vec<Result<(), SinkError>> {
        match self {
            Sink::Spool(s) => {
                let s = s.clone();
                let n = events.len();
                let files: Vec<(String, String)> = events
                    .into_iter()
                    .map(|e| (e.event_id, e.payload))
                    .collect();
                tokio::task::spawn_blocking(move || s.write_batch(&files))
                    .await
                    .unwrap_or_else(|e| {
                        vec![Err(SinkError::Transient(format!("spool writer stopped: {e}"))); n]
                    })
            }
            Sink::Amqp(s) => s.deliver(&events).await,
            Sink::Http(s) => s.deliver(&events).await,
            Sink::Email(s) => s.deliver(&events).await,
        }
    }

    async fn close(&self) {
        if let Sink::Amqp(s) = self {
            s.close().await;
        }
    }
}

/// Fills a routing key template from an event: `{event}` (created, updated, duplicate),
/// `{category}`, `{unit}`, `{channel}`, `{kind}`, `{ward}`; a missing value is `none`. Values
/// lose dots and wildcards, so a unit named `a.b` cannot add a word to a topic key.
pub fn routing_key(template: &str, payload: &str) -> String {
    #[derive(serde::Deserialize, Default)]
    struct Named {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        kind: Option<String>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Fields {
        event: Option<String>,
        category: Named,
        unit: Option<String>,
        channel: Named,
        ward: Option<Named>,
    }
    let f: Fields = serde_json::from_str(payload).unwrap_or_default();
    let word = |v: Option<&str>| -> String {
        let v = v.unwrap_or("").trim();
        if v.is_empty() {
            return "none".into();
        }
        v.chars()
            .map(|c| {
                if matches!(c, '.' | '*' | '#') || c.is_whitespace() {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    };
    let event = f.event.as_deref().map(|e| e.trim_start_matches("report."));
    template
        .replace("{event}", &word(event))
        .replace("{category}", &word(f.category.code.as_deref()))
        .replace("{unit}", &word(f.unit.as_deref()))
        .replace("{channel}", &word(f.channel.name.as_deref()))
        .replace("{kind}", &word(f.channel.kind.as_deref()))
        .replace(
            "{ward}",
            &word(f.ward.as_ref().and_then(|w| w.code.as_deref())),
        )
}

/// One sink's worker.
pub struct Forwarder {
    name: String,
    sink: Sink,
    contact: ContactPolicy,
    policy: ForwardConfig,
    store: Store,
    reader: Arc<Mutex<rusqlite::Connection>>,
    limiter: Option<governor::DefaultDirectRateLimiter>,
    batch: usize,
    health: Health,
}

/// What one round of deliveries did.
#[derive(Debug, Default)]
struct Round {
    delivered: usize,
    /// Rows whose state changed (delivered, retrying, dead).
    changed: usize,
    /// Set when the sink could not be reached: nothing more is worth trying now.
    unavailable: Option<String>,
    /// The sink refused our credentials (or has none to offer).
    refused: bool,
}

impl Forwarder {
    pub fn new(
        name: &str,
        cfg: &SinkConfig,
        policy: &ForwardConfig,
        store: Store,
        health: Health,
    ) -> Result<Self, StoreError> {
        let reader = store.reader()?;
        let sink =
            Sink::from_config(cfg).map_err(|e| StoreError::Invalid(format!("sink {name}: {e}")))?;
        let limiter = cfg
            .rate_per_second
            .and_then(NonZeroU32::new)
            .map(|r| governor::RateLimiter::direct(governor::Quota::per_second(r)));
        // A rate-limited round never asks for more than one second's worth at once.
        let batch = match cfg.rate_per_second {
            Some(r) => policy.batch.min(r as usize).max(1),
            None => policy.batch,
        };
        Ok(Self {
            name: name.to_string(),
            sink,
            contact: cfg.contact,
            policy: policy.clone(),
            store,
            reader: Arc::new(Mutex::new(reader)),
            limiter,
            batch,
            health,
        })
    }

    /// One forwarder per configured sink.
    pub fn all(
        config: &Config,
        store: &Store,
        health: &Health,
    ) -> Result<Vec<Forwarder>, StoreError> {
        config
            .daemon
            .sinks
            .iter()
            .map(|(name, cfg)| {
                Forwarder::new(
                    name,
                    cfg,
                    &config.daemon.forward,
                    store.clone(),
                    health.clone(),
                )
            })
            .collect()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delivers everything due now, then closes the sink's connection. Returns how many events
    /// were delivered and, when the sink could not be reached, why (the rest wait in the outbox).
    pub async fn pump(&self) -> Result<(usize, Option<String>), StoreError> {
        let round = self.pump_until(&CancellationToken::new()).await;
        self.sink.close().await;
        let round = round?;
        Ok((round.delivered, round.unavailable))
    }

    /// Like `pump`, but stops between batches once `cancel` fires, so shutdown is not held up
    /// by a backlog (what is left stays in the outbox for the next start).
    ///
    /// Batch k's outcomes are committed while batch k+1 is sent: at most one such transaction is
    /// outstanding, and its rows are left out of the next read, which cannot see them change yet.
    /// A later event of the same report still waits (the read sees its predecessor undelivered).
    async fn pump_until(&self, cancel: &CancellationToken) -> Result<Round, StoreError> {
        let mut total = Round::default();
        let mut recording: Option<Recording> = None;
        let result = loop {
            if cancel.is_cancelled() {
                break Ok(());
            }
            let rows = match self.due(recording.as_ref().map(|r| &r.ids)).await {
                Ok(rows) => rows,
                Err(e) => break Err(e),
            };
            if rows.is_empty() {
                // What is being recorded may free later events of the same reports.
                match recording.take() {
                    Some(r) => match r.finish().await {
                        Ok(()) => continue,
                        Err(e) => break Err(e),
                    },
                    None => break Ok(()),
                }
            }
            let (round, outcomes) = self.deliver_rows(rows, cancel).await;
            if let Some(previous) = recording.take()
                && let Err(e) = previous.finish().await
            {
                break Err(e);
            }
            if !outcomes.is_empty() {
                recording = Some(Recording::start(&self.store, outcomes));
            }
            total.delivered += round.delivered;
            total.changed += round.changed;
            if round.unavailable.is_some() {
                total.unavailable = round.unavailable;
                total.refused = round.refused;
                break Ok(());
            }
            if round.delivered == 0 {
                break Ok(());
            }
        };
        let last = match recording {
            Some(r) => r.finish().await,
            None => Ok(()),
        };
        result.and(last).map(|()| total)
    }

    /// Runs until cancelled, waking on new outbox rows or when a retry falls due. A delivery in
    /// progress finishes before it stops.
    pub async fn run(self, cancel: CancellationToken) {
        let mut watch = self.store.outbox_watch();
        let mut failures = 0u32;
        self.report_health(State::Starting, None).await;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let wait = match self.pump_until(&cancel).await {
                Ok(round) => {
                    if round.delivered > 0 {
                        tracing::info!(sink = %self.name, events = round.delivered, "Forwarded events.");
                    }
                    match round.unavailable {
                        Some(error) => {
                            failures += 1;
                            let d = crate::backoff::delay(
                                failures,
                                Duration::from_secs(1),
                                Duration::from_secs(60),
                            );
                            if failures == 1 || failures.is_power_of_two() {
                                tracing::warn!(sink = %self.name, error = %error, retry_in = ?d, failures, "Sink cannot be reached; events wait in the outbox.");
                            }
                            // Credentials refused: waiting will not fix it, an operator must.
                            let state = if round.refused {
                                State::NeedsOperator
                            } else {
                                State::Reconnecting
                            };
                            self.report_health(state, Some(error)).await;
                            d
                        }
                        None => {
                            if failures > 0 {
                                tracing::info!(sink = %self.name, "Sink reachable again.");
                            }
                            failures = 0;
                            self.report_health(State::Running, None).await;
                            self.until_next_due().await
                        }
                    }
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
                _ = cancel.cancelled() => break,
                _ = watch.changed(), if failures == 0 => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.sink.close().await;
    }

    async fn report_health(&self, state: State, error: Option<String>) {
        let reader = self.reader.clone();
        let sink = self.name.clone();
        let counts = tokio::task::spawn_blocking(move || {
            let conn = reader.lock().expect("reader lock");
            queries::sink_counts(&conn, &sink, chrono::Utc::now())
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(OutboxCounts::default());
        crate::metrics::get().outbox_counts(&self.name, &counts);
        self.health.set_sink(&self.name, state, error, counts);
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

    /// The next batch due, leaving out rows whose outcome is being committed.
    async fn due(
        &self,
        recording: Option<&std::collections::HashSet<i64>>,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let reader = self.reader.clone();
        let sink = self.name.clone();
        let limit = self.batch;
        let skip = recording.cloned().unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().expect("reader lock");
            // Rows in `skip` are among the lowest ids still due, so this many more suffice.
            let mut rows = queries::due_outbox(
                &conn,
                &sink,
                chrono::Utc::now().timestamp_millis(),
                limit + skip.len(),
            )?;
            rows.retain(|r| !skip.contains(&r.id));
            rows.truncate(limit);
            Ok(rows)
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("outbox reader stopped: {e}")))?
    }

    /// Sends one batch; answers what happened and the outcomes to record.
    async fn deliver_rows(
        &self,
        rows: Vec<OutboxRow>,
        cancel: &CancellationToken,
    ) -> (Round, Vec<(i64, Delivery)>) {
        if let Some(limiter) = &self.limiter {
            let n = NonZeroU32::new(rows.len() as u32).expect("rows is not empty");
            tokio::select! {
                _ = cancel.cancelled() => return (Round::default(), Vec::new()),
                r = limiter.until_n_ready(n) => {
                    r.expect("the batch is capped at the limiter's burst");
                }
            }
        }
        // An event that cannot be shaped for this sink's `contact` is never sent unmasked.
        let shaped: Vec<Option<String>> = rows
            .iter()
            .map(|r| shape_payload(&r.payload, self.contact))
            .collect();
        let events: Vec<Outgoing> = rows
            .iter()
            .zip(&shaped)
            .filter_map(|(r, p)| {
                Some(Outgoing {
                    event_id: r.event_id.clone(),
                    event_type: r.event_type.clone(),
                    payload: p.clone()?,
                })
            })
            .collect();
        let mut sent = self.sink.deliver(events).await.into_iter();
        let results: Vec<Result<(), SinkError>> = shaped
            .iter()
            .map(|p| match p {
                Some(_) => sent
                    .next()
                    .unwrap_or_else(|| Err(SinkError::Transient("the sink gave no answer".into()))),
                None => Err(SinkError::Permanent(
                    "the stored event cannot be read to mask it for this sink".into(),
                )),
            })
            .collect();
        let now = chrono::Utc::now();
        let mut round = Round::default();
        let mut outcomes = Vec::with_capacity(rows.len());
        for (row, result) in rows.iter().zip(results) {
            let attempt = row.attempts + 1;
            let too_old = chrono::DateTime::parse_from_rfc3339(&row.created_at)
                .ok()
                .and_then(|t| (now - t.with_timezone(&chrono::Utc)).to_std().ok())
                .is_some_and(|age| age > self.policy.max_age);
            let retry = |error: String, wait: Duration| {
                if attempt >= self.policy.max_attempts || too_old {
                    Delivery::Dead { error }
                } else {
                    Delivery::Retry {
                        error,
                        next_attempt_ms: now.timestamp_millis() + wait.as_millis() as i64,
                    }
                }
            };
            let backoff =
                crate::backoff::delay(attempt, self.policy.backoff_base, self.policy.backoff_max);
            let outcome = match result {
                Ok(()) => {
                    round.delivered += 1;
                    Delivery::Delivered
                }
                Err(SinkError::Unavailable(error)) => {
                    round.unavailable.get_or_insert(error);
                    continue;
                }
                Err(SinkError::Refused(error)) => {
                    round.refused = true;
                    round.unavailable.get_or_insert(error);
                    continue;
                }
                Err(SinkError::Permanent(error)) => Delivery::Dead { error },
                Err(SinkError::Transient(error)) => retry(error, backoff),
                // The receiver's word when it asks for longer than our backoff (never past an
                // hour); a short Retry-After must not burn the attempts in seconds.
                Err(SinkError::RetryAfter(error, after)) => {
                    retry(error, after.min(Duration::from_secs(3600)).max(backoff))
                }
            };
            let m = crate::metrics::get();
            match &outcome {
                Delivery::Delivered => {
                    m.delivery(&self.name, "delivered");
                    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&row.created_at) {
                        let waited = (now - t.with_timezone(&chrono::Utc)).num_milliseconds();
                        m.delivery_latency
                            .get_or_create(&m.sink(&self.name))
                            .observe(waited.max(0) as f64 / 1000.0);
                    }
                }
                Delivery::Retry { .. } => m.delivery(&self.name, "retry"),
                Delivery::Dead { .. } => m.delivery(&self.name, "dead"),
            }
            match &outcome {
                Delivery::Dead { error } => {
                    tracing::error!(sink = %self.name, event_id = %row.event_id, attempts = attempt, error = %error, "Event is dead; `phananh outbox retry` re-sends it.")
                }
                Delivery::Retry { error, .. } => {
                    tracing::warn!(sink = %self.name, event_id = %row.event_id, attempts = attempt, error = %error, "Delivery failed; will retry.")
                }
                Delivery::Delivered => {}
            }
            outcomes.push((row.id, outcome));
        }
        round.changed = outcomes.len();
        if round.unavailable.is_some() {
            let m = crate::metrics::get();
            m.unreachable.get_or_create(&m.sink(&self.name)).inc();
        }
        (round, outcomes)
    }
}

/// One batch's outcomes being committed by the writer.
struct Recording {
    ids: std::collections::HashSet<i64>,
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
}

impl Recording {
    fn start(store: &Store, outcomes: Vec<(i64, Delivery)>) -> Self {
        let ids = outcomes.iter().map(|(id, _)| *id).collect();
        let store = store.clone();
        let task = tokio::spawn(async move { store.record_deliveries(outcomes).await });
        Self { ids, task }
    }

    async fn finish(self) -> Result<(), StoreError> {
        self.task
            .await
            .map_err(|e| StoreError::Invalid(format!("recording deliveries stopped: {e}")))?
    }
}

/// The payload as this sink may see it: the stored event has the full reporter; a masked sink gets
/// masked values, a `none` sink gets no reporter at all, and both get the reporter's name, address
/// and phone numbers masked in the text. Full sinks get the stored bytes unchanged.
fn shape_payload(payload: &str, contact: ContactPolicy) -> Option<String> {
    if contact == ContactPolicy::Full {
        return Some(payload.to_string());
    }
    let mut event = serde_json::from_str::<crate::report::Event>(payload).ok()?;
    event.report.redact_text();
    event.report.reporter = match contact {
        ContactPolicy::Masked => event.report.reporter.map(|r| r.masked()),
        _ => None,
    };
    serde_json::to_string(&event).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_that_cannot_be_masked_is_not_sent_at_all() {
        let odd = r#"{"schema":"phananh.report/9","reporter":{"phone":"+84905123456"}}"#;
        assert_eq!(shape_payload(odd, ContactPolicy::Masked), None);
        assert_eq!(shape_payload(odd, ContactPolicy::None), None);
        assert_eq!(
            shape_payload(odd, ContactPolicy::Full).as_deref(),
            Some(odd)
        );
    }

    #[test]
    fn routing_keys_fill_placeholders_and_cannot_add_words() {
        let payload = r#"{"event":"report.updated","category":{"code":"ha_tang"},"unit":"so.xd#1",
            "channel":{"name":"email-dttm","kind":"imap"}}"#;
        assert_eq!(
            routing_key("report.{event}.{category}.{unit}.{ward}", payload),
            "report.updated.ha_tang.so_xd_1.none"
        );
        assert_eq!(routing_key("{channel}.{kind}", payload), "email-dttm.imap");
    }
}
