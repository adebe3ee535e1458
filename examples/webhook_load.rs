//! Load generator for the Facebook webhook (`bench/facebook-webhook.sh` drives it).
//!
//! Sends Messenger webhook bodies signed like Meta signs them (`X-Hub-Signature-256: sha256=<hex
//! HMAC-SHA256(app secret, raw body)>`), every event with its own `message.mid` and every request
//! with its own sender, so nothing is deduplicated. Plain HTTP/1.1 with keep-alive (reqwest).
//!
//! Two modes:
//! * `closed`: `--workers N` tasks each send one request, wait for the answer, send the next, for
//!   `--duration S` seconds after `--warmup S` seconds; `--events E` events per body. Reports
//!   events/s and requests/s answered 200 inside the window, and latency per request.
//! * `open`: requests on a fixed timeline, `--rate R` events/s (`--events E` per request, so R/E
//!   requests/s) for `--duration S` seconds, each sent at its scheduled time whatever the answers
//!   to earlier ones. Latency is measured from the *scheduled* time (no coordinated omission), so
//!   a stall shows up in every request queued behind it.
//!
//! ```sh
//! cargo run --release --example webhook_load -- --url http://127.0.0.1:8080/webhooks/facebook/fb \
//!     --secret-file app.secret --mode closed --workers 32 --events 1 --duration 10
//! ```
//!
//! Human-readable lines go to stderr; the last line on stdout is machine-readable:
//! `RESULT mode=closed workers=32 events=1 ... events_per_s=... p50_ms=... p99_ms=...`.
//! `sent_events` / `ok_events` count everything (warm-up and tail included) so the caller can check
//! them against what the server committed.

use hmac::{Hmac, KeyInit, Mac};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PAGE_ID_DEFAULT: &str = "104200000000001";

/// "Đường Lê Lợi … có ổ gà rất lớn …" as Meta sends it: non-ASCII as `\u` escapes (from
/// fixtures/facebook/01-text.json).
const TEXT: &str = r"\u0110\u01b0\u1eddng L\u00ea L\u1ee3i \u0111o\u1ea1n tr\u01b0\u1edbc tr\u01b0\u1eddng Qu\u1ed1c H\u1ecdc c\u00f3 \u1ed5 g\u00e0 r\u1ea5t l\u1edbn, xe m\u00e1y t\u00e9 2 l\u1ea7n r\u1ed3i \u1ea1. S\u0110T 0914 222 333";

const USAGE: &str =
    "usage: webhook_load --url URL (--secret S | --secret-file F) [--mode closed|open]
    [--workers N] [--events E] [--duration S] [--warmup S] [--rate R] [--threads T]
    [--page-id ID] [--tag TAG] [--timeout S]";

#[derive(Clone, Debug)]
struct Args {
    url: String,
    secret: Vec<u8>,
    mode: Mode,
    workers: usize,
    events: usize,
    duration: f64,
    warmup: f64,
    rate: f64,
    threads: usize,
    page_id: String,
    tag: String,
    timeout: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Closed,
    Open,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        secret: Vec::new(),
        mode: Mode::Closed,
        workers: 32,
        events: 1,
        duration: 10.0,
        warmup: 1.0,
        rate: 1000.0,
        threads: 2,
        page_id: PAGE_ID_DEFAULT.to_string(),
        tag: String::new(),
        timeout: 30.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let val = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{flag}: not a non-negative number: {v}"))
        };
        let int = |v: &str| -> Result<usize, String> {
            v.parse::<usize>()
                .ok()
                .filter(|x| *x > 0)
                .ok_or_else(|| format!("{flag}: not a positive integer: {v}"))
        };
        match flag.as_str() {
            "--url" => a.url = val,
            "--secret" => a.secret = val.into_bytes(),
            "--secret-file" => {
                let s = std::fs::read_to_string(&val).map_err(|e| format!("{val}: {e}"))?;
                // The daemon accepts any line of the file; sign with the first.
                a.secret = s
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .ok_or_else(|| format!("{val}: empty"))?
                    .as_bytes()
                    .to_vec();
            }
            "--mode" => {
                a.mode = match val.as_str() {
                    "closed" => Mode::Closed,
                    "open" => Mode::Open,
                    _ => return Err(format!("--mode: closed or open, not {val}")),
                }
            }
            "--workers" => a.workers = int(&val)?,
            "--events" => a.events = int(&val)?,
            "--threads" => a.threads = int(&val)?,
            "--duration" => a.duration = num(&val)?,
            "--warmup" => a.warmup = num(&val)?,
            "--rate" => a.rate = num(&val)?,
            "--timeout" => a.timeout = num(&val)?,
            "--page-id" => a.page_id = val,
            "--tag" => a.tag = val,
            _ => return Err(format!("unknown argument: {flag}")),
        }
    }
    if a.url.is_empty() || a.secret.is_empty() {
        return Err("--url and --secret/--secret-file are required".into());
    }
    if a.duration <= 0.0 || (a.mode == Mode::Open && a.rate <= 0.0) {
        return Err("--duration and --rate must be > 0".into());
    }
    if a.tag.is_empty() {
        // Unique across runs against the same database: mids must never repeat.
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        a.tag = format!("{:x}", (ns as u64) ^ (u64::from(std::process::id()) << 40));
    }
    Ok(a)
}

/// One signed body: `events` entries, one Messenger message each, all from one new sender.
struct Body {
    bytes: Vec<u8>,
    signature: String,
}

fn make_body(a: &Args, request_no: u64) -> Body {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    // A new sender per request (a PSID-like number); the mid carries tag, request and event.
    let sender = format!("73{:014}", request_no);
    let mut s = String::with_capacity(400 * a.events + 64);
    s.push_str(r#"{"object":"page","entry":["#);
    for k in 0..a.events {
        if k > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            concat!(
                r#"{{"id":"{page}","time":{now},"messaging":[{{"sender":{{"id":"{sender}"}},"#,
                r#""recipient":{{"id":"{page}"}},"timestamp":{ts},"#,
                r#""message":{{"mid":"m_bench_{tag}_{req}_{k}","text":"{text} (#{req}.{k})"}}}}]}}"#
            ),
            page = a.page_id,
            now = now_ms,
            sender = sender,
            ts = now_ms + k as u128,
            tag = a.tag,
            req = request_no,
            k = k,
            text = TEXT,
        ));
    }
    s.push_str("]}");
    let bytes = s.into_bytes();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&a.secret).expect("any key length");
    mac.update(&bytes);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    Body { bytes, signature }
}

/// What one request came to.
struct Sample {
    /// When it was sent (closed) or scheduled (open), and when its answer was read.
    start: Instant,
    end: Instant,
    /// HTTP status, or 0 for a transport error / timeout.
    status: u16,
}

async fn send(client: &reqwest::Client, a: &Args, request_no: u64) -> u16 {
    let body = make_body(a, request_no);
    let res = client
        .post(&a.url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", body.signature)
        .body(body.bytes)
        .send()
        .await;
    match res {
        Ok(r) => {
            let status = r.status().as_u16();
            // Read the body so the connection goes back to the pool.
            match r.bytes().await {
                Ok(_) => status,
                Err(_) => 0,
            }
        }
        Err(e) => {
            static SHOWN: AtomicU64 = AtomicU64::new(0);
            if SHOWN.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("request error: {e}");
            }
            0
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we hand it.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return f64::NAN;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

async fn closed(a: Arc<Args>, client: reqwest::Client) -> Vec<Sample> {
    let t0 = Instant::now();
    let stop = t0 + Duration::from_secs_f64(a.warmup + a.duration);
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..a.workers {
        let (a, client, counter) = (a.clone(), client.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while Instant::now() < stop {
                let no = counter.fetch_add(1, Ordering::Relaxed);
                let start = Instant::now();
                let status = send(&client, &a, no).await;
                out.push(Sample {
                    start,
                    end: Instant::now(),
                    status,
                });
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("worker panicked"));
    }
    all
}

async fn open(a: Arc<Args>, client: reqwest::Client) -> (Vec<Sample>, usize) {
    let per_s = a.rate / a.events as f64;
    let total = (per_s * a.duration).round().max(1.0) as u64;
    let period = Duration::from_secs_f64(1.0 / per_s);
    let t0 = tokio::time::Instant::now() + Duration::from_millis(50);
    let in_flight = Arc::new(AtomicU64::new(0));
    let max_in_flight = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(total as usize);
    for no in 0..total {
        let scheduled = t0 + period.mul_f64(no as f64);
        tokio::time::sleep_until(scheduled).await;
        let (a, client) = (a.clone(), client.clone());
        let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
        tasks.push(tokio::spawn(async move {
            let n = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            max_in_flight.fetch_max(n, Ordering::Relaxed);
            let status = send(&client, &a, no).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            Sample {
                start: scheduled.into_std(),
                end: Instant::now(),
                status,
            }
        }));
    }
    let mut all = Vec::with_capacity(tasks.len());
    for t in tasks {
        all.push(t.await.expect("request task panicked"));
    }
    (all, max_in_flight.load(Ordering::Relaxed) as usize)
}

fn main() {
    let a = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    // reqwest is built without a rustls provider: install ring, as the daemon does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(120))
        .timeout(Duration::from_secs_f64(a.timeout))
        .build()
        .expect("HTTP client");

    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    let (samples, max_in_flight) = rt.block_on(async {
        match a.mode {
            Mode::Closed => (closed(a.clone(), client).await, a.workers),
            Mode::Open => open(a.clone(), client).await,
        }
    });
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;

    let ev = a.events as u64;
    let sent_requests = samples.len() as u64;
    let ok_requests = samples.iter().filter(|s| s.status == 200).count() as u64;
    let mut by_status = std::collections::BTreeMap::<u16, u64>::new();
    for s in &samples {
        *by_status.entry(s.status).or_default() += 1;
    }
    let statuses = by_status
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",");

    // The window the rate is taken over, and the samples whose latency is reported.
    let (window_s, window): (f64, Vec<&Sample>) = match a.mode {
        Mode::Closed => {
            let first = samples.iter().map(|s| s.start).min().unwrap_or(wall0);
            let from = first + Duration::from_secs_f64(a.warmup);
            let to = from + Duration::from_secs_f64(a.duration);
            (
                a.duration,
                samples
                    .iter()
                    .filter(|s| s.end >= from && s.end < to)
                    .collect(),
            )
        }
        Mode::Open => {
            let first = samples.iter().map(|s| s.start).min().unwrap_or(wall0);
            let last = samples.iter().map(|s| s.end).max().unwrap_or(first);
            ((last - first).as_secs_f64(), samples.iter().collect())
        }
    };
    let window_ok = window.iter().filter(|s| s.status == 200).count() as f64;
    let req_per_s = window_ok / window_s;
    let events_per_s = req_per_s * ev as f64;
    let mut lat: Vec<f64> = window
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| (s.end - s.start).as_secs_f64() * 1e3)
        .collect();
    lat.sort_by(|x, y| x.total_cmp(y));
    let (p50, p90, p99, p999, max) = (
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        percentile(&lat, 99.9),
        lat.last().copied().unwrap_or(f64::NAN),
    );
    let mode = match a.mode {
        Mode::Closed => "closed",
        Mode::Open => "open",
    };
    eprintln!(
        "{mode}: {} requests sent ({} events), {} answered 200; statuses {statuses}",
        sent_requests,
        sent_requests * ev,
        ok_requests
    );
    eprintln!(
        "  {events_per_s:.0} events/s, {req_per_s:.0} requests/s over {window_s:.2} s; latency ms p50 {p50:.2} p90 {p90:.2} p99 {p99:.2} p99.9 {p999:.2} max {max:.2}; generator CPU {cpu:.2} s in {wall:.2} s"
    );
    let target = match a.mode {
        Mode::Closed => format!("workers={}", a.workers),
        Mode::Open => format!("rate={}", a.rate),
    };
    println!(
        "RESULT mode={mode} {target} events={ev} duration_s={window_s:.2} sent_requests={sent_requests} ok_requests={ok_requests} sent_events={} ok_events={} statuses={statuses} events_per_s={events_per_s:.1} requests_per_s={req_per_s:.1} p50_ms={p50:.2} p90_ms={p90:.2} p99_ms={p99:.2} p999_ms={p999:.2} max_ms={max:.2} max_in_flight={max_in_flight} gen_cpu_s={cpu:.2} wall_s={wall:.2}",
        sent_requests * ev,
        ok_requests * ev,
    );
    if ok_requests != sent_requests {
        std::process::exit(1);
    }
}
