//! E-mail normalisation throughput on the fixtures: MB/s and messages/s.
//!
//! `cargo bench --bench normalize` (with CARGO_TARGET_DIR set as you like).
//! Groups:
//!   normalize/all-fixtures     every fixture once per iteration, Throughput::Bytes (MB/s)
//!   normalize/all-messages     the same work, Throughput::Elements (messages/s)
//!   normalize/per-message/NAME one fixture per iteration, Throughput::Elements(1): finds hot spots
//! docs/BENCHMARKS.md has the figures and how to read them.

use criterion::{BenchmarkId, Criterion, Throughput};
use phananh::channels::email::normalize;
use phananh::config::EmailConfig;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_CATEGORY: &str = "chua_phan_loai";

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/email");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let raw = std::fs::read(&p).unwrap();
            (name, raw)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn benches(c: &mut Criterion) {
    let files = fixtures();
    let limits = EmailConfig::default();
    let tz: chrono_tz::Tz = "Asia/Ho_Chi_Minh".parse().unwrap();
    let total_bytes: u64 = files.iter().map(|(_, r)| r.len() as u64).sum();

    // Accepted and rejected messages are both real work (12-malformed-mime is rejected: no From).
    let accepted = files
        .iter()
        .filter(|(_, raw)| normalize(raw, &limits, tz, DEFAULT_CATEGORY).is_ok())
        .count();
    eprintln!(
        "normalize: {} fixtures, {} bytes in all, {} accepted, {} rejected",
        files.len(),
        total_bytes,
        accepted,
        files.len() - accepted
    );

    let run_all = |files: &[(String, Vec<u8>)]| {
        for (_, raw) in files {
            let r = normalize(black_box(raw), &limits, tz, DEFAULT_CATEGORY);
            black_box(r.is_ok());
            drop(black_box(r));
        }
    };

    let mut g = c.benchmark_group("normalize");
    g.warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes(total_bytes));
    g.bench_function("all-fixtures", |b| b.iter(|| run_all(&files)));
    g.throughput(Throughput::Elements(files.len() as u64));
    g.bench_function("all-messages", |b| b.iter(|| run_all(&files)));
    g.finish();

    let mut g = c.benchmark_group("normalize/per-message");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(1));
    for (name, raw) in &files {
        g.bench_with_input(BenchmarkId::from_parameter(name), raw, |b, raw| {
            b.iter(|| {
                let r = normalize(black_box(raw), &limits, tz, DEFAULT_CATEGORY);
                black_box(r.is_ok());
                drop(black_box(r));
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
