//! The maildir loop: inotify wakes it, a periodic full scan backs inotify up (missed events,
//! overflow, files present at start).

use crate::channels::Envelope;
use crate::config::{AfterIngest, ChannelKind, MaildirConfig};
use crate::intake::{Intake, IntakeError, ParseRules};
use crate::store::{Outcome, Receipt};
use notify::Watcher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Bytes of message text held in memory at once across a scan, whatever the concurrency.
const MEMORY_BUDGET: usize = 64 << 20;

#[derive(Default, Debug)]
struct Tally {
    created: usize,
    duplicates: usize,
    quarantined: usize,
    redelivered: usize,
    vanished: usize,
    failed: usize,
}

pub async fn run(
    name: &str,
    cfg: &MaildirConfig,
    intake: Arc<Intake>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context;
    for sub in ["new", "cur", "tmp"] {
        let d = cfg.path.join(sub);
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    if let AfterIngest::Move(folder) = &cfg.after_ingest {
        for sub in ["new", "cur", "tmp"] {
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

    let rules = ParseRules {
        email: cfg.limits(intake.email_defaults()),
    };
    let budget = Arc::new(Semaphore::new(MEMORY_BUDGET >> 10));
    loop {
        // Scan until a pass finds nothing: mail that arrived while we worked is taken at once.
        loop {
            let tally = scan(name, cfg, &intake, &rules, &budget, &cancel).await?;
            let work = tally.created + tally.duplicates + tally.quarantined + tally.redelivered;
            if work > 0 {
                tracing::info!(
                    channel = %name,
                    created = tally.created,
                    duplicates = tally.duplicates,
                    quarantined = tally.quarantined,
                    redelivered = tally.redelivered,
                    "Ingested messages."
                );
            }
            if tally.failed > 0 {
                anyhow::bail!(
                    "{} messages could not be stored; they stay in new/ and are retried",
                    tally.failed
                );
            }
            if work == 0 || cancel.is_cancelled() {
                break;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => {
                tracing::info!(channel = %name, "Maildir channel stopped.");
                return Ok(());
            }
            _ = wake_rx.recv() => {}
            _ = tokio::time::sleep(cfg.scan_interval) => {}
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
) -> anyhow::Result<Tally> {
    let new_dir = cfg.path.join("new");
    let mut names: Vec<String> = std::fs::read_dir(&new_dir)
        .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", new_dir.display()))?
        .filter_map(|e| e.ok())
        // A folder or socket in new/ is not mail; listing it would fail every scan.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    // Maildir names begin with the delivery time: sorting keeps arrival order.
    names.sort();

    let mut tally = Tally::default();
    let mut set = JoinSet::new();
    for file in names {
        if cancel.is_cancelled() {
            break;
        }
        while set.len() >= cfg.concurrency {
            if let Some(r) = set.join_next().await {
                count(&mut tally, r);
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
        set.spawn(job.run());
    }
    while let Some(r) = set.join_next().await {
        count(&mut tally, r);
    }
    Ok(tally)
}

enum Done {
    Stored(Receipt),
    Vanished,
    Failed,
}

fn count(t: &mut Tally, r: Result<Done, tokio::task::JoinError>) {
    match r {
        Ok(Done::Stored(receipt)) if receipt.redelivered => t.redelivered += 1,
        Ok(Done::Stored(receipt)) => match receipt.outcome {
            Outcome::Created { .. } => t.created += 1,
            Outcome::Duplicate { .. } => t.duplicates += 1,
            Outcome::Quarantined { .. } => t.quarantined += 1,
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
            Ok(m) => m.len() as usize,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Done::Vanished,
            Err(e) => {
                tracing::warn!(channel = %self.channel, file = %self.file, error = %e, "Cannot stat message.");
                return Done::Failed;
            }
        };
        let permits = (size.min(MEMORY_BUDGET) >> 10).max(1) as u32;
        let Ok(_permit) = self.budget.acquire_many(permits).await else {
            return Done::Failed;
        };
        let raw = match tokio::fs::read(&path).await {
            Ok(raw) => raw,
            // Another consumer (or an operator) took it between listing and reading: not ours.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(channel = %self.channel, file = %self.file, "Message vanished before it was read.");
                return Done::Vanished;
            }
            Err(e) => {
                tracing::warn!(channel = %self.channel, file = %self.file, error = %e, "Cannot read message.");
                return Done::Failed;
            }
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
        if let Err(e) = finish(&self.root, &self.after, &self.file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(channel = %self.channel, file = %self.file, error = %e, "Stored, but cannot move the message out of new/; it will be recognised and moved on the next scan.");
        }
        Done::Stored(receipt)
    }
}

fn log_failure(channel: &str, file: &str, e: &IntakeError) {
    tracing::warn!(channel = %channel, file = %file, error = %e, "Cannot store message; it stays in new/.");
}

/// new/NAME → cur/NAME:2,S (or FOLDER/cur/NAME:2,S), adding the Seen flag to any flags present.
fn finish(root: &Path, after: &AfterIngest, file: &str) -> std::io::Result<()> {
    let from = root.join("new").join(file);
    let target_dir = match after {
        AfterIngest::Seen => root.join("cur"),
        AfterIngest::Move(folder) => root.join(folder).join("cur"),
    };
    std::fs::rename(from, target_dir.join(seen_name(file)))
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
        for sub in ["new", "cur", "tmp"] {
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
                email: intake.email_defaults().clone(),
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
