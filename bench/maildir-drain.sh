#!/usr/bin/env bash
# Maildir drain: N messages (default 10,000) pre-delivered into Maildir/new, then `phananh run`
# stores every one (SQLite, WAL + synchronous=FULL, group commit) and forwards it to the spool sink
# (one *.json per report). Reports messages/s and peak RSS. Targets: >= 2,000 msg/s, RSS <= 64 MB.
#
# A peer does comparable physical work side by side in the same run, on its own fresh copy of the
# same messages: Python's sqlite3 reads each file and inserts it (raw blob + sha256) into a WAL
# database with synchronous=FULL in transactions of 100, then moves the files to cur/ (":2,S").
# It does not parse MIME and writes no spool files. Rounds alternate which side goes first.
#
# Usage: bench/maildir-drain.sh [--count N] [--rounds R] [--concurrency C] [--timeout S] [--keep]
#   --count N        messages per side and round (default 10000)
#   --rounds R       interleaved rounds; the summary gives median and range (default 1)
#   --concurrency C  the channel's `concurrency` (default: the daemon's default, 32)
#   --timeout S      give up on one drain after S seconds (default 300)
#   --keep           keep the work folder (daemon.log, time.txt, cpu.txt, databases)
# CARGO_TARGET_DIR is honoured (default: <repo>/target). PHANANH_LOG is passed to the daemon
# (e.g. "info,phananh::store=trace" logs every group commit with its size). Work files go to
# $TMPDIR (default /tmp), which must be a real disk (not tmpfs), or the fsync figures mean nothing.
# docs/BENCHMARKS.md explains the output and has the figures measured so far.
set -euo pipefail

COUNT=10000
ROUNDS=1
TIMEOUT=300
CONCURRENCY=""
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --count) COUNT="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$COUNT$ROUNDS$TIMEOUT" in *[!0-9]*) echo "--count, --rounds, --timeout take integers" >&2; exit 2 ;; esac
[ "$COUNT" -gt 0 ] && [ "$ROUNDS" -gt 0 ] || { echo "--count and --rounds must be > 0" >&2; exit 2; }

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init drain
TIME_PID=""
cleanup() {
  # Only the daemon this script started (the child of its /usr/bin/time), by PID.
  if [ -n "$TIME_PID" ] && kill -0 "$TIME_PID" 2>/dev/null; then
    local child i
    child="$(pgrep -P "$TIME_PID" || true)"
    if [ -n "$child" ]; then
      kill -TERM "$child" 2>/dev/null || true
      for i in $(seq 1 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$child" 2>/dev/null || true
    fi
    wait "$TIME_PID" 2>/dev/null || true
  fi
  if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

PORT=$((18780 + $$ % 1000))

# ---- helpers (Python: fast enough to write 10k files in ~1 s, and used by the peer) ----------
cat > "$WORK/gen.py" <<'PY'
# Fills MAILDIR/new with COUNT messages made from the fixtures that make reports (not 12, the
# malformed one, nor 13-15, machine mail): each copy gets a unique Message-ID
# and sender address, is written to tmp/ and renamed into new/ (as an MTA delivers).
import os, re, sys, time
maildir, count, fixtures = sys.argv[1], int(sys.argv[2]), sys.argv[3]
names = sorted(n for n in os.listdir(fixtures) if n.endswith(".eml") and n[:3] not in ("12-", "13-", "14-", "15-"))
srcs = [open(os.path.join(fixtures, n), "rb").read() for n in names]
for d in ("tmp", "new", "cur"):
    os.makedirs(os.path.join(maildir, d), exist_ok=True)
mid_re = re.compile(rb"^Message-ID:[^\n]*\n", re.I | re.M)
from_re = re.compile(rb"^(From:[^\n]*<)([^>@]+)@([^>]+)>", re.I | re.M)
now, pid, host, total = int(time.time()), os.getpid(), "bench.example", 0
for i in range(count):
    raw = srcs[i % len(srcs)]
    head, sep, body = raw.partition(b"\n\n")
    mid = b"Message-ID: <drain-%07d.%d@bench.example>\n" % (i, now)
    head, n = mid_re.subn(lambda m: mid, head + b"\n", count=1)
    if n == 0:
        head = head + mid
    head, n = from_re.subn(lambda m: m.group(1) + m.group(2) + b"+%d@" % i + m.group(3) + b">", head, count=1)
    assert n == 1, names[i % len(srcs)]
    msg = head.rstrip(b"\n") + sep + body
    name = "%d.M%06dP%dQ%d.%s" % (now, i % 1000000, pid, i, host)
    tmp = os.path.join(maildir, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(msg)
    os.rename(tmp, os.path.join(maildir, "new", name))
    total += len(msg)
print(total)
PY

cat > "$WORK/peer.py" <<'PY'
# The peer: read each message, insert raw + sha256 into SQLite (WAL, synchronous=FULL) in
# transactions of 100, then move the committed files to cur/ with the Seen flag.
import hashlib, os, sqlite3, sys, time
maildir, db = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db, isolation_level=None)
assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
conn.execute("PRAGMA synchronous=FULL")
conn.execute("CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
             " raw BLOB NOT NULL, raw_sha256 TEXT NOT NULL)")
new, cur = os.path.join(maildir, "new"), os.path.join(maildir, "cur")
start = time.monotonic()
names = sorted(os.listdir(new))
for k in range(0, len(names), 100):
    chunk = names[k:k + 100]
    conn.execute("BEGIN")
    for n in chunk:
        with open(os.path.join(new, n), "rb") as f:
            raw = f.read()
        conn.execute("INSERT INTO inbox (name, raw, raw_sha256) VALUES (?, ?, ?)",
                     (n, raw, hashlib.sha256(raw).hexdigest()))
    conn.execute("COMMIT")
    for n in chunk:
        os.rename(os.path.join(new, n), os.path.join(cur, n + ":2,S"))
print("%.6f" % (time.monotonic() - start))
PY

cat > "$WORK/cpu.py" <<'PY'
# CPU seconds of a live process, in total and per thread name (from /proc; clock ticks).
import collections, os, sys
pid, hz = sys.argv[1], os.sysconf("SC_CLK_TCK")
def times(path):
    raw = open(path).read()
    comm = raw[raw.index("(") + 1:raw.rindex(")")]
    f = raw[raw.rindex(")") + 2:].split()
    return comm, (int(f[11]) + int(f[12])) / hz, int(f[11]) / hz, int(f[12]) / hz
_, total, user, system = times("/proc/%s/stat" % pid)
by = collections.Counter()
for t in os.listdir("/proc/%s/task" % pid):
    try:
        comm, cpu, _, _ = times("/proc/%s/task/%s/stat" % (pid, t))
    except OSError:
        continue
    by[comm] += cpu
print("%.2f %.2f %.2f %s" % (total, user, system, " ".join("%s=%.2f" % (k, v) for k, v in by.most_common())))
PY

now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
peak_rss_mb() { awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2/1024}' "$1"; }

# ---- one run of each side -------------------------------------------------------------------
# Both run in the main shell (no $(...)) so that `exit` and the cleanup trap see the daemon.
run_peer() { # dir -> sets P_S (seconds) P_RSS (MB)
  local d="$1"
  /usr/bin/time -v -o "$d/time.txt" python3 "$WORK/peer.py" "$d/Maildir" "$d/peer.db" > "$d/peer.out"
  local left; left="$(find "$d/Maildir/new" -mindepth 1 -maxdepth 1 | wc -l)"
  [ "$left" = 0 ] || { echo "peer left $left messages in new/" >&2; exit 1; }
  P_S="$(cat "$d/peer.out")"
  P_RSS="$(peak_rss_mb "$d/time.txt")"
}

run_ours() { # dir -> sets O_STORED O_SPOOLED (seconds) O_RSS (MB) O_REPORTS
  local d="$1"
  mkdir -p "$d/channels" "$d/state"
  write_daemon_config "$d" "$PORT"
  {
    echo 'kind = "maildir"'
    echo "path = \"$d/Maildir\""
    echo 'after_ingest = "seen"'
    echo 'scan_interval = "30s"'
    [ -n "$CONCURRENCY" ] && echo "concurrency = $CONCURRENCY"
  } > "$d/channels/mail.toml"
  local spool="$d/state/spool" new="$d/Maildir/new"
  local t0; t0="$(now)"
  PHANANH_LOG="${PHANANH_LOG:-info}" /usr/bin/time -v -o "$d/time.txt" \
    "$BIN" run --config "$d/phananh.toml" 2> "$d/daemon.log" &
  TIME_PID=$!
  local deadline spooled=0
  deadline=$(( $(date +%s) + TIMEOUT ))
  while :; do
    if ! kill -0 "$TIME_PID" 2>/dev/null; then
      echo "phananh exited early; last log lines:" >&2; tail -20 "$d/daemon.log" >&2; exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "timeout after ${TIMEOUT}s: $(find "$new" -mindepth 1 -maxdepth 1 | wc -l) left in new/, $spooled spooled" >&2
      tail -20 "$d/daemon.log" >&2; exit 1
    fi
    # Cheap check first (stops at the first entry); count the spool only once new/ is empty.
    if [ -z "$(find "$new" -mindepth 1 -maxdepth 1 -print -quit)" ] && [ -d "$spool" ]; then
      spooled="$(find "$spool" -maxdepth 1 -name '*.json' | wc -l)"
      [ "$spooled" -ge "$EXPECTED" ] && break
    fi
    sleep 0.1
  done
  # Exact end times from the files themselves, not from the polling: a rename sets the moved
  # file's ctime (last message moved to cur/ = last commit acknowledged); the last spool file's
  # mtime = last event forwarded.
  local stored_end spooled_end
  stored_end="$(find "$d/Maildir/cur" -mindepth 1 -maxdepth 1 -printf '%C@\n' | sort -n | tail -1)"
  spooled_end="$(find "$spool" -maxdepth 1 -name '*.json' -printf '%T@\n' | sort -n | tail -1)"
  local child; child="$(pgrep -P "$TIME_PID" || true)"
  # Where the CPU went, by thread name, while the drain ran (read before SIGTERM).
  [ -n "$child" ] && python3 "$WORK/cpu.py" "$child" > "$d/cpu.txt" 2>/dev/null || true
  [ -n "$child" ] && kill -TERM "$child"
  wait "$TIME_PID" || { echo "phananh did not exit cleanly:" >&2; tail -20 "$d/daemon.log" >&2; exit 1; }
  TIME_PID=""
  O_REPORTS="$(sqlite3 "$d/state/phananh.db" "SELECT count(*) FROM reports")"
  O_STORED="$(calc "$stored_end - $t0")"
  O_SPOOLED="$(calc "$spooled_end - $t0")"
  O_RSS="$(peak_rss_mb "$d/time.txt")"
  O_CPU="$(cat "$d/cpu.txt" 2>/dev/null || echo "? ? ?")"
}

prepare() { # dir -> bytes
  mkdir -p "$1"
  python3 "$WORK/gen.py" "$1/Maildir" "$COUNT" "$ROOT/fixtures/email"
}

EXPECTED="$COUNT"
echo "== machine: $(nproc) cores, $(lscpu | awk -F': +' '/Model name/ {print $2}'), work dir $WORK ($(df -T "$WORK" | awk 'NR==2 {print $2}'))" >&2
printf '%-6s %-5s %9s %9s %10s %10s %8s\n' round side stored_s spooled_s stored/s spooled/s rss_MB
RES_OURS=() RES_PEER=() RES_RATIO=() RES_OURS_STORED=() RES_RSS=()
for r in $(seq 1 "$ROUNDS"); do
  bytes="$(prepare "$WORK/r$r-peer")"
  prepare "$WORK/r$r-ours" > /dev/null
  sync -f "$WORK" # the generated files are on disk before either side starts fsyncing
  if [ $((r % 2)) = 1 ]; then order="peer ours"; else order="ours peer"; fi
  echo "== round $r: load average $(cut -d' ' -f1-3 /proc/loadavg) (other processes share these cores)" >&2
  for side in $order; do
    if [ "$side" = peer ]; then
      run_peer "$WORK/r$r-peer"
      printf '%-6s %-5s %9.2f %9s %10.0f %10s %8s\n' "$r" peer "$P_S" - "$(calc "$COUNT / $P_S")" - "$P_RSS"
    else
      run_ours "$WORK/r$r-ours"
      [ "$O_REPORTS" = "$COUNT" ] || { echo "expected $COUNT reports, found $O_REPORTS" >&2; exit 1; }
      printf '%-6s %-5s %9.2f %9.2f %10.0f %10.0f %8s\n' "$r" ours "$O_STORED" "$O_SPOOLED" \
        "$(calc "$COUNT / $O_STORED")" "$(calc "$COUNT / $O_SPOOLED")" "$O_RSS"
      read -r cpu_total cpu_user cpu_sys cpu_threads <<< "$O_CPU"
      echo "       ours CPU: ${cpu_total}s (user ${cpu_user}, sys ${cpu_sys}) = $(calc "round($cpu_total * 1e6 / $COUNT)") us/msg; by thread: $cpu_threads"
    fi
    sync -f "$WORK"
  done
  RES_OURS+=("$(calc "$COUNT / $O_SPOOLED")")
  RES_OURS_STORED+=("$(calc "$COUNT / $O_STORED")")
  RES_PEER+=("$(calc "$COUNT / $P_S")")
  RES_RATIO+=("$(calc "$P_S / $O_SPOOLED")")
  RES_RSS+=("$O_RSS")
  [ "$KEEP" = 1 ] || rm -rf "$WORK/r$r-peer" "$WORK/r$r-ours"
done

python3 - "$COUNT" "$bytes" "${RES_OURS[*]}" "${RES_OURS_STORED[*]}" "${RES_PEER[*]}" "${RES_RATIO[*]}" "${RES_RSS[*]}" <<'PY'
import statistics as st, sys
count, nbytes = int(sys.argv[1]), int(sys.argv[2])
ours, stored, peer, ratio, rss = ([float(x) for x in a.split()] for a in sys.argv[3:8])
def fmt(v, f="%.0f"):
    s = f % st.median(v)
    return s if len(v) == 1 else "%s (range %s-%s, n=%d)" % (s, f % min(v), f % max(v), len(v))
print()
print("maildir drain: %d messages, %.1f KB average" % (count, nbytes / count / 1024))
print("  ours, stored + forwarded (msg/s): %s" % fmt(ours))
print("  ours, stored only (msg/s):        %s" % fmt(stored))
print("  peer, read + sqlite txn100 FULL:  %s" % fmt(peer))
print("  ours/peer ratio (end to end):     %s" % fmt(ratio, "%.2f"))
print("  ours peak RSS (MB):               %s" % fmt(rss, "%.1f"))
m, r = st.median(ours), max(rss)
print("TARGET >= 2000 msg/s: %s (%.0f msg/s, %.2fx the target)" % ("met" if m >= 2000 else "MISSED", m, m / 2000))
print("TARGET peak RSS <= 64 MB: %s (max %.1f MB)" % ("met" if r <= 64 else "MISSED", r))
PY
