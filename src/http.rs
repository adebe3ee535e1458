//! The one HTTP server: `/healthz` (alive), `/readyz` (each channel's and sink's state),
//! `/metrics` (Prometheus) and the webhooks (`/webhooks/facebook/{channel}`).

use crate::channels::facebook::Webhooks;
use crate::health::{Health, State};
use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::{Json, Router, routing::get};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub fn router(health: Health, webhooks: Webhooks) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
        .merge(crate::channels::facebook::routes(webhooks))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// Prometheus scrapes this (OpenMetrics text).
async fn metrics() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::get().render(),
    )
}

/// 200 while no channel or sink needs the operator, 503 when one does or the database cannot take
/// writes (disk full), so a monitor can page someone.
/// `status` is `degraded` while a channel or a sink reconnects on its own, a channel is quiet, or
/// a sink holds dead events (they wait for `phananh outbox retry`).
async fn readyz(Extract(health): Extract<Health>) -> (StatusCode, Json<serde_json::Value>) {
    let channels = health.snapshot();
    let sinks = health.sinks();
    let store_problem = health.store();
    let needs_operator = channels.values().any(|c| c.state == State::NeedsOperator)
        || sinks.values().any(|s| s.state == State::NeedsOperator)
        || store_problem.is_some();
    let all_running = channels
        .values()
        .all(|c| c.state == State::Running && c.quiet_since.is_none())
        && sinks
            .values()
            .all(|s| s.state == State::Running && s.dead == 0);
    let (code, status) = match (needs_operator, all_running) {
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "needs_operator"),
        (false, false) => (StatusCode::OK, "degraded"),
        (false, true) => (StatusCode::OK, "ok"),
    };
    (
        code,
        Json(json!({
            "status": status,
            "store": match store_problem {
                None => json!({ "state": State::Running }),
                Some(p) => json!({ "state": State::NeedsOperator, "error": p.error, "since": p.since }),
            },
            "channels": channels,
            "sinks": sinks,
        })),
    )
}

/// Serves until `cancel` fires, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Health,
    webhooks: Webhooks,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(health, webhooks))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}
