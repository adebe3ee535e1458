//! Whole-process scaling benchmark for the dedupe (`bench/dedupe-scale.sh` drives it).
//!
//! Fills a store through the real `Store` (writer thread, group commit, every index maintained
//! by the writer itself) with N generated reports, then measures on the filled store:
//!
//! * **ingest**: M new reports submitted one at a time, each awaiting its commit, timed from
//!   `submit` to its receipt (the draft is built and enriched before the clock starts);
//! * **lookup**: `store::similar::lookup` — the read-only near-duplicate lookup the writer runs
//!   per report — for M fresh signatures (half with a position) on a reader connection.
//!
//! The filled reports are spread uniformly over N/R days ending at a fixed `NOW` (R reports a
//! day, default 1,000, about ten times Huế's normal), so the 72 h window holds ~3R reports
//! whatever N is: only the size of the store changes between runs. Texts are Vietnamese
//! templates (a problem, one of 50 Huế streets, a house or kiệt number, sometimes a greeting,
//! sometimes without diacritics); 70 % carry a position in the urban area; every report has its
//! own reporter. Everything is derived from `--seed` and the report's index.
//!
//! Measure rounds on the same store each take the next hour after `NOW` (round k: NOW + k h to
//! NOW + (k+1) h, k = measured reports already stored / M), so every round's reports are "the
//! last hour" and the window is the same shape in every round and at every size.
//!
//! ```sh
//! cargo run --release --example dedupe_scale -- --state /tmp/s --fill 10000
//! cargo run --release --example dedupe_scale -- --state /tmp/s --fill 0 --measure 2000
//! ```
//!
//! `--fill N` tops the store up to N filled reports (0 or fewer than stored: no fill);
//! `--measure 0` skips the measurement. Human-readable lines go to stderr; stdout gets
//! `FILL …` after a fill and `RESULT …` after a measurement.

use anyhow::{Context, bail};
use futures::StreamExt;
use phananh::config::Config;
use phananh::pipeline::enrich::Enricher;
use phananh::pipeline::{Draft, sha256_hex, text};
use phananh::report::{Location, LocationSource};
use phananh::store::{Outcome, Store, StoreSettings, Submission, SubmissionBody};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: dedupe_scale --state DIR --fill N [--rate-per-day R] [--measure M]
    [--seed S] [--in-flight K] [--config FILE]";

/// The end of the filled period: 2026-06-01T00:00:00+07:00.
const NOW_MS: i64 = 1_780_246_800_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const FILL_CHANNEL: &str = "scale-fill";
const MEASURE_CHANNEL: &str = "scale-measure";
/// Lookups timed before the measured ones, to load the reader's page cache.
const LOOKUP_WARMUP: usize = 100;

struct Args {
    state: PathBuf,
    fill: u64,
    rate_per_day: u64,
    measure: usize,
    seed: u64,
    in_flight: usize,
    config: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        state: PathBuf::new(),
        fill: 0,
        rate_per_day: 1_000,
        measure: 2_000,
        seed: 1,
        in_flight: 64,
        config: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/quickstart.toml"
        )),
    };
    let mut state = None;
    let mut fill = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| -> anyhow::Result<u64> {
            v.replace('_', "")
                .parse()
                .with_context(|| format!("{flag} takes an integer, not {v:?}"))
        };
        match flag.as_str() {
            "--state" => state = Some(PathBuf::from(value)),
            "--fill" => fill = Some(num(&value)?),
            "--rate-per-day" => a.rate_per_day = num(&value)?.max(1),
            "--measure" => a.measure = num(&value)? as usize,
            "--seed" => a.seed = num(&value)?,
            "--in-flight" => a.in_flight = (num(&value)? as usize).max(1),
            "--config" => a.config = PathBuf::from(value),
            _ => bail!("unknown argument {flag}\n{USAGE}"),
        }
    }
    a.state = state.with_context(|| format!("--state is required\n{USAGE}"))?;
    a.fill = fill.with_context(|| format!("--fill is required\n{USAGE}"))?;
    Ok(a)
}

// ---- the generator ----------------------------------------------------------------------------

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

// ---- the runs ---------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    created: u64,
    duplicate: u64,
    other: u64,
}

impl Tally {
    fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Created { .. } => self.created += 1,
            Outcome::Duplicate { .. } => self.duplicate += 1,
            _ => self.other += 1,
        }
    }
}

fn count(store: &Store, channel: &str) -> anyhow::Result<u64> {
    let conn = store.reader()?;
    Ok(conn.query_row(
        "SELECT count(*) FROM reports WHERE channel = ?1",
        [channel],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

async fn fill(store: &Store, enricher: &Arc<Enricher>, a: &Args, from: u64) -> anyhow::Result<()> {
    let n = a.fill;
    let span_ms = (n as f64 / a.rate_per_day as f64 * DAY_MS as f64) as i64;
    let start_ms = NOW_MS - span_ms;
    eprintln!(
        "== fill: {} reports over {:.1} days ({} a day), {} already stored, {} in flight",
        n,
        span_ms as f64 / DAY_MS as f64,
        a.rate_per_day,
        from,
        a.in_flight
    );
    let started = Instant::now();
    let mut last = (started, from);
    let mut tally = Tally::default();
    let seed = a.seed;
    let mut results = futures::stream::iter(from..n)
        .map(|i| {
            let store = store.clone();
            let enricher = enricher.clone();
            async move {
                let (text, position) = generate(seed, 0, i);
                let id = format!("fill-{seed}-{i}");
                let at = start_ms + (i as i128 * span_ms as i128 / n as i128) as i64;
                let d = draft(&enricher, &id, text, position);
                store.submit(submission(FILL_CHANNEL, d, at)).await
            }
        })
        .buffer_unordered(a.in_flight);
    let mut done = from;
    while let Some(r) = results.next().await {
        tally.add(&r.context("fill: submit failed")?.outcome);
        done += 1;
        if done.is_multiple_of(50_000) {
            let now = Instant::now();
            let dt = now.duration_since(last.0).as_secs_f64();
            eprintln!(
                "   {done:>9} stored, {:.0} reports/s over the last {}, {:.0} s so far",
                (done - last.1) as f64 / dt,
                done - last.1,
                now.duration_since(started).as_secs_f64()
            );
            last = (now, done);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let added = n - from;
    eprintln!(
        "== fill done: {added} reports in {secs:.1} s = {:.0} reports/s ({} created, {} linked as duplicates, {} other)",
        added as f64 / secs,
        tally.created,
        tally.duplicate,
        tally.other
    );
    println!(
        "FILL fill={n} added={added} secs={secs:.1} per_s={:.0} created={} duplicates={} other={}",
        added as f64 / secs,
        tally.created,
        tally.duplicate,
        tally.other
    );
    Ok(())
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

async fn measure(
    store: &Store,
    settings: &StoreSettings,
    enricher: &Arc<Enricher>,
    a: &Args,
) -> anyhow::Result<()> {
    let m = a.measure as u64;
    let filled = count(store, FILL_CHANNEL)?;
    let round = count(store, MEASURE_CHANNEL)? / m;
    let hour_ms = NOW_MS + round as i64 * HOUR_MS;
    eprintln!(
        "== measure round {round} on {filled} filled reports: {m} sequential submits, then {m} lookups (+{LOOKUP_WARMUP} warm-up), received {} h after the fill's end",
        round
    );

    // (a) ingest: one at a time, each awaiting its commit.
    let mut ingest = Vec::with_capacity(a.measure);
    let mut tally = Tally::default();
    for i in 0..m {
        let (text, position) = generate(a.seed, 1 + round, i);
        let id = format!("measure-{}-{round}-{i}", a.seed);
        let d = draft(enricher, &id, text, position);
        let s = submission(
            MEASURE_CHANNEL,
            d,
            hour_ms + (i * HOUR_MS as u64 / m) as i64,
        );
        let t = Instant::now();
        let receipt = store.submit(s).await.context("measure: submit failed")?;
        ingest.push(t.elapsed().as_secs_f64() * 1e3);
        tally.add(&receipt.outcome);
    }
    let mean = ingest.iter().sum::<f64>() / ingest.len().max(1) as f64;
    let ingest = sorted(ingest);

    // (b) lookup: fresh signatures (every other one with a position), on a reader connection.
    let conn = store.reader()?;
    let lookup_ms = hour_ms + HOUR_MS;
    let mut probes = Vec::with_capacity(a.measure + LOOKUP_WARMUP);
    for i in 0..(m + LOOKUP_WARMUP as u64) {
        let (text, position) = generate(a.seed, 1_000_000 + round, i);
        let position = if i % 2 == 0 {
            position.or(Some((16.46, 107.59)))
        } else {
            None
        };
        let d = draft(enricher, "probe", text, position);
        if let Some(sig) = d.signature {
            probes.push((sig, position));
        }
    }
    let mut lookups = Vec::with_capacity(a.measure);
    let mut hits = 0u64;
    for (k, (sig, position)) in probes.iter().enumerate() {
        let t = Instant::now();
        let found =
            phananh::store::similar::lookup(&conn, &settings.similar, sig, *position, lookup_ms)?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        if k >= LOOKUP_WARMUP {
            lookups.push(us);
            hits += u64::from(found.is_some());
        }
    }
    let lookups = sorted(lookups);
    drop(conn);

    let db_bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|s| {
            let mut p = settings.db_path.clone().into_os_string();
            p.push(s);
            std::fs::metadata(p).ok().map(|m| m.len())
        })
        .sum();
    eprintln!(
        "   ingest: mean {mean:.2} ms, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} created, {} duplicates)",
        quantile(&ingest, 0.5),
        quantile(&ingest, 0.99),
        quantile(&ingest, 1.0),
        tally.created,
        tally.duplicate
    );
    eprintln!(
        "   lookup: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs over {} ({} found a match)",
        quantile(&lookups, 0.5),
        quantile(&lookups, 0.99),
        quantile(&lookups, 1.0),
        lookups.len(),
        hits
    );
    println!(
        "RESULT fill={filled} round={round} ingest_mean_ms={mean:.3} ingest_p50_ms={:.3} ingest_p99_ms={:.3} ingest_max_ms={:.3} ingest_duplicates={} lookup_p50_us={:.1} lookup_p99_us={:.1} lookup_max_us={:.1} lookup_hits={hits} lookups={} db_mb={:.1}",
        quantile(&ingest, 0.5),
        quantile(&ingest, 0.99),
        quantile(&ingest, 1.0),
        tally.duplicate,
        quantile(&lookups, 0.5),
        quantile(&lookups, 0.99),
        quantile(&lookups, 1.0),
        lookups.len(),
        db_bytes as f64 / 1e6
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mut config: Config = phananh::config::load(&a.config)
        .map_err(|e| anyhow::anyhow!("invalid configuration {}:\n{e}", a.config.display()))?;
    config.daemon.state_dir = a.state.clone();
    let settings = StoreSettings::from_config(&config);
    let enricher = Arc::new(Enricher::new(&config.daemon));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store = Store::open(settings.clone())?;
        let filled = count(&store, FILL_CHANNEL)?;
        if a.fill > filled {
            fill(&store, &enricher, &a, filled).await?;
        }
        if a.measure > 0 {
            measure(&store, &settings, &enricher, &a).await?;
        }
        let t = Instant::now();
        store.close().await;
        if t.elapsed() > Duration::from_secs(1) {
            eprintln!(
                "   closing (WAL checkpoint) took {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        anyhow::Ok(())
    })
}
