//! Quiet-channel detection: a channel that has stored nothing for its `quiet_after` is shown as
//! quiet in `/readyz` (degraded) and logged once at WARN. A mailbox that moved, a webhook Meta
//! stopped sending, a portal that broke its feed: each looks like silence, not like an error.

use crate::intake::Intake;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Watches one channel until `cancel` (its reload or shutdown) fires.
pub async fn watch(
    channel: String,
    quiet_after: Duration,
    intake: Arc<Intake>,
    cancel: CancellationToken,
) {
    let started_ms = chrono::Utc::now().timestamp_millis();
    // The last item stored before this start, so a restart does not hide a long silence.
    let store = intake.store().clone();
    let name = channel.clone();
    let before = tokio::task::spawn_blocking(move || {
        let conn = store.reader().ok()?;
        crate::store::queries::last_received_ms(&conn, &name).ok()?
    })
    .await
    .ok()
    .flatten();
    let every = (quiet_after / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let seen = crate::metrics::get().last_item_ms(&channel);
        // Never stored anything: the silence counts from this start.
        let last = seen.or(before).unwrap_or(started_ms);
        let silent_ms = chrono::Utc::now().timestamp_millis() - last;
        let quiet = silent_ms > quiet_after.as_millis() as i64;
        if intake.health().set_quiet(&channel, quiet) {
            if quiet {
                tracing::warn!(channel = %channel, quiet_for = ?Duration::from_millis(silent_ms.max(0) as u64), "Channel is quiet: no item for longer than its quiet_after.");
            } else {
                tracing::info!(channel = %channel, "Channel is receiving again.");
            }
        }
    }
}
