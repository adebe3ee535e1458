//! "The same incident from someone else, in other words": found through keys (the position's
//! grid cell and its neighbours, and min-hashes of the text) within the window, so the lookup
//! reads a handful of rows however many reports are stored; each candidate is then compared by
//! `pipeline::similar::same_incident`.

use super::{StoreError, StoreSettings};
use crate::pipeline::similar::{self, Policy, Side, Signature};
use crate::report::ReportRef;
use rusqlite::{Connection, OptionalExtension, params};

/// Rows read per key, the newest first: a flood night with thousands of reports in one cell,
/// or a feed whose items share a template, still costs a bounded lookup (with a position, at
/// 150 m: usually 4 cells and 8 min-hashes of reports without one; without, 16 min-hashes).
const PER_KEY: i64 = 6;

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
    Ok(original_of(conn, &id)?.map(|(of, reporter_id)| Match {
        of,
        reason,
        score: (score * 100.0).round() / 100.0,
        reporter_id,
    }))
}

/// The first report of the incident a stored report belongs to (itself, or the one it is
/// linked to), with that report's reporter.
pub(super) fn original_of(
    conn: &Connection,
    report_id: &str,
) -> Result<Option<(ReportRef, Option<i64>)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT o.id, o.tracking_code, o.reporter_id FROM reports r
             JOIN reports o ON o.id = coalesce(r.duplicate_of, r.id)
             WHERE r.id = ?1",
        )?
        .query_row([report_id], |r| {
            Ok((
                ReportRef {
                    id: r.get(0)?,
                    tracking_code: r.get(1)?,
                },
                r.get(2)?,
            ))
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
    let since = received_ms - policy.window_ms;
    let keys = similar::probe_keys(signature, position, policy.distance_m);
    if keys.is_empty() {
        return Ok(None);
    }
    // One statement: the newest PER_KEY rows of each key, their entries once, read in place.
    let per_key: Vec<String> = (0..keys.len())
        .map(|i| {
            format!(
                "SELECT entry FROM (SELECT entry FROM similar_keys WHERE key = ?{} AND received_ms >= ?1
                 ORDER BY received_ms DESC LIMIT {PER_KEY})",
                i + 2
            )
        })
        .collect();
    let sql = format!(
        "SELECT report_id, received_ms, lat, lon, shingles, family, problems, numbers, wards
         FROM similar_index WHERE id IN ({})",
        per_key.join(" UNION ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut values: Vec<i64> = Vec::with_capacity(keys.len() + 1);
    values.push(since);
    values.extend(keys);
    let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
        let lat: Option<f64> = r.get(2)?;
        let lon: Option<f64> = r.get(3)?;
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            lat.zip(lon),
            decode(r)?,
        ))
    })?;
    let this = Side {
        signature,
        position,
    };
    // The best-scoring match; on a tie the earliest.
    let mut best: Option<(String, i64, &'static str, f64)> = None;
    for row in rows {
        let (report, at, other_position, other) = row?;
        let other = Side {
            signature: &other,
            position: other_position,
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

/// A signature from its columns (shingles as little-endian u32s, lists comma-separated): read
/// for every candidate, so it must be cheap.
fn decode(r: &rusqlite::Row<'_>) -> rusqlite::Result<Signature> {
    let shingles: Vec<u8> = r.get(4)?;
    let list = |i: usize| -> rusqlite::Result<Vec<String>> {
        let s: String = r.get(i)?;
        Ok(s.split(',')
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect())
    };
    Ok(Signature {
        shingles: shingles
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        family: r.get(5)?,
        problems: list(6)?,
        numbers: list(7)?.iter().filter_map(|n| n.parse().ok()).collect(),
        wards: list(8)?,
    })
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
    let shingles: Vec<u8> = signature
        .shingles
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    let join = |v: &[String]| v.join(",");
    let numbers: Vec<String> = signature.numbers.iter().map(u16::to_string).collect();
    conn.prepare_cached(
        "INSERT INTO similar_index (report_id, received_ms, lat, lon, shingles, family, problems, numbers, wards)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        report_id,
        received_ms,
        position.map(|p| p.0),
        position.map(|p| p.1),
        shingles,
        signature.family,
        join(&signature.problems),
        join(&numbers),
        join(&signature.wards)
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
