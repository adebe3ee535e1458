//! Acknowledgements in Messenger: the Send API (`messaging_type: RESPONSE`, inside the 24-hour
//! window after the citizen's last message), rate-limited per page, pausing when Meta's usage
//! headers near their limit or a rate-limit error comes back. A refused page token turns the
//! channel's reply health red; the token file is read again for every send, so a fresh token
//! works without a reload.

use super::{Failure, message};
use crate::config::FacebookConfig;
use crate::store::acks::{AckUpdate, DueAck};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// RESPONSE is allowed 24 hours after the citizen's last message; keep a margin.
const WINDOW: Duration = Duration::from_secs(23 * 3600);
/// How full (percent) Meta's usage headers may get before sending pauses.
const USAGE_PAUSE_AT: f64 = 90.0;

pub struct Messenger {
    cfg: FacebookConfig,
    client: reqwest::Client,
    limiter: DefaultDirectRateLimiter,
    paused_until: Mutex<Option<Instant>>,
    /// No pause is longer than `[forward] backoff_max`.
    max_pause: Duration,
}

/// What a Send API answer means for us.
pub enum Refusal {
    Token(String),
    RateLimited(String, Duration),
    OutsideWindow,
    Unreachable,
    Other(String),
}

impl Messenger {
    pub fn new(cfg: &FacebookConfig, max_pause: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::fetch::tls_config())
            .timeout(Duration::from_secs(30))
            .build()?;
        let rate = NonZeroU32::new(cfg.reply_rate_per_second.max(1)).expect("at least 1");
        Ok(Self {
            cfg: cfg.clone(),
            client,
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            paused_until: Mutex::new(None),
            max_pause,
        })
    }

    pub fn message_id(&self, row: &DueAck) -> String {
        format!("messenger:{}", row.tracking_code)
    }

    pub fn stale_after(&self) -> Duration {
        Duration::from_secs(300)
    }

    /// Why a row is not sent now, or None to send it.
    pub fn decide(&self, row: &DueAck, now: chrono::DateTime<chrono::Utc>) -> Option<AckUpdate> {
        if row.psid.is_none() {
            return Some(AckUpdate::Suppressed {
                reason: "no_address".into(),
            });
        }
        // The report is made when the conversation goes quiet: its time is close to the
        // citizen's last message.
        let made = chrono::DateTime::parse_from_rfc3339(&row.received_at)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or(now);
        if now.signed_duration_since(made).to_std().unwrap_or_default() > WINDOW {
            return Some(AckUpdate::Suppressed {
                reason: "outside_window".into(),
            });
        }
        let defer = |until: Duration, why: &str| AckUpdate::Retry {
            error: why.to_string(),
            next_attempt_ms: now.timestamp_millis() + until.as_millis() as i64 + 1,
            counts: false,
        };
        if let Some(until) = *self.paused_until.lock().expect("pause lock") {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Some(defer(left, "paused: Meta's rate limit"));
            }
        }
        if let Err(not_until) = self.limiter.check() {
            return Some(defer(
                not_until.wait_time_from(DefaultClock::default().now()),
                "waiting for the page's send rate",
            ));
        }
        None
    }

    pub async fn send(&self, row: &DueAck, channel: &str) -> Result<(), Failure> {
        let psid = row.psid.as_deref().unwrap_or_default();
        let token = self
            .cfg
            .page_access_token()
            .ok_or_else(|| Failure::Token("no page_access_token configured".into()))?
            .resolve()
            .map_err(Failure::Token)?;
        let received_at = chrono::DateTime::parse_from_rfc3339(&row.received_at)
            .map(|t| t.format("%H:%M ngày %d/%m/%Y").to_string())
            .unwrap_or_else(|_| row.received_at.clone());
        let text = message::render(
            &self.cfg.reply_text,
            &message::Vars {
                code: &row.tracking_code,
                title: &row.title,
                received_at: &received_at,
                name: "bạn",
                channel,
            },
        );
        let url = format!(
            "{}/{}/{}/messages",
            self.cfg.graph_api_base.trim_end_matches('/'),
            self.cfg.graph_api_version,
            self.cfg.page_id
        );
        let body = serde_json::json!({
            "recipient": { "id": psid },
            "messaging_type": "RESPONSE",
            "message": { "text": text, "metadata": format!("phananh:{}", row.tracking_code) },
        });
        let resp = self
            .client
            .post(&url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                Failure::Relay(format!(
                    "Send API unreachable: {}",
                    crate::fetch::error_kind(&e)
                ))
            })?;
        let status = resp.status();
        let usage = usage_percent(resp.headers());
        let answer: serde_json::Value = resp.json().await.unwrap_or_default();
        if let Some(pct) = usage.filter(|p| *p >= USAGE_PAUSE_AT) {
            tracing::warn!(channel = %channel, usage_percent = pct, "Meta's usage headers near their limit; replies pause for a minute.");
            self.pause(Duration::from_secs(60));
        }
        if status.is_success() {
            return Ok(());
        }
        match refusal(status.as_u16(), &answer) {
            Refusal::Token(e) => Err(Failure::Token(e)),
            Refusal::RateLimited(e, wait) => {
                self.pause(wait);
                Err(Failure::Paused(e, wait))
            }
            Refusal::OutsideWindow => Err(Failure::Suppress("outside_window".into())),
            Refusal::Unreachable => Err(Failure::Suppress("recipient_unavailable".into())),
            Refusal::Other(e) if status.is_server_error() || status.as_u16() == 429 => {
                Err(Failure::Relay(e))
            }
            Refusal::Other(e) => Err(Failure::Permanent(e)),
        }
    }

    fn pause(&self, d: Duration) {
        let mut p = self.paused_until.lock().expect("pause lock");
        let until = Instant::now() + d.min(self.max_pause);
        if p.is_none_or(|u| u < until) {
            *p = Some(until);
        }
    }
}

/// Reads Meta's error object (`{"error":{"code":…,"error_subcode":…,"message":…}}`).
pub fn refusal(status: u16, answer: &serde_json::Value) -> Refusal {
    let e = &answer["error"];
    let code = e["code"].as_i64().unwrap_or(0);
    let sub = e["error_subcode"].as_i64().unwrap_or(0);
    let msg = strip_ids(e["message"].as_str().unwrap_or("no error message"));
    let said = format!("HTTP {status}, code {code}: {msg}");
    match code {
        190 | 102 | 463 | 467 => Refusal::Token(said),
        4 | 17 | 32 | 613 | 80001 | 80006 => Refusal::RateLimited(said, Duration::from_secs(60)),
        10 if sub == 2018278 || msg.contains("outside of allowed window") => Refusal::OutsideWindow,
        551 => Refusal::Unreachable,
        _ => Refusal::Other(said),
    }
}

/// Meta's messages sometimes name the recipient's id: not for our logs.
pub fn strip_ids(text: &str) -> String {
    static LONG_NUMBER: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\d{9,}").expect("valid regex"));
    LONG_NUMBER.replace_all(text, "<id>").into_owned()
}

/// The highest percentage in `X-App-Usage`, `X-Page-Usage` or `X-Business-Use-Case-Usage`.
fn usage_percent(headers: &reqwest::header::HeaderMap) -> Option<f64> {
    let mut max: Option<f64> = None;
    let mut note = |v: &serde_json::Value| {
        for k in ["call_count", "total_cputime", "total_time"] {
            if let Some(p) = v[k].as_f64() {
                max = Some(max.map_or(p, |m: f64| m.max(p)));
            }
        }
    };
    for h in ["x-app-usage", "x-page-usage"] {
        if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok())
            && let Ok(j) = serde_json::from_str::<serde_json::Value>(v)
        {
            note(&j);
        }
    }
    if let Some(v) = headers
        .get("x-business-use-case-usage")
        .and_then(|v| v.to_str().ok())
        && let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(v)
    {
        for list in m.values() {
            for item in list.as_array().into_iter().flatten() {
                note(item);
            }
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_errors_are_read_into_what_to_do() {
        let e = |code: i64, sub: i64, m: &str| serde_json::json!({"error": {"code": code, "error_subcode": sub, "message": m}});
        assert!(matches!(
            refusal(400, &e(190, 463, "Session has expired")),
            Refusal::Token(_)
        ));
        assert!(matches!(
            refusal(
                400,
                &e(613, 0, "Calls to this api have exceeded the rate limit.")
            ),
            Refusal::RateLimited(..)
        ));
        assert!(matches!(
            refusal(
                400,
                &e(
                    10,
                    2018278,
                    "(#10) This message is sent outside of allowed window."
                )
            ),
            Refusal::OutsideWindow
        ));
        assert!(matches!(
            refusal(400, &e(551, 0, "This person isn't available right now.")),
            Refusal::Unreachable
        ));
        let Refusal::Other(s) = refusal(
            400,
            &e(100, 0, "No matching user found for 7310000000000042"),
        ) else {
            panic!()
        };
        assert!(!s.contains("7310000000000042"), "{s}");
    }

    #[test]
    fn the_highest_usage_percentage_counts() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "x-app-usage",
            r#"{"call_count":28,"total_cputime":25,"total_time":25}"#
                .parse()
                .unwrap(),
        );
        h.insert(
            "x-business-use-case-usage",
            r#"{"104200000000001":[{"type":"pages","call_count":12,"total_cputime":3,"total_time":95,"estimated_time_to_regain_access":0}]}"#.parse().unwrap(),
        );
        assert_eq!(usage_percent(&h), Some(95.0));
    }
}
