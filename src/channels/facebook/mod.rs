//! The `facebook` channel: Meta's webhooks for a page's Messenger conversations (and, when asked,
//! its feed). The webhook (`webhook.rs`) verifies, splits and commits each event before it answers
//! 200; the channel task registers the webhook and runs the assembler, which closes each sender's
//! conversation into one report when they go quiet (`assemble.rs`).

mod assemble;
mod event;
mod graph;
mod media;
mod webhook;

pub use assemble::draft_from;
pub use event::{Attachment, FeedItem, Fragment, Item, Parsed, external_id, parse, split};
pub use webhook::{Endpoint, Webhooks, routes};

use crate::config::FacebookConfig;
use crate::intake::Intake;
use crate::store::conversations;
use crate::store::{Submission, SubmissionBody};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Registers the webhook, then closes conversations as they fall due, until cancelled.
pub async fn run(
    name: &str,
    cfg: &FacebookConfig,
    intake: Arc<Intake>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let endpoint = Endpoint::new(name, cfg, intake.clone())?;
    let _registered = intake.webhooks().register(endpoint);
    tracing::info!(channel = %name, path = %format!("/webhooks/facebook/{name}"), "Facebook channel started.");
    if !cancel.is_cancelled() {
        intake
            .health()
            .set(name, crate::health::State::Running, None);
    }
    // The page token and the subscription, checked beside intake (which never waits on them).
    let checks = tokio::spawn(graph::watch(
        name.to_string(),
        cfg.clone(),
        intake.health().clone(),
        cancel.child_token(),
    ));
    let _stop_checks = AbortOnDrop(checks);
    let reader = intake.store().reader()?;
    let graph_client = graph::client();
    let fetcher = crate::fetch::Fetcher::new(
        &cfg.media_hosts,
        cfg.max_media_size,
        std::time::Duration::from_secs(30),
    );
    let quiet = cfg.assemble_quiet.as_millis() as i64;
    let max = cfg.assemble_max.as_millis() as i64;
    let mut watch = intake.store().outbox_watch();
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        let due = conversations::due(&reader, name, now - quiet, now - max)?;
        for conversation in due {
            if cancel.is_cancelled() {
                break;
            }
            let (psid, fragments) = conversations::fragments(&reader, conversation)?;
            let sender = match (&graph_client, cfg.fetch_names) {
                (Some(c), true) if !fragments.iter().any(|f| f.mid.starts_with("feed:")) => {
                    graph::sender_name(c, cfg, &psid).await
                }
                _ => None,
            };
            let closing = Closing {
                conversation,
                psid,
                sender,
                fragments,
            };
            close(name, &fetcher, &intake, cfg.reply, closing).await?;
        }
        let next = conversations::next_due_ms(&reader, name, quiet, max)?;
        let wait = next
            .map(|ms| ms - chrono::Utc::now().timestamp_millis())
            .map(|ms| Duration::from_millis(ms.clamp(20, 5_000) as u64))
            .unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = watch.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A conversation due to close: what the assembler read of it.
struct Closing {
    conversation: i64,
    psid: String,
    /// From the Graph API, with `fetch_names`.
    sender: Option<String>,
    fragments: Vec<Fragment>,
}

/// Makes the conversation's report (or update) and commits it with the conversation's close.
async fn close(
    name: &str,
    fetcher: &crate::fetch::Fetcher,
    intake: &Intake,
    reply: bool,
    closing: Closing,
) -> anyhow::Result<()> {
    let Closing {
        conversation,
        psid,
        sender,
        fragments,
    } = closing;
    let (media, omitted) = media::collect(fetcher, intake.media(), name, &fragments).await?;
    let mut draft = draft_from(
        &psid,
        &fragments,
        media,
        omitted,
        intake.tz(),
        intake.default_category(),
    );
    draft.reporter.name = sender;
    let receipt = intake
        .store()
        .submit(Submission {
            channel: name.to_string(),
            kind: "facebook".into(),
            raw: Vec::new(),
            raw_sha256: String::new(),
            source_ref: None,
            received_at: chrono::Utc::now()
                .with_timezone(&intake.tz())
                .fixed_offset(),
            body: SubmissionBody::Assembled {
                conversation,
                fragments: fragments.len(),
                draft: Box::new(draft),
            },
            // Messenger can answer a Messenger sender only; feed authors are not in a thread.
            acknowledge: reply
                && !fragments
                    .first()
                    .is_some_and(|f| f.mid.starts_with("feed:")),
        })
        .await?;
    match &receipt.outcome {
        crate::store::Outcome::Created { report } => {
            tracing::info!(channel = %name, tracking_code = %report.tracking_code, messages = fragments.len(), "Conversation closed into a report.")
        }
        crate::store::Outcome::FollowUp { report } => {
            tracing::info!(channel = %name, tracking_code = %report.tracking_code, messages = fragments.len(), "Conversation added to its report.")
        }
        crate::store::Outcome::Duplicate { report, of } => {
            tracing::info!(channel = %name, tracking_code = %report.tracking_code, duplicate_of = %of.tracking_code, "Conversation closed into a duplicate report.")
        }
        _ => {}
    }
    Ok(())
}

/// Stops the page checks when the channel task ends, whichever way it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The part of the channel's settings intake needs to read its events.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub page_id: String,
    pub update_window: Duration,
    pub feed: crate::config::FeedMode,
}
