//! Acknowledgements: each mail channel with an `[ack]` table has a sender that takes the
//! acknowledgements its new reports are owed (rows the writer added with the report) and mails
//! them through the channel's relay: at most one per report, never to mail older than `max_age`,
//! never to an address that bounced, rate-limited per address and per domain, and every send or
//! suppression recorded with its reason.

mod message;
mod smtp;

use crate::config::{AckConfig, ForwardConfig};
use crate::health::{Health, State};
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
    /// The relay's state shows in `/readyz` as `CHANNEL:ack`.
    health: Health,
    cancel: CancellationToken,
}

/// Runs a channel's sender until `cancel` fires; a transport that cannot be built (an unreadable
/// password or CA file) is retried with backoff, like a channel.
pub async fn run(
    channel: String,
    cfg: AckConfig,
    policy: ForwardConfig,
    store: Store,
    health: Health,
    cancel: CancellationToken,
) {
    let mut failures = 0u32;
    let key = format!("{channel}:ack");
    let ack = loop {
        match Acknowledger::new(
            &channel,
            &cfg,
            &policy,
            store.clone(),
            health.clone(),
            cancel.clone(),
        ) {
            Ok(a) => break a,
            Err(e) => {
                failures += 1;
                let d = crate::backoff::delay(
                    failures,
                    Duration::from_secs(1),
                    Duration::from_secs(300),
                );
                tracing::error!(channel = %channel, error = format!("{e:#}"), retry_in = ?d, "Cannot set up acknowledgements.");
                health.set(&key, State::NeedsOperator, Some(format!("{e:#}")));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    };
    tracing::info!(channel = %channel, relay = %cfg.smtp.host, "Acknowledgements started.");
    health.set(&key, State::Running, None);
    ack.run(cancel).await;
}

impl Acknowledger {
    pub fn new(
        channel: &str,
        cfg: &AckConfig,
        policy: &ForwardConfig,
        store: Store,
        health: Health,
        cancel: CancellationToken,
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
            health,
            cancel,
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
        // Limits count acknowledgements, not attempts: a retry after a relay failure or
        // greylisting has had its turn already, and an operator's retry is deliberate.
        if row.attempts > 0 || row.reason.as_deref() == Some("operator_retry") {
            return Ok(None);
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

    /// Marks a chunk `sending` (committed), hands each mail it claimed to the relay, records the
    /// outcomes.
    async fn send(&self, chunk: &[DueAck]) -> Result<(), StoreError> {
        let claims: Vec<(i64, String)> = chunk
            .iter()
            .map(|r| (r.id, message::message_id(r, &self.cfg)))
            .collect();
        let claimed = self.store.claim_acks(claims.clone()).await?;
        let chunk: Vec<(&DueAck, &str)> = chunk
            .iter()
            .zip(&claims)
            .filter(|(r, _)| claimed.contains(&r.id))
            .map(|(r, (_, id))| (r, id.as_str()))
            .collect();
        let sends = chunk.iter().map(|(row, id)| self.send_one(row, id));
        let results = futures::future::join_all(sends).await;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut updates = Vec::with_capacity(chunk.len());
        for ((row, _), result) in chunk.iter().zip(results) {
            let attempt = row.attempts + 1;
            let update = match result {
                Ok(()) => {
                    tracing::info!(channel = %self.channel, tracking_code = %row.tracking_code, "Acknowledgement sent.");
                    AckUpdate::Sent
                }
                Err(Failure::Permanent(error)) => AckUpdate::Dead { error },
                Err(Failure::Relay(error)) if attempt >= self.policy.max_attempts => {
                    AckUpdate::Dead { error }
                }
                Err(Failure::Relay(error)) => {
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
        let health = format!("{}:ack", self.channel);
        let result = match self.transport.send(msg).await {
            Ok(_) => Ok(()),
            // A 5xx is about this mail only if the relay itself is fine: a refused login, a
            // relaying denial or a bad EHLO name would otherwise kill every acknowledgement.
            Err(e) if e.is_permanent() => match self.transport.test_connection().await {
                Ok(true) => Err(Failure::Permanent(format!(
                    "relay refused this mail: {}",
                    redact(&e.to_string())
                ))),
                Ok(false) | Err(_) => Err(Failure::Relay(format!(
                    "relay refused us: {}",
                    redact(&e.to_string())
                ))),
            },
            Err(e) => Err(Failure::Relay(redact(&e.to_string()))),
        };
        if self.cancel.is_cancelled() {
            // Replaced by a reload: the new sender owns the health entry now.
            return result;
        }
        match &result {
            Ok(()) | Err(Failure::Permanent(_)) => self.health.set(&health, State::Running, None),
            Err(Failure::Relay(e)) => {
                self.health
                    .set(&health, State::Reconnecting, Some(e.clone()))
            }
        }
        result
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

#[derive(Debug)]
enum Failure {
    /// The relay is down, busy, or refuses us (not this mail): try again later.
    Relay(String),
    /// This mail will never go: dead at once.
    Permanent(String),
}

/// Relays quote the recipient in their answers (`550 5.1.1 <x@y>: Recipient address
/// rejected`); what we log and store must not hold it.
fn redact(text: &str) -> String {
    static ADDRESS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"<?[^\s<>\[\]()"',;:]+@[^\s<>\[\]()"',;:]+>?"#).expect("valid regex")
    });
    ADDRESS.replace_all(text, "<address>").into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn relay_answers_lose_the_addresses_they_quote() {
        assert_eq!(
            super::redact("550 5.1.1 <an.nguyen@example.com>: Recipient address rejected"),
            "550 5.1.1 <address>: Recipient address rejected"
        );
        assert_eq!(
            super::redact("mailbox an@example.com unavailable (451 4.3.0)"),
            "mailbox <address> unavailable (451 4.3.0)"
        );
    }
}
