//! Messenger conversations in the store: fragments are gathered per sender while the
//! conversation is open; the channel's assembler closes it into one report. Everything here runs
//! in the writer's transaction, so a restart never loses a fragment, splits a conversation or
//! makes a report twice.

use super::writer::{cited_by_id, follow_up, store_report};
use super::{Outcome, StoreError, StoreSettings, Submission};
use crate::channels::facebook::Fragment;
use crate::pipeline::Draft;
use rusqlite::{Connection, OptionalExtension, params};

/// A new message: into the sender's open conversation, or a new one. Shortly after their last
/// report was made, the new conversation adds to that report (`update_of`) instead of making one.
pub(super) fn gather(
    conn: &Connection,
    s: &Submission,
    inbox_id: i64,
    psid: &str,
    fragment: &Fragment,
    update_window_ms: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Outcome, StoreError> {
    let now_ms = now.timestamp_millis();
    let open: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM fb_conversations WHERE channel = ?1 AND psid = ?2 AND state = 'open'",
        )?
        .query_row(params![s.channel, psid], |r| r.get(0))
        .optional()?;
    let conversation = match open {
        Some(id) => {
            conn.prepare_cached(
                "UPDATE fb_conversations SET last_ms = ?2, rev = rev + 1 WHERE id = ?1",
            )?
            .execute(params![id, now_ms])?;
            id
        }
        None => {
            // The report to add to: a repeat of an earlier report stands for that report, which
            // is the one consumers know.
            let recent: Option<String> = conn
                .prepare_cached(
                    "SELECT coalesce(r.duplicate_of, r.id) FROM fb_conversations c
                     JOIN reports r ON r.id = coalesce(c.update_of, c.report_id)
                     WHERE c.channel = ?1 AND c.psid = ?2 AND c.state = 'closed'
                       AND c.report_id IS NOT NULL AND c.closed_ms >= ?3
                     ORDER BY c.closed_ms DESC LIMIT 1",
                )?
                .query_row(params![s.channel, psid, now_ms - update_window_ms], |r| {
                    r.get(0)
                })
                .optional()?;
            conn.prepare_cached(
                "INSERT INTO fb_conversations (channel, psid, state, opened_ms, last_ms, update_of)
                 VALUES (?1, ?2, 'open', ?3, ?3, ?4)",
            )?
            .execute(params![s.channel, psid, now_ms, recent])?;
            conn.last_insert_rowid()
        }
    };
    // An edit that arrived before its message waits as `<mid>#edit`: it now applies here.
    let mut fragment = fragment.clone();
    let early: Option<(i64, String, i64)> = conn
        .prepare_cached(
            "SELECT id, data, inbox_id FROM fb_fragments WHERE conversation_id = ?1 AND mid = ?2",
        )?
        .query_row(
            params![conversation, format!("{}#edit", fragment.mid)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((id, data, edit_inbox)) = early {
        conn.prepare_cached("UPDATE inbox SET automated = 'edit_applied' WHERE id = ?1")?
            .execute([edit_inbox])?;
        let edit: Fragment =
            serde_json::from_str(&data).map_err(|e| StoreError::Invalid(e.to_string()))?;
        fragment.text = edit.text;
        conn.prepare_cached("DELETE FROM fb_fragments WHERE id = ?1")?
            .execute([id])?;
    }
    let data = serde_json::to_string(&fragment).map_err(|e| StoreError::Invalid(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO fb_fragments (conversation_id, inbox_id, mid, timestamp_ms, data)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        conversation,
        inbox_id,
        fragment.mid,
        fragment.timestamp_ms,
        data
    ])?;
    Ok(Outcome::Held { conversation })
}

/// An edited message: its fragment changes while the conversation is open; after that, the new
/// text is a message of its own (it adds to the report within the update window).
#[allow(clippy::too_many_arguments)]
pub(super) fn edit(
    conn: &Connection,
    s: &Submission,
    inbox_id: i64,
    psid: &str,
    mid: &str,
    text: &str,
    update_window_ms: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Outcome, StoreError> {
    let found: Option<(i64, String, i64)> = conn
        .prepare_cached(
            "SELECT f.id, f.data, c.id FROM fb_fragments f
             JOIN fb_conversations c ON c.id = f.conversation_id
             WHERE f.mid = ?1 AND c.channel = ?2 AND c.psid = ?3 AND c.state = 'open'
             ORDER BY f.id DESC LIMIT 1",
        )?
        .query_row(params![mid, s.channel, psid], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let text = (!text.trim().is_empty()).then(|| text.to_string());
    if let Some((fragment_id, data, conversation)) = found {
        let mut f: Fragment =
            serde_json::from_str(&data).map_err(|e| StoreError::Invalid(e.to_string()))?;
        f.text = text;
        let data = serde_json::to_string(&f).map_err(|e| StoreError::Invalid(e.to_string()))?;
        conn.prepare_cached("UPDATE fb_fragments SET data = ?2 WHERE id = ?1")?
            .execute(params![fragment_id, data])?;
        conn.prepare_cached("UPDATE fb_conversations SET rev = rev + 1 WHERE id = ?1")?
            .execute([conversation])?;
        // The edit's own row is kept, applied to its message: never a report of its own.
        conn.prepare_cached("UPDATE inbox SET automated = 'edit_applied' WHERE id = ?1")?
            .execute([inbox_id])?;
        return Ok(Outcome::Held { conversation });
    }
    // Its message is not here yet (or already made into a report): the edit waits as a message
    // of its own, which the original takes over if it comes.
    let f = Fragment {
        mid: format!("{mid}#edit"),
        timestamp_ms: now.timestamp_millis(),
        text,
        attachments: Vec::new(),
        location: None,
    };
    gather(conn, s, inbox_id, psid, &f, update_window_ms, now)
}

/// What the assembler read of a conversation before making its draft.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub rev: i64,
    pub fragment_ids: Vec<i64>,
    /// Past `assemble_max` when read: close with what was read, whatever came since.
    pub overdue: bool,
}

/// Closes a conversation into a report (or into an update of the report it follows), if it is
/// still open and unchanged since the assembler read it. A message that arrived meanwhile keeps it
/// open and the assembler tries again, unless it is overdue: then the newer messages move to a
/// conversation of their own and what was read is closed.
pub(super) fn close(
    conn: &Connection,
    settings: &StoreSettings,
    s: &Submission,
    conversation: i64,
    read: &Read,
    draft: &Draft,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(i64, Outcome), StoreError> {
    let row: Option<(String, Option<String>, i64, String, i64)> = conn
        .prepare_cached(
            "SELECT state, update_of, rev, psid, last_ms FROM fb_conversations WHERE id = ?1",
        )?
        .query_row([conversation], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((state, update_of, rev, psid, last_ms)) = row else {
        return Err(StoreError::Invalid(format!(
            "no conversation {conversation}"
        )));
    };
    let first_inbox: Option<i64> = match read.fragment_ids.first() {
        Some(_) => conn
            .prepare_cached(
                "SELECT inbox_id FROM fb_fragments WHERE conversation_id = ?1
                 ORDER BY timestamp_ms, id LIMIT 1",
            )?
            .query_row([conversation], |r| r.get(0))
            .optional()?,
        None => None,
    };
    let Some(first_inbox) = first_inbox else {
        return Err(StoreError::Invalid(format!(
            "conversation {conversation} has no messages"
        )));
    };
    if state != "open" {
        return Ok((first_inbox, Outcome::Held { conversation }));
    }
    if rev != read.rev {
        let ids: Vec<i64> = conn
            .prepare_cached("SELECT id FROM fb_fragments WHERE conversation_id = ?1 ORDER BY id")?
            .query_map([conversation], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let newer: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !read.fragment_ids.contains(id))
            .collect();
        // An edit (same messages, new text) or not overdue: read it again.
        if !read.overdue || newer.is_empty() || newer.len() + read.fragment_ids.len() != ids.len() {
            return Ok((first_inbox, Outcome::Held { conversation }));
        }
        conn.prepare_cached(
            "INSERT INTO fb_conversations (channel, psid, state, opened_ms, last_ms, update_of)
             VALUES (?1, ?2, 'open', ?3, ?3, NULL)",
        )?
        .execute(params![s.channel, psid, last_ms])?;
        let successor = conn.last_insert_rowid();
        for id in newer {
            conn.prepare_cached("UPDATE fb_fragments SET conversation_id = ?2 WHERE id = ?1")?
                .execute(params![id, successor])?;
        }
        // The successor adds to the report this one makes, once that is known (below).
        let outcome = finish(
            conn,
            settings,
            s,
            conversation,
            update_of,
            first_inbox,
            draft,
            now,
        )?;
        let made = report_of(&outcome, conversation)?;
        conn.prepare_cached("UPDATE fb_conversations SET update_of = ?2 WHERE id = ?1")?
            .execute(params![successor, made])?;
        return Ok((first_inbox, outcome));
    }
    let outcome = finish(
        conn,
        settings,
        s,
        conversation,
        update_of,
        first_inbox,
        draft,
        now,
    )?;
    Ok((first_inbox, outcome))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    conn: &Connection,
    settings: &StoreSettings,
    s: &Submission,
    conversation: i64,
    update_of: Option<String>,
    first_inbox: i64,
    draft: &Draft,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Outcome, StoreError> {
    let outcome = match update_of {
        Some(report_id) => {
            let target = cited_by_id(conn, &report_id)?;
            follow_up(conn, settings, s, first_inbox, draft, target, now)?
        }
        None => store_report(conn, settings, s, first_inbox, draft, now)?,
    };
    let report_id = report_of(&outcome, conversation)?;
    conn.prepare_cached(
        "UPDATE fb_conversations SET state = 'closed', closed_ms = ?2, report_id = ?3 WHERE id = ?1",
    )?
    .execute(params![conversation, now.timestamp_millis(), report_id])?;
    conn.prepare_cached(
        "UPDATE inbox SET report_id = ?2
         WHERE id IN (SELECT inbox_id FROM fb_fragments WHERE conversation_id = ?1)",
    )?
    .execute(params![conversation, report_id])?;
    Ok(outcome)
}

/// The report a close made or added to (a repeat stands for its original).
fn report_of(outcome: &Outcome, conversation: i64) -> Result<String, StoreError> {
    match outcome {
        Outcome::Created { report } | Outcome::FollowUp { report } => Ok(report.id.clone()),
        Outcome::Duplicate { of, .. } => Ok(of.id.clone()),
        other => Err(StoreError::Invalid(format!(
            "closing conversation {conversation} gave {other:?}"
        ))),
    }
}

/// Open conversations of `channel` whose sender has been quiet since `quiet_before_ms`, or that
/// were opened before `max_before_ms`.
pub fn due(
    conn: &Connection,
    channel: &str,
    quiet_before_ms: i64,
    max_before_ms: i64,
) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM fb_conversations
         WHERE channel = ?1 AND state = 'open' AND (last_ms <= ?2 OR opened_ms <= ?3)
         ORDER BY id",
    )?;
    let rows = stmt.query_map(params![channel, quiet_before_ms, max_before_ms], |r| {
        r.get(0)
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// When the next open conversation of `channel` falls due.
pub fn next_due_ms(
    conn: &Connection,
    channel: &str,
    quiet_ms: i64,
    max_ms: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT min(min(last_ms + ?2, opened_ms + ?3)) FROM fb_conversations
             WHERE channel = ?1 AND state = 'open'",
        )?
        .query_row(params![channel, quiet_ms, max_ms], |r| r.get(0))?)
}

/// A conversation as the assembler reads it.
pub struct Snapshot {
    pub psid: String,
    pub rev: i64,
    pub opened_ms: i64,
    /// Fragment ids and messages, in the citizen's order.
    pub fragments: Vec<(i64, Fragment)>,
}

/// A conversation's sender, revision and fragments.
pub fn fragments(conn: &Connection, conversation: i64) -> Result<Snapshot, StoreError> {
    let (psid, rev, opened_ms): (String, i64, i64) = conn
        .prepare_cached("SELECT psid, rev, opened_ms FROM fb_conversations WHERE id = ?1")?
        .query_row([conversation], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, data FROM fb_fragments WHERE conversation_id = ?1 ORDER BY timestamp_ms, id",
    )?;
    let rows = stmt.query_map([conversation], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, data) = row?;
        out.push((
            id,
            serde_json::from_str(&data).map_err(|e| StoreError::Invalid(e.to_string()))?,
        ));
    }
    Ok(Snapshot {
        psid,
        rev,
        opened_ms,
        fragments: out,
    })
}
