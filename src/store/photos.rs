//! "The same photo": a report whose photo (equal bytes, or a perceptual hash within
//! `photo_distance` bits) was already sent in another report within `same_photo_window`. Found
//! through indexed bands of the hash, so the lookup never scans.

use super::{StoreError, StoreSettings};
use crate::pipeline::photo;
use crate::report::{Media, ReportRef};
use rusqlite::{Connection, params};

/// The earliest earlier report (standing for its original) with one of these photos, with the
/// closeness of the match (1 for equal bytes), and that report's reporter.
pub(super) fn earlier(
    conn: &Connection,
    settings: &StoreSettings,
    media: &[Media],
    received_ms: i64,
) -> Result<Option<(ReportRef, f64, Option<i64>)>, StoreError> {
    let since = received_ms - settings.same_photo_window.as_millis() as i64;
    let mut best: Option<(String, i64, f64)> = None;
    for m in media {
        let hash = m.phash.as_deref().and_then(photo::bits);
        let b = hash.map(photo::bands).unwrap_or([-1; 5]);
        let mut stmt = conn.prepare_cached(
            "SELECT report_id, sha256, phash, received_ms FROM photo_index
             WHERE received_ms >= ?1
               AND (sha256 = ?2 OR b0 = ?3 OR b1 = ?4 OR b2 = ?5 OR b3 = ?6 OR b4 = ?7)
             ORDER BY received_ms LIMIT 64",
        )?;
        let rows = stmt.query_map(
            params![since, m.sha256, b[0], b[1], b[2], b[3], b[4]],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )?;
        for row in rows {
            let (report, sha, other, at) = row?;
            let score = if sha == m.sha256 {
                Some(1.0)
            } else {
                match (hash, other) {
                    (Some(a), Some(o)) => {
                        let d = photo::distance(a, o as u64);
                        (d <= settings.photo_distance).then(|| 1.0 - f64::from(d) / 64.0)
                    }
                    _ => None,
                }
            };
            if let Some(score) = score
                && best.as_ref().is_none_or(|(_, t, _)| at < *t)
            {
                best = Some((report, at, score));
            }
        }
    }
    let Some((id, _, score)) = best else {
        return Ok(None);
    };
    Ok(super::similar::original_of(conn, &id)?.map(|(of, reporter)| (of, score, reporter)))
}

/// Indexes a stored report's photos.
pub(super) fn index(
    conn: &Connection,
    report_id: &str,
    media: &[Media],
    received_ms: i64,
) -> Result<(), StoreError> {
    for m in media
        .iter()
        .filter(|m| m.content_type.starts_with("image/"))
    {
        let hash = m.phash.as_deref().and_then(photo::bits);
        let b = hash.map(photo::bands);
        conn.prepare_cached(
            "INSERT INTO photo_index (report_id, sha256, phash, b0, b1, b2, b3, b4, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            report_id,
            m.sha256,
            hash.map(|h| h as i64),
            b.map(|b| b[0]),
            b.map(|b| b[1]),
            b.map(|b| b[2]),
            b.map(|b| b[3]),
            b.map(|b| b[4]),
            received_ms
        ])?;
    }
    Ok(())
}
