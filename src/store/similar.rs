//! "The same incident from someone else, in other words": found through keys (the position's
//! grid cell and its neighbours, and min-hashes of the text) within the window, so the lookup
//! reads a handful of rows however many reports are stored; each candidate is then compared by
//! `pipeline::similar::same_incident`.

use super::{StoreError, StoreSettings};
use crate::pipeline::similar::{self, Policy, Side, Signature};
use crate::report::ReportRef;
use rusqlite::{Connection, OptionalExtension, params};

/// Most candidates read per lookup: the newest first, so a flood night with hundreds of reports
/// in one cell still costs a bounded lookup.
const CANDIDATES: i64 = 256;

/// An earlier report (standing for its original), why and how closely it is the same incident,
/// and its reporter.
pub(super) struct Match {
    pub(super) of: ReportRef,
    pub(super) reason: &'static str,
    pub(super) score: f64,
    pub(super) reporter_id: Option<i64>,
}

/// The earlier report that is the same incident, if any.
pub(super) fn earlier(
    conn: &Connection,
    settings: &StoreSettings,
    signature: Option<&Signature>,
    position: Option<(f64, f64)>,
    received_ms: i64,
) -> Result<Option<Match>, StoreError> {
    let Some(signature) = signature else {
        return Ok(None);
    };
    let Some((id, reason, score)) =
        lookup(conn, &settings.similar, signature, position, received_ms)?
    else {
        return Ok(None);
    };
    Ok(conn
        .prepare_cached(
            "SELECT o.id, o.tracking_code, o.reporter_id FROM reports r
             JOIN reports o ON o.id = coalesce(r.duplicate_of, r.id)
             WHERE r.id = ?1",
        )?
        .query_row([&id], |r| {
            Ok(Match {
                of: ReportRef {
                    id: r.get(0)?,
                    tracking_code: r.get(1)?,
                },
                reason,
                score: (score * 100.0).round() / 100.0,
                reporter_id: r.get(2)?,
            })
        })
        .optional()?)
}

/// The stored report (as stored, maybe itself a duplicate) that is the same incident as this
/// one, why, and the text score. Reads only the keyed candidates: the cost does not grow with
/// the store. Public for the scaling benchmark.
pub fn lookup(
    conn: &Connection,
    policy: &Policy,
    signature: &Signature,
    position: Option<(f64, f64)>,
    received_ms: i64,
) -> Result<Option<(String, &'static str, f64)>, StoreError> {
    let probe = similar::probe_keys(signature, position, policy.distance_m);
    if probe.is_empty() {
        return Ok(None);
    }
    let since = received_ms - policy.window_ms;
    let keys = serde_json::to_string(&probe).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let mut stmt = conn.prepare_cached(
        "SELECT i.report_id, i.received_ms, i.lat, i.lon, i.signature
         FROM similar_index i
         WHERE i.id IN (SELECT k.entry FROM similar_keys k
                        WHERE k.key IN (SELECT value FROM json_each(?1)) AND k.received_ms >= ?2
                        ORDER BY k.received_ms DESC LIMIT ?3)",
    )?;
    let rows = stmt.query_map(params![keys, since, CANDIDATES], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Option<f64>>(2)?,
            r.get::<_, Option<f64>>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let this = Side {
        signature,
        position,
    };
    // The best-scoring match; on a tie the earliest.
    let mut best: Option<(String, i64, &'static str, f64)> = None;
    for row in rows {
        let (report, at, lat, lon, sig) = row?;
        let Ok(other) = serde_json::from_str::<Signature>(&sig) else {
            continue;
        };
        let other = Side {
            signature: &other,
            position: lat.zip(lon),
        };
        if let Some((reason, score)) = similar::same_incident(other, this, policy)
            && best
                .as_ref()
                .is_none_or(|(_, t, _, s)| score > *s || (score == *s && at < *t))
        {
            best = Some((report, at, reason, score));
        }
    }
    Ok(best.map(|(id, _, reason, score)| (id, reason, score)))
}

/// Indexes a stored report under its keys.
pub(super) fn index(
    conn: &Connection,
    report_id: &str,
    signature: Option<&Signature>,
    position: Option<(f64, f64)>,
    received_ms: i64,
) -> Result<(), StoreError> {
    let Some(signature) = signature else {
        return Ok(());
    };
    let keys = similar::keys(signature, position);
    if keys.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_string(signature).map_err(|e| StoreError::Invalid(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO similar_index (report_id, received_ms, lat, lon, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        report_id,
        received_ms,
        position.map(|p| p.0),
        position.map(|p| p.1),
        json
    ])?;
    let entry = conn.last_insert_rowid();
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO similar_keys (key, received_ms, entry) VALUES (?1, ?2, ?3)",
    )?;
    for k in keys {
        insert.execute(params![k, received_ms, entry])?;
    }
    Ok(())
}
