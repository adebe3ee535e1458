//! Retention: `phananh purge --older-than D` removes what identifies a citizen from everything
//! received before the cutoff. The report stays (the incident, its place, category, photos and
//! history), anonymised: no reporter, contact details masked in its text, quoted mail dropped.
//! The raw item (the whole e-mail or webhook body) is emptied, Messenger fragments are deleted, a
//! reporter with no newer report is deleted, and the outbox keeps only anonymised payloads.

use super::StoreError;
use crate::report::Event;
use rusqlite::{Connection, params};

/// What one purge changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub reports: usize,
    pub raw_items: usize,
    pub reporters: usize,
    pub fragments: usize,
}

impl Purged {
    pub(super) fn to_vec(self) -> Vec<i64> {
        vec![
            self.reports as i64,
            self.raw_items as i64,
            self.reporters as i64,
            self.fragments as i64,
        ]
    }

    pub(super) fn from_vec(v: &[i64]) -> Self {
        let at = |i: usize| v.get(i).copied().unwrap_or(0) as usize;
        Self {
            reports: at(0),
            raw_items: at(1),
            reporters: at(2),
            fragments: at(3),
        }
    }
}

/// Runs in the writer's transaction: items received before `cutoff_ms` are purged.
/// The writer's connection has `secure_delete` on, so what this overwrites or deletes is zeroed
/// in the file, not left in free pages.
pub(super) fn purge(conn: &Connection, cutoff_ms: i64, now: &str) -> Result<Purged, StoreError> {
    let mut done = Purged::default();
    let old: Vec<(String, String)> = conn
        .prepare("SELECT id, event_json FROM reports WHERE received_ms < ?1 AND purged_at IS NULL")?
        .query_map([cutoff_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, json) in old {
        let mut event: Event = serde_json::from_str(&json).map_err(|e| {
            StoreError::Invalid(format!("report {id}: stored event unreadable: {e}"))
        })?;
        // Masking needs the reporter's own name and address; then they go.
        event.report.redact_text();
        event.report.reporter = None;
        event.report.quoted = None;
        let anonymous =
            serde_json::to_string(&event).map_err(|e| StoreError::Invalid(e.to_string()))?;
        conn.prepare_cached(
            "UPDATE reports SET reporter_id = NULL, title = ?2, description = ?3, quoted = NULL,
                full_text = ?3, event_json = ?4, purged_at = ?5 WHERE id = ?1",
        )?
        .execute(params![
            id,
            event.report.title,
            event.report.description,
            anonymous,
            now
        ])?;
        conn.prepare_cached("UPDATE outbox SET payload = ?2 WHERE report_id = ?1")?
            .execute(params![id, anonymous])?;
        let updates: Vec<(i64, String)> = conn
            .prepare_cached("SELECT id, description FROM updates WHERE report_id = ?1")?
            .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (uid, text) in updates {
            conn.prepare_cached("UPDATE updates SET description = ?2 WHERE id = ?1")?
                .execute(params![uid, crate::pipeline::phone::redact_phones(&text)])?;
        }
        done.reports += 1;
    }
    // Times are compared as instants, not as text: items may carry different offsets.
    let old_items: Vec<i64> = conn
        .prepare("SELECT id, received_at FROM inbox WHERE purged_at IS NULL")?
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .filter_map(|row| {
            let (id, at) = row.ok()?;
            let t = chrono::DateTime::parse_from_rfc3339(&at).ok()?;
            (t.timestamp_millis() < cutoff_ms).then_some(id)
        })
        .collect();
    for id in &old_items {
        conn.prepare_cached("UPDATE inbox SET raw = x'', purged_at = ?2 WHERE id = ?1")?
            .execute(params![id, now])?;
    }
    done.raw_items = old_items.len();
    done.fragments = conn.execute(
        "DELETE FROM fb_fragments WHERE timestamp_ms < ?1
           AND conversation_id IN (SELECT id FROM fb_conversations WHERE state = 'closed')",
        [cutoff_ms],
    )?;
    conn.execute(
        "UPDATE fb_conversations SET psid = '' WHERE state = 'closed' AND last_ms < ?1 AND psid != ''",
        [cutoff_ms],
    )?;
    done.reporters = conn.execute(
        "DELETE FROM reporters WHERE id NOT IN
           (SELECT reporter_id FROM reports WHERE reporter_id IS NOT NULL)",
        [],
    )?;
    Ok(done)
}
