//! Channels: where reports come from. Each kind is a folder; this file holds what they share:
//! the [`Envelope`] a channel hands to intake, and the supervisor that keeps a channel running.

pub mod email;
pub mod facebook;
pub mod feed;
pub mod imap;
pub mod maildir;
pub mod quiet;

use crate::config::{ChannelConfig, ChannelKind, ChannelSettings};
use crate::intake::Intake;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One inbound item exactly as it arrived, before anything is derived from it.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub channel: String,
    pub kind: ChannelKind,
    pub raw: Vec<u8>,
    /// Where it came from in the channel's own terms (a Maildir file name): no personal data.
    pub source_ref: Option<String>,
}

/// Runs one channel until `cancel` fires, restarting it with backoff whenever it fails.
pub async fn supervise(channel: ChannelConfig, intake: Arc<Intake>, cancel: CancellationToken) {
    use crate::health::State;
    let mut failures: u32 = 0;
    intake.health().set(&channel.name, State::Starting, None);
    loop {
        let started = std::time::Instant::now();
        let result = match &channel.settings {
            ChannelSettings::Maildir(cfg) => {
                maildir::run(&channel.name, cfg, intake.clone(), cancel.clone()).await
            }
            ChannelSettings::Imap(cfg) => {
                imap::run(&channel.name, cfg, intake.clone(), cancel.clone()).await
            }
            ChannelSettings::Facebook(cfg) => {
                facebook::run(&channel.name, cfg, intake.clone(), cancel.clone()).await
            }
            ChannelSettings::Feed(cfg) => {
                feed::run(&channel.name, cfg, intake.clone(), cancel.clone()).await
            }
        };
        // Stopped by a reload or shutdown: the health entry is the new task's (or gone).
        if cancel.is_cancelled() {
            return;
        }
        // A channel that ran a while before failing starts its backoff afresh.
        if started.elapsed() > Duration::from_secs(300) {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let delay =
            crate::backoff::delay(failures, Duration::from_secs(1), Duration::from_secs(300));
        match result {
            Ok(()) => {
                intake
                    .health()
                    .set(&channel.name, State::Reconnecting, None);
                tracing::warn!(channel = %channel.name, retry_in = ?delay, "Channel stopped; restarting.")
            }
            Err(e) => {
                // A channel waiting for the operator keeps saying so until it is fixed.
                let waiting = intake
                    .health()
                    .snapshot()
                    .get(&channel.name)
                    .is_some_and(|h| h.state == State::NeedsOperator);
                if !waiting {
                    intake
                        .health()
                        .set(&channel.name, State::Reconnecting, Some(format!("{e:#}")));
                }
                tracing::warn!(channel = %channel.name, retry_in = ?delay, error = format!("{e:#}"), "Channel failed; restarting.")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
