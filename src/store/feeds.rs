//! Polled feeds in the store: each page's items and the feed's position are committed in one
//! transaction, so a restart resumes exactly after the last page stored, and a request seen
//! again unchanged is a repeat while one seen changed updates its report.

use super::writer::{cited_by_id, follow_up, store_report};
use super::{Outcome, StoreError, StoreSettings, Submission};
use crate::pipeline::Draft;
use rusqlite::{Connection, OptionalExtension, params};

/// A feed's position: everything created up to `done_until` is stored; a window up to
/// `pending_end` is being paged, and `next_page` is the next page of it to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCursor {
    pub channel: String,
    pub done_until: String,
    pub pending_end: Option<String>,
    pub next_page: u32,
    /// The page size `next_page` counts in: a changed `page_size` restarts the window.
    pub page_size: u32,
}

/// Whether a version newer than `key`'s (`<id>@<version>`) is already stored. Versions are
/// compared as times when both read as RFC 3339, else not at all (taken as new).
fn is_stale(conn: &Connection, channel: &str, key: &str) -> Result<bool, StoreError> {
    let Some((id, version)) = key.rsplit_once('@') else {
        return Ok(false);
    };
    let Ok(this) = chrono::DateTime::parse_from_rfc3339(version) else {
        return Ok(false);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT external_id FROM inbox WHERE channel = ?1 AND external_id > ?2 AND external_id < ?3",
    )?;
    let prefix = format!("{id}@");
    let rows = stmt.query_map(params![channel, prefix, format!("{id}A")], |r| {
        r.get::<_, String>(0)
    })?;
    for other in rows {
        let other = other?;
        if let Some(v) = other.strip_prefix(&prefix)
            && let Ok(t) = chrono::DateTime::parse_from_rfc3339(v)
            && t > this
        {
            return Ok(true);
        }
    }
    Ok(false)
}

pub fn cursor(conn: &Connection, channel: &str) -> Result<Option<FeedCursor>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT done_until, pending_end, next_page, page_size FROM feed_cursors WHERE channel = ?1",
        )?
        .query_row([channel], |r| {
            Ok(FeedCursor {
                channel: channel.to_string(),
                done_until: r.get(0)?,
                pending_end: r.get(1)?,
                next_page: r.get(2)?,
                page_size: r.get(3)?,
            })
        })
        .optional()?)
}

pub(super) fn set_cursor(conn: &Connection, c: &FeedCursor) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO feed_cursors (channel, done_until, pending_end, next_page, page_size)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (channel) DO UPDATE SET done_until = excluded.done_until,
           pending_end = excluded.pending_end, next_page = excluded.next_page,
           page_size = excluded.page_size",
    )?
    .execute(params![
        c.channel,
        c.done_until,
        c.pending_end,
        c.next_page,
        c.page_size
    ])?;
    Ok(())
}

/// A feed item: new → a report; a newer version of one already stored → an update of its report;
/// an older version (a stale cache, a lagging replica) → kept, marked `stale_version`, and the
/// report left as it is.
pub(super) fn item(
    conn: &Connection,
    settings: &StoreSettings,
    s: &Submission,
    inbox_id: i64,
    key: &str,
    draft: &Draft,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Outcome, StoreError> {
    if is_stale(conn, &s.channel, key)? {
        conn.prepare_cached("UPDATE inbox SET automated = 'stale_version' WHERE id = ?1")?
            .execute([inbox_id])?;
        return Ok(Outcome::Automated {
            rule: "stale_version".into(),
        });
    }
    let earlier: Option<String> = conn
        .prepare_cached(
            // The item's own report, even when it was linked to another person's as the same
            // incident: its changes are its own.
            "SELECT id FROM reports WHERE channel = ?1 AND external_id = ?2
             ORDER BY received_ms LIMIT 1",
        )?
        .query_row(params![s.channel, draft.external_id], |r| r.get(0))
        .optional()?;
    match earlier {
        None => store_report(conn, settings, s, inbox_id, draft, now),
        Some(id) => {
            let target = cited_by_id(conn, &id)?;
            follow_up(conn, settings, s, inbox_id, draft, target, now)
        }
    }
}
