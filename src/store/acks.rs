//! The acknowledgement outbox: one row per new report of a channel that acknowledges, written in
//! the report's transaction, then moved by the channel's sender through
//! pending → sending → sent | retrying | suppressed | dead. `sending` is committed before the
//! SMTP conversation, so a crash mid-send never sends a second copy: the row is found stale and
//! marked dead instead (a citizen never gets two).

use super::StoreError;
use crate::channels::email::Bounce;
use rusqlite::{Connection, OptionalExtension, params};

/// What a sender made of one acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub enum AckUpdate {
    Sent,
    /// Not sent, on purpose; the reason is a stable word (`too_old`, `bounced`, ...).
    Suppressed {
        reason: String,
    },
    /// Failed for now; `counts` is false when nothing was tried (a domain's rate limit).
    Retry {
        error: String,
        next_attempt_ms: i64,
        counts: bool,
    },
    Dead {
        error: String,
    },
    /// `phananh acks retry`: due again now, as if new.
    Requeue,
}

/// One acknowledgement due to be sent, with what the message needs.
#[derive(Debug, Clone)]
pub struct DueAck {
    pub id: i64,
    pub state: String,
    /// `operator_retry` after `phananh acks retry`.
    pub reason: Option<String>,
    pub attempts: u32,
    pub report_id: String,
    pub tracking_code: String,
    pub title: String,
    pub submitted_at: String,
    pub received_at: String,
    pub external_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// The Messenger sender (facebook channels).
    pub psid: Option<String>,
    pub next_attempt_ms: i64,
}

/// Acks of `channel` due at `now_ms`, and those left `sending` before `stale_ms` (a crash or a
/// lost relay mid-conversation), oldest first.
pub fn due(
    conn: &Connection,
    channel: &str,
    now_ms: i64,
    stale_ms: i64,
    limit: usize,
) -> Result<Vec<DueAck>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.id, a.state, a.attempts, a.report_id, r.tracking_code, r.title, r.submitted_at,
                r.received_at, r.external_id, p.email, p.name, a.next_attempt_ms, a.reason,
                p.facebook_psid
         FROM acks a
         JOIN reports r ON r.id = a.report_id
         LEFT JOIN reporters p ON p.id = r.reporter_id
         WHERE a.channel = ?1
           AND ((a.state IN ('pending', 'retrying') AND a.next_attempt_ms <= ?2)
                OR (a.state = 'sending' AND a.next_attempt_ms <= ?3))
         ORDER BY a.next_attempt_ms, a.id
         LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![channel, now_ms, stale_ms, limit as i64], |r| {
        Ok(DueAck {
            id: r.get(0)?,
            state: r.get(1)?,
            attempts: r.get(2)?,
            report_id: r.get(3)?,
            tracking_code: r.get(4)?,
            title: r.get(5)?,
            submitted_at: r.get(6)?,
            received_at: r.get(7)?,
            external_id: r.get(8)?,
            email: r.get(9)?,
            name: r.get(10)?,
            next_attempt_ms: r.get(11)?,
            reason: r.get(12)?,
            psid: r.get(13)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One acknowledgement as `phananh acks list` shows it (no personal data).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AckRow {
    pub id: i64,
    pub channel: String,
    pub tracking_code: String,
    pub state: String,
    pub reason: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: String,
}

/// Newest first; without `all`, only those not sent.
pub fn list(conn: &Connection, all: bool, limit: usize) -> Result<Vec<AckRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT a.id, a.channel, r.tracking_code, a.state, a.reason, a.attempts, a.last_error, a.created_at
         FROM acks a JOIN reports r ON r.id = a.report_id
         WHERE ?1 OR a.state != 'sent'
         ORDER BY a.id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![all, limit as i64], |r| {
        Ok(AckRow {
            id: r.get(0)?,
            channel: r.get(1)?,
            tracking_code: r.get(2)?,
            state: r.get(3)?,
            reason: r.get(4)?,
            attempts: r.get(5)?,
            last_error: r.get(6)?,
            created_at: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many acknowledgements of a channel are in a state, for a reason.
pub type Count = (String, String, Option<String>, i64);

/// (channel, state, reason, count).
pub fn counts(conn: &Connection) -> Result<Vec<Count>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT channel, state, reason, count(*) FROM acks GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Ids `acks retry` may requeue: every dead one, or the given ids that are dead or suppressed.
pub fn retryable(conn: &Connection, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
    if ids.is_empty() {
        let mut stmt = conn.prepare("SELECT id FROM acks WHERE state = 'dead' ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        return Ok(rows.collect::<Result<_, _>>()?);
    }
    let mut out = Vec::new();
    for id in ids {
        let ok: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM acks WHERE id = ?1 AND state IN ('dead', 'suppressed'))",
            )?
            .query_row([id], |r| r.get(0))?;
        if ok {
            out.push(*id);
        }
    }
    Ok(out)
}

/// When the next ack of `channel` falls due, if any waits.
pub fn next_due_ms(conn: &Connection, channel: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT min(next_attempt_ms) FROM acks
             WHERE channel = ?1 AND state IN ('pending', 'retrying')",
        )?
        .query_row([channel], |r| r.get(0))?)
}

/// Until when an address must not be acknowledged, if a bounce said so.
pub fn suppressed_until(conn: &Connection, address: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT until_ms FROM mail_suppressions WHERE address_sha256 = ?1")?
        .query_row([address_key(address)], |r| r.get(0))
        .optional()?)
}

pub fn address_key(address: &str) -> String {
    crate::pipeline::sha256_hex(address.trim().to_ascii_lowercase().as_bytes())
}

/// Records the acknowledgement a new report is owed (writer, in the report's transaction).
/// A report without an address, or a repeat of the reporter's own earlier report, gets a row
/// that says why nothing is sent.
pub(super) fn owe(
    conn: &Connection,
    report_id: &str,
    channel: &str,
    has_address: bool,
    duplicate: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (state, reason, done) = match (has_address, duplicate) {
        (false, _) => ("suppressed", Some("no_address"), Some(stamp.as_str())),
        (true, true) => ("suppressed", Some("duplicate"), Some(stamp.as_str())),
        (true, false) => ("pending", None, None),
    };
    conn.prepare_cached(
        "INSERT INTO acks (report_id, channel, state, reason, next_attempt_ms, created_at, done_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (report_id) DO NOTHING",
    )?
    .execute(params![
        report_id,
        channel,
        state,
        reason,
        now.timestamp_millis(),
        stamp,
        done
    ])?;
    Ok(())
}

/// A permanent bounce of one of our acknowledgements: that address gets no more for
/// `suppress_for`. Returns the tracking code of the bounced acknowledgement's report.
pub(super) fn bounced(
    conn: &Connection,
    bounce: &Bounce,
    inbox_id: i64,
    suppress_for: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<String>, StoreError> {
    if !bounce.permanent {
        return Ok(None);
    }
    for id in &bounce.message_ids {
        let hit: Option<(i64, Option<String>, String)> = conn
            .prepare_cached(
                "SELECT a.id, p.email, r.tracking_code FROM acks a
                 JOIN reports r ON r.id = a.report_id
                 LEFT JOIN reporters p ON p.id = r.reporter_id
                 WHERE a.message_id = ?1",
            )?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((ack_id, Some(email), code)) = hit else {
            continue;
        };
        let until = now.timestamp_millis() + suppress_for.as_millis() as i64;
        conn.prepare_cached(
            "INSERT INTO mail_suppressions (address_sha256, until_ms, reason, ack_id, inbox_id, created_at)
             VALUES (?1, ?2, 'bounce', ?3, ?4, ?5)
             ON CONFLICT (address_sha256) DO UPDATE SET
               until_ms = max(until_ms, excluded.until_ms), ack_id = excluded.ack_id,
               inbox_id = excluded.inbox_id, created_at = excluded.created_at",
        )?
        .execute(params![
            address_key(&email),
            until,
            ack_id,
            inbox_id,
            now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ])?;
        return Ok(Some(code));
    }
    Ok(None)
}

/// Marks acknowledgements `sending` under their Message-IDs, and answers which it did: a row
/// another sender claimed first (an old sender still finishing after a reload) is not returned,
/// so it is not mailed twice.
pub(super) fn claim(
    conn: &Connection,
    list: &[(i64, String)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<i64>, StoreError> {
    let mut claimed = Vec::with_capacity(list.len());
    for (id, message_id) in list {
        let n = conn
            .prepare_cached(
                "UPDATE acks SET state = 'sending', message_id = ?2, next_attempt_ms = ?3
                 WHERE id = ?1 AND state IN ('pending', 'retrying')",
            )?
            .execute(params![id, message_id, now.timestamp_millis()])?;
        if n == 1 {
            claimed.push(*id);
        }
    }
    Ok(claimed)
}

pub(super) fn update(
    conn: &Connection,
    list: &[(i64, AckUpdate)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let now_ms = now.timestamp_millis();
    for (id, u) in list {
        match u {
            AckUpdate::Sent => conn
                .prepare_cached(
                    "UPDATE acks SET state = 'sent', attempts = attempts + 1, last_error = NULL, done_at = ?2
                     WHERE id = ?1 AND state = 'sending'",
                )?
                .execute(params![id, stamp])?,
            AckUpdate::Suppressed { reason } => conn
                .prepare_cached(
                    "UPDATE acks SET state = 'suppressed', reason = ?2, done_at = ?3
                     WHERE id = ?1 AND state IN ('pending', 'retrying')",
                )?
                .execute(params![id, reason, stamp])?,
            AckUpdate::Retry {
                error,
                next_attempt_ms,
                counts,
            } => conn
                .prepare_cached(
                    "UPDATE acks SET state = 'retrying', attempts = attempts + ?4, next_attempt_ms = ?2,
                       last_error = ?3
                     WHERE id = ?1 AND state IN ('pending', 'retrying', 'sending')",
                )?
                .execute(params![id, next_attempt_ms, error, *counts as i64])?,
            AckUpdate::Dead { error } => conn
                .prepare_cached(
                    "UPDATE acks SET state = 'dead', attempts = attempts + 1, last_error = ?2, done_at = ?3
                     WHERE id = ?1 AND state IN ('pending', 'retrying', 'sending')",
                )?
                .execute(params![id, error, stamp])?,
            AckUpdate::Requeue => conn
                .prepare_cached(
                    "UPDATE acks SET state = 'pending', reason = 'operator_retry', attempts = 0, last_error = NULL,
                       next_attempt_ms = ?2, done_at = NULL
                     WHERE id = ?1 AND state IN ('dead', 'suppressed')",
                )?
                .execute(params![id, now_ms])?,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_claimed_for_sending_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", false).unwrap();
        super::super::schema::migrations()
            .to_latest(&mut conn)
            .unwrap();
        conn.execute(
            "INSERT INTO acks (report_id, channel, state, next_attempt_ms, created_at)
             VALUES ('r1', 'mail', 'pending', 0, 'now')",
            [],
        )
        .unwrap();
        let now = chrono::Utc::now();
        let list = vec![(1, "<PA-1.r1@x>".to_string())];
        assert_eq!(claim(&conn, &list, now).unwrap(), vec![1]);
        // A second sender (an old one finishing after a reload) gets nothing to send.
        assert!(claim(&conn, &list, now).unwrap().is_empty());
    }
}
