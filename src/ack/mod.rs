//! Acknowledgements: the answer a citizen gets with their tracking code, on the channel they used.
//! The writer records the acknowledgement a new report is owed in the report's transaction; a
//! sender per channel takes those rows and delivers them through its carrier: a mail relay
//! (`mail.rs`, for channels with `[ack]`) or Messenger's Send API (`messenger.rs`, for facebook
//! channels with `reply = true`). At most one per report; every send or suppression is recorded
//! with its reason.

pub use messenger::strip_ids;

mod mail;
pub(crate) mod message;
mod messenger;
pub(crate) mod smtp;

use crate::config::{AckConfig, FacebookConfig, ForwardConfig};
use crate::health::{Health, State};
use crate::store::acks::{self, AckUpdate, DueAck};
use crate::store::{Store, StoreError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Acknowledgements handed to the carrier at once.
const CONCURRENCY: usize = 4;

/// How a channel's acknowledgements travel.
#[derive(Clone)]
pub enum Via {
    Mail(AckConfig),
    Messenger(FacebookConfig),
}

enum Carrier {
    Mail(mail::Mail),
    Messenger(messenger::Messenger),
}

/// Why one acknowledgement did not go.
#[derive(Debug)]
pub enum Failure {
    /// The relay or API is down, busy, or refuses us (not this message): try again later.
    Relay(String),
    /// This one will never go: dead at once.
    Permanent(String),
    /// The page token was refused: the operator must act; retried until then.
    Token(String),
    /// Rate-limited by the other side: try again after the pause, not counted as an attempt.
    Paused(String, Duration),
    /// Not sent, on purpose (outside Messenger's window, recipient unavailable).
    Suppress(String),
}

pub struct Acknowledger {
    channel: String,
    carrier: Carrier,
    policy: ForwardConfig,
    store: Store,
    reader: Arc<Mutex<rusqlite::Connection>>,
    /// The carrier's state shows in `/readyz` as `CHANNEL:ack`.
    health: Health,
    cancel: CancellationToken,
}

/// Runs a channel's sender until `cancel` fires; a carrier that cannot be set up (an unreadable
/// password or CA file) is retried with backoff, like a channel.
pub async fn run(
    channel: String,
    via: Via,
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
            &via,
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
    match &ack.carrier {
        Carrier::Mail(m) => {
            tracing::info!(channel = %channel, relay = %m.relay(), "Acknowledgements started.")
        }
        Carrier::Messenger(_) => {
            tracing::info!(channel = %channel, "Messenger replies started.")
        }
    }
    health.set(&key, State::Running, None);
    ack.run(cancel).await;
}

impl Acknowledger {
    pub fn new(
        channel: &str,
        via: &Via,
        policy: &ForwardConfig,
        store: Store,
        health: Health,
        cancel: CancellationToken,
    ) -> anyhow::Result<Self> {
        let carrier = match via {
            Via::Mail(cfg) => Carrier::Mail(mail::Mail::new(cfg)?),
            Via::Messenger(cfg) => {
                Carrier::Messenger(messenger::Messenger::new(cfg, policy.backoff_max)?)
            }
        };
        Ok(Self {
            channel: channel.to_string(),
            carrier,
            policy: policy.clone(),
            reader: Arc::new(Mutex::new(store.reader()?)),
            store,
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
            if let Carrier::Mail(m) = &self.carrier {
                m.housekeeping();
            }
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
                error: "interrupted mid-send (a restart or a lost connection); not sent again, so the citizen never gets two".into(),
            }));
        }
        match &self.carrier {
            Carrier::Mail(m) => m.decide(row, now, &self.reader).await,
            Carrier::Messenger(m) => Ok(m.decide(row, now)),
        }
    }

    /// Marks a chunk `sending` (committed), hands each one it claimed to the carrier, records
    /// the outcomes.
    async fn send(&self, chunk: &[DueAck]) -> Result<(), StoreError> {
        let claims: Vec<(i64, String)> = chunk.iter().map(|r| (r.id, self.message_id(r))).collect();
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
            let retry = |error: String, counts: bool, d: Duration| AckUpdate::Retry {
                error,
                next_attempt_ms: now_ms + d.as_millis() as i64,
                counts,
            };
            let backoff =
                crate::backoff::delay(attempt, self.policy.backoff_base, self.policy.backoff_max);
            let update = match result {
                Ok(()) => {
                    tracing::info!(channel = %self.channel, tracking_code = %row.tracking_code, "Acknowledgement sent.");
                    AckUpdate::Sent
                }
                Err(Failure::Permanent(error)) => AckUpdate::Dead { error },
                Err(Failure::Suppress(reason)) => {
                    tracing::info!(channel = %self.channel, tracking_code = %row.tracking_code, reason = %reason, "Acknowledgement not sent.");
                    AckUpdate::Suppressed { reason }
                }
                Err(Failure::Relay(error)) if attempt >= self.policy.max_attempts => {
                    AckUpdate::Dead { error }
                }
                Err(Failure::Relay(error)) => {
                    tracing::warn!(channel = %self.channel, tracking_code = %row.tracking_code, attempts = attempt, error = %error, retry_in = ?backoff, "Acknowledgement not sent; will retry.");
                    retry(error, true, backoff)
                }
                // Waits for the operator without using up attempts.
                Err(Failure::Token(error)) => retry(error, false, self.policy.backoff_max),
                Err(Failure::Paused(error, d)) => {
                    retry(error, false, d.min(self.policy.backoff_max))
                }
            };
            if let AckUpdate::Dead { error } = &update {
                tracing::error!(channel = %self.channel, tracking_code = %row.tracking_code, attempts = attempt, error = %error, "Acknowledgement given up.");
            }
            updates.push((row.id, update));
        }
        self.store.record_acks(updates).await
    }

    fn message_id(&self, row: &DueAck) -> String {
        match &self.carrier {
            Carrier::Mail(m) => m.message_id(row),
            Carrier::Messenger(m) => m.message_id(row),
        }
    }

    async fn send_one(&self, row: &DueAck, message_id: &str) -> Result<(), Failure> {
        let result = match &self.carrier {
            Carrier::Mail(m) => m.send(row, &self.channel, message_id).await,
            Carrier::Messenger(m) => m.send(row, &self.channel).await,
        };
        if self.cancel.is_cancelled() {
            // Replaced by a reload: the new sender owns the health entry now.
            return result;
        }
        let key = format!("{}:ack", self.channel);
        match &result {
            Ok(()) | Err(Failure::Permanent(_) | Failure::Suppress(_)) => {
                self.health.set(&key, State::Running, None)
            }
            Err(Failure::Relay(e) | Failure::Paused(e, _)) => {
                self.health.set(&key, State::Reconnecting, Some(e.clone()))
            }
            Err(Failure::Token(e)) => {
                tracing::error!(channel = %self.channel, error = %e, "The page access token was refused; replies wait until a valid token is in the token file.");
                self.health.set(&key, State::NeedsOperator, Some(e.clone()))
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
        let stale = match &self.carrier {
            Carrier::Mail(m) => m.stale_after(),
            Carrier::Messenger(m) => m.stale_after(),
        };
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().expect("reader lock");
            let now = chrono::Utc::now().timestamp_millis();
            acks::due(&conn, &channel, now, now - stale.as_millis() as i64, 64)
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("reader stopped: {e}")))?
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
        crate::backoff::until(
            next.ok().and_then(Result::ok).flatten(),
            Duration::from_secs(5),
        )
    }
}
