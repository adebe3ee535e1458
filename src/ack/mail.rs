//! Acknowledgements by mail: the rules (never to old mail, never to an address that bounced,
//! limits per address and per domain) and the relay.

use super::{Failure, message, smtp};
use crate::config::AckConfig;
use crate::store::StoreError;
use crate::store::acks::{self, AckUpdate, DueAck};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use lettre::AsyncTransport;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Mail {
    cfg: AckConfig,
    transport: smtp::Transport,
    per_address: DefaultKeyedRateLimiter<String>,
    per_domain: DefaultKeyedRateLimiter<String>,
}

impl Mail {
    pub fn new(cfg: &AckConfig) -> anyhow::Result<Self> {
        let per_hour = |n: u32| Quota::per_hour(NonZeroU32::new(n.max(1)).expect("at least 1"));
        Ok(Self {
            cfg: cfg.clone(),
            transport: smtp::transport(&cfg.smtp)?,
            per_address: RateLimiter::keyed(per_hour(cfg.per_address_per_hour)),
            per_domain: RateLimiter::keyed(per_hour(cfg.per_domain_per_hour)),
        })
    }

    pub fn relay(&self) -> &str {
        &self.cfg.smtp.host
    }

    pub fn housekeeping(&self) {
        self.per_address.retain_recent();
        self.per_domain.retain_recent();
    }

    pub fn message_id(&self, row: &DueAck) -> String {
        message::message_id(row, &self.cfg)
    }

    /// No send takes longer: the relay timeout bounds each step of the conversation.
    pub fn stale_after(&self) -> Duration {
        (self.cfg.smtp.timeout * 10).max(Duration::from_secs(300))
    }

    /// Why a row is not mailed now, or None to mail it.
    pub async fn decide(
        &self,
        row: &DueAck,
        now: chrono::DateTime<chrono::Utc>,
        reader: &Arc<Mutex<rusqlite::Connection>>,
    ) -> Result<Option<AckUpdate>, StoreError> {
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
        if bounced(reader, address, now.timestamp_millis()).await? {
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

    pub async fn send(&self, row: &DueAck, channel: &str, message_id: &str) -> Result<(), Failure> {
        let address = row.email.as_deref().unwrap_or_default();
        let msg = message::build(row, address, &self.cfg, channel, message_id)
            .map_err(Failure::Permanent)?;
        match self.transport.send(msg).await {
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
        }
    }
}

async fn bounced(
    reader: &Arc<Mutex<rusqlite::Connection>>,
    address: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let reader = reader.clone();
    let address = address.to_string();
    let until = tokio::task::spawn_blocking(move || {
        let conn = reader.lock().expect("reader lock");
        acks::suppressed_until(&conn, &address)
    })
    .await
    .map_err(|e| StoreError::Invalid(format!("reader stopped: {e}")))??;
    Ok(until.is_some_and(|u| u > now_ms))
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
