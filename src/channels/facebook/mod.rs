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
use crate::store::{Outcome, StoreError, Submission, SubmissionBody};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Conversations closed at once (each may be downloading photos).
const CLOSE_CONCURRENCY: usize = 4;

/// Registers the webhook, then closes conversations as they fall due, until cancelled. The
/// webhook stays registered whatever the assembler meets: a conversation that cannot be closed
/// now is tried again with backoff, and the others go on.
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
    // Stopped when the channel task ends, whichever way it ends.
    let _stop_checks = tokio_util::task::AbortOnDropHandle::new(checks);
    let assembler = Assembler {
        name: name.to_string(),
        cfg: cfg.clone(),
        intake: intake.clone(),
        reader: Arc::new(Mutex::new(intake.store().reader()?)),
        graph: graph::client(),
        fetcher: crate::fetch::Fetcher::new(
            &cfg.media_hosts,
            cfg.max_media_size,
            Duration::from_secs(30),
        ),
        failures: Mutex::new(HashMap::new()),
    };
    let mut watch = intake.store().outbox_watch();
    loop {
        let wait = match assembler.round(&cancel).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(channel = %name, error = %e, "Cannot read conversations; trying again shortly.");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = watch.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

struct Assembler {
    name: String,
    cfg: FacebookConfig,
    intake: Arc<Intake>,
    reader: Arc<Mutex<rusqlite::Connection>>,
    graph: Option<reqwest::Client>,
    fetcher: crate::fetch::Fetcher,
    /// Conversations that failed to close: how often, and not before when.
    failures: Mutex<HashMap<i64, (u32, Instant)>>,
}

impl Assembler {
    /// Closes what is due; returns how long to wait for the next.
    async fn round(&self, cancel: &CancellationToken) -> Result<Duration, StoreError> {
        let quiet = self.cfg.assemble_quiet.as_millis() as i64;
        let max = self.cfg.assemble_max.as_millis() as i64;
        let now = chrono::Utc::now().timestamp_millis();
        let name = self.name.clone();
        let due = self
            .read(move |c| conversations::due(c, &name, now - quiet, now - max))
            .await?;
        let due: Vec<i64> = {
            let f = self.failures.lock().expect("failures lock");
            let t = Instant::now();
            due.into_iter()
                .filter(|c| f.get(c).is_none_or(|(_, next)| *next <= t))
                .collect()
        };
        futures::stream::iter(due)
            .for_each_concurrent(CLOSE_CONCURRENCY, |conversation| async move {
                if cancel.is_cancelled() {
                    return;
                }
                match self.close(conversation, now - max).await {
                    Ok(()) => {
                        self.failures
                            .lock()
                            .expect("failures lock")
                            .remove(&conversation);
                    }
                    Err(e) => {
                        let mut f = self.failures.lock().expect("failures lock");
                        let n = f.get(&conversation).map_or(1, |(n, _)| n + 1);
                        let d = crate::backoff::delay(
                            n,
                            Duration::from_secs(1),
                            Duration::from_secs(300),
                        );
                        tracing::warn!(channel = %self.name, conversation, error = format!("{e:#}"), retry_in = ?d, "Cannot close a conversation yet; the others go on.");
                        f.insert(conversation, (n, Instant::now() + d));
                    }
                }
            })
            .await;
        let name = self.name.clone();
        let next = self
            .read(move |c| conversations::next_due_ms(c, &name, quiet, max))
            .await?;
        Ok(next
            .map(|ms| ms - chrono::Utc::now().timestamp_millis())
            .map(|ms| Duration::from_millis(ms.clamp(20, 5_000) as u64))
            .unwrap_or(Duration::from_secs(5)))
    }

    /// Makes the conversation's report (or update) and commits it with the conversation's close.
    async fn close(&self, conversation: i64, max_before_ms: i64) -> anyhow::Result<()> {
        let conversations::Snapshot {
            psid,
            rev,
            opened_ms,
            fragments,
        } = self
            .read(move |c| conversations::fragments(c, conversation))
            .await?;
        let read = conversations::Read {
            rev,
            fragment_ids: fragments.iter().map(|(id, _)| *id).collect(),
            overdue: opened_ms <= max_before_ms,
        };
        let fragments: Vec<Fragment> = fragments.into_iter().map(|(_, f)| f).collect();
        let feed = fragments.iter().any(|f| f.mid.starts_with("feed:"));
        let sender = match (&self.graph, self.cfg.fetch_names && !feed) {
            (Some(c), true) => graph::sender_name(c, &self.cfg, &psid).await,
            _ => None,
        };
        let (media, omitted, photo_place) = media::collect(
            &self.fetcher,
            self.intake.media(),
            &self.name,
            &fragments,
            self.intake.tz(),
        )
        .await?;
        let mut draft = draft_from(
            &psid,
            &fragments,
            media,
            omitted,
            self.intake.tz(),
            self.intake.default_category(),
        );
        draft.reporter.name = sender;
        // Messenger strips EXIF from photos; a photo sent another way may still carry it.
        if draft.location.is_none() {
            draft.location = photo_place.map(|p| p.location());
        }
        self.intake.classify(&mut draft);
        let receipt = self
            .intake
            .store()
            .submit(Submission {
                channel: self.name.clone(),
                kind: "facebook".into(),
                raw: Vec::new(),
                raw_sha256: String::new(),
                source_ref: None,
                received_at: chrono::Utc::now()
                    .with_timezone(&self.intake.tz())
                    .fixed_offset(),
                body: SubmissionBody::Assembled {
                    conversation,
                    read,
                    draft: Box::new(draft),
                },
                // Messenger can answer a Messenger sender only; feed authors have no thread.
                acknowledge: self.cfg.reply && !feed,
            })
            .await?;
        let name = &self.name;
        match &receipt.outcome {
            Outcome::Created { report } => {
                tracing::info!(channel = %name, tracking_code = %report.tracking_code, messages = fragments.len(), "Conversation closed into a report.")
            }
            Outcome::FollowUp { report } => {
                tracing::info!(channel = %name, tracking_code = %report.tracking_code, messages = fragments.len(), "Conversation added to its report.")
            }
            Outcome::Duplicate { report, of } => {
                tracing::info!(channel = %name, tracking_code = %report.tracking_code, duplicate_of = %of.tracking_code, "Conversation closed into a duplicate report.")
            }
            _ => {}
        }
        Ok(())
    }

    /// Runs a read off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&reader.lock().expect("reader lock")))
            .await
            .map_err(|e| StoreError::Invalid(format!("reader stopped: {e}")))?
    }
}

/// The part of the channel's settings intake needs to read its events.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub page_id: String,
    pub update_window: Duration,
    pub feed: crate::config::FeedMode,
}
