//! The `http` sink: each event POSTed as JSON to the receiver's URL, with `Idempotency-Key` (the
//! event id, so a receiver drops repeats), `X-Phananh-Event` (its type) and, when a secret is
//! configured, `sha256=<hex HMAC-SHA256 of the body>` in the signature header. 2xx is delivered;
//! 408, 429 and 5xx are retried (honouring Retry-After); 401 and 403 wait for the operator; any
//! other answer is permanent. Redirects
//! are not followed: a receiver that moved is a configuration change, not something to guess.

use super::{Outgoing, SinkError};
use crate::config::HttpSettings;
use crate::config::secrets::SecretRef;
use futures::StreamExt;
use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use std::sync::Mutex;

#[derive(Debug)]
pub struct HttpSink {
    url: reqwest::Url,
    client: reqwest::Client,
    secret: Option<SecretRef>,
    signature_header: reqwest::header::HeaderName,
    window: usize,
}

impl HttpSink {
    pub fn new(s: HttpSettings) -> Result<Self, String> {
        let tls = crate::fetch::tls_config_with(s.ca_file.as_deref())?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(s.timeout)
            .connect_timeout(s.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("phananh/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            url: reqwest::Url::parse(&s.url).map_err(|e| format!("url: {e}"))?,
            client,
            secret: s.secret,
            signature_header: reqwest::header::HeaderName::from_bytes(
                s.signature_header.as_bytes(),
            )
            .map_err(|e| format!("signature_header: {e}"))?,
            window: s.window,
        })
    }

    /// Posts up to `window` events at once and answers in the events' order. Once the receiver
    /// cannot be reached or stops answering in time, the events not yet sent are left untried, so a
    /// hung receiver costs one timeout per window, not one per event.
    pub async fn deliver(&self, events: &[Outgoing]) -> Vec<Result<(), SinkError>> {
        // Read at every round, so a rotated secret takes effect without a reload.
        let key = match self.secret.as_ref().map(SecretRef::resolve).transpose() {
            Ok(k) => k,
            Err(e) => return vec![Err(SinkError::Refused(e)); events.len()],
        };
        let stop = Mutex::new(None);
        let posts: Vec<_> = events
            .iter()
            .map(|ev| self.post(ev, key.as_deref(), &stop))
            .collect();
        futures::stream::iter(posts)
            .buffered(self.window)
            .collect()
            .await
    }

    async fn post(
        &self,
        ev: &Outgoing,
        key: Option<&str>,
        stop: &Mutex<Option<String>>,
    ) -> Result<(), SinkError> {
        if let Some(cause) = stop.lock().expect("stop lock").as_ref() {
            return Err(SinkError::Unavailable(format!("not sent: {cause}")));
        }
        let mut req = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", &ev.event_id)
            .header("X-Phananh-Event", &ev.event_type)
            .body(ev.payload.clone());
        if let Some(key) = key {
            req = req.header(&self.signature_header, sign(key, ev.payload.as_bytes()));
        }
        match req.send().await {
            Ok(resp) => judge(resp.status(), resp.headers()),
            Err(e) => {
                let what = format!("receiver: {}", crate::fetch::error_kind(&e));
                if e.is_connect() || e.is_timeout() {
                    stop.lock()
                        .expect("stop lock")
                        .get_or_insert_with(|| what.clone());
                }
                if e.is_connect() {
                    Err(SinkError::Unavailable(what))
                } else {
                    Err(SinkError::Transient(what))
                }
            }
        }
    }
}

/// `sha256=<hex>`: the form GitHub and Meta use, so receivers have code for it already.
pub fn sign(key: &str, body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn judge(status: StatusCode, headers: &reqwest::header::HeaderMap) -> Result<(), SinkError> {
    let what = format!("receiver answered {}", status.as_u16());
    if status.is_success() {
        Ok(())
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        match crate::fetch::retry_after(headers) {
            Some(after) => Err(SinkError::RetryAfter(what, after)),
            None => Err(SinkError::Transient(what)),
        }
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        // Our signature or access was refused (a rotated key): every event would go dead, so
        // they wait for the operator instead.
        Err(SinkError::Refused(format!(
            "{what}: the receiver refused our signature or access"
        )))
    } else if status.is_redirection() {
        Err(SinkError::Permanent(format!(
            "{what} (a redirect; set the sink's url to the new address)"
        )))
    } else {
        Err(SinkError::Permanent(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_judged_as_the_issue_says() {
        let none = reqwest::header::HeaderMap::new();
        assert!(judge(StatusCode::OK, &none).is_ok());
        assert!(judge(StatusCode::ACCEPTED, &none).is_ok());
        for s in [408, 429, 500, 502, 503] {
            let s = StatusCode::from_u16(s).unwrap();
            assert!(
                matches!(judge(s, &none), Err(SinkError::Transient(_))),
                "{s}"
            );
        }
        for s in [401, 403] {
            let s = StatusCode::from_u16(s).unwrap();
            assert!(matches!(judge(s, &none), Err(SinkError::Refused(_))), "{s}");
        }
        for s in [400, 404, 409, 422, 301] {
            let s = StatusCode::from_u16(s).unwrap();
            assert!(
                matches!(judge(s, &none), Err(SinkError::Permanent(_))),
                "{s}"
            );
        }
        let mut later = reqwest::header::HeaderMap::new();
        later.insert(reqwest::header::RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(
            judge(StatusCode::SERVICE_UNAVAILABLE, &later),
            Err(SinkError::RetryAfter(
                "receiver answered 503".into(),
                std::time::Duration::from_secs(120)
            ))
        );
    }

    #[test]
    fn the_signature_is_the_hmac_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
