//! The store: SQLite in WAL mode, written by one thread that commits many submissions per
//! transaction (group commit), read by anyone through their own connections.

pub mod acks;
pub mod conversations;
pub mod feeds;
mod photos;
pub mod purge;
pub mod queries;
mod schema;
pub mod similar;
mod writer;
#[cfg(test)]
mod writer_tests;

use crate::config::Config;
use crate::pipeline::Draft;
use crate::report::ReportRef;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

pub use writer::{Cursor, Delivery};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("cannot prepare the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store is shut down")]
    Closed,
    #[error("{0}")]
    Invalid(String),
}

/// A failure of the disk under the database rather than of the item: the item is fine and must
/// be offered again once space or the device is back, not quarantined.
pub fn is_storage_error(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        e.sqlite_error_code(),
        Some(DiskFull | SystemIoFailure | CannotOpen | ReadOnly | OutOfMemory)
    )
}

impl StoreError {
    pub fn is_storage(&self) -> bool {
        matches!(self, StoreError::Sqlite(e) if is_storage_error(e))
    }
}

/// What the writer needs to know from config.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub db_path: PathBuf,
    pub queue_capacity: usize,
    pub batch_max: usize,
    pub tracking_prefix: String,
    pub tz: chrono_tz::Tz,
    pub same_text_window: Duration,
    pub same_photo_window: Duration,
    pub photo_distance: u32,
    /// "The same incident from someone else": window, distance and scores (`[dedupe]`).
    pub similar: crate::pipeline::similar::Policy,
    /// How long a bounced acknowledgement stops mail to its address.
    pub bounce_suppress_for: Duration,
    /// Each sink gets an outbox row for every event its routing takes. Shared with the `Store`
    /// handle, so a reload can change the sinks without restarting the writer.
    pub sinks: SinkRoutes,
    /// category code → unit, for routing.
    pub units: Vec<(String, Option<String>)>,
}

impl StoreSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            db_path: c.database_path(),
            queue_capacity: c.daemon.store.queue_capacity,
            batch_max: c.daemon.store.batch_max,
            tracking_prefix: c.daemon.tracking_prefix.clone(),
            tz: c.tz,
            same_text_window: c.daemon.dedupe.same_text_window,
            same_photo_window: c.daemon.dedupe.same_photo_window,
            photo_distance: c.daemon.dedupe.photo_distance,
            similar: crate::pipeline::similar::Policy {
                window_ms: c.daemon.dedupe.similar_window.as_millis() as i64,
                distance_m: c.daemon.dedupe.similar_distance_m,
                score_near: c.daemon.dedupe.similar_score_near,
                score: c.daemon.dedupe.similar_score,
            },
            bounce_suppress_for: c.daemon.email.bounce_suppress_for,
            sinks: c
                .daemon
                .sinks
                .iter()
                .map(|(name, s)| SinkRoute {
                    name: name.clone(),
                    events: s.events.clone(),
                    categories: s.categories.clone(),
                    units: s.routed_units(),
                })
                .collect::<Vec<_>>()
                .into(),
            units: c
                .daemon
                .categories
                .iter()
                .map(|c| (c.code.clone(), c.unit.clone()))
                .collect(),
        }
    }
}

/// The sinks' routes, as the writer reads them for each event.
#[derive(Debug, Clone, Default)]
pub struct SinkRoutes(Arc<std::sync::RwLock<Vec<SinkRoute>>>);

impl From<Vec<SinkRoute>> for SinkRoutes {
    fn from(v: Vec<SinkRoute>) -> Self {
        Self(Arc::new(std::sync::RwLock::new(v)))
    }
}

impl SinkRoutes {
    /// The routes that take `event`, by sink name.
    pub fn taking(&self, event: &crate::report::Event) -> Vec<String> {
        self.0
            .read()
            .expect("routes lock")
            .iter()
            .filter(|s| s.takes(event))
            .map(|s| s.name.clone())
            .collect()
    }

    pub fn replace(&self, routes: Vec<SinkRoute>) {
        *self.0.write().expect("routes lock") = routes;
    }
}

/// Which events a sink receives: each list empty means all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRoute {
    pub name: String,
    pub events: Vec<String>,
    pub categories: Vec<String>,
    pub units: Vec<String>,
}

impl SinkRoute {
    /// A sink that receives every event.
    pub fn all(name: &str) -> Self {
        Self {
            name: name.to_string(),
            events: Vec::new(),
            categories: Vec::new(),
            units: Vec::new(),
        }
    }

    pub fn takes(&self, event: &crate::report::Event) -> bool {
        let any_or = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        any_or(&self.events, Some(event.event.as_str()))
            && any_or(&self.categories, Some(&event.report.category.code))
            && any_or(&self.units, event.report.unit.as_deref())
    }
}

/// One item for the writer: a parsed report, or raw bytes that could not be parsed.
#[derive(Debug)]
pub struct Submission {
    pub channel: String,
    pub kind: String,
    pub raw: Vec<u8>,
    pub raw_sha256: String,
    pub source_ref: Option<String>,
    pub received_at: chrono::DateTime<chrono::FixedOffset>,
    pub body: SubmissionBody,
    /// Record an acknowledgement to send when this makes a new report.
    pub acknowledge: bool,
}

#[derive(Debug)]
pub enum SubmissionBody {
    Report(Box<Draft>),
    Quarantine {
        reason: String,
    },
    /// Written by a machine: stored under its external id with the rule that matched.
    Automated {
        external_id: String,
        rule: String,
        bounce: Option<crate::channels::email::Bounce>,
    },
    /// A Messenger message, gathered into its sender's conversation.
    Fragment {
        external_id: String,
        psid: String,
        fragment: crate::channels::facebook::Fragment,
        /// How long after a report a message from the same sender still adds to it.
        update_window_ms: i64,
    },
    /// A Messenger message edited by its sender.
    Edit {
        external_id: String,
        psid: String,
        mid: String,
        text: String,
        update_window_ms: i64,
    },
    /// A conversation closed into a report by the channel's assembler; refused (held) if it
    /// gained messages since the draft was made from `fragments` of them.
    Assembled {
        conversation: i64,
        read: conversations::Read,
        draft: Box<Draft>,
    },
    /// A polled feed's item, stored under `key` (its id and version); its report is found by
    /// `draft.external_id`, so a newer version updates it.
    FeedItem {
        key: String,
        draft: Box<Draft>,
    },
    /// `phananh quarantine retry`: a quarantined inbox row parsed now.
    Retry {
        inbox_id: i64,
        draft: Box<Draft>,
        /// A feed item's key (`<id>@<version>`); others are keyed by the draft's external id.
        key: Option<String>,
    },
}

/// The answer to a submission, given only after its transaction committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub inbox_id: i64,
    pub outcome: Outcome,
    /// True when this item had been received before: the first receipt is returned again.
    pub redelivered: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Created {
        report: ReportRef,
    },
    Duplicate {
        report: ReportRef,
        of: ReportRef,
    },
    Quarantined {
        reason: String,
    },
    /// Stored, but not a report: mail written by a machine (`rule` says which signal).
    Automated {
        rule: String,
    },
    /// The reporter answered with their tracking code: added to that report (`report.updated`).
    FollowUp {
        report: ReportRef,
    },
    /// A Messenger message kept in its sender's open conversation, until it becomes a report.
    Held {
        conversation: i64,
    },
}

/// Counts what became of a channel's items, for `/metrics`.
fn count(channel: &str, kind: &str, results: &[Result<Receipt, StoreError>]) {
    let m = crate::metrics::get();
    for r in results {
        match r {
            Ok(receipt) => m.item(channel, kind, crate::metrics::outcome(receipt)),
            Err(_) => m.channel_error(channel),
        }
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<writer::Command>,
    db_path: PathBuf,
    routes: SinkRoutes,
    outbox_ready: watch::Sender<u64>,
    status: crate::health::StoreStatus,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Store {
    /// Creates the state directory and database if needed, migrates, and starts the writer.
    pub fn open(settings: StoreSettings) -> Result<Store, StoreError> {
        let mut conn = open_writer_connection(&settings.db_path)?;
        schema::migrations().to_latest(&mut conn)?;
        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let (outbox_ready, _) = watch::channel(0u64);
        let db_path = settings.db_path.clone();
        let routes = settings.sinks.clone();
        let notify = outbox_ready.clone();
        let status = crate::health::StoreStatus::default();
        let writer_status = status.clone();
        let thread = std::thread::Builder::new()
            .name("phananh-writer".into())
            .spawn(move || writer::run(conn, settings, rx, notify, writer_status))
            .map_err(|e| StoreError::StateDir {
                path: db_path.clone(),
                source: e,
            })?;
        Ok(Store {
            tx,
            db_path,
            routes,
            outbox_ready,
            status,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Whether the writer can commit (a full disk shows here), for `/readyz`.
    pub fn status(&self) -> crate::health::StoreStatus {
        self.status.clone()
    }

    /// Anonymises everything received more than `older_than` ago (see `purge`).
    pub async fn purge(&self, older_than: Duration) -> Result<purge::Purged, StoreError> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(older_than)
                .map_err(|_| StoreError::Invalid("retention too long".into()))?;
        self.run_purge(purge::Scope::Before(cutoff.timestamp_millis()))
            .await
    }

    /// Removes one citizen's personal data, whatever its age (see `purge::erase`).
    pub async fn erase(&self, who: purge::Person) -> Result<purge::Purged, StoreError> {
        if who.is_empty() {
            return Err(StoreError::Invalid("no identifier given".into()));
        }
        self.run_purge(purge::Scope::Person(who)).await
    }

    async fn run_purge(&self, scope: purge::Scope) -> Result<purge::Purged, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(writer::Command::Purge(scope, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(purge::Purged::from_vec(
            &rx.await.map_err(|_| StoreError::Closed)??,
        ))
    }

    /// Routes events stored from now on to these sinks (a reload changed them).
    pub fn set_sink_routes(&self, routes: SinkRoutes) {
        self.routes
            .replace(routes.0.read().expect("routes lock").clone());
    }

    /// Commits one item and returns its receipt. Waits when the writer's queue is full.
    pub async fn submit(&self, submission: Submission) -> Result<Receipt, StoreError> {
        let (channel, kind) = (submission.channel.clone(), submission.kind.clone());
        let (reply, rx) = oneshot::channel();
        let result = match self
            .tx
            .send(writer::Command::Submit(Box::new(submission), reply))
            .await
        {
            Ok(()) => rx.await.unwrap_or(Err(StoreError::Closed)),
            Err(_) => Err(StoreError::Closed),
        };
        count(&channel, &kind, std::slice::from_ref(&result));
        result
    }

    /// Records delivery outcomes for outbox rows (one transaction for the lot).
    pub async fn record_deliveries(&self, results: Vec<(i64, Delivery)>) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(writer::Command::Deliveries(results, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Makes dead (or all undelivered) outbox rows due now. Returns how many changed.
    pub async fn requeue_outbox(&self, ids: Option<Vec<i64>>) -> Result<usize, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(writer::Command::Requeue(ids, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Records an IMAP channel's position (everything up to `last_uid` is stored).
    pub async fn set_cursor(&self, cursor: Cursor) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(writer::Command::Cursor(cursor, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits a polled page's items and the feed's new position in one transaction.
    pub async fn submit_page(
        &self,
        items: Vec<Submission>,
        cursor: feeds::FeedCursor,
    ) -> Result<Vec<Receipt>, StoreError> {
        let labels = items.first().map(|i| (i.channel.clone(), i.kind.clone()));
        let (reply, rx) = oneshot::channel();
        let result = match self
            .tx
            .send(writer::Command::Page(items, cursor, reply))
            .await
        {
            Ok(()) => rx.await.unwrap_or(Err(StoreError::Closed)),
            Err(_) => Err(StoreError::Closed),
        };
        if let Some((channel, kind)) = labels {
            match &result {
                Ok(receipts) => {
                    let each: Vec<Result<Receipt, StoreError>> =
                        receipts.iter().cloned().map(Ok).collect();
                    count(&channel, &kind, &each);
                }
                Err(_) => crate::metrics::get().channel_error(&channel),
            }
        }
        result
    }

    /// Records what became of acknowledgements (one transaction for the lot).
    pub async fn record_acks(
        &self,
        updates: Vec<(i64, acks::AckUpdate)>,
    ) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(writer::Command::Acks(updates, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Marks acknowledgements `sending`; returns the ids this caller may now mail.
    pub async fn claim_acks(&self, list: Vec<(i64, String)>) -> Result<Vec<i64>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(writer::Command::ClaimAcks(list, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Changes after every commit that added outbox rows; each sink watches it.
    pub fn outbox_watch(&self) -> watch::Receiver<u64> {
        self.outbox_ready.subscribe()
    }

    /// Submissions waiting for the writer (for health and backpressure tests).
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// A read-only connection of the caller's own (WAL lets readers run beside the writer).
    pub fn reader(&self) -> Result<Connection, StoreError> {
        open_reader(&self.db_path)
    }

    /// Stops accepting work, lets the writer commit what is queued, and waits for it.
    pub async fn close(self) {
        let Store { tx, thread, .. } = self;
        drop(tx);
        let handle = thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// Opens the database read-only, for CLI queries and the forwarder.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

fn open_writer_connection(path: &Path) -> Result<Connection, StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let state_err = |source| StoreError::StateDir {
        path: dir.to_path_buf(),
        source,
    };
    create_private_dir(dir).map_err(state_err)?;
    if !path.exists() {
        // Created 0600 before SQLite touches it; SQLite gives -wal and -shm the same mode.
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(state_err)?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Invalid(format!(
            "journal_mode is {mode}, expected wal"
        )));
    }
    // FULL: the commit that lets a channel acknowledge upstream must survive power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // 16 MiB of page cache (the default is 2): a feed page of 500 reports dirties more pages than
    // 2 MiB holds, and each spill is written to the WAL mid-transaction and read back.
    conn.pragma_update(None, "cache_size", -16384)?;
    // Deleted or overwritten content is zeroed, not left in free pages: what `phananh purge`
    // removes is gone from the file too. Few pages are ever freed here (the store mostly inserts),
    // so it costs little.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

/// Creates a folder (and parents) readable only by us.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
