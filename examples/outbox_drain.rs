//! The forwarding benchmark of issue 7 (`bench/outbox-drain.sh` drives it): drain N queued
//! outbox events to RabbitMQ (publisher confirms) or to a local HTTP receiver, and beside it a
//! plain loop that sends the same payloads the same way, so the two can be compared in one run.
//!
//! Modes (human-readable lines go to stderr; stdout gets one `FILL …`, `RESULT …` or `COUNT …`):
//!
//! * `fill --state DIR --count N [--sink bench]`: a store with N generated reports (the texts of
//!   `examples/dedupe_scale.rs`, classified and routed by the shipped categories), submitted
//!   through the real `Store`, each report's event queued for the one sink NAME: N pending outbox
//!   rows whose payloads are the real event JSON. Spread over N/R days (R = 100 a day) so that
//!   almost nothing is a duplicate. Not timed for the benchmark.
//! * `drain --config FILE --sink NAME`: the config's store and `[sinks.NAME]`; builds the
//!   `Forwarder` (untimed) and times `Forwarder::pump()` until every pending row is delivered
//!   (connecting to the sink is inside the clock). `--steps` runs the same work through the public
//!   pieces instead (`queries::due_outbox`, `Sink::deliver`, `Store::record_deliveries`) and times
//!   each phase; `--overlap` (with `--steps`) lets the writer record batch k while batch k+1 is
//!   being sent, to measure what pipelining would buy.
//! * `plain-amqp --db FILE --sink NAME --url U --exchange X`: reads the sink's payloads, event ids
//!   and types from FILE and their routing keys (`forward::routing_key`, the sink's template) before
//!   the clock, then connects with lapin, turns on confirms and publishes them `--window` at a time
//!   (persistent, mandatory, the same properties as the sink), awaiting each window's confirms
//!   before the next, as the sink does; then closes the connection.
//! * `plain-http --db FILE --sink NAME --url U [--secret-file F]`: the same payloads POSTed with
//!   reqwest (a client built as the sink builds it), `--window` in flight, with Content-Type,
//!   Idempotency-Key, X-Phananh-Event and, with a secret, the HMAC-SHA256 signature computed per
//!   request inside the clock (as the sink does).
//! * `receiver --port P`: an axum/hyper HTTP/1.1 server on 127.0.0.1 that answers every POST with
//!   204 and counts requests, bytes, signed and keyed requests; `GET /count` returns
//!   `COUNT posts=… bytes=… signed=… keyed=…`; SIGTERM prints the same line and exits.
//! * `amqp-setup`, `amqp-purge`, `amqp-teardown --url U --exchange X --queue Q`: a durable topic
//!   exchange and a durable queue bound with `#`; purge prints how many messages it removed;
//!   teardown deletes both.
//!
//! ```sh
//! cargo run --release --example outbox_drain -- fill --state /tmp/o/state --count 100000
//! cargo run --release --example outbox_drain -- drain --config /tmp/o/r1/phananh.toml --sink bench
//! ```

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use phananh::config::Config;
use phananh::forward::{Forwarder, Outgoing, Sink};
use phananh::health::Health;
use phananh::pipeline::enrich::Enricher;
use phananh::pipeline::{Draft, sha256_hex, text};
use phananh::report::{Location, LocationSource};
use phananh::store::{
    Delivery, Outcome, SinkRoute, Store, StoreSettings, Submission, SubmissionBody,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Outbox drain benchmark (issue 7): ours beside a plain loop")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fill a store with N reports whose events are queued for one sink.
    Fill {
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value = "bench")]
        sink: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        #[arg(long, default_value_t = 100)]
        rate_per_day: u64,
        /// Categories, places, dedupe settings (default: config/quickstart.toml); its sinks are
        /// replaced by the one sink.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Time Forwarder::pump() until the sink's pending rows are all delivered.
    Drain {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        sink: String,
        /// Time the phases (read, send, record) through the public pieces instead.
        #[arg(long)]
        steps: bool,
        /// With --steps: record batch k while batch k+1 is sent.
        #[arg(long)]
        overlap: bool,
    },
    /// Publish the same payloads with lapin, confirms awaited a window at a time.
    PlainAmqp {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        sink: String,
        #[arg(long)]
        url: String,
        #[arg(long)]
        exchange: String,
        /// The sink's template (give the same one as the config).
        #[arg(long, default_value = "report.{category}.{unit}")]
        routing_key: String,
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// Diagnosis only: delivery_mode 1 (not persistent), to see what persistence costs the
        /// broker. The sink always publishes persistent messages.
        #[arg(long)]
        transient: bool,
    },
    /// POST the same payloads with reqwest, `window` in flight.
    PlainHttp {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        sink: String,
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 8)]
        window: usize,
        #[arg(long)]
        secret_file: Option<PathBuf>,
        #[arg(long, default_value = "X-Phananh-Signature")]
        signature_header: String,
        #[arg(long, default_value_t = 10)]
        timeout_s: u64,
    },
    /// A fast local HTTP receiver: 204 to every POST.
    Receiver {
        #[arg(long)]
        port: u16,
    },
    AmqpSetup {
        #[arg(long)]
        url: String,
        #[arg(long)]
        exchange: String,
        #[arg(long)]
        queue: String,
        /// x-queue-version of the classic queue (RabbitMQ 3.10+: 1, the default, or 2).
        #[arg(long)]
        queue_version: Option<i32>,
    },
    AmqpPurge {
        #[arg(long)]
        url: String,
        #[arg(long)]
        queue: String,
    },
    AmqpTeardown {
        #[arg(long)]
        url: String,
        #[arg(long)]
        exchange: String,
        #[arg(long)]
        queue: String,
    },
}

/// The end of the filled period: 2026-06-01T00:00:00+07:00.
const NOW_MS: i64 = 1_780_246_800_000;
const DAY_MS: i64 = 24 * 3_600_000;
const FILL_CHANNEL: &str = "outbox-fill";

// ---- the generator (from examples/dedupe_scale.rs) ---------------------------------------------

const GREETINGS: &[&str] = &[
    "Kính gửi Trung tâm Giám sát điều hành đô thị thông minh Huế, ",
    "Chào admin, ",
    "Ad ơi, ",
    "Xin chào trung tâm, ",
    "Kính gửi UBND phường, ",
    "Cho em phản ánh: ",
];

/// What is wrong; `{p}` is where the place goes.
const PROBLEMS: &[&str] = &[
    "có ổ gà rất sâu {p}, xe máy chạy qua dễ té",
    "mặt đường bị sụt lún, nhiều ổ gà {p}",
    "hố sâu giữa đường {p}, trời mưa không thấy",
    "đèn đường hỏng mấy tối nay {p}, tối om",
    "cột đèn {p} không sáng từ tuần trước",
    "đèn tín hiệu giao thông {p} không hoạt động",
    "rác thải đổ bừa bãi {p}, bốc mùi hôi",
    "có người đổ trộm xà bần {p}",
    "rác không được thu gom mấy ngày {p}",
    "nước ngập sâu {p} sau trận mưa chiều nay",
    "ngập úng kéo dài {p}, xe chết máy nhiều",
    "người bán hàng lấn chiếm vỉa hè {p}, người đi bộ phải xuống lòng đường",
    "quán cà phê bày bàn ghế kín vỉa hè {p}",
    "ô tô đậu xe trên vỉa hè {p} cả ngày",
    "cây đổ chắn ngang đường {p}",
    "cành cây gãy sắp rơi {p}, rất nguy hiểm",
    "nắp cống bị vỡ {p}, có thể sụp chân",
    "cống thoát nước bị tắc {p}, nước tràn lên mặt đường",
    "karaoke hát ồn ào đến khuya {p}",
    "mất nước từ sáng đến giờ {p}",
    "vỡ ống nước {p}, nước chảy lênh láng",
    "dây điện bị đứt buông thõng {p}",
    "công trình xây dựng không phép {p}",
    "biển quảng cáo sắp rơi {p}",
];

/// Where; `{s}` is the street, `{n}` a house number, `{m}` a kiệt (lane). A number is always
/// followed by a word: `similar::numbers` does not take one followed by `.`, `,` or `/`.
const PLACES: &[&str] = &[
    "trước nhà số {n} đường {s}",
    "ở kiệt {n} {s}",
    "đoạn gần số {n} {s}",
    "tại nhà {n} kiệt {m} {s}",
    "trong kiệt {m} đường {s}, gần nhà số {n} phía trong",
    "trên đường {s}, đoạn nhà số {n} trở vào",
    "ngay ngã tư {s} với {t}, trước số {n} {s}",
];

/// Details people add, which make two reports of different incidents read differently.
const DETAILS: &[&str] = &[
    "",
    " Gần {l}.",
    " Đoạn này gần {l}, buổi tối rất đông xe.",
    " Sáng nay em đi làm thấy, chụp không kịp.",
    " Tình trạng này kéo dài cả tháng nay.",
    " Trẻ con đi học ngang qua rất nguy hiểm.",
    " Hôm qua có bác lớn tuổi bị té ở đây.",
    " Hàng xóm đã báo tổ dân phố nhưng chưa thấy ai xuống.",
    " Mùa mưa là bị như vầy hoài.",
    " Nhờ các anh chị xuống kiểm tra giúp.",
    " Đi ngang qua đây mỗi ngày nên biết rõ.",
];

/// Landmarks named in the details.
const LANDMARKS: &[&str] = &[
    "chợ Đông Ba",
    "chợ Bến Ngự",
    "chợ An Cựu",
    "trường Quốc Học",
    "cầu Trường Tiền",
    "cầu Phú Xuân",
    "Đại Nội",
    "ga Huế",
    "bệnh viện Trung ương Huế",
    "trường Hai Bà Trưng",
    "công viên Thương Bạc",
    "cửa Thượng Tứ",
    "bến xe phía Nam",
    "siêu thị Big C",
    "Vincom",
    "sân vận động Tự Do",
];

const SUFFIXES: &[&str] = &[
    "",
    "",
    " Mong được xử lý sớm.",
    " Nguy hiểm cho người đi đường.",
    " Đã mấy ngày rồi mà chưa ai xử lý.",
    " Xin cảm ơn!",
    " Đề nghị cơ quan chức năng kiểm tra.",
];

const STREETS: &[&str] = &[
    "Lê Lợi",
    "Hùng Vương",
    "Nguyễn Huệ",
    "Trần Hưng Đạo",
    "Phan Đình Phùng",
    "Lý Thường Kiệt",
    "Bến Nghé",
    "Hà Nội",
    "Lê Duẩn",
    "Điện Biên Phủ",
    "Nguyễn Trãi",
    "Đinh Tiên Hoàng",
    "Mai Thúc Loan",
    "Chi Lăng",
    "Huỳnh Thúc Kháng",
    "Bà Triệu",
    "Nguyễn Sinh Cung",
    "Phạm Văn Đồng",
    "Tôn Đức Thắng",
    "An Dương Vương",
    "Nguyễn Tri Phương",
    "Đống Đa",
    "Trường Chinh",
    "Nguyễn Lộ Trạch",
    "Tố Hữu",
    "Võ Văn Kiệt",
    "Lê Lai",
    "Ngô Quyền",
    "Trần Phú",
    "Phan Bội Châu",
    "Nguyễn Khoa Chiêm",
    "Hai Bà Trưng",
    "Phạm Ngũ Lão",
    "Chu Văn An",
    "Võ Thị Sáu",
    "Đội Cung",
    "Nguyễn Chí Thanh",
    "Lê Thánh Tôn",
    "Kim Long",
    "Thạch Hãn",
    "Nguyễn Phúc Nguyên",
    "Bùi Thị Xuân",
    "Ngự Bình",
    "Trần Cao Vân",
    "Nguyễn Văn Cừ",
    "Hàn Mặc Tử",
    "Xuân Diệu",
    "Lâm Hoằng",
    "Phùng Hưng",
    "Tăng Bạt Hổ",
];

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

/// A report's text and position, from the seed and its index only.
fn generate(seed: u64, stream: u64, i: u64) -> (String, Option<(f64, f64)>) {
    let mut rng = StdRng::seed_from_u64(
        seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.wrapping_mul(0xbf58_476d_1ce4_e5b9),
    );
    let street = pick(&mut rng, STREETS);
    let other = pick(&mut rng, STREETS);
    let place = pick(&mut rng, PLACES)
        .replace("{s}", street)
        .replace("{t}", other)
        .replace("{n}", &rng.random_range(1..=999u32).to_string())
        .replace("{m}", &rng.random_range(1..=200u32).to_string());
    let mut s = String::new();
    if rng.random_bool(0.3) {
        s.push_str(pick(&mut rng, GREETINGS));
    }
    let problem = pick(&mut rng, PROBLEMS).replace("{p}", &place);
    // Capitalised after no greeting, as people write.
    if s.is_empty() {
        let mut c = problem.chars();
        if let Some(first) = c.next() {
            s.extend(first.to_uppercase());
            s.push_str(c.as_str());
        }
    } else {
        s.push_str(&problem);
    }
    s.push('.');
    s.push_str(&pick(&mut rng, DETAILS).replace("{l}", pick(&mut rng, LANDMARKS)));
    s.push_str(pick(&mut rng, SUFFIXES));
    if rng.random_bool(0.2) {
        s = text::fold(&s);
    }
    let position = rng.random_bool(0.7).then(|| {
        (
            rng.random_range(16.40..16.52),
            rng.random_range(107.53..107.65),
        )
    });
    (s, position)
}

fn draft(enricher: &Enricher, id: &str, text: String, position: Option<(f64, f64)>) -> Draft {
    let mut d = Draft {
        location: position.map(|(lat, lon)| Location::new(lat, lon, LocationSource::Device)),
        ..Draft::from_text(id, id, &text, "chua_phan_loai")
    };
    enricher.apply(&mut d);
    d.text_key = d.dedupe_key();
    d
}

fn submission(channel: &str, draft: Draft, received_ms: i64) -> Submission {
    let raw = format!("{}\n{}", draft.external_id, draft.full_text).into_bytes();
    let tz = chrono::FixedOffset::east_opt(7 * 3600).expect("+07:00");
    let received_at = chrono::DateTime::from_timestamp_millis(received_ms)
        .expect("in range")
        .with_timezone(&tz);
    Submission {
        channel: channel.into(),
        kind: "app".into(),
        raw_sha256: sha256_hex(&raw),
        raw,
        source_ref: None,
        received_at,
        body: SubmissionBody::Report(Box::new(draft)),
        acknowledge: false,
    }
}

// ---- shared helpers ---------------------------------------------------------------------------

fn load_config(path: &Path) -> anyhow::Result<Config> {
    phananh::config::load(path)
        .map_err(|e| anyhow::anyhow!("invalid configuration {}:\n{e}", path.display()))
}

/// This process's peak resident set (VmHWM), in KiB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User and system CPU seconds of this process so far.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(u.ru_utime), s(u.ru_stime))
}

/// CPU seconds by thread name (`phananh-writer`, `tokio-runtime-worker`, ...), of the threads still
/// alive, as `name:seconds,...`.
fn thread_cpu() -> String {
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut by = std::collections::BTreeMap::<String, f64>::new();
    for e in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].replace(' ', "_");
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        *by.entry(name).or_default() += (ticks(11) + ticks(12)) / hz;
    }
    by.iter()
        .map(|(k, v)| format!("{k}:{v:.2}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn usage() -> String {
    let (user, sys) = cpu_seconds();
    format!(
        "rss_kb={} cpu_user={user:.2} cpu_sys={sys:.2}",
        peak_rss_kb()
    )
}

/// One queued event as both sides send it.
struct Message {
    id: i64,
    event_id: String,
    event_type: String,
    payload: String,
}

fn message(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        event_id: r.get(1)?,
        event_type: r.get(2)?,
        payload: r.get(3)?,
    })
}

/// The sink's undelivered rows in id order (what the forwarder will send), read-only.
fn read_messages(db: &Path, sink: &str) -> anyhow::Result<Vec<Message>> {
    let conn = phananh::store::open_reader(db)?;
    let mut st = conn.prepare(
        "SELECT id, event_id, event_type, payload FROM outbox
         WHERE sink = ?1 AND state IN ('pending', 'retrying') ORDER BY id",
    )?;
    let rows = st
        .query_map([sink], message)?
        .collect::<Result<Vec<_>, _>>()?;
    if rows.is_empty() {
        bail!(
            "{} holds no undelivered outbox rows for sink {sink:?}",
            db.display()
        );
    }
    Ok(rows)
}

fn count_state(conn: &rusqlite::Connection, sink: &str, state: &str) -> anyhow::Result<u64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM outbox WHERE sink = ?1 AND state = ?2",
        [sink, state],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

// ---- fill -------------------------------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
async fn fill(
    state: PathBuf,
    count: u64,
    sink: String,
    seed: u64,
    in_flight: usize,
    rate_per_day: u64,
    config: Option<PathBuf>,
) -> anyhow::Result<()> {
    let path = config.unwrap_or_else(|| {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/quickstart.toml"
        ))
    });
    let mut config = load_config(&path)?;
    config.daemon.state_dir = state;
    let mut settings = StoreSettings::from_config(&config);
    settings.sinks = vec![SinkRoute::all(&sink)].into();
    let db = settings.db_path.clone();
    if db.exists() {
        bail!("{} exists; fill wants a fresh state dir", db.display());
    }
    let enricher = Arc::new(Enricher::new(&config.daemon));
    let store = Store::open(settings)?;
    let span_ms = (count as f64 / rate_per_day.max(1) as f64 * DAY_MS as f64) as i64;
    let start_ms = NOW_MS - span_ms;
    eprintln!(
        "== fill: {count} reports for sink {sink:?} over {:.0} days, {in_flight} in flight",
        span_ms as f64 / DAY_MS as f64
    );
    let started = Instant::now();
    let (mut created, mut duplicate, mut other) = (0u64, 0u64, 0u64);
    {
        let mut results = futures::stream::iter(0..count)
            .map(|i| {
                let store = store.clone();
                let enricher = enricher.clone();
                async move {
                    let (text, position) = generate(seed, 0, i);
                    let id = format!("outbox-{seed}-{i}");
                    let at = start_ms + (i as i128 * span_ms as i128 / count as i128) as i64;
                    let d = draft(&enricher, &id, text, position);
                    store.submit(submission(FILL_CHANNEL, d, at)).await
                }
            })
            .buffer_unordered(in_flight.max(1));
        let mut done = 0u64;
        while let Some(r) = results.next().await {
            match r.context("fill: submit failed")?.outcome {
                Outcome::Created { .. } => created += 1,
                Outcome::Duplicate { .. } => duplicate += 1,
                _ => other += 1,
            }
            done += 1;
            if done.is_multiple_of(25_000) {
                eprintln!(
                    "   {done:>8} stored, {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    store.close().await;
    let conn = phananh::store::open_reader(&db)?;
    let rows = count_state(&conn, &sink, "pending")?;
    let (avg, min, max): (f64, i64, i64) = conn.query_row(
        "SELECT avg(length(CAST(payload AS BLOB))), min(length(CAST(payload AS BLOB))),
                max(length(CAST(payload AS BLOB))) FROM outbox WHERE sink = ?1",
        [&sink],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let types: String = conn.query_row(
        "SELECT group_concat(event_type || ':' || n) FROM
           (SELECT event_type, count(*) AS n FROM outbox WHERE sink = ?1 GROUP BY event_type)",
        [&sink],
        |r| r.get(0),
    )?;
    eprintln!(
        "== fill done in {secs:.1} s: {created} created, {duplicate} duplicates, {other} other; {rows} pending rows for {sink:?} ({types}); payload {avg:.0} bytes on average ({min}-{max})"
    );
    println!(
        "FILL count={count} rows={rows} created={created} duplicates={duplicate} other={other} payload_avg={avg:.0} payload_min={min} payload_max={max} secs={secs:.1} types={types}"
    );
    Ok(())
}

// ---- ours -------------------------------------------------------------------------------------

/// Sums the writer's own "Committed a batch." trace events (their `elapsed`), so a drain through
/// the real `Forwarder` shows how much of its time the writer's transactions took.
#[derive(Default)]
struct CommitTimes {
    commits: AtomicU64,
    nanos: AtomicU64,
}

struct CommitLayer(Arc<CommitTimes>);

struct ElapsedVisitor(Option<Duration>);

impl tracing::field::Visit for ElapsedVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "elapsed" {
            self.0 = parse_debug_duration(&format!("{value:?}"));
        }
    }
}

/// `Duration`'s Debug form: `1.5s`, `3.2ms`, `812.5µs`, `100ns`.
fn parse_debug_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => v,
        "ms" => v / 1e3,
        "µs" | "us" => v / 1e6,
        "ns" => v / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CommitLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut v = ElapsedVisitor(None);
        event.record(&mut v);
        if let Some(d) = v.0 {
            self.0.commits.fetch_add(1, Ordering::Relaxed);
            self.0
                .nanos
                .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

fn install_tracing() -> Arc<CommitTimes> {
    use tracing_subscriber::prelude::*;
    let times = Arc::new(CommitTimes::default());
    let commits = tracing_subscriber::filter::Targets::new()
        .with_target("phananh::store::writer", tracing::Level::TRACE);
    let _ = tracing_subscriber::registry()
        .with(CommitLayer(times.clone()).with_filter(commits))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
        )
        .try_init();
    times
}

async fn drain(config: PathBuf, sink: String, steps: bool, overlap: bool) -> anyhow::Result<()> {
    let times = install_tracing();
    let config = load_config(&config)?;
    let cfg = config
        .daemon
        .sinks
        .get(&sink)
        .with_context(|| format!("no [sinks.{sink}] in the config"))?
        .clone();
    let kind = cfg.kind.as_str();
    let settings = StoreSettings::from_config(&config);
    let db = settings.db_path.clone();
    let store = Store::open(settings)?;
    let reader = store.reader()?;
    let pending = count_state(&reader, &sink, "pending")?;
    if pending == 0 {
        bail!("no pending rows for sink {sink:?} in {}", db.display());
    }
    let mode = if !steps {
        "pump"
    } else if overlap {
        "steps-overlap"
    } else {
        "steps"
    };
    eprintln!("== ours ({mode}): {pending} pending events to {kind} sink {sink:?}");
    let (secs, extra) = if steps {
        let sink_impl = Sink::from_config(&cfg).map_err(|e| anyhow::anyhow!("sink {sink}: {e}"))?;
        drain_steps(
            &store,
            &reader,
            &sink,
            &sink_impl,
            config.daemon.forward.batch,
            overlap,
        )
        .await?
    } else {
        let fwd = Forwarder::new(
            &sink,
            &cfg,
            &config.daemon.forward,
            store.clone(),
            Health::default(),
        )?;
        let t = Instant::now();
        let (mut delivered, mut pumps) = (0u64, 0u32);
        while delivered < pending {
            let (n, unavailable) = fwd.pump().await?;
            pumps += 1;
            if let Some(e) = unavailable {
                bail!("the sink could not be reached after {delivered} events: {e}");
            }
            if n == 0 {
                bail!("pump delivered nothing after {delivered} of {pending} events");
            }
            delivered += n as u64;
        }
        (t.elapsed(), format!("pumps={pumps}"))
    };
    let delivered = count_state(&reader, &sink, "delivered")?;
    let failed = count_state(&reader, &sink, "retrying")? + count_state(&reader, &sink, "dead")?;
    if delivered != pending || failed != 0 {
        bail!("{delivered} of {pending} rows delivered, {failed} retrying or dead");
    }
    let s = secs.as_secs_f64();
    let commits = times.commits.load(Ordering::Relaxed);
    let writer_s = times.nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let usage = usage();
    let threads = thread_cpu();
    drop(reader);
    let t = Instant::now();
    store.close().await;
    eprintln!(
        "== ours: {pending} events in {s:.3} s = {:.0} events/s; the writer committed {commits} transactions in {writer_s:.3} s; closing (checkpoint) {:.1} s",
        pending as f64 / s,
        t.elapsed().as_secs_f64()
    );
    println!(
        "RESULT side=ours mode={mode} kind={kind} events={pending} seconds={s:.3} rate={:.0} batch={} writer_commits={commits} writer_s={writer_s:.3} {extra} {usage} threads={threads}",
        pending as f64 / s,
        config.daemon.forward.batch
    );
    Ok(())
}

/// The forwarder's success path through public pieces, each phase timed: read a batch of due rows,
/// hand it to the sink, record the outcomes in one writer transaction. With `overlap`, batch k's
/// transaction runs while batch k+1 is read and sent (rows are then taken by id, after the last
/// one sent, since the previous batch may not be recorded yet).
async fn drain_steps(
    store: &Store,
    reader: &rusqlite::Connection,
    sink_name: &str,
    sink: &Sink,
    batch: usize,
    overlap: bool,
) -> anyhow::Result<(Duration, String)> {
    let mut after = reader.prepare(
        "SELECT id, event_id, event_type, payload FROM outbox
                        WHERE sink = ?1 AND state IN ('pending', 'retrying') AND id > ?2
                        ORDER BY id LIMIT ?3",
    )?;
    let (mut read, mut send, mut record) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut last_id = 0i64;
    let mut batches = 0u32;
    let mut recording: Option<tokio::task::JoinHandle<Result<(), phananh::store::StoreError>>> =
        None;
    let t = Instant::now();
    loop {
        let t0 = Instant::now();
        let rows: Vec<Message> = if overlap {
            after
                .query_map(rusqlite::params![sink_name, last_id, batch as i64], message)?
                .collect::<Result<_, _>>()?
        } else {
            phananh::store::queries::due_outbox(
                reader,
                sink_name,
                chrono::Utc::now().timestamp_millis(),
                batch,
            )?
            .into_iter()
            .map(|r| Message {
                id: r.id,
                event_id: r.event_id,
                event_type: r.event_type,
                payload: r.payload,
            })
            .collect()
        };
        read += t0.elapsed();
        let Some(last) = rows.last() else { break };
        last_id = last.id;
        batches += 1;
        let events: Vec<Outgoing> = rows
            .iter()
            .map(|r| Outgoing {
                event_id: r.event_id.clone(),
                event_type: r.event_type.clone(),
                payload: r.payload.clone(),
            })
            .collect();
        let t1 = Instant::now();
        let results = sink.deliver(events).await;
        send += t1.elapsed();
        let mut outcomes = Vec::with_capacity(rows.len());
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(()) => outcomes.push((row.id, Delivery::Delivered)),
                Err(e) => bail!("event {} was not delivered: {e:?}", row.event_id),
            }
        }
        let t2 = Instant::now();
        if overlap {
            if let Some(h) = recording.take() {
                h.await??;
            }
            record += t2.elapsed();
            let s = store.clone();
            recording = Some(tokio::spawn(
                async move { s.record_deliveries(outcomes).await },
            ));
        } else {
            store.record_deliveries(outcomes).await?;
            record += t2.elapsed();
        }
    }
    if let Some(h) = recording.take() {
        let t2 = Instant::now();
        h.await??;
        record += t2.elapsed();
    }
    if let Sink::Amqp(s) = sink {
        s.close().await;
    }
    let elapsed = t.elapsed();
    let label = if overlap { "record_wait_s" } else { "record_s" };
    Ok((
        elapsed,
        format!(
            "batches={batches} read_s={:.3} send_s={:.3} {label}={:.3}",
            read.as_secs_f64(),
            send.as_secs_f64(),
            record.as_secs_f64()
        ),
    ))
}

// ---- the plain loops --------------------------------------------------------------------------

async fn plain_amqp(
    db: PathBuf,
    sink: String,
    url: String,
    exchange: String,
    template: String,
    window: usize,
    transient: bool,
) -> anyhow::Result<()> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
    let msgs = read_messages(&db, &sink)?;
    let keys: Vec<String> = msgs
        .iter()
        .map(|m| phananh::forward::routing_key(&template, &m.payload))
        .collect();
    let n = msgs.len();
    eprintln!("== plain amqp: {n} payloads, window {window}, exchange {exchange:?}");
    let t = Instant::now();
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .context("connect")?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let (mut acked, mut other) = (0u64, 0u64);
    for (w, ks) in msgs.chunks(window.max(1)).zip(keys.chunks(window.max(1))) {
        let mut confirms = Vec::with_capacity(w.len());
        for (m, k) in w.iter().zip(ks) {
            let props = BasicProperties::default()
                .with_delivery_mode(if transient { 1 } else { 2 })
                .with_message_id(m.event_id.clone().into())
                .with_content_type("application/json".into())
                .with_content_encoding("utf-8".into())
                .with_type(m.event_type.clone().into())
                .with_app_id("phananh".into())
                .with_timestamp(chrono::Utc::now().timestamp() as u64);
            confirms.push(
                ch.basic_publish(
                    exchange.clone().into(),
                    k.clone().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    m.payload.as_bytes(),
                    props,
                )
                .await?,
            );
        }
        for c in futures::future::join_all(confirms).await {
            match c? {
                Confirmation::Ack(None) => acked += 1,
                _ => other += 1,
            }
        }
    }
    conn.close(200, "bye".into()).await?;
    let s = t.elapsed().as_secs_f64();
    if other > 0 {
        bail!("{other} of {n} messages were not simply acked");
    }
    eprintln!(
        "== plain amqp: {acked} confirmed in {s:.3} s = {:.0} events/s",
        n as f64 / s
    );
    println!(
        "RESULT side=plain kind=amqp events={n} seconds={s:.3} rate={:.0} window={window} delivery_mode={} {}",
        n as f64 / s,
        if transient { 1 } else { 2 },
        usage()
    );
    Ok(())
}

async fn plain_http(
    db: PathBuf,
    sink: String,
    url: String,
    window: usize,
    secret_file: Option<PathBuf>,
    signature_header: String,
    timeout: Duration,
) -> anyhow::Result<()> {
    let msgs = read_messages(&db, &sink)?;
    let n = msgs.len();
    let key = match &secret_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        None => None,
    };
    let tls = phananh::fetch::tls_config_with(None).map_err(anyhow::Error::msg)?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("phananh-plain-loop")
        .build()?;
    let url = reqwest::Url::parse(&url)?;
    let header = reqwest::header::HeaderName::from_bytes(signature_header.as_bytes())?;
    eprintln!(
        "== plain http: {n} payloads, {window} in flight, {}",
        if key.is_some() { "signed" } else { "unsigned" }
    );
    let t = Instant::now();
    let statuses: Vec<Result<reqwest::StatusCode, reqwest::Error>> =
        futures::stream::iter(msgs.iter().map(|m| {
            let (client, url, key, header) = (&client, &url, key.as_deref(), &header);
            async move {
                let mut req = client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("Idempotency-Key", &m.event_id)
                    .header("X-Phananh-Event", &m.event_type)
                    .body(m.payload.clone());
                if let Some(k) = key {
                    req = req.header(header, phananh::forward::sign(k, m.payload.as_bytes()));
                }
                req.send().await.map(|r| r.status())
            }
        }))
        .buffered(window.max(1))
        .collect()
        .await;
    let s = t.elapsed().as_secs_f64();
    let ok = statuses
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|s| s.is_success()))
        .count();
    if ok != n {
        let first = statuses
            .iter()
            .find(|r| !r.as_ref().is_ok_and(|s| s.is_success()));
        bail!("{} of {n} POSTs failed, e.g. {first:?}", n - ok);
    }
    eprintln!(
        "== plain http: {n} answered 2xx in {s:.3} s = {:.0} events/s",
        n as f64 / s
    );
    println!(
        "RESULT side=plain kind=http events={n} seconds={s:.3} rate={:.0} {}",
        n as f64 / s,
        usage()
    );
    Ok(())
}

// ---- the receiver -----------------------------------------------------------------------------

#[derive(Default)]
struct Counts {
    posts: AtomicU64,
    bytes: AtomicU64,
    signed: AtomicU64,
    keyed: AtomicU64,
}

impl Counts {
    fn line(&self) -> String {
        format!(
            "COUNT posts={} bytes={} signed={} keyed={}",
            self.posts.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.signed.load(Ordering::Relaxed),
            self.keyed.load(Ordering::Relaxed)
        )
    }
}

async fn take_post(
    axum::extract::State(c): axum::extract::State<Arc<Counts>>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    if method != axum::http::Method::POST {
        return axum::http::StatusCode::METHOD_NOT_ALLOWED;
    }
    c.posts.fetch_add(1, Ordering::Relaxed);
    c.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    if headers.contains_key("x-phananh-signature") {
        c.signed.fetch_add(1, Ordering::Relaxed);
    }
    if headers.contains_key("idempotency-key") {
        c.keyed.fetch_add(1, Ordering::Relaxed);
    }
    axum::http::StatusCode::NO_CONTENT
}

async fn receiver(port: u16) -> anyhow::Result<()> {
    let counts = Arc::new(Counts::default());
    let app = axum::Router::new()
        .route(
            "/count",
            axum::routing::get(
                |axum::extract::State(c): axum::extract::State<Arc<Counts>>| async move {
                    c.line()
                },
            ),
        )
        .fallback(take_post)
        .with_state(counts.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!("receiver listening on 127.0.0.1:{port}");
    tokio::select! {
        r = axum::serve(listener, app) => r?,
        _ = term.recv() => {}
    }
    println!("{}", counts.line());
    Ok(())
}

// ---- RabbitMQ set-up --------------------------------------------------------------------------

async fn amqp_channel(url: &str) -> anyhow::Result<(lapin::Connection, lapin::Channel)> {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .context("cannot connect to the broker")?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

async fn amqp_setup(
    url: String,
    exchange: String,
    queue: String,
    queue_version: Option<i32>,
) -> anyhow::Result<()> {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let mut args = FieldTable::default();
    if let Some(v) = queue_version {
        args.insert("x-queue-version".into(), AMQPValue::LongInt(v));
    }
    let (conn, ch) = amqp_channel(&url).await?;
    ch.exchange_declare(
        exchange.clone().into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(queue.clone().into(), QueueDeclareOptions::durable(), args)
        .await?;
    ch.queue_bind(
        queue.clone().into(),
        exchange.clone().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    conn.close(200, "bye".into()).await?;
    eprintln!(
        "declared exchange {exchange:?} (topic, durable) and queue {queue:?} (durable, x-queue-version {}) bound with #",
        queue_version.map_or("default".to_string(), |v| v.to_string())
    );
    Ok(())
}

async fn amqp_purge(url: String, queue: String) -> anyhow::Result<()> {
    let (conn, ch) = amqp_channel(&url).await?;
    let n = ch
        .queue_purge(queue.into(), lapin::options::QueuePurgeOptions::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    println!("PURGED {n}");
    Ok(())
}

async fn amqp_teardown(url: String, exchange: String, queue: String) -> anyhow::Result<()> {
    let (conn, ch) = amqp_channel(&url).await?;
    let n = ch
        .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
        .await?;
    ch.exchange_delete(
        exchange.into(),
        lapin::options::ExchangeDeleteOptions::default(),
    )
    .await?;
    conn.close(200, "bye".into()).await?;
    println!("DELETED {n}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // As the daemon's runtime (src/commands.rs): all cores, 8 blocking threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.cmd {
            Cmd::Fill {
                state,
                count,
                sink,
                seed,
                in_flight,
                rate_per_day,
                config,
            } => fill(state, count, sink, seed, in_flight, rate_per_day, config).await,
            Cmd::Drain {
                config,
                sink,
                steps,
                overlap,
            } => drain(config, sink, steps, overlap).await,
            Cmd::PlainAmqp {
                db,
                sink,
                url,
                exchange,
                routing_key,
                window,
                transient,
            } => plain_amqp(db, sink, url, exchange, routing_key, window, transient).await,
            Cmd::PlainHttp {
                db,
                sink,
                url,
                window,
                secret_file,
                signature_header,
                timeout_s,
            } => {
                plain_http(
                    db,
                    sink,
                    url,
                    window,
                    secret_file,
                    signature_header,
                    Duration::from_secs(timeout_s),
                )
                .await
            }
            Cmd::Receiver { port } => receiver(port).await,
            Cmd::AmqpSetup {
                url,
                exchange,
                queue,
                queue_version,
            } => amqp_setup(url, exchange, queue, queue_version).await,
            Cmd::AmqpPurge { url, queue } => amqp_purge(url, queue).await,
            Cmd::AmqpTeardown {
                url,
                exchange,
                queue,
            } => amqp_teardown(url, exchange, queue).await,
        }
    })
}
