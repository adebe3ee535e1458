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

/// What a purge covers: everything received before a cutoff (retention), or one citizen's data
/// whatever its age (a data subject's request to delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Epoch milliseconds.
    Before(i64),
    Person(Person),
}

/// The identifiers a citizen gives when asking for their data to be deleted. Any one matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Person {
    pub email: Option<String>,
    /// E.164, as the pipeline stores it.
    pub phone: Option<String>,
    pub facebook_psid: Option<String>,
    pub app_user_id: Option<String>,
}

impl Person {
    pub fn is_empty(&self) -> bool {
        self.email.is_none()
            && self.phone.is_none()
            && self.facebook_psid.is_none()
            && self.app_user_id.is_none()
    }
}

/// Runs in the writer's transaction.
/// The writer's connection has `secure_delete` on, so what this overwrites or deletes is zeroed
/// in the file, not left in free pages.
pub(super) fn run(conn: &Connection, scope: &Scope, now: &str) -> Result<Purged, StoreError> {
    match scope {
        Scope::Before(cutoff_ms) => purge(conn, *cutoff_ms, now),
        Scope::Person(who) => erase(conn, who, now),
    }
}

fn purge(conn: &Connection, cutoff_ms: i64, now: &str) -> Result<Purged, StoreError> {
    let mut done = Purged::default();
    let old: Vec<(String, String)> = conn
        .prepare("SELECT id, event_json FROM reports WHERE received_ms < ?1 AND purged_at IS NULL")?
        .query_map([cutoff_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, json) in old {
        anonymise(conn, &id, &json, now)?;
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
    done.raw_items = empty_raw(conn, &old_items, now)?;
    done.fragments = conn.execute(
        "DELETE FROM fb_fragments WHERE timestamp_ms < ?1
           AND conversation_id IN (SELECT id FROM fb_conversations WHERE state = 'closed')",
        [cutoff_ms],
    )?;
    conn.execute(
        "UPDATE fb_conversations SET psid = '' WHERE state = 'closed' AND last_ms < ?1 AND psid != ''",
        [cutoff_ms],
    )?;
    done.reporters = delete_orphan_reporters(conn)?;
    Ok(done)
}

/// One citizen's data, whatever its age: their reports anonymised, every raw item that came from
/// them or names them emptied, their Messenger messages deleted, their reporter record deleted.
fn erase(conn: &Connection, who: &Person, now: &str) -> Result<Purged, StoreError> {
    let mut done = Purged::default();
    let stored: Vec<(i64, Person)> = conn
        .prepare(
            "SELECT id, email, phone, facebook_psid, app_user_id FROM reporters
              WHERE (?1 IS NOT NULL AND lower(email) = lower(?1)) OR phone = ?2
                 OR facebook_psid = ?3 OR app_user_id = ?4",
        )?
        .query_map(
            params![who.email, who.phone, who.facebook_psid, who.app_user_id],
            |r| {
                Ok((
                    r.get(0)?,
                    Person {
                        email: r.get(1)?,
                        phone: r.get(2)?,
                        facebook_psid: r.get(3)?,
                        app_user_id: r.get(4)?,
                    },
                ))
            },
        )?
        .collect::<Result<_, _>>()?;
    let reporters: Vec<i64> = stored.iter().map(|(id, _)| *id).collect();
    // Every identifier the citizen gave or we hold for them: a PSID found by e-mail still counts.
    let mut known: Vec<&Person> = stored.iter().map(|(_, p)| p).collect();
    known.push(who);
    let mut psids: Vec<String> = known
        .iter()
        .filter_map(|p| p.facebook_psid.clone())
        .collect();
    psids.sort();
    psids.dedup();

    let mut items: Vec<i64> = Vec::new();
    for reporter in &reporters {
        let reports: Vec<(String, String, i64)> = conn
            .prepare_cached("SELECT id, event_json, inbox_id FROM reports WHERE reporter_id = ?1")?
            .query_map([reporter], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (id, json, inbox_id) in reports {
            anonymise(conn, &id, &json, now)?;
            items.push(inbox_id);
            let updates = conn
                .prepare_cached("SELECT inbox_id FROM updates WHERE report_id = ?1")?
                .query_map([&id], |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            items.extend(updates);
            done.reports += 1;
        }
    }
    for psid in &psids {
        let conversation_items = conn
            .prepare_cached(
                "SELECT f.inbox_id FROM fb_fragments f JOIN fb_conversations c ON c.id = f.conversation_id
                  WHERE c.psid = ?1",
            )?
            .query_map([psid], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        items.extend(conversation_items);
        done.fragments += conn.execute(
            "DELETE FROM fb_fragments WHERE conversation_id IN
               (SELECT id FROM fb_conversations WHERE psid = ?1)",
            [psid],
        )?;
        // An open conversation ends here: what it held is gone, so nothing is assembled from it.
        conn.execute(
            "UPDATE fb_conversations SET psid = '', state = 'closed', closed_ms = coalesce(closed_ms, last_ms)
              WHERE psid = ?1",
            [psid],
        )?;
    }
    // Items that never became a report of theirs (quarantined mail, a webhook body holding
    // several senders) still name them: found by the identifier as bytes in the raw item.
    for needle in raw_needles(&known) {
        let named = conn
            .prepare_cached("SELECT id FROM inbox WHERE purged_at IS NULL AND instr(raw, ?1) > 0")?
            .query_map([needle.as_bytes()], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        items.extend(named);
    }
    items.sort_unstable();
    items.dedup();
    done.raw_items = empty_raw(conn, &items, now)?;
    for reporter in &reporters {
        done.reporters += conn.execute("DELETE FROM reporters WHERE id = ?1", [reporter])?;
    }
    Ok(done)
}

/// The forms an identifier takes inside a raw item: an address as given and in lower case, a
/// PSID or app user id as is, and a phone both as E.164 and in the national form (`0905123456`).
fn raw_needles(known: &[&Person]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in known {
        if let Some(e) = &p.email {
            out.push(e.clone());
            out.push(e.to_lowercase());
        }
        out.extend(p.app_user_id.clone());
        out.extend(p.facebook_psid.clone());
        if let Some(phone) = &p.phone {
            out.push(phone.clone());
            if let Some(rest) = phone.strip_prefix("+84") {
                out.push(format!("0{rest}"));
            }
        }
    }
    // Short needles would match unrelated bytes.
    out.retain(|n| n.len() >= 6);
    out.sort();
    out.dedup();
    out
}

/// The report keeps its incident; the reporter and what names them in its text go.
fn anonymise(conn: &Connection, id: &str, json: &str, now: &str) -> Result<(), StoreError> {
    let mut event: Event = serde_json::from_str(json)
        .map_err(|e| StoreError::Invalid(format!("report {id}: stored event unreadable: {e}")))?;
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
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (uid, text) in updates {
        conn.prepare_cached("UPDATE updates SET description = ?2 WHERE id = ?1")?
            .execute(params![uid, crate::pipeline::phone::redact_phones(&text)])?;
    }
    Ok(())
}

fn empty_raw(conn: &Connection, ids: &[i64], now: &str) -> Result<usize, StoreError> {
    let mut n = 0;
    for id in ids {
        n += conn
            .prepare_cached(
                "UPDATE inbox SET raw = x'', purged_at = ?2 WHERE id = ?1 AND purged_at IS NULL",
            )?
            .execute(params![id, now])?;
    }
    Ok(n)
}

fn delete_orphan_reporters(conn: &Connection) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "DELETE FROM reporters WHERE id NOT IN
           (SELECT reporter_id FROM reports WHERE reporter_id IS NOT NULL)",
        [],
    )?)
}
