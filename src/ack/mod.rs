//! Acknowledgements: each mail channel with an `[ack]` table has a sender that takes the
//! acknowledgements its new reports are owed (rows the writer added with the report) and mails
//! them through the channel's relay: at most one per report, never to mail older than `max_age`,
//! never to an address that bounced, rate-limited per address and per domain, and every send or
//! suppression recorded with its reason.

mod message;
mod smtp;

use crate::config::{AckConfig, ForwardConfig};
use crate::store::acks::{self, AckUpdate, DueAck};
use crate::store::{Store, StoreError};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use lettre::AsyncTransport;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Mails handed to the relay at once.
const CONCURRENCY: usize = 4;

pub struct Acknowledger {
    channel: String,
    cfg: AckConfig,
    policy: ForwardConfig,
    store: Store,
    reader: Arc<Mutex<rusqlite::Connection>>,
    transport: smtp::Transport,
    per_address: DefaultKeyedRateLimiter<String>,
    per_domain: DefaultKeyedRateLimiter<String>,
}

/// Runs a channel's sender until `cancel` fires; a transport that cannot be built (an unreadable
/// password or CA file) is retried with backoff, like a channel.
pub async fn run(
    channel: String,
    cfg: AckConfig,
    policy: ForwardConfig,
    store: Store,
    cancel: CancellationToken,
) {
    let mut failures = 0u32;
    let ack = loop {
        match Acknowledger::new(&channel, &cfg, &policy, store.clone()) {
            Ok(a) => break a,
            Err(e) => {
                failures += 1;
                let d = crate::backoff::delay(
                    failures,
                    Duration::from_secs(1),
                    Duration::from_secs(300),
                );
                tracing::error!(channel = %channel, error = format!("{e:#}"), retry_in = ?d, "Cannot set up acknowledgements.");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    };
    tracing::info!(channel = %channel, relay = %cfg.smtp.host, "Acknowledgements started.");
    ack.run(cancel).await;
}

impl Acknowledger {
    pub fn new(
        channel: &str,
        cfg: &AckConfig,
        policy: &ForwardConfig,
        store: Store,
    ) -> anyhow::Result<Self> {
        let per_hour = |n: u32| Quota::per_hour(NonZeroU32::new(n.max(1)).expect("at least 1"));
        Ok(Self {
            channel: channel.to_string(),
            cfg: cfg.clone(),
            policy: policy.clone(),
            reader: Arc::new(Mutex::new(store.reader()?)),
            store,
            transport: smtp::transport(&cfg.smtp)?,
            per_address: RateLimiter::keyed(per_hour(cfg.per_address_per_hour)),
            per_domain: RateLimiter::keyed(per_hour(cfg.per_domain_per_hour)),
        })
    }

    async fn run(self, cancel: CancellationToken) {
        let mut watch = self.store.outbox_watch();
        let mut failures = 0u32;
        loop {
            let wait = match self.pump(&cancel).await {
                Ok(()) => {
                    failures = 0;
                    self.until_next_due().await
                }
                Err(e) => {
                    failures += 1;
                    let d = crate::backoff::delay(
                        failures,
                        Duration::from_secs(1),
                        Duration::from_secs(60),
                    );
                    tracing::warn!(channel = %self.channel, error = %e, retry_in = ?d, "Cannot read or record acknowledgements.");
                    d
                }
            };
            self.per_address.retain_recent();
            self.per_domain.retain_recent();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = watch.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends or settles everything due now, a few at a time, stopping between rounds once
    /// cancelled (what is left stays pending for the next start).
    async fn pump(&self, cancel: &CancellationToken) -> Result<(), StoreError> {
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let rows = self.due().await?;
            if rows.is_empty() {
                return Ok(());
            }
            let now = chrono::Utc::now();
            let mut settled = Vec::new();
            let mut to_send = Vec::new();
            for row in rows {
                match self.decide(&row, now).await? {
                    Some(update) => settled.push((row.id, update)),
                    None => to_send.push(row),
                }
            }
            let progressed = !settled.is_empty() || !to_send.is_empty();
            self.log_settled(&settled);
            self.store.record_acks(settled).await?;
            for chunk in to_send.chunks(CONCURRENCY) {
                if cancel.is_cancelled() {
                    return Ok(());
                }
                self.send(chunk).await?;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Why a row is not sent now (suppressed, deferred, given up), or None to send it.
    async fn decide(
        &self,
        row: &DueAck,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<AckUpdate>, StoreError> {
        if row.state == "sending" {
            return Ok(Some(AckUpdate::Dead {
                error: "interrupted mid-send (a restart or a lost relay connection); not sent again, so the citizen never gets two".into(),
            }));
        }
        let suppress = |reason: &str| {
            Ok(Some(AckUpdate::Suppressed {
                reason: reason.to_string(),
            }))
        };
        let Some(address) = row.email.as_deref() else {
            return suppress("no_address");
        };
        let written = chrono::DateTime::parse_from_rfc3339(&row.submitted_at)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or(now);
        if now
            .signed_duration_since(written)
            .to_std()
            .unwrap_or_default()
            > self.cfg.max_age
        {
            return suppress("too_old");
        }
        if self.bounced(address, now.timestamp_millis()).await? {
            return suppress("bounced");
        }
        let domain = address
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if let Err(not_until) = self.per_domain.check_key(&domain) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Ok(Some(AckUpdate::Retry {
                error: "waiting for the domain's hourly limit".into(),
                next_attempt_ms: now.timestamp_millis() + wait.as_millis() as i64 + 1,
                counts: false,
            }));
        }
        if self
            .per_address
            .check_key(&acks::address_key(address))
            .is_err()
        {
            return suppress("rate_limited");
        }
        Ok(None)
    }

    async fn bounced(&self, address: &str, now_ms: i64) -> Result<bool, StoreError> {
        let reader = self.reader.clone();
        let address = address.to_string();
        let until = tokio::task::spawn_blocking(move || {
            let conn = reader.lock().expect("reader lock");
            acks::suppressed_until(&conn, &address)
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("reader stopped: {e}")))??;
        Ok(until.is_some_and(|u| u > now_ms))
    }

    /// Marks a chunk `sending` (committed), hands each mail to the relay, records the outcomes.
    async fn send(&self, chunk: &[DueAck]) -> Result<(), StoreError> {
        let ids: Vec<String> = chunk
            .iter()
            .map(|r| message::message_id(r, &self.cfg))
            .collect();
        self.store
            .record_acks(
                chunk
                    .iter()
                    .zip(&ids)
                    .map(|(r, id)| {
                        (
                            r.id,
                            AckUpdate::Sending {
                                message_id: id.clone(),
                            },
                        )
                    })
                    .collect(),
            )
            .await?;
        let sends = chunk
            .iter()
            .zip(&ids)
            .map(|(row, id)| self.send_one(row, id));
        let results = futures::future::join_all(sends).await;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut updates = Vec::with_capacity(chunk.len());
        for (row, result) in chunk.iter().zip(results) {
            let attempt = row.attempts + 1;
            let update = match result {
                Ok(()) => {
                    tracing::info!(channel = %self.channel, tracking_code = %row.tracking_code, "Acknowledgement sent.");
                    AckUpdate::Sent
                }
                Err(Failure::Permanent(error)) => AckUpdate::Dead { error },
                Err(Failure::Transient(error)) if attempt >= self.policy.max_attempts => {
                    AckUpdate::Dead { error }
                }
                Err(Failure::Transient(error)) => {
                    let d = crate::backoff::delay(
                        attempt,
                        self.policy.backoff_base,
                        self.policy.backoff_max,
                    );
                    tracing::warn!(channel = %self.channel, tracking_code = %row.tracking_code, attempts = attempt, error = %error, retry_in = ?d, "Acknowledgement not sent; will retry.");
                    AckUpdate::Retry {
                        error,
                        next_attempt_ms: now_ms + d.as_millis() as i64,
                        counts: true,
                    }
                }
            };
            if let AckUpdate::Dead { error } = &update {
                tracing::error!(channel = %self.channel, tracking_code = %row.tracking_code, attempts = attempt, error = %error, "Acknowledgement given up.");
            }
            updates.push((row.id, update));
        }
        self.store.record_acks(updates).await
    }

    async fn send_one(&self, row: &DueAck, message_id: &str) -> Result<(), Failure> {
        let address = row.email.as_deref().unwrap_or_default();
        let msg = message::build(row, address, &self.cfg, &self.channel, message_id)
            .map_err(Failure::Permanent)?;
        match self.transport.send(msg).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(Failure::Permanent(format!("relay refused: {e}"))),
            Err(e) => Err(Failure::Transient(format!("{e}"))),
        }
    }

    fn log_settled(&self, settled: &[(i64, AckUpdate)]) {
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for (_, u) in settled {
            let word = match u {
                AckUpdate::Suppressed { reason } => reason.as_str(),
                AckUpdate::Retry { .. } => "deferred",
                AckUpdate::Dead { .. } => "interrupted",
                _ => continue,
            };
            *counts.entry(word).or_default() += 1;
        }
        for (reason, n) in counts {
            tracing::info!(channel = %self.channel, reason, acknowledgements = n, "Acknowledgements not sent.");
        }
    }

    async fn due(&self) -> Result<Vec<DueAck>, StoreError> {
        let reader = self.reader.clone();
        let channel = self.channel.clone();
        let stale = self.stale_after();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().expect("reader lock");
            let now = chrono::Utc::now().timestamp_millis();
            acks::due(&conn, &channel, now, now - stale.as_millis() as i64, 64)
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("reader stopped: {e}")))?
    }

    /// A row still `sending` after this was interrupted (no send takes longer: the relay timeout
    /// bounds each step of the conversation).
    fn stale_after(&self) -> Duration {
        (self.cfg.smtp.timeout * 10).max(Duration::from_secs(300))
    }

    async fn until_next_due(&self) -> Duration {
        let reader = self.reader.clone();
        let channel = self.channel.clone();
        let next = tokio::task::spawn_blocking(move || {
            let conn = reader.lock().expect("reader lock");
            acks::next_due_ms(&conn, &channel)
        })
        .await;
        // Short: `phananh acks retry` from another process is noticed within seconds.
        let idle = Duration::from_secs(5);
        match next {
            Ok(Ok(Some(ms))) => {
                let now = chrono::Utc::now().timestamp_millis();
                Duration::from_millis((ms - now).clamp(10, idle.as_millis() as i64) as u64)
            }
            _ => idle,
        }
    }
}

enum Failure {
    Transient(String),
    Permanent(String),
}
