//! `phananh status`: the operator's picture in a terminal. What the database says (each channel's
//! last item and reports in the last 24 hours, each sink's undelivered events, quarantine) and
//! what the running daemon says (`/readyz`: each channel's and sink's state and last error). No
//! personal data: the same rule as the logs.

use crate::config::Config;
use crate::store::queries;
use anyhow::Context;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

/// Prints the status; returns whether the daemon answered ready (exit 0) or not (exit 1).
pub fn run(config: &Config, as_json: bool) -> anyhow::Result<bool> {
    let daemon = readyz(config);
    let store = store_picture(config)?;
    let ready = daemon.as_ref().is_some_and(|(code, _)| *code == 200);
    if as_json {
        let v = json!({
            "daemon": daemon.as_ref().map(|(code, body)| json!({"http_status": code, "readyz": body})),
            "store": store,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ready);
    }
    let listen = config.daemon.listen;
    match &daemon {
        Some((_, body)) => println!(
            "daemon at {listen}: {}",
            body["status"].as_str().unwrap_or("unknown")
        ),
        None => println!("daemon at {listen}: not running (no answer on /readyz)"),
    }
    let live = |section: &str, name: &str| -> Option<&Value> {
        daemon.as_ref().and_then(|(_, b)| b[section].get(name))
    };
    println!("\nchannels:");
    for ch in store["channels"].as_array().into_iter().flatten() {
        let name = ch["name"].as_str().unwrap_or_default();
        let state = describe(live("channels", name));
        println!(
            "  {:<20} {:<9} {:<28} last item {}, reports in 24 h: {}, quarantined: {}",
            name,
            ch["kind"].as_str().unwrap_or_default(),
            state,
            ch["last_item"].as_str().unwrap_or("never"),
            ch["reports_24h"],
            ch["quarantined"],
        );
    }
    println!("\nsinks:");
    for s in store["sinks"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or_default();
        println!(
            "  {:<20} {:<9} {:<28} pending {}, retrying {}, dead {}, oldest undelivered {}",
            name,
            s["kind"].as_str().unwrap_or_default(),
            describe(live("sinks", name)),
            s["pending"],
            s["retrying"],
            s["dead"],
            s["oldest_pending_s"]
                .as_i64()
                .map(|n| humantime::format_duration(Duration::from_secs(n as u64)).to_string())
                .unwrap_or_else(|| "—".into()),
        );
    }
    println!(
        "\nstore: {} reports, {} items quarantined, database {} (+ WAL {})",
        store["reports"],
        store["quarantined"],
        crate::config::units::human_size(store["db_bytes"].as_u64().unwrap_or(0)),
        crate::config::units::human_size(store["wal_bytes"].as_u64().unwrap_or(0)),
    );
    if let Some(writer) = daemon.as_ref().map(|(_, b)| &b["store"])
        && writer.is_object()
    {
        println!("  writer: {}", describe(Some(writer)));
    }
    if !ready {
        println!(
            "\nnot ready: {}",
            if daemon.is_some() {
                "something needs the operator (see the states above and `journalctl -u phananh`)"
            } else {
                "start it with `systemctl start phananh`"
            }
        );
    }
    Ok(ready)
}

/// A channel's or sink's live state in a few words.
fn describe(live: Option<&Value>) -> String {
    let Some(v) = live else {
        return "—".into();
    };
    let mut s = v["state"].as_str().unwrap_or("unknown").to_string();
    if v.get("quiet_since").is_some_and(|q| q.is_string()) {
        s.push_str(", quiet");
    }
    if let Some(e) = v["error"].as_str() {
        let short: String = e.chars().take(60).collect();
        s.push_str(&format!(" ({short})"));
    }
    s
}

/// What the database holds, for every configured channel and sink.
fn store_picture(config: &Config) -> anyhow::Result<Value> {
    let db = config.database_path();
    if !db.exists() {
        anyhow::bail!(
            "no database at {} yet; start the daemon or run `phananh ingest`",
            db.display()
        );
    }
    let conn = crate::store::open_reader(&db).context("cannot open the database")?;
    let now = chrono::Utc::now();
    let day_ago = now.timestamp_millis() - 24 * 3600 * 1000;
    let mut channels = Vec::new();
    for (name, ch) in &config.channels {
        let last = queries::last_received_ms(&conn, name)?;
        let reports: i64 = conn.query_row(
            "SELECT count(*) FROM reports WHERE channel = ?1 AND received_ms >= ?2",
            rusqlite::params![name, day_ago],
            |r| r.get(0),
        )?;
        let quarantined: i64 = conn.query_row(
            "SELECT count(*) FROM inbox WHERE status = 'quarantined' AND channel = ?1",
            [name],
            |r| r.get(0),
        )?;
        channels.push(json!({
            "name": name,
            "kind": ch.kind().as_str(),
            "last_item": last.and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.with_timezone(&config.tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, false)),
            "reports_24h": reports,
            "quarantined": quarantined,
        }));
    }
    let mut sinks = Vec::new();
    for (name, s) in &config.daemon.sinks {
        let c = queries::sink_counts(&conn, name, now)?;
        sinks.push(json!({
            "name": name, "kind": s.kind.as_str(),
            "pending": c.pending, "retrying": c.retrying, "dead": c.dead,
            "oldest_pending_s": c.oldest_pending_s,
        }));
    }
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    Ok(json!({
        "channels": channels,
        "sinks": sinks,
        "reports": queries::count(&conn, "SELECT count(*) FROM reports")?,
        "quarantined": queries::count(&conn, "SELECT count(*) FROM inbox WHERE status = 'quarantined'")?,
        "db_bytes": size(db.clone()),
        "wal_bytes": size(wal.into()),
    }))
}

/// The running daemon's `/readyz`: (HTTP status, body), or None when nothing answers.
fn readyz(config: &Config) -> Option<(u16, Value)> {
    let addr = config.daemon.listen;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    Some((code, serde_json::from_str(body).ok()?))
}
