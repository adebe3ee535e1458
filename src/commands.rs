//! What each CLI verb does. Human output by default, `--json` where a script would read it;
//! errors to stderr; exit 0 success, 1 failure (2 is clap's usage error).

use crate::cli::{
    AcksCommand, Cli, Command, IngestArgs, OutboxCommand, QuarantineCommand, ReportsCommand,
};
use crate::config::{self, ChannelKind, Config};
use crate::forward::Forwarder;
use crate::intake::{Intake, ParseRules};
use crate::store::{Outcome, Receipt, Store, StoreSettings, open_reader, queries};
use anyhow::{Context, bail};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub fn main(cli: Cli) -> ExitCode {
    let path = crate::daemon::config_path(cli.config);
    let default_level = if matches!(cli.command, Command::Run) {
        "info"
    } else {
        "warn"
    };
    crate::logging::init(default_level);
    let result = match cli.command {
        Command::Check => Ok(check(&path)),
        Command::Status { json } => load(&path).and_then(|c| crate::status::run(&c, json)),
        Command::Purge { older_than } => purge(&path, older_than).map(|()| true),
        Command::Erase(args) => erase(&path, args).map(|()| true),
        Command::Run => runtime()
            .and_then(|rt| rt.block_on(crate::daemon::run(&path)))
            .map(|()| true),
        Command::Ingest(args) => runtime().and_then(|rt| rt.block_on(ingest(&path, args))),
        Command::Reports(cmd) => reports(&path, cmd).map(|()| true),
        Command::Quarantine(cmd) => quarantine(&path, cmd),
        Command::Outbox(cmd) => outbox(&path, cmd).map(|()| true),
        Command::Acks(cmd) => acks(&path, cmd).map(|()| true),
        Command::DedupeEval(args) => runtime().and_then(|rt| {
            rt.block_on(async {
                let config = load(&path)?;
                let e = crate::evaluate::run(&config, &args.dir).await?;
                crate::evaluate::print(&e, args.verbose);
                Ok(true)
            })
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

const BLOCKING_THREADS: usize = 8;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        // Parsing, file reads and SQLite reads run on the blocking pool. Its default of 512 threads
        // buys nothing on a few cores and costs memory (glibc gives busy threads their own arenas).
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load(path: &Path) -> anyhow::Result<Config> {
    config::load(path)
        .map_err(|e| anyhow::anyhow!("invalid configuration (run `phananh check`):\n{e}"))
}

fn check(path: &Path) -> bool {
    let report = config::check(path);
    let mut errors = 0;
    for f in &report.files {
        if f.errors.is_empty() {
            println!("✓ {}", f.path.display());
        } else {
            println!("✗ {}", f.path.display());
            for e in &f.errors {
                println!("    {e}");
                errors += 1;
            }
        }
    }
    let files = report.files.len();
    if errors == 0 {
        println!("{files} files, no errors.");
        true
    } else {
        let noun = if errors == 1 { "error" } else { "errors" };
        println!("{files} files, {errors} {noun}.");
        false
    }
}

/// Opens the store for a command that writes, and the intake in front of it.
fn open_intake(config: &Config) -> anyhow::Result<Intake> {
    crate::store::create_private_dir(&config.daemon.state_dir)
        .with_context(|| format!("cannot create {}", config.daemon.state_dir.display()))?;
    let store = Store::open(StoreSettings::from_config(config)).context("cannot open the store")?;
    Ok(Intake::new(config, store))
}

fn rules_for(config: &Config, channel: Option<&config::ChannelConfig>) -> ParseRules {
    ParseRules {
        email: channel.map_or_else(|| config.email_defaults(), |c| config.email_limits(c)),
        acknowledge: channel.is_some_and(|c| c.ack().is_some()),
        facebook: None,
        feed: channel.and_then(|c| match &c.settings {
            config::ChannelSettings::Feed(f) => Some(f.clone()),
            _ => None,
        }),
    }
}

async fn ingest(path: &Path, args: IngestArgs) -> anyhow::Result<bool> {
    let config = load(path)?;
    let Some(channel) = config.channels.get(&args.channel) else {
        let known: Vec<&str> = config.channels.keys().map(|s| s.as_str()).collect();
        bail!(
            "no channel {:?}; channels: {}",
            args.channel,
            known.join(", ")
        );
    };
    let intake = open_intake(&config)?;
    let rules = rules_for(&config, Some(channel));
    let mut ok = true;
    let width = args
        .files
        .iter()
        .map(|f| f.display().to_string().chars().count())
        .max()
        .unwrap_or(0);
    for file in &args.files {
        let shown = file.display().to_string();
        let raw = match std::fs::read(file) {
            Ok(r) => r,
            Err(e) => {
                println!("{shown:width$}  cannot read: {e}");
                ok = false;
                continue;
            }
        };
        let env = crate::channels::Envelope {
            channel: channel.name.clone(),
            kind: channel.kind(),
            raw,
            source_ref: file.file_name().map(|n| n.to_string_lossy().into_owned()),
        };
        match intake.submit(env, &rules).await {
            Ok(receipt) => println!("{shown:width$}  {}", describe(&receipt)),
            Err(e) => {
                println!("{shown:width$}  not stored: {e}");
                ok = false;
            }
        }
    }
    let store = intake.store().clone();
    if !args.no_forward {
        for f in Forwarder::all(&config, &store, &Default::default())? {
            let (n, unavailable) = f.pump().await?;
            println!("Forwarded {n} events to sink {}.", f.name());
            if let Some(why) = unavailable {
                println!(
                    "Sink {} cannot be reached ({why}); the rest wait in the outbox for the daemon.",
                    f.name()
                );
            }
        }
    }
    drop(intake);
    store.close().await;
    Ok(ok)
}

fn describe(r: &Receipt) -> String {
    let what = match &r.outcome {
        Outcome::Created { report } => format!("new report {}", report.tracking_code),
        Outcome::Duplicate { report, of } => format!(
            "duplicate {} of {} (the same incident: stored and linked)",
            report.tracking_code, of.tracking_code
        ),
        Outcome::Quarantined { reason } => format!("quarantined #{}: {reason}", r.inbox_id),
        Outcome::FollowUp { report } => format!(
            "follow-up to {}: added to that report (same reporter)",
            report.tracking_code
        ),
        Outcome::Automated { rule } => {
            format!(
                "automated mail ({rule}) #{}: stored, not a report, not answered",
                r.inbox_id
            )
        }
        Outcome::Held { conversation } => {
            format!("held in conversation {conversation} until its sender goes quiet")
        }
    };
    if r.redelivered {
        format!("received before: {what}")
    } else {
        what
    }
}

fn reader(config: &Config) -> anyhow::Result<rusqlite::Connection> {
    let db = config.database_path();
    if !db.exists() {
        bail!(
            "no database at {} yet; nothing has been stored",
            db.display()
        );
    }
    open_reader(&db).context("cannot open the database")
}

fn reports(path: &Path, cmd: ReportsCommand) -> anyhow::Result<()> {
    let config = load(path)?;
    let conn = reader(&config)?;
    let mut out = std::io::stdout().lock();
    match cmd {
        ReportsCommand::List { limit, json } => {
            let rows = queries::list_reports(&conn, limit)?;
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "tracking_code": r.tracking_code, "received_at": r.received_at,
                            "channel": r.channel, "category": r.category, "title": r.title,
                            "duplicate_of": r.duplicate_of,
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                for r in rows {
                    let dup = r
                        .duplicate_of
                        .map(|d| format!("  (duplicate of {d})"))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{}  {}  {:<12} {:<16} {}{dup}",
                        r.tracking_code,
                        r.received_at,
                        r.channel,
                        r.category,
                        truncate(&r.title, 60)
                    )?;
                }
            }
        }
        ReportsCommand::Show { code, json } => {
            let canonical = crate::tracking::parse(&config.daemon.tracking_prefix, &code)
                .with_context(|| {
                    format!(
                        "{code:?} is not a tracking code (e.g. {}-7K3M-Q2XD)",
                        config.daemon.tracking_prefix
                    )
                })?;
            let Some((event, full_text)) = queries::report_by_code(&conn, &canonical)? else {
                bail!("no report {canonical}");
            };
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&event)?)?;
            } else {
                show_report(&mut out, &event, &full_text)?;
            }
        }
        ReportsCommand::Export { format: _ } => {
            queries::for_each_event(&conn, |line| writeln!(out, "{line}"))?;
        }
    }
    Ok(())
}

fn show_report(
    out: &mut impl Write,
    e: &crate::report::Event,
    full_text: &str,
) -> std::io::Result<()> {
    let r = &e.report;
    writeln!(out, "{}  {}", r.tracking_code, r.title)?;
    writeln!(out, "  id:          {}", r.id)?;
    writeln!(out, "  event:       {}", e.event.as_str())?;
    writeln!(
        out,
        "  channel:     {} ({})",
        r.channel.name, r.channel.kind
    )?;
    writeln!(out, "  external id: {}", r.external_id)?;
    writeln!(out, "  received:    {}", r.received_at)?;
    writeln!(out, "  submitted:   {}", r.submitted_at)?;
    if let Some(p) = &r.reporter {
        let parts: Vec<String> = [&p.name, &p.email, &p.phone]
            .iter()
            .filter_map(|v| v.as_ref().cloned())
            .collect();
        writeln!(out, "  reporter:    {}", parts.join(", "))?;
    }
    writeln!(
        out,
        "  category:    {} ({:?}, {:.2})",
        r.category.code, r.category.source, r.category.score
    )?;
    if let Some(u) = &r.unit {
        writeln!(out, "  unit:        {u}")?;
    }
    if let Some(l) = &r.location {
        writeln!(
            out,
            "  location:    {:.6}, {:.6} ({:?})",
            l.lat, l.lon, l.source
        )?;
    }
    for m in &r.media {
        writeln!(
            out,
            "  media:       {} {} {} bytes {}",
            m.sha256,
            m.content_type,
            m.size,
            m.name.as_deref().unwrap_or("")
        )?;
    }
    for m in &r.omitted_media {
        writeln!(
            out,
            "  omitted:     {} {} bytes ({})",
            m.name.as_deref().unwrap_or("(unnamed)"),
            m.size,
            m.reason
        )?;
    }
    if let Some(d) = &r.duplicate_of {
        writeln!(out, "  duplicate of {}", d.tracking_code)?;
    }
    writeln!(out, "\n{}", r.description)?;
    if full_text != r.description {
        writeln!(out, "\n--- full text ---\n{full_text}")?;
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn quarantine(path: &Path, cmd: QuarantineCommand) -> anyhow::Result<bool> {
    let config = load(path)?;
    match cmd {
        QuarantineCommand::List { json } => {
            let conn = reader(&config)?;
            let rows = queries::list_quarantine(&conn)?;
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|r| serde_json::json!({"id": r.id, "channel": r.channel, "kind": r.kind, "received_at": r.received_at, "size": r.size, "source_ref": r.source_ref, "reason": r.reason}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if rows.is_empty() {
                println!("Nothing in quarantine.");
            } else {
                for r in rows {
                    println!(
                        "#{:<6} {}  {:<12} {:>9} B  {}",
                        r.id,
                        r.received_at,
                        r.channel,
                        r.size,
                        r.reason.unwrap_or_default()
                    );
                }
            }
            Ok(true)
        }
        QuarantineCommand::Show { id, raw } => {
            let conn = reader(&config)?;
            let Some((row, bytes)) = queries::inbox_item(&conn, id)? else {
                bail!("no inbox item #{id}");
            };
            if raw {
                std::io::stdout().lock().write_all(&bytes)?;
            } else {
                println!("#{}  {} ({})", row.id, row.channel, row.kind);
                println!("  status:   {}", row.status);
                println!("  received: {}", row.received_at);
                println!("  size:     {} bytes", row.size);
                if let Some(s) = row.source_ref {
                    println!("  source:   {s}");
                }
                println!("  reason:   {}", row.reason.unwrap_or_default());
                println!("  (`phananh quarantine show {id} --raw` prints the raw bytes)");
            }
            Ok(true)
        }
        QuarantineCommand::Retry { ids, all } => {
            let ids = if all {
                queries::list_quarantine(&reader(&config)?)?
                    .into_iter()
                    .map(|r| r.id)
                    .collect()
            } else if ids.is_empty() {
                bail!("name the items to retry (`phananh quarantine retry 12`) or use --all");
            } else {
                ids
            };
            runtime()?.block_on(retry_quarantined(&config, ids))
        }
    }
}

async fn retry_quarantined(config: &Config, ids: Vec<i64>) -> anyhow::Result<bool> {
    let conn = reader(config)?;
    let intake = open_intake(config)?;
    let mut ok = true;
    for id in ids {
        let Some((row, raw)) = queries::inbox_item(&conn, id)? else {
            println!("#{id}  no such item");
            ok = false;
            continue;
        };
        let Some(kind) = ChannelKind::parse(&row.kind) else {
            println!("#{id}  unknown kind {:?}", row.kind);
            ok = false;
            continue;
        };
        if row
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(crate::intake::PARTIAL_RAW))
        {
            println!(
                "#{id}  still quarantined: only the first 64 KiB were kept; raise max_message_size, then move the file from the Maildir's .Quarantine/cur/ back into new/"
            );
            ok = false;
            continue;
        }
        let rules = rules_for(config, config.channels.get(&row.channel));
        match intake
            .retry(id, row.channel.clone(), kind, raw, &rules)
            .await?
        {
            Ok(receipt) => println!("#{id}  {}", describe(&receipt)),
            Err(reason) => {
                println!("#{id}  still quarantined: {reason}");
                ok = false;
            }
        }
    }
    let store = intake.store().clone();
    for f in Forwarder::all(config, &store, &Default::default())? {
        if let (_, Some(why)) = f.pump().await? {
            println!(
                "Sink {} cannot be reached ({why}); its events wait in the outbox for the daemon.",
                f.name()
            );
        }
    }
    drop(intake);
    store.close().await;
    Ok(ok)
}

fn acks(path: &Path, cmd: AcksCommand) -> anyhow::Result<()> {
    use crate::store::acks::{self, AckUpdate};
    let config = load(path)?;
    match cmd {
        AcksCommand::List { all, limit, json } => {
            let conn = reader(&config)?;
            let rows = acks::list(&conn, all, limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            for (channel, state, reason, n) in acks::counts(&conn)? {
                let reason = reason.map(|r| format!(" ({r})")).unwrap_or_default();
                println!("{channel}: {n} {state}{reason}");
            }
            for r in rows {
                println!(
                    "#{:<6} {:<10} {} {:<10} attempts {:<3} {}{}",
                    r.id,
                    r.channel,
                    r.tracking_code,
                    r.state,
                    r.attempts,
                    r.reason.unwrap_or_default(),
                    r.last_error.map(|e| format!("  {e}")).unwrap_or_default()
                );
            }
        }
        AcksCommand::Retry { ids } => {
            let ids = acks::retryable(&reader(&config)?, &ids)?;
            let rt = runtime()?;
            rt.block_on(async {
                crate::store::create_private_dir(&config.daemon.state_dir)?;
                let store = Store::open(StoreSettings::from_config(&config))?;
                let n = ids.len();
                store
                    .record_acks(ids.into_iter().map(|id| (id, AckUpdate::Requeue)).collect())
                    .await?;
                println!("{n} acknowledgements due again; the running daemon sends them shortly.");
                store.close().await;
                anyhow::Ok(())
            })?;
        }
    }
    Ok(())
}

fn outbox(path: &Path, cmd: OutboxCommand) -> anyhow::Result<()> {
    let config = load(path)?;
    let known_sink = |sink: &Option<String>| -> anyhow::Result<()> {
        match sink {
            Some(s) if !config.daemon.sinks.contains_key(s) => anyhow::bail!(
                "no sink named {s:?}; the configured sinks are {}",
                config
                    .daemon
                    .sinks
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => Ok(()),
        }
    };
    match cmd {
        OutboxCommand::List {
            all,
            sink,
            state,
            limit,
            json,
        } => {
            known_sink(&sink)?;
            let conn = reader(&config)?;
            let filter = queries::OutboxFilter {
                all: all || state.as_deref() == Some("delivered"),
                sink,
                state,
            };
            let rows = queries::list_outbox(&conn, &filter, limit)?;
            if json {
                let v: Vec<_> = rows.iter().map(outbox_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (sink, state, n) in queries::outbox_counts(&conn)? {
                    println!("{sink}: {n} {state}");
                }
                for r in rows {
                    println!(
                        "#{:<6} {:<10} {:<9} attempts {:<3} {}  {}",
                        r.id,
                        r.sink,
                        r.state,
                        r.attempts,
                        r.event_id,
                        r.last_error.unwrap_or_default()
                    );
                }
            }
        }
        OutboxCommand::Show { id, json } => {
            let conn = reader(&config)?;
            let rows = queries::outbox_rows(&conn, &id)?;
            if rows.is_empty() {
                anyhow::bail!(
                    "no outbox row or event {id:?}; `phananh outbox list --all` lists them"
                );
            }
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        let mut j = outbox_json(r);
                        j["payload"] = serde_json::from_str(&r.payload)
                            .unwrap_or(serde_json::Value::String(r.payload.clone()));
                        j
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for r in &rows {
                    println!(
                        "#{} {} {} to sink {}: {}, {} attempts, queued {}{}{}",
                        r.id,
                        r.event_type,
                        r.event_id,
                        r.sink,
                        r.state,
                        r.attempts,
                        r.created_at,
                        r.delivered_at
                            .as_ref()
                            .map(|d| format!(", delivered {d}"))
                            .unwrap_or_default(),
                        r.last_error
                            .as_ref()
                            .map(|e| format!("\n  last error: {e}"))
                            .unwrap_or_default(),
                    );
                }
                // The payload as stored (contact in full); each sink gets it shaped by its `contact`.
                let payload: serde_json::Value =
                    serde_json::from_str(&rows[0].payload).unwrap_or_default();
                println!("{}", serde_json::to_string_pretty(&payload)?);
            }
        }
        OutboxCommand::Retry { ids } => {
            let n = requeue(&config, if ids.is_empty() { None } else { Some(ids) })?;
            println!("{n} events due again; the running daemon delivers them within 30 s.");
        }
        OutboxCommand::Requeue { ids, sink, state } => {
            known_sink(&sink)?;
            let ids = if ids.is_empty() {
                if state.is_none() {
                    anyhow::bail!(
                        "name the rows to send again: ids from `phananh outbox list`, or --state (with --sink for one sink), e.g. --sink ops --state dead"
                    );
                }
                let conn = reader(&config)?;
                let filter = queries::OutboxFilter {
                    all: true,
                    sink,
                    state,
                };
                queries::list_outbox(&conn, &filter, usize::MAX >> 1)?
                    .into_iter()
                    .map(|r| r.id)
                    .collect()
            } else {
                ids
            };
            let n = if ids.is_empty() {
                0
            } else {
                requeue(&config, Some(ids))?
            };
            println!("{n} events queued again; the running daemon sends them within 30 s.");
        }
    }
    Ok(())
}

fn purge(path: &Path, older_than: std::time::Duration) -> anyhow::Result<()> {
    let config = load(path)?;
    runtime()?.block_on(async {
        crate::store::create_private_dir(&config.daemon.state_dir)?;
        let store = Store::open(StoreSettings::from_config(&config))?;
        let p = store.purge(older_than).await?;
        store.close().await;
        println!(
            "Purged what was received more than {} ago: {} reports anonymised, {} raw items emptied, {} reporters deleted, {} Messenger fragments deleted.",
            humantime::format_duration(older_than),
            p.reports,
            p.raw_items,
            p.reporters,
            p.fragments
        );
        println!(
            "The space is reused by new data; `sqlite3 phananh.db 'VACUUM'` (daemon stopped) returns it to the disk."
        );
        anyhow::Ok(())
    })
}

fn erase(path: &Path, args: crate::cli::EraseArgs) -> anyhow::Result<()> {
    let who = crate::store::purge::Person {
        email: args.email.map(|e| e.trim().to_string()),
        phone: args.phone,
        facebook_psid: args.psid.map(|p| p.trim().to_string()),
        app_user_id: args.app_user.map(|u| u.trim().to_string()),
    };
    let config = load(path)?;
    runtime()?.block_on(async {
        crate::store::create_private_dir(&config.daemon.state_dir)?;
        let store = Store::open(StoreSettings::from_config(&config))?;
        let p = store.erase(who).await;
        store.close().await;
        let p = p?;
        if p.reporters == 0 && p.raw_items == 0 && p.fragments == 0 {
            println!("No stored data matches; nothing was changed.");
            return anyhow::Ok(());
        }
        println!(
            "Erased: {} reports anonymised, {} raw items emptied, {} reporters deleted, {} Messenger fragments deleted.",
            p.reports, p.raw_items, p.reporters, p.fragments
        );
        println!(
            "Copies already delivered to sinks are outside phananh: ask each receiving system to delete them."
        );
        anyhow::Ok(())
    })
}

fn outbox_json(r: &queries::OutboxRow) -> serde_json::Value {
    serde_json::json!({
        "id": r.id, "event_id": r.event_id, "event": r.event_type, "report_id": r.report_id,
        "sink": r.sink, "state": r.state, "attempts": r.attempts,
        "next_attempt_ms": r.next_attempt_ms, "last_error": r.last_error,
        "created_at": r.created_at, "delivered_at": r.delivered_at,
    })
}

/// Makes outbox rows due now through the store's writer (the daemon may be running beside us).
fn requeue(config: &Config, ids: Option<Vec<i64>>) -> anyhow::Result<usize> {
    runtime()?.block_on(async {
        crate::store::create_private_dir(&config.daemon.state_dir)?;
        let store = Store::open(StoreSettings::from_config(config))?;
        let n = store.requeue_outbox(ids).await?;
        store.close().await;
        anyhow::Ok(n)
    })
}
