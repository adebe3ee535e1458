//! The one writer thread. It owns the write connection, takes commands from a bounded queue,
//! applies everything queued in one transaction (group commit: one fsync for many reports), and
//! answers each caller only after that transaction committed.

use super::{Outcome, Receipt, StoreError, StoreSettings, Submission, SubmissionBody};
use crate::pipeline::Draft;
use crate::report::{ChannelRef, Event, EventType, Related, Report, ReportRef, SCHEMA, Update};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot, watch};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub enum Command {
    Submit(Box<Submission>, Reply<Receipt>),
    Deliveries(Vec<(i64, Delivery)>, Reply<()>),
    Requeue(Option<Vec<i64>>, Reply<usize>),
    Cursor(Cursor, Reply<()>),
    Acks(Vec<(i64, super::acks::AckUpdate)>, Reply<()>),
    /// Marks acknowledgements `sending` (with their Message-IDs); answers the ids it claimed.
    ClaimAcks(Vec<(i64, String)>, Reply<Vec<i64>>),
    /// Retention, or one citizen's erasure: see `purge::Scope`.
    Purge(super::purge::Scope, Reply<Vec<i64>>),
    /// A feed page: its items and the feed's position, all or nothing.
    Page(
        Vec<Submission>,
        super::feeds::FeedCursor,
        Reply<Vec<Receipt>>,
    ),
}

/// An IMAP channel's position in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub channel: String,
    pub mailbox: String,
    pub uidvalidity: u32,
    pub last_uid: u32,
}

/// What a sink made of one outbox row.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Delivered,
    Retry { error: String, next_attempt_ms: i64 },
    Dead { error: String },
}

enum Pending {
    Submit(Reply<Receipt>, Result<Receipt, StoreError>),
    Deliveries(Reply<()>, Result<(), StoreError>),
    Requeue(Reply<usize>, Result<usize, StoreError>),
    Claim(Reply<Vec<i64>>, Result<Vec<i64>, StoreError>),
    Page(Reply<Vec<Receipt>>, Result<Vec<Receipt>, StoreError>),
}

pub fn run(
    mut conn: Connection,
    settings: StoreSettings,
    mut rx: mpsc::Receiver<Command>,
    outbox_ready: watch::Sender<u64>,
    status: crate::health::StoreStatus,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < settings.batch_max {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let size = batch.len();
        let started = std::time::Instant::now();
        let mut seen = Observed::default();
        let added_outbox = apply(&mut conn, &settings, batch, &mut seen);
        match seen.storage {
            Some(error) => status.set(Some(error)),
            None if seen.committed => status.set(None),
            None => {}
        }
        let elapsed = started.elapsed();
        tracing::trace!(size, elapsed = ?elapsed, "Committed a batch.");
        let m = crate::metrics::get();
        m.commit_seconds.observe(elapsed.as_secs_f64());
        m.commit_size.observe(size as f64);
        m.writer_queue.set(rx.len() as i64);
        if added_outbox {
            outbox_ready.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
    // Queue closed: every sender is gone and everything queued was committed.
    let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
}

/// What a batch showed of the disk: whether something committed, and the last failure of the
/// storage itself (full, I/O), which `/readyz` shows until a commit succeeds again.
#[derive(Debug, Default)]
pub(super) struct Observed {
    committed: bool,
    storage: Option<String>,
}

impl Observed {
    #[cfg(test)]
    pub(super) fn storage(&self) -> Option<&str> {
        self.storage.as_deref()
    }

    fn note(&mut self, e: &rusqlite::Error) {
        if super::is_storage_error(e) {
            self.storage = Some(e.to_string());
        }
    }

    fn note_done(&mut self, done: &Done) {
        let err = match done {
            Done::Receipt(Err(e))
            | Done::Unit(Err(e))
            | Done::Count(Err(e))
            | Done::Ids(Err(e))
            | Done::Receipts(Err(e)) => e,
            _ => return,
        };
        if err.is_storage() {
            self.storage = Some(err.to_string());
        }
    }
}

/// What one command produced, before the commit decides whether its caller hears it.
enum Done {
    Receipt(Result<Receipt, StoreError>),
    Unit(Result<(), StoreError>),
    Count(Result<usize, StoreError>),
    Ids(Result<Vec<i64>, StoreError>),
    Receipts(Result<Vec<Receipt>, StoreError>),
}

impl Done {
    fn is_ok(&self) -> bool {
        match self {
            Done::Receipt(r) => r.is_ok(),
            Done::Unit(r) => r.is_ok(),
            Done::Count(r) => r.is_ok(),
            Done::Ids(r) => r.is_ok(),
            Done::Receipts(r) => r.is_ok(),
        }
    }

    /// Whether committing this adds outbox rows (a forwarded duplicate too; waking the sinks for
    /// one that is not costs one empty look).
    fn adds_outbox(&self) -> bool {
        let forwards = |r: &Receipt| {
            !r.redelivered
                && matches!(
                    r.outcome,
                    Outcome::Created { .. } | Outcome::FollowUp { .. } | Outcome::Duplicate { .. }
                )
        };
        match self {
            Done::Receipt(Ok(r)) => forwards(r),
            Done::Receipts(Ok(list)) => list.iter().any(forwards),
            Done::Count(Ok(n)) => *n > 0,
            _ => false,
        }
    }
}

fn execute(
    conn: &Connection,
    settings: &StoreSettings,
    cmd: &Command,
    isolate_items: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Done {
    match cmd {
        Command::Submit(s, _) => Done::Receipt(submit(conn, settings, s, now)),
        Command::Deliveries(list, _) => Done::Unit(deliveries(conn, list, now)),
        Command::Cursor(c, _) => Done::Unit(set_cursor(conn, c)),
        Command::Acks(list, _) => Done::Unit(super::acks::update(conn, list, now)),
        Command::ClaimAcks(list, _) => Done::Ids(super::acks::claim(conn, list, now)),
        Command::Page(items, cursor, _) => {
            Done::Receipts(page(conn, settings, items, cursor, isolate_items, now))
        }
        Command::Requeue(ids, _) => Done::Count(requeue(conn, ids.as_deref(), now)),
        Command::Purge(scope, _) => Done::Ids(
            super::purge::run(
                conn,
                scope,
                &rfc3339(now.with_timezone(&settings.tz).fixed_offset()),
            )
            .map(super::purge::Purged::to_vec),
        ),
    }
}

/// The command's reply with its result. `None` (after answering the caller with an error) if
/// the result is of another kind, which `execute` never produces.
fn pair(cmd: Command, done: Done) -> Option<Pending> {
    Some(match (cmd, done) {
        (Command::Submit(_, r), Done::Receipt(x)) => Pending::Submit(r, x),
        (
            Command::Deliveries(_, r) | Command::Cursor(_, r) | Command::Acks(_, r),
            Done::Unit(x),
        ) => Pending::Deliveries(r, x),
        (Command::Requeue(_, r), Done::Count(x)) => Pending::Requeue(r, x),
        (Command::ClaimAcks(_, r) | Command::Purge(_, r), Done::Ids(x)) => Pending::Claim(r, x),
        (Command::Page(_, _, r), Done::Receipts(x)) => Pending::Page(r, x),
        (cmd, _) => {
            fail(cmd, "internal: a command's result of another kind");
            return None;
        }
    })
}

/// Applies a batch in one transaction. First optimistically, every command straight into the
/// transaction: savepoints make SQLite copy each page it touches to a sub-journal file, a quarter
/// of the writer's time on a feed drain. If any command (or any item of a page) fails, that
/// attempt is rolled back and the batch is applied again with a savepoint per command and per
/// page item, so one bad item cannot fail the others. Returns whether outbox rows were added.
pub(super) fn apply(
    conn: &mut Connection,
    settings: &StoreSettings,
    batch: Vec<Command>,
    seen: &mut Observed,
) -> bool {
    let now = chrono::Utc::now();
    let results = match optimistic(conn, settings, &batch, now, seen) {
        Ok(Some(results)) => results,
        Ok(None) => return isolated(conn, settings, batch, now, seen),
        Err(e) => {
            seen.note(&e);
            return cannot_begin(batch, e);
        }
    };
    let added_outbox = results.iter().any(Done::adds_outbox);
    let pending = batch
        .into_iter()
        .zip(results)
        .filter_map(|(cmd, done)| pair(cmd, done))
        .collect();
    if answer(pending, Ok(()), seen) {
        added_outbox
    } else {
        false
    }
}

/// The batch without savepoints, committed only if every command succeeded. `Ok(None)`: one
/// failed and nothing was kept.
fn optimistic(
    conn: &mut Connection,
    settings: &StoreSettings,
    batch: &[Command],
    now: chrono::DateTime<chrono::Utc>,
    seen: &mut Observed,
) -> Result<Option<Vec<Done>>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    for cmd in batch {
        let done = execute(&tx, settings, cmd, false, now);
        if !done.is_ok() {
            seen.note_done(&done);
            // Dropping the transaction rolls it back.
            return Ok(None);
        }
        results.push(done);
    }
    match tx.commit() {
        Ok(()) => Ok(Some(results)),
        Err(e) => {
            seen.note(&e);
            // Nothing is durable; the isolated attempt reports the failure to each caller.
            tracing::warn!(error = %e, "Commit failed; applying the batch again command by command.");
            Ok(None)
        }
    }
}

/// Every caller hears that nothing was stored; their senders retry. Returns false (no outbox rows).
fn cannot_begin(batch: Vec<Command>, e: rusqlite::Error) -> bool {
    let msg = format!("cannot begin a transaction: {e}");
    tracing::error!(error = %e, "Cannot begin a transaction; the batch is refused and will be retried by its senders.");
    for cmd in batch {
        fail(cmd, &msg);
    }
    false
}

/// The slow path: each command in its own savepoint, so a failing one is answered with its error
/// and the others still go in.
fn isolated(
    conn: &mut Connection,
    settings: &StoreSettings,
    batch: Vec<Command>,
    now: chrono::DateTime<chrono::Utc>,
    seen: &mut Observed,
) -> bool {
    let mut pending = Vec::with_capacity(batch.len());
    let mut added_outbox = false;
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            seen.note(&e);
            return cannot_begin(batch, e);
        }
    };
    let mut batch = batch.into_iter();
    while let Some(cmd) = batch.next() {
        let sp = match tx.savepoint() {
            Ok(sp) => sp,
            Err(e) => {
                fail(cmd, &format!("cannot open a savepoint: {e}"));
                continue;
            }
        };
        let done = execute(&sp, settings, &cmd, true, now);
        seen.note_done(&done);
        if sp.is_autocommit() {
            // SQLite rolled the whole transaction back itself (a full disk, an I/O error): what
            // went before is gone too, and what follows would run outside any transaction.
            let msg = format!(
                "nothing stored: the database rolled the batch back ({})",
                seen.storage.as_deref().unwrap_or("storage failure")
            );
            tracing::error!(error = %msg, "The batch was rolled back by the database; every item in it is refused.");
            drop(sp);
            for p in pending {
                send(refuse(p, &msg));
            }
            fail(cmd, &msg);
            for cmd in batch {
                fail(cmd, &msg);
            }
            return false;
        }
        let item = if done.is_ok() {
            match sp.commit() {
                Ok(()) => {
                    added_outbox |= done.adds_outbox();
                    pair(cmd, done)
                }
                // Not released means rolled back: the caller must not be told it is stored.
                Err(e) => {
                    seen.note(&e);
                    tracing::error!(error = %e, "Cannot release a savepoint; the item is refused.");
                    pair(cmd, done).map(|p| refuse(p, &format!("cannot release a savepoint: {e}")))
                }
            }
        } else {
            let mut sp = sp;
            let _ = sp.rollback();
            pair(cmd, done)
        };
        pending.extend(item);
    }
    let committed = tx.commit();
    answer(pending, committed, seen) && added_outbox
}

/// Tells every caller its result once the transaction committed, or that nothing was stored.
/// Returns whether it committed.
fn answer(
    pending: Vec<Pending>,
    committed: Result<(), rusqlite::Error>,
    seen: &mut Observed,
) -> bool {
    match committed {
        Ok(()) => {
            seen.committed = true;
            pending.into_iter().for_each(send);
            true
        }
        Err(e) => {
            seen.note(&e);
            // Nothing in this batch is durable: every caller hears so and nothing is acknowledged.
            tracing::error!(error = %e, "Commit failed; nothing in the batch was stored.");
            let msg = format!("commit failed: {e}");
            for p in pending {
                send(refuse(p, &msg));
            }
            false
        }
    }
}

fn send(p: Pending) {
    match p {
        Pending::Submit(reply, r) => drop(reply.send(r)),
        Pending::Deliveries(reply, r) => drop(reply.send(r)),
        Pending::Requeue(reply, r) => drop(reply.send(r)),
        Pending::Claim(reply, r) => drop(reply.send(r)),
        Pending::Page(reply, r) => drop(reply.send(r)),
    }
}

fn refuse(item: Pending, msg: &str) -> Pending {
    let err = || StoreError::Invalid(msg.to_string());
    match item {
        Pending::Submit(r, _) => Pending::Submit(r, Err(err())),
        Pending::Deliveries(r, _) => Pending::Deliveries(r, Err(err())),
        Pending::Requeue(r, _) => Pending::Requeue(r, Err(err())),
        Pending::Claim(r, _) => Pending::Claim(r, Err(err())),
        Pending::Page(r, _) => Pending::Page(r, Err(err())),
    }
}

fn fail(cmd: Command, msg: &str) {
    let err = || StoreError::Invalid(msg.to_string());
    match cmd {
        Command::Submit(_, r) => drop(r.send(Err(err()))),
        Command::Deliveries(_, r) => drop(r.send(Err(err()))),
        Command::Requeue(_, r) => drop(r.send(Err(err()))),
        Command::Cursor(_, r) => drop(r.send(Err(err()))),
        Command::Acks(_, r) => drop(r.send(Err(err()))),
        Command::ClaimAcks(_, r) | Command::Purge(_, r) => drop(r.send(Err(err()))),
        Command::Page(_, _, r) => drop(r.send(Err(err()))),
    }
}

/// A feed page: every item, then the position. With `isolate`, one item that fails rolls back
/// to its own savepoint and is quarantined in its place, so the page and the position still go
/// in; without, the first failure fails the page (and the writer tries again isolated).
fn page(
    conn: &Connection,
    settings: &StoreSettings,
    items: &[Submission],
    cursor: &super::feeds::FeedCursor,
    isolate: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Receipt>, StoreError> {
    let mut receipts = Vec::with_capacity(items.len());
    for s in items {
        if !isolate {
            receipts.push(submit(conn, settings, s, now)?);
            continue;
        }
        conn.execute_batch("SAVEPOINT feed_item")?;
        match submit(conn, settings, s, now) {
            Ok(r) => {
                conn.execute_batch("RELEASE feed_item")?;
                receipts.push(r);
            }
            Err(e) => {
                // A full disk is not the item's fault: the page fails and the cursor stays, so
                // the poller offers it again, instead of quarantining every item and moving on.
                // (SQLite may have rolled the whole transaction back already.)
                if e.is_storage() || conn.is_autocommit() {
                    return Err(e);
                }
                conn.execute_batch("ROLLBACK TO feed_item; RELEASE feed_item")?;
                let quarantined = Submission {
                    channel: s.channel.clone(),
                    kind: s.kind.clone(),
                    raw: s.raw.clone(),
                    raw_sha256: s.raw_sha256.clone(),
                    source_ref: s.source_ref.clone(),
                    received_at: s.received_at,
                    body: SubmissionBody::Quarantine {
                        reason: format!("could not be stored: {e}"),
                    },
                    acknowledge: false,
                };
                receipts.push(submit(conn, settings, &quarantined, now)?);
            }
        }
    }
    super::feeds::set_cursor(conn, cursor)?;
    Ok(receipts)
}

fn set_cursor(conn: &Connection, c: &Cursor) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO imap_cursors (channel, mailbox, uidvalidity, last_uid) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (channel, mailbox) DO UPDATE SET uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid",
    )?
    .execute(params![c.channel, c.mailbox, c.uidvalidity, c.last_uid])?;
    Ok(())
}

fn rfc3339(t: chrono::DateTime<chrono::FixedOffset>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// An item under `key` the first time: its inbox row, then what `make` builds on it. Seen before
/// (a redelivery), the first time's receipt and nothing new.
fn once(
    conn: &Connection,
    s: &Submission,
    key: &str,
    make: impl FnOnce(i64) -> Result<Outcome, StoreError>,
) -> Result<Receipt, StoreError> {
    if let Some(r) = existing_receipt(conn, &s.channel, key)? {
        return Ok(r);
    }
    let inbox_id = insert_inbox(conn, s, key, "stored", None, s.received_at)?;
    Ok(Receipt {
        inbox_id,
        outcome: make(inbox_id)?,
        redelivered: false,
    })
}

fn submit(
    conn: &Connection,
    settings: &StoreSettings,
    s: &Submission,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Receipt, StoreError> {
    let received_at = s.received_at;
    match s.body {
        SubmissionBody::Quarantine { ref reason } => {
            let key = format!("sha256:{}", s.raw_sha256);
            if let Some(r) = existing_receipt(conn, &s.channel, &key)? {
                return Ok(r);
            }
            let inbox_id = insert_inbox(conn, s, &key, "quarantined", Some(reason), received_at)?;
            Ok(Receipt {
                inbox_id,
                outcome: Outcome::Quarantined {
                    reason: reason.clone(),
                },
                redelivered: false,
            })
        }
        SubmissionBody::Automated {
            ref external_id,
            ref rule,
            ref bounce,
        } => once(conn, s, external_id, |inbox_id| {
            conn.prepare_cached("UPDATE inbox SET automated = ?2 WHERE id = ?1")?
                .execute(params![inbox_id, rule])?;
            if let Some(b) = bounce
                && let Some(code) =
                    super::acks::bounced(conn, b, inbox_id, settings.bounce_suppress_for, now)?
            {
                tracing::warn!(channel = %s.channel, tracking_code = %code, suppressed_for = ?settings.bounce_suppress_for, "The acknowledgement for this report bounced; its address gets no more acknowledgements for a while.");
            }
            Ok(Outcome::Automated { rule: rule.clone() })
        }),
        SubmissionBody::Report(ref draft) => once(conn, s, &draft.external_id, |inbox_id| {
            store_report(conn, settings, s, inbox_id, draft, now)
        }),
        SubmissionBody::Fragment {
            ref external_id,
            ref psid,
            ref fragment,
            update_window_ms,
        } => once(conn, s, external_id, |inbox_id| {
            super::conversations::gather(conn, s, inbox_id, psid, fragment, update_window_ms, now)
        }),
        SubmissionBody::Edit {
            ref external_id,
            ref psid,
            ref mid,
            ref text,
            update_window_ms,
        } => once(conn, s, external_id, |inbox_id| {
            super::conversations::edit(conn, s, inbox_id, psid, mid, text, update_window_ms, now)
        }),
        SubmissionBody::FeedItem { ref key, ref draft } => once(conn, s, key, |inbox_id| {
            super::feeds::item(conn, settings, s, inbox_id, key, draft, now)
        }),
        SubmissionBody::Assembled {
            conversation,
            ref read,
            ref draft,
        } => {
            let (inbox_id, outcome) =
                super::conversations::close(conn, settings, s, conversation, read, draft, now)?;
            Ok(Receipt {
                inbox_id,
                outcome,
                redelivered: false,
            })
        }
        SubmissionBody::Retry {
            inbox_id,
            ref draft,
            ref key,
        } => {
            let feed_key = key.clone();
            let key = key.as_deref().unwrap_or(&draft.external_id);
            let status: Option<String> = conn
                .query_row("SELECT status FROM inbox WHERE id = ?1", [inbox_id], |r| {
                    r.get(0)
                })
                .optional()?;
            match status.as_deref() {
                Some("quarantined") => {}
                Some(other) => {
                    return Err(StoreError::Invalid(format!(
                        "inbox item {inbox_id} is {other}, not quarantined"
                    )));
                }
                None => return Err(StoreError::Invalid(format!("no inbox item {inbox_id}"))),
            }
            // The same message may have arrived again intact meanwhile (under its Message-ID):
            // then this copy points at the report made then. Without a Message-ID the key is the
            // content hash, which finds this very row: that is not a second arrival.
            if let Some(mut r) = existing_receipt(conn, &s.channel, key)?
                && r.inbox_id != inbox_id
            {
                let report_id = match &r.outcome {
                    Outcome::Created { report }
                    | Outcome::Duplicate { report, .. }
                    | Outcome::FollowUp { report } => report.id.clone(),
                    Outcome::Quarantined { .. }
                    | Outcome::Automated { .. }
                    | Outcome::Held { .. } => {
                        return Err(StoreError::Invalid(format!(
                            "inbox item {inbox_id} has the same external id as quarantined item {}; retry that one",
                            r.inbox_id
                        )));
                    }
                };
                conn.execute(
                    "UPDATE inbox SET status = 'resolved', report_id = ?2 WHERE id = ?1",
                    params![inbox_id, report_id],
                )?;
                r.inbox_id = inbox_id;
                return Ok(r);
            }
            conn.execute(
                "UPDATE inbox SET status = 'stored', reason = NULL, external_id = ?2 WHERE id = ?1",
                params![inbox_id, key],
            )?;
            let outcome = match &feed_key {
                Some(k) => super::feeds::item(conn, settings, s, inbox_id, k, draft, now)?,
                None => store_report(conn, settings, s, inbox_id, draft, now)?,
            };
            Ok(Receipt {
                inbox_id,
                outcome,
                redelivered: false,
            })
        }
    }
}

fn insert_inbox(
    conn: &Connection,
    s: &Submission,
    key: &str,
    status: &str,
    reason: Option<&str>,
    received_at: chrono::DateTime<chrono::FixedOffset>,
) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO inbox (channel, kind, external_id, received_at, raw, raw_sha256, source_ref, status, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        s.channel,
        s.kind,
        key,
        rfc3339(received_at),
        s.raw,
        s.raw_sha256,
        s.source_ref,
        status,
        reason
    ])?;
    Ok(conn.last_insert_rowid())
}

/// The receipt of an item already received on this channel, if any.
fn existing_receipt(
    conn: &Connection,
    channel: &str,
    key: &str,
) -> Result<Option<Receipt>, StoreError> {
    type Row = (
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        bool,
    );
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT id, status, reason, report_id, automated, follow_up FROM inbox WHERE channel = ?1 AND external_id = ?2",
        )?
        .query_row(params![channel, key], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .optional()?;
    let Some((inbox_id, status, reason, report_id, automated, follow_up)) = row else {
        return Ok(None);
    };
    let outcome = match (status.as_str(), report_id) {
        (_, Some(id)) if follow_up => {
            let code: String = conn
                .prepare_cached("SELECT tracking_code FROM reports WHERE id = ?1")?
                .query_row([&id], |r| r.get(0))?;
            Outcome::FollowUp {
                report: ReportRef {
                    id,
                    tracking_code: code,
                },
            }
        }
        (_, None) if automated.is_some() => Outcome::Automated {
            rule: automated.unwrap_or_default(),
        },
        ("stored", None) => {
            let conversation: Option<i64> = conn
                .prepare_cached("SELECT conversation_id FROM fb_fragments WHERE inbox_id = ?1")?
                .query_row([inbox_id], |r| r.get(0))
                .optional()?;
            match conversation {
                Some(conversation) => Outcome::Held { conversation },
                None => Outcome::Quarantined {
                    reason: reason.unwrap_or_default(),
                },
            }
        }
        ("quarantined", _) | (_, None) => Outcome::Quarantined {
            reason: reason.unwrap_or_default(),
        },
        (_, Some(id)) => report_outcome(conn, &id)?,
    };
    Ok(Some(Receipt {
        inbox_id,
        outcome,
        redelivered: true,
    }))
}

pub(super) fn report_outcome(conn: &Connection, id: &str) -> Result<Outcome, StoreError> {
    let (code, dup): (String, Option<String>) = conn
        .prepare_cached("SELECT tracking_code, duplicate_of FROM reports WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let report = ReportRef {
        id: id.to_string(),
        tracking_code: code,
    };
    Ok(match dup {
        None => Outcome::Created { report },
        Some(of_id) => {
            let of_code: String = conn
                .prepare_cached("SELECT tracking_code FROM reports WHERE id = ?1")?
                .query_row([&of_id], |r| r.get(0))?;
            Outcome::Duplicate {
                report,
                of: ReportRef {
                    id: of_id,
                    tracking_code: of_code,
                },
            }
        }
    })
}

/// Whether this reporter already has a report in the incident (the original or a linked one):
/// then this one is them repeating themselves, recorded but not forwarded again.
fn already_in(
    conn: &Connection,
    reporter_id: Option<i64>,
    original_reporter: Option<i64>,
    original: &ReportRef,
) -> Result<bool, StoreError> {
    let Some(rid) = reporter_id else {
        return Ok(false);
    };
    if original_reporter == Some(rid) {
        return Ok(true);
    }
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM reports WHERE duplicate_of = ?2 AND reporter_id = ?1)",
        )?
        .query_row(params![rid, original.id], |r| r.get(0))?)
}

/// What the same e-mail (by Message-ID, from the same sender) became when it arrived in another
/// mailbox: the centre's address and a hotline address in Cc deliver one message twice. The
/// report (standing for its original), and whether that copy was a follow-up to it.
fn same_message_elsewhere(
    conn: &Connection,
    s: &Submission,
    external_id: &str,
    reporter_id: Option<i64>,
) -> Result<Option<(ReportRef, bool)>, StoreError> {
    if !matches!(s.kind.as_str(), "maildir" | "imap") || external_id.starts_with("sha256:") {
        return Ok(None);
    }
    // Without the same sender a reused or forged Message-ID proves nothing.
    let Some(rid) = reporter_id else {
        return Ok(None);
    };
    Ok(conn
        .prepare_cached(
            "SELECT o.id, o.tracking_code, i.follow_up FROM inbox i
             JOIN reports r ON r.id = i.report_id
             JOIN reports o ON o.id = coalesce(r.duplicate_of, r.id)
             WHERE i.kind IN ('maildir', 'imap') AND i.external_id = ?1 AND i.channel != ?2
               AND r.reporter_id = ?3
             ORDER BY i.id LIMIT 1",
        )?
        .query_row(params![external_id, s.channel, rid], |r| {
            Ok((
                ReportRef {
                    id: r.get(0)?,
                    tracking_code: r.get(1)?,
                },
                r.get::<_, bool>(2)?,
            ))
        })
        .optional()?)
}

pub(super) fn store_report(
    conn: &Connection,
    settings: &StoreSettings,
    s: &Submission,
    inbox_id: i64,
    draft: &Draft,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Outcome, StoreError> {
    let received_at = s.received_at;
    let received_ms = received_at.timestamp_millis();
    let stamp = rfc3339(now.with_timezone(&settings.tz).fixed_offset());

    let reporter_id: Option<i64> = match draft.reporter.key() {
        Some(key) => Some(
            conn.prepare_cached(
                "INSERT INTO reporters (key, name, email, phone, facebook_psid, app_user_id, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                 ON CONFLICT (key) DO UPDATE SET
                   name = coalesce(excluded.name, name),
                   email = coalesce(excluded.email, email),
                   phone = coalesce(excluded.phone, phone),
                   facebook_psid = coalesce(excluded.facebook_psid, facebook_psid),
                   app_user_id = coalesce(excluded.app_user_id, app_user_id),
                   updated_at = excluded.updated_at
                 RETURNING id",
            )?
            .query_row(
                params![
                    key,
                    draft.reporter.name,
                    draft.reporter.email,
                    draft.reporter.phone,
                    draft.reporter.facebook_psid,
                    draft.reporter.app_user_id,
                    stamp
                ],
                |r| r.get(0),
            )?,
        ),
        None => None,
    };

    // The same e-mail already taken from another mailbox: this copy joins what the first became
    // (a report, or a follow-up to one) and nothing is recorded or forwarded twice.
    let same_message = same_message_elsewhere(conn, s, &draft.external_id, reporter_id)?;
    if let Some((of, true)) = &same_message {
        conn.prepare_cached("UPDATE inbox SET report_id = ?2, follow_up = 1 WHERE id = ?1")?
            .execute(params![inbox_id, of.id])?;
        return Ok(Outcome::FollowUp { report: of.clone() });
    }
    let same_message = same_message.map(|(of, _)| of);

    // A message citing a live report: the same reporter's is a follow-up to it; anyone else's
    // becomes a new report that points at it (a stranger who quotes a code never joins it).
    let mut related = Vec::new();
    if let Some(target) = cited_report(conn, &draft.cites)? {
        if reporter_id.is_some() && target.reporter_id == reporter_id {
            return follow_up(conn, settings, s, inbox_id, draft, target, now);
        }
        related.push(Related {
            tracking_code: target.tracking_code,
            reason: "cites_code".into(),
            score: 1.0,
        });
    }

    let text_key = draft.text_key.clone();
    if let Some(of) = &same_message {
        related.push(Related {
            tracking_code: of.tracking_code.clone(),
            reason: "same_message".into(),
            score: 1.0,
        });
    }
    let duplicate_of: Option<ReportRef> = match (reporter_id, &text_key) {
        _ if same_message.is_some() => same_message,
        (Some(rid), Some(key)) => {
            let since = received_ms - settings.same_text_window.as_millis() as i64;
            // Their earlier report may itself be linked to someone else's: the link goes to the
            // incident's first report.
            conn.prepare_cached(
                "SELECT o.id, o.tracking_code FROM reports r
                 JOIN reports o ON o.id = coalesce(r.duplicate_of, r.id)
                 WHERE r.reporter_id = ?1 AND r.text_key = ?2 AND r.received_ms >= ?3
                 ORDER BY r.received_ms LIMIT 1",
            )?
            .query_row(params![rid, key, since], |r| {
                Ok(ReportRef {
                    id: r.get(0)?,
                    tracking_code: r.get(1)?,
                })
            })
            .optional()?
        }
        _ => None,
    };
    // The same photo from someone else is the same incident: linked and forwarded as
    // `report.duplicate` so the operations centre can merge. From the same reporter it is a
    // repeat, recorded and linked like a repeated text.
    let mut forward_duplicate = false;
    let duplicate_of = match duplicate_of {
        Some(d) => Some(d),
        None => match super::photos::earlier(conn, settings, &draft.media, received_ms)? {
            Some((of, score, of_reporter)) => {
                related.push(Related {
                    tracking_code: of.tracking_code.clone(),
                    reason: "same_photo".into(),
                    score: (score * 100.0).round() / 100.0,
                });
                forward_duplicate = !already_in(conn, reporter_id, of_reporter, &of)?;
                Some(of)
            }
            None => None,
        },
    };
    // The same incident from anyone, in other words: linked with its reason and score. From
    // someone else it is forwarded as `report.duplicate` for the operations centre to merge; from
    // the same reporter it is a repeat, recorded and linked.
    let position = draft.location.as_ref().map(|l| (l.lat, l.lon));
    let duplicate_of = match duplicate_of {
        Some(d) => Some(d),
        None => match super::similar::earlier(
            conn,
            settings,
            draft.signature.as_ref(),
            position,
            received_ms,
        )? {
            Some(m) => {
                related.push(Related {
                    tracking_code: m.of.tracking_code.clone(),
                    reason: m.reason.into(),
                    score: m.score,
                });
                forward_duplicate = !already_in(conn, reporter_id, m.reporter_id, &m.of)?;
                Some(m.of)
            }
            None => None,
        },
    };

    let id = ulid::Ulid::new().to_string();
    let tracking_code = loop {
        let code = crate::tracking::generate(&settings.tracking_prefix);
        let taken: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM reports WHERE tracking_code = ?1)")?
            .query_row([&code], |r| r.get(0))?;
        if !taken {
            break code;
        }
    };
    let unit = draft.unit.clone().or_else(|| {
        settings
            .units
            .iter()
            .find(|(c, _)| *c == draft.category.code)
            .and_then(|(_, u)| u.clone())
    });
    let submitted_at = draft.submitted_at.unwrap_or(received_at);
    let report = Report {
        id: id.clone(),
        tracking_code: tracking_code.clone(),
        channel: ChannelRef {
            name: s.channel.clone(),
            kind: s.kind.clone(),
        },
        external_id: draft.external_id.clone(),
        received_at: rfc3339(received_at),
        submitted_at: rfc3339(submitted_at),
        reporter: Some(draft.reporter.clone()).filter(|r| *r != Default::default()),
        title: draft.title.clone(),
        description: draft.description.clone(),
        quoted: draft.quoted.clone(),
        language: draft.language.clone(),
        category: draft.category.clone(),
        unit: unit.clone(),
        location: draft.location.clone(),
        ward: draft.ward.clone(),
        media: draft.media.clone(),
        omitted_media: draft.omitted_media.clone(),
        duplicate_of: duplicate_of.clone(),
        related,
        follow_up_of: None,
        update: None,
    };
    let event_type = if duplicate_of.is_some() {
        EventType::Duplicate
    } else {
        EventType::Created
    };
    let event = Event {
        schema: SCHEMA.to_string(),
        event: event_type,
        event_id: format!("{id}.{}", event_type.suffix()),
        report,
    };
    let event_json =
        serde_json::to_string(&event).map_err(|e| StoreError::Invalid(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO reports (id, tracking_code, inbox_id, channel, kind, external_id, received_at, received_ms,
            submitted_at, reporter_id, title, description, quoted, full_text, language, category, unit,
            text_key, duplicate_of, event_json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )?
    .execute(params![
        id,
        tracking_code,
        inbox_id,
        s.channel,
        s.kind,
        draft.external_id,
        event.report.received_at,
        received_ms,
        event.report.submitted_at,
        reporter_id,
        draft.title,
        draft.description,
        draft.quoted,
        draft.full_text,
        draft.language,
        draft.category.code,
        unit,
        text_key,
        duplicate_of.as_ref().map(|d| d.id.clone()),
        event_json
    ])?;
    conn.prepare_cached("UPDATE inbox SET report_id = ?2 WHERE id = ?1")?
        .execute(params![inbox_id, id])?;

    let report_ref = ReportRef {
        id: id.clone(),
        tracking_code,
    };
    if s.acknowledge {
        super::acks::owe(
            conn,
            &id,
            &s.channel,
            draft.reporter.email.is_some() || draft.reporter.facebook_psid.is_some(),
            duplicate_of.is_some(),
            now,
        )?;
    }
    super::photos::index(conn, &id, &draft.media, received_ms)?;
    super::similar::index(conn, &id, draft.signature.as_ref(), position, received_ms)?;
    match duplicate_of {
        // Same reporter, same text (or photo): recorded and linked, not forwarded as new.
        // Another reporter's same photo: forwarded as `report.duplicate`.
        Some(of) => {
            if forward_duplicate {
                enqueue(conn, settings, &event, &event_json, now)?;
            }
            Ok(Outcome::Duplicate {
                report: report_ref,
                of,
            })
        }
        None => {
            enqueue(conn, settings, &event, &event_json, now)?;
            Ok(Outcome::Created { report: report_ref })
        }
    }
}

/// One outbox row for each sink whose routing takes the event, in the caller's transaction.
fn enqueue(
    conn: &Connection,
    settings: &StoreSettings,
    event: &Event,
    json: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let stamp = rfc3339(now.with_timezone(&settings.tz).fixed_offset());
    let mut insert = conn.prepare_cached(
        "INSERT INTO outbox (event_id, event_type, report_id, sink, payload, next_attempt_ms, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for sink in settings.sinks.taking(event) {
        insert.execute(params![
            event.event_id,
            event.event.as_str(),
            event.report.id,
            sink,
            json,
            now.timestamp_millis(),
            stamp
        ])?;
    }
    Ok(())
}

pub(super) struct Cited {
    pub(super) id: String,
    pub(super) tracking_code: String,
    pub(super) reporter_id: Option<i64>,
    pub(super) event_json: String,
}

/// A stored report, as a follow-up needs it.
pub(super) fn cited_by_id(conn: &Connection, id: &str) -> Result<Cited, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, tracking_code, reporter_id, event_json FROM reports WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok(Cited {
                id: r.get(0)?,
                tracking_code: r.get(1)?,
                reporter_id: r.get(2)?,
                event_json: r.get(3)?,
            })
        })?)
}

/// The first cited code that names a stored report (a duplicate stands for its original).
fn cited_report(conn: &Connection, codes: &[String]) -> Result<Option<Cited>, StoreError> {
    for code in codes {
        let row: Option<(String, Option<String>)> = conn
            .prepare_cached("SELECT id, duplicate_of FROM reports WHERE tracking_code = ?1")?
            .query_row([code], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((id, dup)) = row {
            let id = dup.unwrap_or(id);
            return Ok(Some(cited_by_id(conn, &id)?));
        }
    }
    Ok(None)
}

/// Adds a follow-up to the report it cites: its text and media are recorded, the media join the
/// report, and a `report.updated` event is queued (after the report's own events, per sink).
pub(super) fn follow_up(
    conn: &Connection,
    settings: &StoreSettings,
    s: &Submission,
    inbox_id: i64,
    draft: &Draft,
    target: Cited,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Outcome, StoreError> {
    let received_at = rfc3339(s.received_at);
    let media_json =
        serde_json::to_string(&draft.media).map_err(|e| StoreError::Invalid(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO updates (report_id, inbox_id, received_at, description, media) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![target.id, inbox_id, received_at, draft.description, media_json])?;
    let update_id = conn.last_insert_rowid();
    conn.prepare_cached("UPDATE inbox SET report_id = ?2, follow_up = 1 WHERE id = ?1")?
        .execute(params![inbox_id, target.id])?;

    let mut event: Event = serde_json::from_str(&target.event_json)
        .map_err(|e| StoreError::Invalid(format!("stored event is unreadable: {e}")))?;
    for m in &draft.media {
        if !event.report.media.iter().any(|x| x.sha256 == m.sha256) {
            event.report.media.push(m.clone());
        }
    }
    event
        .report
        .omitted_media
        .extend(draft.omitted_media.iter().cloned());
    if event.report.location.is_none() {
        event.report.location = draft.location.clone();
    }
    event.event = EventType::Updated;
    event.event_id = format!("{}.updated.{update_id}", target.id);
    event.report.update = Some(Update {
        received_at,
        description: draft.description.clone(),
        media: draft.media.clone(),
    });
    let json = serde_json::to_string(&event).map_err(|e| StoreError::Invalid(e.to_string()))?;
    conn.prepare_cached("UPDATE reports SET event_json = ?2 WHERE id = ?1")?
        .execute(params![target.id, json])?;
    enqueue(conn, settings, &event, &json, now)?;
    Ok(Outcome::FollowUp {
        report: ReportRef {
            id: target.id,
            tracking_code: target.tracking_code,
        },
    })
}

fn deliveries(
    conn: &Connection,
    list: &[(i64, Delivery)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for (id, d) in list {
        match d {
            Delivery::Delivered => conn
                .prepare_cached(
                    "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = ?2, last_error = NULL
                     WHERE id = ?1",
                )?
                .execute(params![id, stamp])?,
            Delivery::Retry { error, next_attempt_ms } => conn
                .prepare_cached(
                    "UPDATE outbox SET state = 'retrying', attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3
                     WHERE id = ?1 AND state != 'delivered'",
                )?
                .execute(params![id, next_attempt_ms, error])?,
            Delivery::Dead { error } => conn
                .prepare_cached(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?2
                     WHERE id = ?1 AND state != 'delivered'",
                )?
                .execute(params![id, error])?,
        };
    }
    Ok(())
}

fn requeue(
    conn: &Connection,
    ids: Option<&[i64]>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<usize, StoreError> {
    let now_ms = now.timestamp_millis();
    match ids {
        None => Ok(conn.execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?1, last_error = NULL
             WHERE state IN ('dead', 'retrying')",
            [now_ms],
        )?),
        Some(ids) => {
            let mut n = 0;
            for id in ids {
                n += conn.execute(
                    "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?2, last_error = NULL
                     WHERE id = ?1",
                    params![id, now_ms],
                )?;
            }
            Ok(n)
        }
    }
}
