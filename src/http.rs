//! The one HTTP server: `/healthz` now; webhooks, `/readyz` and `/metrics` join it later.

use axum::{Json, Router, routing::get};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub fn router() -> Router {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// Serves until `cancel` fires, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}
