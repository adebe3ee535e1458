//! Health of the page's link to Meta, checked at start and every `CHECK_EVERY`: is the page
//! token accepted (`/me`), and is our app still subscribed to the page's messages
//! (`/{page}/subscribed_apps`)? Meta unsubscribes an app whose webhook failed for an hour; we
//! subscribe it again and say so. Shown in `/readyz` as `CHANNEL:graph`; nothing personal in it.

use crate::config::FacebookConfig;
use crate::health::{Health, State};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CHECK_EVERY: Duration = Duration::from_secs(600);
/// The webhook fields phananh reads.
fn fields(cfg: &FacebookConfig) -> &'static str {
    match cfg.feed {
        crate::config::FeedMode::Off => "messages,message_echoes,message_edits",
        _ => "messages,message_echoes,message_edits,feed",
    }
}

pub async fn watch(name: String, cfg: FacebookConfig, health: Health, cancel: CancellationToken) {
    let Some(token) = cfg.page_access_token() else {
        return;
    };
    let key = format!("{name}:graph");
    let client = match reqwest::Client::builder()
        .tls_backend_preconfigured(crate::fetch::tls_config())
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            health.set(
                &key,
                State::NeedsOperator,
                Some(format!("cannot set up HTTPS: {e}")),
            );
            return;
        }
    };
    loop {
        let verdict = match token.resolve() {
            Ok(t) => check(&client, &cfg, &t).await,
            Err(e) => Verdict::Operator(e),
        };
        if cancel.is_cancelled() {
            return;
        }
        match verdict {
            Verdict::Ok => health.set(&key, State::Running, None),
            Verdict::Resubscribed => {
                tracing::warn!(channel = %name, "The app was no longer subscribed to the page's messages (Meta drops it after an hour of failed webhooks); subscribed it again.");
                health.set(&key, State::Running, None);
            }
            Verdict::Operator(e) => {
                tracing::error!(channel = %name, error = %e, "Facebook page check failed; the operator must act.");
                health.set(&key, State::NeedsOperator, Some(e));
            }
            Verdict::Later(e) => {
                tracing::warn!(channel = %name, error = %e, "Facebook page check could not run; trying again later.");
                health.set(&key, State::Reconnecting, Some(e));
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

enum Verdict {
    Ok,
    Resubscribed,
    /// A refused token or permission: retrying will not help.
    Operator(String),
    /// Meta unreachable or failing: the next check may pass.
    Later(String),
}

async fn check(client: &reqwest::Client, cfg: &FacebookConfig, token: &str) -> Verdict {
    let base = format!(
        "{}/{}",
        cfg.graph_api_base.trim_end_matches('/'),
        cfg.graph_api_version
    );
    let me = match call(
        client
            .get(format!("{base}/me?fields=id"))
            .bearer_auth(token),
    )
    .await
    {
        Ok(v) => v,
        Err(v) => return v,
    };
    if me["id"].as_str() != Some(cfg.page_id.as_str()) {
        return Verdict::Operator(
            "the page access token belongs to another page (or is a user token)".into(),
        );
    }
    let subs = match call(
        client
            .get(format!("{base}/{}/subscribed_apps", cfg.page_id))
            .bearer_auth(token),
    )
    .await
    {
        Ok(v) => v,
        Err(v) => return v,
    };
    // Every field this channel needs, on one app (Meta does not tell us which app is ours).
    let needed: Vec<&str> = fields(cfg).split(',').collect();
    let subscribed = subs["data"].as_array().into_iter().flatten().any(|app| {
        let has: Vec<&str> = app["subscribed_fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .collect();
        needed.iter().all(|f| has.contains(f))
    });
    if subscribed {
        return Verdict::Ok;
    }
    match call(
        client
            .post(format!(
                "{base}/{}/subscribed_apps?subscribed_fields={}",
                cfg.page_id,
                fields(cfg)
            ))
            .bearer_auth(token),
    )
    .await
    {
        Ok(v) if v["success"].as_bool() == Some(true) => Verdict::Resubscribed,
        Ok(_) => Verdict::Operator(
            "the app is not subscribed to the page's messages and could not subscribe itself"
                .into(),
        ),
        Err(v) => v,
    }
}

/// A Graph API client for the page (rustls on ring, our roots).
pub fn client() -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(crate::fetch::tls_config())
        .timeout(Duration::from_secs(30))
        .build()
        .ok()
}

/// The sender's display name, when the page may read it; None otherwise (never an error: the
/// report goes ahead with the PSID).
pub async fn sender_name(
    client: &reqwest::Client,
    cfg: &FacebookConfig,
    psid: &str,
) -> Option<String> {
    let token = cfg.page_access_token()?.resolve().ok()?;
    let url = format!(
        "{}/{}/{psid}?fields=name",
        cfg.graph_api_base.trim_end_matches('/'),
        cfg.graph_api_version
    );
    match call(client.get(url).bearer_auth(token)).await {
        Ok(v) => v["name"]
            .as_str()
            .map(crate::pipeline::text::clean_text)
            .filter(|n| !n.is_empty()),
        Err(Verdict::Operator(e) | Verdict::Later(e)) => {
            tracing::debug!(error = %e, "Sender name not available.");
            None
        }
        Err(_) => None,
    }
}

async fn call(req: reqwest::RequestBuilder) -> Result<serde_json::Value, Verdict> {
    let resp = req.send().await.map_err(|e| {
        Verdict::Later(format!(
            "Graph API unreachable ({})",
            crate::fetch::error_kind(&e)
        ))
    })?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    let code = body["error"]["code"].as_i64().unwrap_or(0);
    let said = format!(
        "HTTP {}, code {code}: {}",
        status.as_u16(),
        crate::ack::strip_ids(body["error"]["message"].as_str().unwrap_or("no message"))
    );
    Err(match code {
        190 | 102 | 463 | 467 | 10 | 200 | 230 => Verdict::Operator(said),
        _ => Verdict::Later(said),
    })
}
