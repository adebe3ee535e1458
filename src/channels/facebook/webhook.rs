//! `/webhooks/facebook/{channel}`: the subscription handshake (GET) and event delivery (POST).
//!
//! A POST is answered 200 only after every event in it is committed; a bad or missing signature is
//! refused before anything is parsed or stored; a body over the channel's limit is refused while
//! it is read. An event we cannot read is quarantined, never a reason to fail its neighbours.

use super::event;
use crate::channels::Envelope;
use crate::config::{ChannelKind, FacebookConfig};
use crate::intake::{Intake, ParseRules};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, KeyInit, Mac};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use subtle::ConstantTimeEq;

/// One registered channel's webhook: its secrets (read when the channel starts, so a reload picks
/// up new ones) and where its events go.
pub struct Endpoint {
    channel: String,
    page_id: String,
    app_secrets: Vec<Vec<u8>>,
    verify_token: String,
    max_body: usize,
    rules: ParseRules,
    intake: Arc<Intake>,
}

impl Endpoint {
    pub fn new(name: &str, cfg: &FacebookConfig, intake: Arc<Intake>) -> anyhow::Result<Self> {
        let secrets = cfg.app_secret().resolve().map_err(anyhow::Error::msg)?;
        // Two lines while the app secret is rotated: either one signs.
        let app_secrets: Vec<Vec<u8>> = secrets
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| l.as_bytes().to_vec())
            .collect();
        anyhow::ensure!(!app_secrets.is_empty(), "the app secret is empty");
        let verify_token = cfg.verify_token().resolve().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(!verify_token.is_empty(), "the verify token is empty");
        Ok(Self {
            channel: name.to_string(),
            page_id: cfg.page_id.clone(),
            app_secrets,
            verify_token,
            max_body: cfg.max_body_size as usize,
            rules: ParseRules {
                email: intake.email_defaults(),
                acknowledge: cfg.reply,
                facebook: Some(super::Rules {
                    page_id: cfg.page_id.clone(),
                    update_window: cfg.update_window,
                    feed: cfg.feed,
                }),
                feed: None,
            },
            intake,
        })
    }

    /// X-Hub-Signature-256 over the raw bytes, in constant time, against every current secret.
    fn signed(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), StatusCode> {
        let header = headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok())
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let hex_sig = header
            .strip_prefix("sha256=")
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let sig = hex::decode(hex_sig.trim()).map_err(|_| StatusCode::FORBIDDEN)?;
        let ok = self.app_secrets.iter().any(|secret| {
            let mut mac =
                Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
            mac.update(body);
            mac.verify_slice(&sig).is_ok()
        });
        if ok {
            Ok(())
        } else {
            Err(StatusCode::FORBIDDEN)
        }
    }
}

/// The channels that take webhooks now, by name. Channels register when they start and leave
/// when they stop, so a reload swaps secrets without restarting the HTTP server.
#[derive(Clone, Default)]
pub struct Webhooks(Arc<RwLock<HashMap<String, Arc<Endpoint>>>>);

/// Unregisters its channel when dropped (the channel task ended).
pub struct Registration {
    webhooks: Webhooks,
    channel: String,
    endpoint: Arc<Endpoint>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.webhooks.0.write().expect("webhooks lock");
        // A restarted channel may have registered its successor already: leave that one.
        if map
            .get(&self.channel)
            .is_some_and(|e| Arc::ptr_eq(e, &self.endpoint))
        {
            map.remove(&self.channel);
        }
    }
}

impl Webhooks {
    pub fn register(&self, endpoint: Endpoint) -> Registration {
        let endpoint = Arc::new(endpoint);
        let channel = endpoint.channel.clone();
        self.0
            .write()
            .expect("webhooks lock")
            .insert(channel.clone(), endpoint.clone());
        Registration {
            webhooks: self.clone(),
            channel,
            endpoint,
        }
    }

    fn get(&self, channel: &str) -> Option<Arc<Endpoint>> {
        self.0.read().expect("webhooks lock").get(channel).cloned()
    }
}

pub fn routes(webhooks: Webhooks) -> Router {
    Router::new()
        .route("/webhooks/facebook/{channel}", get(handshake).post(deliver))
        .with_state(webhooks)
}

/// `hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`: the challenge back, verbatim.
async fn handshake(
    State(webhooks): State<Webhooks>,
    Path(channel): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(ep) = webhooks.get(&channel) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let token = q
        .get("hub.verify_token")
        .map(String::as_bytes)
        .unwrap_or_default();
    let token_ok: bool = token.ct_eq(ep.verify_token.as_bytes()).into();
    match (
        q.get("hub.mode").map(String::as_str),
        q.get("hub.challenge"),
    ) {
        (Some("subscribe"), Some(challenge)) if token_ok => {
            tracing::info!(channel = %channel, "Facebook webhook subscription verified.");
            (StatusCode::OK, challenge.clone()).into_response()
        }
        _ => {
            tracing::warn!(channel = %channel, "Facebook webhook handshake refused: wrong verify token or mode.");
            StatusCode::FORBIDDEN.into_response()
        }
    }
}

async fn deliver(
    State(webhooks): State<Webhooks>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(ep) = webhooks.get(&channel) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bytes = match axum::body::to_bytes(body, ep.max_body).await {
        Ok(b) => b,
        Err(_) => {
            tracing::warn!(channel = %channel, limit = ep.max_body, "Facebook webhook body over max_body_size, or broken; refused.");
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        }
    };
    if let Err(code) = ep.signed(&headers, &bytes) {
        tracing::warn!(channel = %channel, status = code.as_u16(), "Facebook webhook with a missing or wrong signature; nothing stored.");
        return code.into_response();
    }
    let page_id = ep.page_id.clone();
    let body = bytes.clone();
    // Parsing a large body is CPU work: off the async threads.
    let split = tokio::task::spawn_blocking(move || event::split(&body, &page_id))
        .await
        .unwrap_or_else(|e| Err(event::BadBody(format!("the parser stopped: {e}"))));
    let items = match split {
        Ok(items) => items,
        Err(bad) => {
            // Signed by Meta but unreadable: kept whole in quarantine, and answered 200 so Meta
            // does not send it again and again.
            let env = envelope(&ep, bytes.to_vec());
            return match ep.intake.quarantine(env, bad.to_string()).await {
                Ok(r) => {
                    tracing::warn!(channel = %channel, inbox_id = r.inbox_id, reason = %bad, "Facebook webhook body quarantined.");
                    StatusCode::OK.into_response()
                }
                Err(e) => unavailable(&channel, &e.to_string()),
            };
        }
    };
    let n = items.len();
    let results = futures::future::join_all(items.into_iter().map(|item| {
        let env = envelope(&ep, item.raw);
        let rules = &ep.rules;
        let intake = &ep.intake;
        async move {
            match item.refused {
                Some(reason) => intake.quarantine(env, reason).await,
                None => intake.submit(env, rules).await,
            }
        }
    }))
    .await;
    if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
        // Nothing is lost: what was committed is recognised when Meta sends the body again.
        return unavailable(&channel, &e.to_string());
    }
    tracing::debug!(channel = %channel, events = n, "Facebook webhook committed.");
    StatusCode::OK.into_response()
}

fn envelope(ep: &Endpoint, raw: Vec<u8>) -> Envelope {
    Envelope {
        channel: ep.channel.clone(),
        kind: ChannelKind::Facebook,
        raw,
        source_ref: None,
    }
}

fn unavailable(channel: &str, error: &str) -> Response {
    tracing::warn!(channel = %channel, error, "Cannot commit a Facebook webhook; answered 503 so Meta sends it again.");
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}
