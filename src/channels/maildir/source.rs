//! The maildir loop: inotify wakes it, a periodic full scan backs inotify up (missed events,
//! overflow, files present at start).

use crate::channels::Envelope;
use crate::config::units::human_size;
use crate::config::{AfterIngest, ChannelKind, MaildirConfig};
use crate::intake::{Intake, IntakeError, ParseRules};
use crate::store::{Outcome, Receipt};
use notify::Watcher;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Bytes of message text held in memory at once across a scan, whatever the concurrency.
const MEMORY_BUDGET: usize = 64 << 20;
/// Of a message too large to read, this much is kept in the quarantine row.
const QUARANTINE_HEAD: usize = 64 << 10;
/// The Maildir++ folder that oversized messages are moved to, intact.
const QUARANTINE_FOLDER: &str = ".Quarantine";

#[derive(Default, Debug)]
struct Tally {
    created: usize,
    duplicates: usize,
    quarantined: usize,
    /// Written by a machine: stored, not a report.
    automated: usize,
    /// Added to the report they cite.
    follow_ups: usize,
    /// Received before and now moved out of new/ (a crash had come between commit and move).
    redelivered: usize,
    vanished: usize,
    /// Not stored: stays in new/.
    failed: usize,
    /// Stored, but the move out of new/ failed: rescanning at once would only repeat that.
    stuck: usize,
}

impl Tally {
    /// Messages that left new/ in this pass.
    fn progress(&self) -> usize {
        self.created
            + self.duplicates
            + self.quarantined
            + self.automated
            + self.follow_ups
            + self.redelivered
    }
}

pub async fn run(
    name: &str,
    cfg: &MaildirConfig,
    intake: Arc<Intake>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context;
    for sub in ["tmp", "cur", "new"] {
        let d = cfg.path.join(sub);
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    if let AfterIngest::Move(folder) = &cfg.after_ingest {
        for sub in ["tmp", "cur", "new"] {
            let d = cfg.path.join(folder).join(sub);
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
        }
    }

    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if wakes_a_scan(&res) {
            let _ = wake_tx.try_send(());
        }
    })
    .context("cannot start the file watcher")?;
    let new_dir = cfg.path.join("new");
    if let Err(e) = watcher.watch(&new_dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(channel = %name, error = %e, "Cannot watch new/; relying on the periodic scan.");
    }
    tracing::info!(channel = %name, scan_interval = ?cfg.scan_interval, "Maildir channel started.");
    if !cancel.is_cancelled() {
        intake
            .health()
            .set(name, crate::health::State::Running, None);
    }

    let rules = ParseRules {
        email: cfg.limits(&intake.email_defaults()),
        acknowledge: cfg.ack.is_some(),
        facebook: None,
        feed: None,
    };
    let budget = Arc::new(Semaphore::new(MEMORY_BUDGET >> 10));
    // Files that failed (not stored, or stored but stuck in new/) are retried by the periodic
    // scan only: a scan woken by an arrival skips them, so one bad file costs nothing per arrival
    // and never delays the others, and a store that is down is retried at the scan interval.
    let mut troubled: HashSet<String> = HashSet::new();
    let mut full_scan = true;
    loop {
        // Scan until a pass makes no progress: mail that arrived while we worked is taken at once.
        loop {
            let skip = if full_scan {
                HashSet::new()
            } else {
                troubled.clone()
            };
            let (tally, trouble) =
                scan(name, cfg, &intake, &rules, &budget, &cancel, &skip).await?;
            if full_scan {
                troubled = trouble;
            } else {
                troubled.extend(trouble);
            }
            full_scan = false;
            if tally.progress() > 0 {
                tracing::info!(
                    channel = %name,
                    created = tally.created,
                    duplicates = tally.duplicates,
                    quarantined = tally.quarantined,
                    automated = tally.automated,
                    follow_ups = tally.follow_ups,
                    redelivered = tally.redelivered,
                    "Ingested messages."
                );
            }
            if tally.stuck > 0 {
                tracing::warn!(channel = %name, messages = tally.stuck, "Stored messages cannot leave new/; check the Maildir's folders and permissions.");
            }
            if tally.failed > 0 {
                tracing::warn!(channel = %name, messages = tally.failed, retry_in = ?cfg.scan_interval, "Messages could not be stored; they stay in new/ and are retried.");
            }
            if tally.progress() == 0 || cancel.is_cancelled() {
                break;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => {
                tracing::info!(channel = %name, "Maildir channel stopped.");
                return Ok(());
            }
            _ = wake_rx.recv() => {}
            _ = tokio::time::sleep(cfg.scan_interval) => full_scan = true,
        }
    }
}

/// Only arrivals wake a scan: an MTA renames into new/ (or writes there directly). Opening and
/// reading the folder raises events too — our own scan among them — and waking on those would scan
/// forever. Errors and overflows (rescan) wake a scan to be safe.
fn wakes_a_scan(res: &notify::Result<notify::Event>) -> bool {
    use notify::EventKind;
    use notify::event::{ModifyKind, RenameMode};
    match res {
        Err(_) => true,
        Ok(event) => {
            event.need_rescan()
                || matches!(
                    event.kind,
                    EventKind::Create(_)
                        | EventKind::Modify(ModifyKind::Name(
                            RenameMode::To | RenameMode::Both | RenameMode::Any
                        ))
                        | EventKind::Any
                        | EventKind::Other
                )
        }
    }
}

async fn scan(
    name: &str,
    cfg: &MaildirConfig,
    intake: &Arc<Intake>,
    rules: &ParseRules,
    budget: &Arc<Semaphore>,
    cancel: &CancellationToken,
    skip: &HashSet<String>,
) -> anyhow::Result<(Tally, HashSet<String>)> {
    let new_dir = cfg.path.join("new");
    let mut names: Vec<String> = std::fs::read_dir(&new_dir)
        .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", new_dir.display()))?
        .filter_map(|e| e.ok())
        // A folder or socket in new/ is not mail; listing it would fail every scan.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && !skip.contains(n))
        .collect();
    // Maildir names begin with the delivery time: sorting keeps arrival order.
    names.sort();

    let mut tally = Tally::default();
    let mut trouble = HashSet::new();
    let mut set = JoinSet::new();
    for file in names {
        if cancel.is_cancelled() {
            break;
        }
        while set.len() >= cfg.concurrency {
            if let Some(r) = set.join_next().await {
                count(&mut tally, &mut trouble, r);
            }
        }
        let job = Job {
            channel: name.to_string(),
            root: cfg.path.clone(),
            after: cfg.after_ingest.clone(),
            file,
            intake: intake.clone(),
            rules: rules.clone(),
            budget: budget.clone(),
        };
        set.spawn(async move {
            let file = job.file.clone();
            (file, job.run().await)
        });
    }
    while let Some(r) = set.join_next().await {
        count(&mut tally, &mut trouble, r);
    }
    Ok((tally, trouble))
}

enum Done {
    Stored(Receipt),
    Vanished,
    Failed,
    Stuck,
}

fn count(
    t: &mut Tally,
    trouble: &mut HashSet<String>,
    r: Result<(String, Done), tokio::task::JoinError>,
) {
    let r = match r {
        Ok((file, done)) => {
            if matches!(done, Done::Failed | Done::Stuck) {
                trouble.insert(file);
            }
            Ok(done)
        }
        Err(e) => Err(e),
    };
    match r {
        Ok(Done::Stuck) => t.stuck += 1,
        Ok(Done::Stored(receipt)) if receipt.redelivered => t.redelivered += 1,
        Ok(Done::Stored(receipt)) => match receipt.outcome {
            Outcome::Created { .. } => t.created += 1,
            Outcome::Duplicate { .. } => t.duplicates += 1,
            Outcome::Quarantined { .. } => t.quarantined += 1,
            Outcome::Automated { .. } => t.automated += 1,
            Outcome::FollowUp { .. } => t.follow_ups += 1,
            // Mail is never held for assembly.
            Outcome::Held { .. } => t.created += 1,
        },
        Ok(Done::Vanished) => t.vanished += 1,
        Ok(Done::Failed) | Err(_) => t.failed += 1,
    }
}

struct Job {
    channel: String,
    root: PathBuf,
    after: AfterIngest,
    file: String,
    intake: Arc<Intake>,
    rules: ParseRules,
    budget: Arc<Semaphore>,
}

impl Job {
    async fn run(self) -> Done {
        let path = self.root.join("new").join(&self.file);
        let size = match tokio::fs::metadata(&path).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Done::Vanished,
            Err(e) => {
                tracing::warn!(channel = %self.channel, file = %self.file, error = %e, "Cannot stat message.");
                return Done::Failed;
            }
        };
        if size > self.rules.email.max_message_size {
            return self.set_aside(&path, size).await;
        }
        let permits = (size.min(MEMORY_BUDGET as u64) >> 10).max(1) as u32;
        let Ok(_permit) = self.budget.acquire_many(permits).await else {
            return Done::Failed;
        };
        let read = tokio::task::spawn_blocking({
            let path = path.clone();
            move || std::fs::read(path)
        });
        let raw = match read.await {
            Ok(Ok(raw)) => raw,
            // Another consumer (or an operator) took it between listing and reading: not ours.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(channel = %self.channel, file = %self.file, "Message vanished before it was read.");
                return Done::Vanished;
            }
            Ok(Err(e)) => {
                tracing::warn!(channel = %self.channel, file = %self.file, error = %e, "Cannot read message.");
                return Done::Failed;
            }
            Err(_) => return Done::Failed,
        };
        let env = Envelope {
            channel: self.channel.clone(),
            kind: ChannelKind::Maildir,
            raw,
            source_ref: Some(self.file.clone()),
        };
        let receipt = match self.intake.submit(env, &self.rules).await {
            Ok(r) => r,
            Err(e) => {
                log_failure(&self.channel, &self.file, &e);
                return Done::Failed;
            }
        };
        match &receipt.outcome {
            Outcome::Quarantined { reason } if !receipt.redelivered => tracing::warn!(
                channel = %self.channel, file = %self.file, inbox_id = receipt.inbox_id, reason = %reason,
                "Message quarantined; `phananh quarantine show` has it."
            ),
            Outcome::Created { report } | Outcome::Duplicate { report, .. } => tracing::debug!(
                channel = %self.channel, file = %self.file, tracking_code = %report.tracking_code, "Stored report."
            ),
            _ => {}
        }
        // Committed: only now may the message leave new/.
        let target = match &self.after {
            AfterIngest::Seen => self.root.join("cur"),
            AfterIngest::Move(folder) => self.root.join(folder).join("cur"),
        };
        self.leave_new(&path, &target, receipt)
    }

    /// A message over max_message_size is never read into memory: its first bytes are quarantined
    /// (enough to see who sent what) and the file itself moves to the `.Quarantine` folder intact.
    async fn set_aside(&self, path: &Path, size: u64) -> Done {
        use tokio::io::AsyncReadExt;
        let mut head = Vec::new();
        let read = async {
            let f = tokio::fs::File::open(path).await?;
            f.take(QUARANTINE_HEAD as u64).read_to_end(&mut head).await
        };
        match read.await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Done::Vanished,
            Err(e) => {
                tracing::warn!(channel = %self.channel, file = %self.file, error = %e, "Cannot read message.");
                return Done::Failed;
            }
        }
        let reason = format!(
            "message is {}, over max_message_size {}: not read; {} and the whole file was moved to the Maildir folder {QUARANTINE_FOLDER}",
            human_size(size),
            human_size(self.rules.email.max_message_size),
            crate::intake::PARTIAL_RAW,
        );
        let env = Envelope {
            channel: self.channel.clone(),
            kind: ChannelKind::Maildir,
            raw: head,
            source_ref: Some(self.file.clone()),
        };
        let receipt = match self.intake.quarantine(env, reason.clone()).await {
            Ok(r) => r,
            Err(e) => {
                log_failure(&self.channel, &self.file, &e);
                return Done::Failed;
            }
        };
        tracing::warn!(channel = %self.channel, file = %self.file, inbox_id = receipt.inbox_id, reason = %reason, "Message set aside.");
        let target = self.root.join(QUARANTINE_FOLDER).join("cur");
        if let Err(e) = std::fs::create_dir_all(&target) {
            tracing::warn!(channel = %self.channel, error = %e, "Cannot create the quarantine folder.");
            return Done::Stuck;
        }
        self.leave_new(path, &target, receipt)
    }

    /// Moves a committed message out of new/ into `target` with the Seen flag.
    fn leave_new(&self, from: &Path, target: &Path, receipt: Receipt) -> Done {
        match std::fs::rename(from, target.join(seen_name(&self.file))) {
            Ok(()) => Done::Stored(receipt),
            // Gone from new/: another consumer or an operator moved it; it is stored either way.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => {
                Done::Stored(receipt)
            }
            Err(e) => {
                tracing::warn!(channel = %self.channel, file = %self.file, error = %e, "Stored, but cannot move the message out of new/.");
                Done::Stuck
            }
        }
    }
}

fn log_failure(channel: &str, file: &str, e: &IntakeError) {
    tracing::warn!(channel = %channel, file = %file, error = %e, "Cannot store message; it stays in new/.");
}

fn seen_name(file: &str) -> String {
    match file.split_once(":2,") {
        Some((base, flags)) if flags.contains('S') => format!("{base}:2,{flags}"),
        Some((base, flags)) => {
            let mut f: Vec<char> = flags.chars().chain(['S']).collect();
            f.sort_unstable();
            format!("{base}:2,{}", f.into_iter().collect::<String>())
        }
        None => format!("{file}:2,S"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn job(dir: &Path, file: &str) -> (Job, crate::store::Store) {
        std::fs::write(dir.join("phananh.toml"), "state_dir = \"state\"\n").unwrap();
        std::fs::create_dir_all(dir.join("channels")).unwrap();
        for sub in ["tmp", "cur", "new"] {
            std::fs::create_dir_all(dir.join("Maildir").join(sub)).unwrap();
        }
        let config = crate::config::load(&dir.join("phananh.toml")).unwrap();
        let store =
            crate::store::Store::open(crate::store::StoreSettings::from_config(&config)).unwrap();
        let intake = Arc::new(Intake::new(&config, store.clone()));
        let job = Job {
            channel: "mail".into(),
            root: dir.join("Maildir"),
            after: AfterIngest::Seen,
            file: file.into(),
            rules: ParseRules {
                email: intake.email_defaults(),
                acknowledge: false,
                facebook: None,
                feed: None,
            },
            intake,
            budget: Arc::new(Semaphore::new(MEMORY_BUDGET >> 10)),
        };
        (job, store)
    }

    #[tokio::test]
    async fn a_message_that_vanishes_before_it_is_read_is_skipped_quietly() {
        let dir = tempfile::tempdir().unwrap();
        let (job, store) = job(dir.path(), "1700.M1.gone").await;
        assert!(matches!(job.run().await, Done::Vanished));
        let n: i64 = store
            .reader()
            .unwrap()
            .query_row("SELECT count(*) FROM inbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn a_stored_message_moves_to_cur_with_the_seen_flag() {
        let dir = tempfile::tempdir().unwrap();
        let (job, _store) = job(dir.path(), "1700.M2.here").await;
        std::fs::write(
            dir.path().join("Maildir/new/1700.M2.here"),
            b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n",
        )
        .unwrap();
        assert!(matches!(job.run().await, Done::Stored(_)));
        assert!(dir.path().join("Maildir/cur/1700.M2.here:2,S").exists());
        assert!(!dir.path().join("Maildir/new/1700.M2.here").exists());
    }

    #[test]
    fn seen_flag_is_added_in_order() {
        assert_eq!(seen_name("1700.M1P2.host"), "1700.M1P2.host:2,S");
        assert_eq!(seen_name("1700.M1P2.host:2,F"), "1700.M1P2.host:2,FS");
        assert_eq!(seen_name("1700.M1P2.host:2,RS"), "1700.M1P2.host:2,RS");
        assert_eq!(seen_name("1700.M1P2.host:2,T"), "1700.M1P2.host:2,ST");
    }
}
