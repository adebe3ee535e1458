#!/usr/bin/env bash
# Dedupe at scale: does ingest cost grow with the store, and how fast is the near-duplicate
# lookup in a big one? For each size N, `examples/dedupe_scale.rs` (release build) fills a fresh
# state dir with N generated reports through the real Store (64 submits in flight, group commit,
# every index written by the writer), spread over N/R days (R = 1,000 a day, so the 72 h dedupe
# window holds ~3,000 reports at every size), then on the filled store, --rounds times:
#   ingest: M new reports (default 2,000) submitted one at a time, each awaiting its commit
#           (WAL, synchronous=FULL), timed from submit to receipt;
#   lookup: store::similar::lookup on a reader connection for M fresh signatures (half with a
#           position), after 100 untimed warm-up lookups.
# Each round adds its M reports in the next hour after the fill's end. Summary: ingest mean at
# each size (median of the rounds), ratio largest/smallest against the target <= 1.3, and lookup
# p99 at the largest size (median of the rounds) against <= 1 ms.
#
# Usage: bench/dedupe-scale.sh [--sizes "10000 1000000"] [--rounds R] [--measure M]
#                              [--rate-per-day R] [--seed S] [--keep]
#   --sizes "A B …"   store sizes, smallest first (default "10000 1000000")
#   --rounds R        measure rounds on each filled store (default 3)
#   --measure M       reports submitted and lookups timed per round (default 2000)
#   --rate-per-day R  reports a day in the fill (default 1000)
#   --seed S          generator seed (default 1)
#   --keep            keep the work folder (the filled databases, fill.log)
# CARGO_TARGET_DIR is honoured (default: <repo>/target). Work files go to $TMPDIR (default /tmp),
# which must be a real disk with room: ~4.5 KB per filled report (1,000,000 -> ~4.5 GB).
# The 1,000,000 fill takes ~10 min on the section 8 machine. docs/BENCHMARKS.md (section 8)
# explains the output and has the figures measured so far.
set -euo pipefail

SIZES="10000 1000000"
ROUNDS=3
MEASURE=2000
RATE=1000
SEED=1
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) SIZES="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --measure) MEASURE="$2"; shift 2 ;;
    --rate-per-day) RATE="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "${SIZES// /}$ROUNDS$MEASURE$RATE$SEED" in *[!0-9]*|"") echo "--sizes, --rounds, --measure, --rate-per-day, --seed take integers" >&2; exit 2 ;; esac
[ "$ROUNDS" -gt 0 ] && [ "$MEASURE" -gt 0 ] && [ "$RATE" -gt 0 ] || { echo "--rounds, --measure and --rate-per-day must be > 0" >&2; exit 2; }
for n in $SIZES; do [ "$n" -gt 0 ] || { echo "sizes must be > 0" >&2; exit 2; }; done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
EXAMPLE="$CARGO_TARGET_DIR/release/examples/dedupe_scale"
echo "== building release example (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
(cd "$ROOT" && cargo build --release --quiet --example dedupe_scale)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/phananh-dedupe-scale.XXXXXX")"
RUN_PID=""
cleanup() {
  # Only the process this script started, by PID.
  if [ -n "$RUN_PID" ] && kill -0 "$RUN_PID" 2>/dev/null; then
    kill -TERM "$RUN_PID" 2>/dev/null || true; wait "$RUN_PID" 2>/dev/null || true
  fi
  if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs the example with "$@", its stderr to the terminal and to $WORK/run.log, and appends its
# stdout (FILL / RESULT lines) to $WORK/results.
run() {
  "$EXAMPLE" "$@" >> "$WORK/results" 2> >(tee -a "$WORK/run.log" >&2) &
  RUN_PID=$!
  wait "$RUN_PID"
  RUN_PID=""
}

need_kb=0
for n in $SIZES; do need_kb=$((need_kb + n * 5)); done
avail_kb=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
[ "$avail_kb" -gt "$need_kb" ] || { echo "need ~$((need_kb / 1024)) MB free under $WORK, have $((avail_kb / 1024)) MB" >&2; exit 1; }
echo "== $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), work in $WORK" >&2

: > "$WORK/results"
for n in $SIZES; do
  state="$WORK/state-$n"
  echo "== size $n: fill" >&2
  run --state "$state" --fill "$n" --rate-per-day "$RATE" --seed "$SEED" --measure 0
  for r in $(seq 1 "$ROUNDS"); do
    echo "== size $n: measure round $r/$ROUNDS (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    run --state "$state" --fill "$n" --rate-per-day "$RATE" --seed "$SEED" --measure "$MEASURE"
  done
  # Keep only the largest store's database around when asked; drop the others to save disk.
  [ "$KEEP" = 1 ] || rm -rf "$state"
done

echo
echo "== results"
cat "$WORK/results"
echo
python3 - "$WORK/results" "$SIZES" <<'PY'
import statistics, sys
lines = open(sys.argv[1]).read().split("\n")
sizes = [int(x) for x in sys.argv[2].split()]
def parse(line):
    kind, *kv = line.split()
    return kind, {k: float(v) for k, v in (x.split("=", 1) for x in kv)}
fills, results = {}, {}
for line in lines:
    if not line.strip():
        continue
    kind, d = parse(line)
    n = int(d["fill"])
    if kind == "FILL":
        fills[n] = d
    elif kind == "RESULT":
        results.setdefault(n, []).append(d)
def med(n, key):
    return statistics.median(r[key] for r in results[n])
def rng(n, key):
    v = [r[key] for r in results[n]]
    return f"{min(v):.3g}–{max(v):.3g}"
print("| stored | fill reports/s | ingest mean ms | p50 ms | p99 ms | lookup p50 µs | p99 µs | max µs | db MB |")
print("|---|---|---|---|---|---|---|---|---|")
for n in sizes:
    if n not in results:
        print(f"| {n:,} | (no result) |")
        continue
    f = fills.get(n, {}).get("per_s", float("nan"))
    print(f"| {n:,} | {f:,.0f} | {med(n,'ingest_mean_ms'):.2f} ({rng(n,'ingest_mean_ms')}) "
          f"| {med(n,'ingest_p50_ms'):.2f} | {med(n,'ingest_p99_ms'):.2f} "
          f"| {med(n,'lookup_p50_us'):.0f} | {med(n,'lookup_p99_us'):.0f} ({rng(n,'lookup_p99_us')}) "
          f"| {med(n,'lookup_max_us'):.0f} | {max(r['db_mb'] for r in results[n]):,.0f} |")
print("(medians of the rounds, ranges in brackets)")
small, big = sizes[0], sizes[-1]
if small in results and big in results and small != big:
    ratio = med(big, "ingest_mean_ms") / med(small, "ingest_mean_ms")
    met = ratio <= 1.3
    print(f"ingest mean {big:,} / {small:,} = {ratio:.2f}: target <= 1.3 {'MET' if met else 'MISSED'}")
if big in results:
    p99 = med(big, "lookup_p99_us")
    met = p99 <= 1000
    print(f"lookup p99 at {big:,} = {p99:.0f} µs: target <= 1 ms {'MET' if met else 'MISSED'}")
PY
