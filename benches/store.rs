//! Store write path: reports/s through `Store::submit` (one writer thread, group commit, WAL +
//! synchronous=FULL) beside a plain rusqlite loop writing the same rows in transactions of 100
//! with the same pragmas, in one run. Target: ours / plain >= 0.5.
//!
//!   CARGO_TARGET_DIR=/work/target-bench cargo bench --bench store
//!
//! Two parts:
//! 1. criterion group `store-write` with `ours/inflight-64` and `plain-rusqlite/txn-100`
//!    (Throughput::Elements = reports per iteration; fresh database per iteration).
//! 2. afterwards, an interleaved A/B: ROUNDS rounds of (ours, plain) alternating on fresh
//!    databases, printing per-round figures and the median ratio. fsync latency on a VM drifts
//!    minute to minute, so this ratio is the one to quote.
//!
//! Environment knobs: PHANANH_BENCH_N (reports per iteration, default 2000),
//! PHANANH_BENCH_INFLIGHT (concurrent submitters, default 64), PHANANH_BENCH_ROUNDS (default 7;
//! 0 skips the interleaved part), PHANANH_BENCH_LOG (a tracing filter, e.g.
//! `phananh::store=trace` shows every group commit with its size), PHANANH_BENCH_DIR (where temp databases go; default the
//! system temp dir — it must be on the disk you care about, not tmpfs).

use criterion::{Criterion, SamplingMode, Throughput};
use phananh::channels::email::normalize;
use phananh::config::EmailConfig;
use phananh::pipeline::{Draft, sha256_hex};
use phananh::store::{Outcome, Store, StoreSettings, Submission, SubmissionBody};
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_dir() -> PathBuf {
    std::env::var_os("PHANANH_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// ~500 characters of Vietnamese prose (NFC), the size of a typical citizen report.
const DESCRIPTION: &str = "Kính gửi Trung tâm Giám sát Điều hành Đô thị thông minh, \
tôi xin phản ánh tình trạng mặt đường Lê Lợi, đoạn trước số nhà 45 gần cầu Trường Tiền, \
bị sụt lún và xuất hiện nhiều ổ gà sâu khoảng mười lăm phân. Mỗi khi trời mưa, nước đọng \
thành vũng lớn, xe máy đi qua rất nguy hiểm, tối hôm qua đã có hai người bị ngã. Đèn chiếu \
sáng ở khu vực này cũng bị hỏng từ đầu tháng nên ban đêm rất khó nhìn thấy. Đề nghị các \
cơ quan chức năng sớm kiểm tra, rào chắn tạm thời và sửa chữa để đảm bảo an toàn cho người \
dân đi lại. Xin chân thành cảm ơn.";

/// One realistic inbound item: the raw message and what the normaliser made of it.
struct Item {
    raw: Vec<u8>,
    raw_sha256: String,
    draft: Draft,
}

/// Builds N distinct messages (unique Message-ID and sender, so nothing is deduplicated),
/// ~3 KB raw each, and normalises them with the real parser (outside any timing).
fn make_items(n: usize, tz: chrono_tz::Tz) -> Vec<Item> {
    let limits = EmailConfig::default();
    let received: String = (0..8)
        .map(|h| {
            format!(
                "Received: from mx{h}.relay.example.net (mx{h}.relay.example.net [203.0.113.{h}])\n\
                 \tby mail.hue.example.vn (Postfix) with ESMTPS id 4Xk{h}Qm2Lz9p\n\
                 \tfor <dttm@hue.example.vn>; Thu, 26 Nov 2026 08:1{h}:00 +0700 (+07)\n"
            )
        })
        .collect();
    (0..n)
        .map(|i| {
            let body = format!(
                "{DESCRIPTION}\n\nSĐT liên hệ: 0905 {:03} {:03}\nMã phản ánh tham chiếu nội bộ: {i}\n\n-- \nNguyễn Văn An {i}\nPhường Thuận Hóa, TP. Huế\n",
                i % 1000,
                (i / 1000) % 1000
            );
            let raw = format!(
                "Return-Path: <citizen{i}@example.com>\n{received}\
                 DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=s1; h=from:to:subject:date:message-id;\n\
                 \tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=dzdVyOfAKCdLXdJOc9G2q8LoXSlEniSbav+yuU4zGeeruD00lszZVoG4ZHRNiYzR\n\
                 Message-ID: <bench-{i:06}.CAH7pQx2mV9kR3tLw8nZ4bYc6uE1sJd0fGa5@mail.example.com>\n\
                 Date: Thu, 26 Nov 2026 08:15:00 +0700\n\
                 From: =?UTF-8?B?Tmd1eeG7hW4gVsSDbiBBbg==?= <citizen{i}@example.com>\n\
                 To: =?UTF-8?B?VHJ1bmcgdMOibSBHacOhbSBzw6F0?= <dttm@hue.example.vn>\n\
                 Subject: =?UTF-8?B?xJDGsOG7nW5nIEzDqiBM4bujaSBi4buLIHPhu6V0IGzDum4sIG5oaeG7gXUg4buVIGfDoA==?=\n\
                 MIME-Version: 1.0\n\
                 Content-Type: text/plain; charset=utf-8\n\
                 Content-Transfer-Encoding: 8bit\n\n{body}"
            )
            .into_bytes();
            let (draft, _blobs) = normalize(&raw, &limits, tz, "chua_phan_loai")
                .unwrap_or_else(|e| panic!("bench message {i} does not normalise: {e}"));
            Item {
                raw_sha256: sha256_hex(&raw),
                raw,
                draft,
            }
        })
        .collect()
}

fn submission(item: &Item, received_at: chrono::DateTime<chrono::FixedOffset>) -> Submission {
    Submission {
        channel: "mail".into(),
        kind: "maildir".into(),
        raw: item.raw.clone(),
        raw_sha256: item.raw_sha256.clone(),
        source_ref: Some("1764120900.M1P1.bench".into()),
        received_at,
        body: SubmissionBody::Report(Box::new(item.draft.clone())),
        acknowledge: false,
    }
}

/// Store settings as the daemon derives them from a minimal phananh.toml (defaults for every
/// knob, one spool sink), so new settings fields with defaults do not break the bench.
fn settings_for(dir: &Path) -> StoreSettings {
    let channels = dir.join("channels");
    std::fs::create_dir_all(&channels).unwrap();
    let toml = dir.join("phananh.toml");
    std::fs::write(
        &toml,
        format!(
            "state_dir = {:?}\nchannels_dir = {:?}\n\n[[categories]]\ncode = \"chua_phan_loai\"\nname = \"Chưa phân loại\"\nunit = \"trung_tam_giam_sat\"\n",
            dir.join("state").display().to_string(),
            channels.display().to_string()
        ),
    )
    .unwrap();
    let config = phananh::config::load(&toml).unwrap_or_else(|e| panic!("bench config: {e}"));
    StoreSettings::from_config(&config)
}

struct Ctx {
    rt: tokio::runtime::Runtime,
    items: Arc<Vec<Item>>,
    inflight: usize,
    tz: chrono_tz::Tz,
}

struct OursRun {
    elapsed: Duration,
}

/// Submits every item from `inflight` concurrent tasks into a fresh store; the clock runs from
/// the first submit to the last receipt (opening and closing the store are not timed).
fn run_ours(ctx: &Ctx) -> OursRun {
    let tmp = tempfile::tempdir_in(bench_dir()).unwrap();
    let settings = settings_for(tmp.path());
    let now = chrono::Utc::now().with_timezone(&ctx.tz).fixed_offset();
    // Submissions are built before the clock starts: building them is the channel's work.
    let mut lanes: Vec<Vec<Submission>> = (0..ctx.inflight).map(|_| Vec::new()).collect();
    for (i, item) in ctx.items.iter().enumerate() {
        lanes[i % ctx.inflight].push(submission(item, now));
    }
    ctx.rt.block_on(async move {
        let store = Store::open(settings).expect("open store");
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for lane in lanes {
            let store = store.clone();
            set.spawn(async move {
                let mut created = 0usize;
                for s in lane {
                    let r = store.submit(s).await.expect("submit");
                    assert!(!r.redelivered, "bench items must be new");
                    if matches!(r.outcome, Outcome::Created { .. }) {
                        created += 1;
                    }
                }
                created
            });
        }
        let mut created = 0;
        while let Some(r) = set.join_next().await {
            created += r.expect("submitter task");
        }
        let elapsed = start.elapsed();
        assert_eq!(
            created,
            ctx.items.len(),
            "every item must be created, none deduplicated"
        );
        store.close().await;
        OursRun { elapsed }
    })
}

/// The same rows with plain rusqlite: one connection, WAL + synchronous=FULL + foreign_keys (as
/// the store's writer), the store's own schema (made by Store::open, not timed), transactions of
/// 100; per item an inbox row with the raw blob, a reporter row, a report row and an outbox row.
/// No existence checks, no dedupe query, no tracking-code lookups: this is the physical floor.
fn run_plain(ctx: &Ctx) -> Duration {
    let tmp = tempfile::tempdir_in(bench_dir()).unwrap();
    let settings = settings_for(tmp.path());
    let db_path = settings.db_path.clone();
    ctx.rt.block_on(async {
        let store = Store::open(settings).expect("create schema");
        store.close().await;
    });
    let mut conn = Connection::open(&db_path).unwrap();
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .unwrap();
    assert!(mode.eq_ignore_ascii_case("wal"));
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.pragma_update(None, "foreign_keys", true).unwrap();

    let now = chrono::Utc::now().with_timezone(&ctx.tz).fixed_offset();
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let now_ms = now.timestamp_millis();
    let start = Instant::now();
    for (chunk_no, chunk) in ctx.items.chunks(BATCH).enumerate() {
        let tx = conn.transaction().unwrap();
        for (j, item) in chunk.iter().enumerate() {
            let d = &item.draft;
            let n = chunk_no * BATCH + j;
            let id = ulid::Ulid::new().to_string();
            let code = format!("PA-{:04}-{:04}", n / 10_000, n % 10_000);
            let email = d.reporter.email.clone().unwrap_or_default();
            let event_json = serde_json::json!({
                "schema": "phananh.report/1",
                "event": "report.created",
                "event_id": format!("{id}.created"),
                "id": id,
                "tracking_code": code,
                "channel": {"name": "mail", "kind": "maildir"},
                "external_id": d.external_id,
                "received_at": stamp,
                "submitted_at": stamp,
                "reporter": {"name": d.reporter.name, "phone": d.reporter.phone, "email": email},
                "title": d.title,
                "description": d.description,
                "quoted": d.quoted,
                "language": d.language,
                "category": {"code": d.category.code, "source": "default", "score": 0.0},
                "unit": "trung_tam_giam_sat",
                "location": null, "media": [], "omitted_media": [], "duplicate_of": null,
                "related": [], "follow_up_of": null,
            })
            .to_string();
            tx.prepare_cached(
                "INSERT INTO inbox (channel, kind, external_id, received_at, raw, raw_sha256, source_ref, status, report_id)
                 VALUES ('mail', 'maildir', ?1, ?2, ?3, ?4, ?5, 'stored', ?6)",
            )
            .unwrap()
            .execute(params![d.external_id, stamp, item.raw, item.raw_sha256, "bench", id])
            .unwrap();
            let inbox_id = tx.last_insert_rowid();
            let reporter_id: i64 = tx
                .prepare_cached(
                    "INSERT INTO reporters (key, name, email, phone, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5) RETURNING id",
                )
                .unwrap()
                .query_row(
                    params![
                        format!("email:{email}"),
                        d.reporter.name,
                        email,
                        d.reporter.phone,
                        stamp
                    ],
                    |r| r.get(0),
                )
                .unwrap();
            tx.prepare_cached(
                "INSERT INTO reports (id, tracking_code, inbox_id, channel, kind, external_id, received_at, received_ms,
                    submitted_at, reporter_id, title, description, quoted, full_text, language, category, unit,
                    text_key, event_json)
                 VALUES (?1, ?2, ?3, 'mail', 'maildir', ?4, ?5, ?6, ?5, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'trung_tam_giam_sat', ?14, ?15)",
            )
            .unwrap()
            .execute(params![
                id,
                code,
                inbox_id,
                d.external_id,
                stamp,
                now_ms,
                reporter_id,
                d.title,
                d.description,
                d.quoted,
                d.full_text,
                d.language,
                d.category.code,
                item.raw_sha256, // a 64-hex text key, as ours stores
                event_json
            ])
            .unwrap();
            tx.prepare_cached(
                "INSERT INTO outbox (event_id, event_type, report_id, sink, payload, next_attempt_ms, created_at)
                 VALUES (?1, 'report.created', ?2, 'spool', ?3, ?4, ?5)",
            )
            .unwrap()
            .execute(params![format!("{id}.created"), id, event_json, now_ms, stamp])
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let elapsed = start.elapsed();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n as usize, ctx.items.len());
    elapsed
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn criterion_part(c: &mut Criterion, ctx: &Ctx) {
    let n = ctx.items.len();
    let mut g = c.benchmark_group("store-write");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(12))
        .throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("ours/inflight-{}", ctx.inflight), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_ours(ctx).elapsed).sum())
    });
    g.bench_function(format!("plain-rusqlite/txn-{BATCH}"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_plain(ctx)).sum())
    });
    g.finish();
}

/// Alternating rounds on fresh databases; prints per-round rates and the median ratio.
fn interleaved_part(ctx: &Ctx, rounds: usize) {
    let n = ctx.items.len();
    // One untimed pass each: page cache, allocator, lazily compiled regexes.
    run_ours(ctx);
    run_plain(ctx);
    let (mut ours, mut plain, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    eprintln!();
    eprintln!(
        "store-write interleaved: {rounds} rounds x {n} reports, ours with {} in flight, plain in txns of {BATCH}",
        ctx.inflight
    );
    eprintln!("  round   ours rep/s   plain rep/s   ours/plain");
    for round in 1..=rounds {
        // Alternate who goes first so a drift in fsync latency does not favour one side.
        let (o, p) = if round % 2 == 1 {
            let o = run_ours(ctx).elapsed;
            (o, run_plain(ctx))
        } else {
            let p = run_plain(ctx);
            (run_ours(ctx).elapsed, p)
        };
        let (o, p) = (per_sec(n, o), per_sec(n, p));
        eprintln!("  {round:>5}   {o:>10.0}   {p:>11.0}   {:>10.2}", o / p);
        ours.push(o);
        plain.push(p);
        ratios.push(o / p);
    }
    let spread = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    let (rl, rh) = spread(&ratios);
    let (ol, oh) = spread(&ours);
    let (pl, ph) = spread(&plain);
    let r = median(&mut ratios);
    eprintln!(
        "  median  {:>10.0}   {:>11.0}   {:>10.2}",
        median(&mut ours),
        median(&mut plain),
        r
    );
    eprintln!("  range   {ol:.0}-{oh:.0}   {pl:.0}-{ph:.0}   {rl:.2}-{rh:.2}");
    eprintln!(
        "RATIO store-write ours/plain = {r:.2} (target >= 0.50: {})",
        if r >= 0.5 { "met" } else { "MISSED" }
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let test_mode = args.iter().any(|a| a == "--test" || a == "--list");
    let n = if test_mode {
        200
    } else {
        env_usize("PHANANH_BENCH_N", 2000)
    };
    let inflight = env_usize("PHANANH_BENCH_INFLIGHT", 64).max(1);
    let rounds = if test_mode {
        0
    } else {
        env_usize("PHANANH_BENCH_ROUNDS", 7)
    };
    if let Ok(filter) = std::env::var("PHANANH_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let tz: chrono_tz::Tz = "Asia/Ho_Chi_Minh".parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ctx = Ctx {
        rt,
        items: Arc::new(make_items(n, tz)),
        inflight,
        tz,
    };
    let avg_raw = ctx.items.iter().map(|i| i.raw.len()).sum::<usize>() / n;
    let avg_desc = ctx
        .items
        .iter()
        .map(|i| i.draft.description.chars().count())
        .sum::<usize>()
        / n;
    eprintln!(
        "store bench: {n} reports per iteration, raw ~{avg_raw} B, description ~{avg_desc} chars, dir {}",
        bench_dir().display()
    );
    // CPU the writer thread spends per report on work that needs no database: the dedupe key
    // (Draft::dedupe_key, called inside store_report). Shown so a regression there is visible.
    let t = Instant::now();
    for item in ctx.items.iter() {
        std::hint::black_box(item.draft.dedupe_key());
    }
    eprintln!(
        "  Draft::dedupe_key: {:.1} us per report (computed by the parser since the fix; was on the writer thread)",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );

    let mut c = Criterion::default().configure_from_args();
    criterion_part(&mut c, &ctx);
    c.final_summary();
    if rounds > 0 {
        interleaved_part(&ctx, rounds);
    }
}
