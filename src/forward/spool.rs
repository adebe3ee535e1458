//! The `spool` sink: one JSON file per event in a folder, the embedded default queue. A consumer
//! picks up `*.json` files; it never sees a half-written one because each is written under
//! `.tmp/`, fsynced, and renamed into place.

use super::SinkError;
use crate::media::sync_dir;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct SpoolSink {
    dir: PathBuf,
}

impl SpoolSink {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Removes temp files that killed processes left behind (their events are still undelivered
    /// in the outbox and will be written again). Files of a live process — the daemon while a CLI
    /// command runs beside it — are left alone.
    pub fn clean_leftovers(&self) {
        if let Ok(entries) = std::fs::read_dir(self.dir.join(".tmp")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let owner = name.rsplit('.').next().and_then(|p| p.parse::<u32>().ok());
                let alive =
                    owner.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
                if !alive {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Writes a batch of (event_id, json). The data of every file is durable before any of them
    /// is renamed into view, and one folder fsync covers all the renames.
    pub fn write_batch(&self, events: &[(String, String)]) -> Vec<Result<(), SinkError>> {
        let tmp_dir = self.dir.join(".tmp");
        if let Err(e) = crate::store::create_private_dir(&tmp_dir) {
            let msg = format!("cannot create {}: {e}", tmp_dir.display());
            return vec![Err(SinkError::Transient(msg)); events.len()];
        }
        // Above a few files, one syncfs flushes them all far faster than an fsync each.
        let group_sync = events.len() > GROUP_SYNC_FROM;
        let mut results: Vec<Result<(), SinkError>> = events
            .iter()
            .map(|(id, json)| {
                let tmp = tmp_dir.join(tmp_name(id));
                let write = || -> std::io::Result<()> {
                    // Our own name (pid suffix) and create_new: a second process writing the same
                    // event never truncates the file this one is about to rename into view.
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&tmp)?;
                    f.write_all(json.as_bytes())?;
                    f.write_all(b"\n")?;
                    if !group_sync {
                        f.sync_all()?;
                    }
                    Ok(())
                };
                write().map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    SinkError::Transient(format!("cannot write spool file {}: {e}", file_name(id)))
                })
            })
            .collect();
        if group_sync && let Err(e) = syncfs(&tmp_dir) {
            let msg = format!("cannot sync {}: {e}", tmp_dir.display());
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(SinkError::Transient(msg.clone()));
            }
        }
        for ((id, _), r) in events.iter().zip(results.iter_mut()) {
            if r.is_ok() {
                let name = file_name(id);
                if let Err(e) = std::fs::rename(tmp_dir.join(tmp_name(id)), self.dir.join(&name)) {
                    *r = Err(SinkError::Transient(format!(
                        "cannot move spool file {name} into place: {e}"
                    )));
                }
            }
        }
        if let Err(e) = sync_dir(&self.dir) {
            let msg = format!("cannot sync {}: {e}", self.dir.display());
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(SinkError::Transient(msg.clone()));
            }
        }
        // A failed event is written afresh next time; its temp file must not be in the way.
        for ((id, _), r) in events.iter().zip(&results) {
            if r.is_err() {
                let _ = std::fs::remove_file(tmp_dir.join(tmp_name(id)));
            }
        }
        results
    }
}

/// Batches larger than this are made durable with one syncfs(2) instead of an fsync per file.
const GROUP_SYNC_FROM: usize = 4;

/// Flushes the whole filesystem holding `dir` (syncfs(2)): one call for a batch of files.
fn syncfs(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir)?;
    // SAFETY: the descriptor is valid for the lifetime of `f`; syncfs only reads it.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `<event_id>.json.<pid>`: one writer per name.
fn tmp_name(event_id: &str) -> String {
    format!("{}.{}", file_name(event_id), std::process::id())
}

/// Event ids are ULID-based and safe as file names; anything else is replaced defensively.
fn file_name(event_id: &str) -> String {
    let safe: String = event_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_dead_writers_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let sink = SpoolSink::new(dir.path().to_path_buf());
        let tmp = dir.path().join(".tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let live = tmp.join(format!("E1.created.json.{}", std::process::id()));
        // Pid 0 never names a user process: this one's writer is gone.
        let dead = tmp.join("E2.created.json.0");
        let unowned = tmp.join("E3.created.json");
        for p in [&live, &dead, &unowned] {
            std::fs::write(p, "{").unwrap();
        }
        sink.clean_leftovers();
        assert!(live.exists());
        assert!(!dead.exists() && !unowned.exists());
    }

    #[test]
    fn a_batch_lands_complete_under_event_names() {
        let dir = tempfile::tempdir().unwrap();
        let sink = SpoolSink::new(dir.path().to_path_buf());
        let events: Vec<(String, String)> = (0..10)
            .map(|i| (format!("E{i}.created"), format!("{{\"n\":{i}}}")))
            .collect();
        assert!(sink.write_batch(&events).iter().all(|r| r.is_ok()));
        for (i, (id, _)) in events.iter().enumerate() {
            let text = std::fs::read_to_string(dir.path().join(format!("{id}.json"))).unwrap();
            assert_eq!(text, format!("{{\"n\":{i}}}\n"));
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
            0
        );
        // The same events again (at-least-once) replace the files, never fail on them.
        assert!(sink.write_batch(&events[..2]).iter().all(|r| r.is_ok()));
    }
}
