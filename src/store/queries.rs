//! Read-side queries, on a reader connection. Nothing here writes.

use super::StoreError;
use crate::report::Event;
use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, Clone)]
pub struct ReportRow {
    pub tracking_code: String,
    pub received_at: String,
    pub channel: String,
    pub category: String,
    pub title: String,
    pub duplicate_of: Option<String>,
}

/// Newest first.
pub fn list_reports(conn: &Connection, limit: usize) -> Result<Vec<ReportRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT r.tracking_code, r.received_at, r.channel, r.category, r.title, d.tracking_code
         FROM reports r LEFT JOIN reports d ON d.id = r.duplicate_of
         ORDER BY r.received_ms DESC, r.id DESC LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([limit as i64], |r| {
            Ok(ReportRow {
                tracking_code: r.get(0)?,
                received_at: r.get(1)?,
                channel: r.get(2)?,
                category: r.get(3)?,
                title: r.get(4)?,
                duplicate_of: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The stored event of one report, by tracking code, with its full text.
pub fn report_by_code(
    conn: &Connection,
    code: &str,
) -> Result<Option<(Event, String)>, StoreError> {
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT event_json, full_text FROM reports WHERE tracking_code = ?1",
            [code],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(json, full)| Ok((parse_event(&json)?, full)))
        .transpose()
}

/// Every report's event, oldest first, for `reports export`.
pub fn for_each_event(
    conn: &Connection,
    mut f: impl FnMut(&str) -> std::io::Result<()>,
) -> Result<usize, StoreError> {
    let mut stmt = conn.prepare("SELECT event_json FROM reports ORDER BY received_ms, id")?;
    let mut rows = stmt.query([])?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let json: String = row.get(0)?;
        f(&json).map_err(|e| StoreError::Invalid(format!("cannot write: {e}")))?;
        n += 1;
    }
    Ok(n)
}

fn parse_event(json: &str) -> Result<Event, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Invalid(format!("stored event is unreadable: {e}")))
}

#[derive(Debug, Clone)]
pub struct InboxRow {
    pub id: i64,
    pub channel: String,
    pub kind: String,
    pub received_at: String,
    pub status: String,
    pub reason: Option<String>,
    pub size: i64,
    pub source_ref: Option<String>,
}

pub fn list_quarantine(conn: &Connection) -> Result<Vec<InboxRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, channel, kind, received_at, status, reason, length(raw), source_ref
         FROM inbox WHERE status = 'quarantined' ORDER BY id",
    )?;
    let rows = stmt
        .query_map([], inbox_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn inbox_item(conn: &Connection, id: i64) -> Result<Option<(InboxRow, Vec<u8>)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id, channel, kind, received_at, status, reason, length(raw), source_ref, raw
             FROM inbox WHERE id = ?1",
            [id],
            |r| Ok((inbox_row(r)?, r.get::<_, Vec<u8>>(8)?)),
        )
        .optional()?)
}

fn inbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InboxRow> {
    Ok(InboxRow {
        id: r.get(0)?,
        channel: r.get(1)?,
        kind: r.get(2)?,
        received_at: r.get(3)?,
        status: r.get(4)?,
        reason: r.get(5)?,
        size: r.get(6)?,
        source_ref: r.get(7)?,
    })
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    pub report_id: String,
    pub sink: String,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub payload: String,
    pub event_type: String,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

const OUTBOX_COLUMNS: &str = "id, event_id, report_id, sink, state, attempts, next_attempt_ms, last_error, payload, event_type, created_at, delivered_at";

/// Which outbox rows `phananh outbox list` shows.
#[derive(Debug, Clone, Default)]
pub struct OutboxFilter {
    /// Delivered rows too.
    pub all: bool,
    pub sink: Option<String>,
    pub state: Option<String>,
}

/// Rows not yet delivered (or all, with `all`), oldest first, without their payloads.
pub fn list_outbox(
    conn: &Connection,
    filter: &OutboxFilter,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, event_id, report_id, sink, state, attempts, next_attempt_ms, last_error, '', event_type, created_at, delivered_at
         FROM outbox
         WHERE (?1 OR state != 'delivered') AND (?2 IS NULL OR sink = ?2) AND (?3 IS NULL OR state = ?3)
         ORDER BY id LIMIT ?4",
    )?;
    let rows = stmt
        .query_map(
            params![filter.all, filter.sink, filter.state, limit as i64],
            outbox_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// One outbox row with its payload, by row id or event id (all its sinks' rows).
pub fn outbox_rows(conn: &Connection, key: &str) -> Result<Vec<OutboxRow>, StoreError> {
    let sql =
        format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1 OR event_id = ?2 ORDER BY id");
    let id = key.trim_start_matches('#').parse::<i64>().unwrap_or(-1);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(params![id, key], outbox_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Rows a sink may deliver now. A row waits while an earlier row of the same report for the same
/// sink is undelivered, so an update never overtakes its report.
pub fn due_outbox(
    conn: &Connection,
    sink: &str,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT o.id, o.event_id, o.report_id, o.sink, o.state, o.attempts, o.next_attempt_ms, o.last_error, o.payload,
                o.event_type, o.created_at, o.delivered_at
         FROM outbox o
         WHERE o.sink = ?1 AND o.state IN ('pending', 'retrying') AND o.next_attempt_ms <= ?2
           AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.sink = o.sink AND e.report_id = o.report_id
                           AND e.id < o.id AND e.state != 'delivered')
         ORDER BY o.id LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![sink, now_ms, limit as i64], outbox_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A sink's undelivered rows by state, and the age of the oldest: an index walk over the rows not
/// delivered (dead ones included), not over the whole outbox.
pub fn sink_counts(
    conn: &Connection,
    sink: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::health::OutboxCounts, StoreError> {
    let mut counts = crate::health::OutboxCounts::default();
    let mut stmt = conn.prepare_cached(
        "SELECT state, count(*) FROM outbox WHERE sink = ?1 AND state IN ('pending', 'retrying', 'dead')
         GROUP BY state",
    )?;
    let mut rows = stmt.query([sink])?;
    while let Some(r) = rows.next()? {
        let n: i64 = r.get(1)?;
        let state: String = r.get(0)?;
        match state.as_str() {
            "pending" => counts.pending = n,
            "retrying" => counts.retrying = n,
            _ => counts.dead = n,
        }
    }
    let oldest: Option<String> = conn
        .prepare_cached(
            "SELECT created_at FROM outbox WHERE sink = ?1 AND state IN ('pending', 'retrying')
             ORDER BY id LIMIT 1",
        )?
        .query_row([sink], |r| r.get(0))
        .optional()?;
    counts.oldest_pending_s = oldest
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0));
    Ok(counts)
}

/// When the next row a sink may deliver becomes due, so the forwarder sleeps just that long. A row
/// held back behind an earlier undelivered event of its report does not count: its turn comes
/// with that event's, which is counted.
pub fn next_due_ms(conn: &Connection, sink: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT min(o.next_attempt_ms) FROM outbox o
             WHERE o.sink = ?1 AND o.state IN ('pending', 'retrying')
               AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.sink = o.sink AND e.report_id = o.report_id
                               AND e.id < o.id AND e.state != 'delivered')",
        )?
        .query_row([sink], |r| r.get(0))
        .optional()?
        .flatten())
}

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        event_id: r.get(1)?,
        report_id: r.get(2)?,
        sink: r.get(3)?,
        state: r.get(4)?,
        attempts: r.get(5)?,
        next_attempt_ms: r.get(6)?,
        last_error: r.get(7)?,
        payload: r.get(8)?,
        event_type: r.get(9)?,
        created_at: r.get(10)?,
        delivered_at: r.get(11)?,
    })
}

/// Counts by state for each sink: (sink, state, count).
pub fn outbox_counts(conn: &Connection) -> Result<Vec<(String, String, i64)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT sink, state, count(*) FROM outbox GROUP BY sink, state ORDER BY sink, state",
    )?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn count(conn: &Connection, sql: &str) -> Result<i64, StoreError> {
    Ok(conn.query_row(sql, [], |r| r.get(0))?)
}

/// When the channel's newest inbox item was received (epoch ms), if it ever had one.
pub fn last_received_ms(conn: &Connection, channel: &str) -> Result<Option<i64>, StoreError> {
    let at: Option<String> = conn
        .query_row(
            "SELECT received_at FROM inbox WHERE channel = ?1 ORDER BY id DESC LIMIT 1",
            [channel],
            |r| r.get(0),
        )
        .optional()?;
    Ok(at
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.timestamp_millis()))
}

/// An IMAP channel's stored position in a mailbox: (uidvalidity, last_uid).
pub fn imap_cursor(
    conn: &Connection,
    channel: &str,
    mailbox: &str,
) -> Result<Option<(u32, u32)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT uidvalidity, last_uid FROM imap_cursors WHERE channel = ?1 AND mailbox = ?2",
            params![channel, mailbox],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}
