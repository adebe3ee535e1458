#!/usr/bin/env bash
# Feed drain: a local Open311 server (python3 ThreadingHTTPServer on 127.0.0.1) offers N requests
# (default 100,000) in pages of 500; `phananh run` with one `kind = "feed"` channel pages through
# them (each page and the feed's position committed in one SQLite transaction, WAL +
# synchronous=FULL), and forwards every report to the spool sink (one *.json per report).
# Reports items/s (start of the process -> `SELECT count(*) FROM inbox` = N, polled every 0.2 s),
# the time until N spool files exist, and peak RSS (VmHWM). Targets: >= 20,000 items/s,
# RSS <= 64 MB.
#
# A peer does comparable physical work side by side in the same run, against the same server:
# Python fetches the same pages over HTTP (keep-alive), parses each page, and inserts every item
# (its JSON bytes + sha256) into its own WAL database with synchronous=FULL, one transaction per
# page. It builds no reports and writes no spool files. Rounds alternate which side goes first.
#
# Usage: bench/feed-drain.sh [--count N] [--rounds R] [--page-size P] [--timeout S]
#                            [--pre-sql SQL] [--keep]
#   --count N      requests on the server (default 100000)
#   --rounds R     interleaved rounds; the summary gives median and range (default 1)
#   --page-size P  the channel's page_size and the peer's (default 500)
#   --timeout S    stop one drain after S seconds and report how far it got (default 240)
#   --pre-sql SQL  run SQL on the daemon's fresh, migrated database before the timed start, to
#                  try a schema change without a rebuild (e.g. an index); default: nothing
#   --keep         keep the work folder (daemon.log, databases, spool)
# CARGO_TARGET_DIR is honoured (default: <repo>/target). PHANANH_LOG is passed to the daemon
# (e.g. "info,phananh::store=trace" logs every commit with its size; the script then sums them).
# Work files go to $TMPDIR (default /tmp), which must be a real disk (not tmpfs). A round takes
# at most --timeout + ~30 s after the build (the peer needs ~2 s). docs/BENCHMARKS.md (section 7)
# explains the output and has the figures measured so far.
set -euo pipefail

COUNT=100000
ROUNDS=1
PAGE=500
TIMEOUT=240
PRE_SQL=""
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --count) COUNT="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --page-size) PAGE="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --pre-sql) PRE_SQL="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$COUNT$ROUNDS$PAGE$TIMEOUT" in *[!0-9]*) echo "--count, --rounds, --page-size, --timeout take integers" >&2; exit 2 ;; esac
[ "$COUNT" -gt 0 ] && [ "$ROUNDS" -gt 0 ] && [ "$PAGE" -gt 0 ] || { echo "--count, --rounds and --page-size must be > 0" >&2; exit 2; }

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init feed
DAEMON_PID="" SERVER_PID="" PEER_PID="" WATCH_PID=""
cleanup() {
  # Only the processes this script started, by PID.
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  for p in "$WATCH_PID" "$PEER_PID" "$SERVER_PID"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
    fi
  done
  if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r HTTP_PORT FEED_PORT <<< "$(free_ports 2)"
FEED_URL="http://127.0.0.1:$FEED_PORT/open311/v2/requests.json"

# ---- the feed server ------------------------------------------------------------------------
cat > "$WORK/server.py" <<'PY'
# An Open311 GeoReport v2 server with COUNT requests, paged by `page`/`page_size` (default 500),
# independent of start_date/end_date, except that a window starting after the newest request
# (the daemon's later polls: each starts `overlap` = 1 h before the last one ended) is [], as a
# real server would answer, so a finished drain is not re-read every second. A page past the end
# is []. Each page is generated on the fly from pre-encoded pieces (cheap %-formatting); the
# seconds spent generating are counted and served at /stats as JSON, with requests and bytes.
import datetime, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

port, count = int(sys.argv[1]), int(sys.argv[2])
enc = lambda s: json.dumps(s, ensure_ascii=False)
SERVICES = [(enc(c), enc(n)) for c, n in [
    ("001", "Đèn đường"), ("002", "Mặt đường"), ("003", "Vệ sinh môi trường"),
    ("004", "Cây xanh"), ("005", "Thoát nước"), ("006", "Trật tự đô thị")]]
DESCRIPTIONS = [
    "Đèn đường hỏng trên đường Lê Lợi, đoạn trước số %d",
    "Ổ gà lớn trên đường Hùng Vương gần cầu Trường Tiền, cách ngã tư khoảng %d mét",
    "Rác thải tập kết không đúng nơi quy định ở kiệt %d Nguyễn Huệ, bốc mùi hôi",
    "Cây xanh bị gãy cành sau mưa, chắn lối đi trước nhà số %d Trần Hưng Đạo",
    "Cống thoát nước bị tắc, nước ngập nửa mặt đường khi mưa, gần số %d Phan Đình Phùng",
    "Lấn chiếm vỉa hè để bán hàng, người đi bộ phải xuống lòng đường, đoạn số %d Bến Nghé",
    "Đèn tín hiệu giao thông ở ngã tư không hoạt động từ sáng nay, gần số %d Lý Thường Kiệt"]
DESCRIPTIONS = [enc(d)[1:-1].replace("%d", "%(n)d") for d in DESCRIPTIONS]
ADDRESSES = [enc(a) for a in [
    "Lê Lợi, phường Vĩnh Ninh, Huế", "Hùng Vương, phường Phú Nhuận, Huế",
    "Nguyễn Huệ, phường Vĩnh Ninh, Huế", "Trần Hưng Đạo, phường Phú Hòa, Huế",
    "Phan Đình Phùng, phường Vĩnh Ninh, Huế"]]
AGENCY = enc("Công ty Chiếu sáng Huế")
TEMPLATE = ('{"service_request_id":"%(id)s","status":"open","service_name":%(sname)s,'
            '"service_code":%(scode)s,"description":"' + "%(desc)s" + '",'
            '"agency_responsible":' + AGENCY + ',"service_notice":"",'
            '"requested_datetime":"%(when)s","address":%(addr)s,"address_id":"","zipcode":"",'
            '"lat":%(lat).5f,"long":%(lon).5f}')
# Creation times spread over the 20 hours before start-up, in +07:00: inside any window
# a channel with backlog >= 24h asks.
START = int(time.time()) - 20 * 3600
STEP = 18 * 3600 / max(count, 1)
NEWEST = START + int((count - 1) * STEP)
STAMP = time.strftime
RUN = "%x" % (START & 0xffffff)

stats = {"gen_s": 0.0, "requests": 0, "bytes": 0, "late_windows": 0}
lock = threading.Lock()

def page_bytes(page, size):
    lo, hi = (page - 1) * size, min(page * size, count)
    out = []
    for i in range(lo, hi):
        code, sname = SERVICES[i % len(SERVICES)]
        desc = DESCRIPTIONS[i % len(DESCRIPTIONS)] % {"n": i % 997 + 1}
        out.append(TEMPLATE % {
            "id": "%s-%07d" % (RUN, i), "sname": sname, "scode": code, "desc": desc,
            "when": STAMP("%Y-%m-%dT%H:%M:%S+07:00", time.gmtime(START + int(i * STEP) + 7 * 3600)),
            "addr": ADDRESSES[i % len(ADDRESSES)],
            "lat": 16.40 + (i % 1000) * 0.0001, "lon": 107.55 + (i % 777) * 0.0001})
    return ("[" + ",".join(out) + "]").encode()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def send(self, code, body, ctype="application/json; charset=utf-8"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        u = urlsplit(self.path)
        if u.path == "/stats":
            with lock:
                return self.send(200, json.dumps(stats).encode())
        if u.path != "/open311/v2/requests.json":
            return self.send(404, b"{}")
        q = parse_qs(u.query)
        page = int(q.get("page", ["1"])[0])
        size = int(q.get("page_size", ["500"])[0])
        try:
            late = datetime.datetime.fromisoformat(q["start_date"][0]).timestamp() > NEWEST
        except (KeyError, ValueError):
            late = False
        t = time.perf_counter()
        body = b"[]" if late else page_bytes(max(page, 1), max(size, 1))
        dt = time.perf_counter() - t
        with lock:
            stats["late_windows"] += late
            stats["gen_s"] += dt
            stats["requests"] += 1
            stats["bytes"] += len(body)
        self.send(200, body)

srv = ThreadingHTTPServer(("127.0.0.1", port), H)
srv.daemon_threads = True
print("listening", flush=True)
srv.serve_forever()
PY

# ---- the peer -------------------------------------------------------------------------------
cat > "$WORK/peer.py" <<'PY'
# The peer: the same pages over HTTP (one keep-alive connection), each page parsed (json), each
# item re-serialised to its JSON bytes and inserted with its sha256 into SQLite (WAL,
# synchronous=FULL), one transaction per page, until a page comes back short.
# Prints: wall seconds, items inserted, CPU seconds of this process.
import hashlib, http.client, json, sqlite3, sys, time
port, size, db = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
start = time.monotonic()
conn = sqlite3.connect(db, isolation_level=None)
assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
conn.execute("PRAGMA synchronous=FULL")
conn.execute("CREATE TABLE inbox (id INTEGER PRIMARY KEY, external_id TEXT NOT NULL UNIQUE,"
             " raw BLOB NOT NULL, raw_sha256 TEXT NOT NULL)")
http_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
window = "start_date=2026-01-01T00%3A00%3A00%2B07%3A00&end_date=2099-01-01T00%3A00%3A00%2B07%3A00"
page, n = 1, 0
while True:
    http_conn.request("GET", "/open311/v2/requests.json?%s&page=%d&page_size=%d" % (window, page, size))
    resp = http_conn.getresponse()
    body = resp.read()
    assert resp.status == 200, resp.status
    items = json.loads(body)
    conn.execute("BEGIN")
    for it in items:
        raw = json.dumps(it, ensure_ascii=False, separators=(",", ":")).encode()
        conn.execute("INSERT INTO inbox (external_id, raw, raw_sha256) VALUES (?, ?, ?)",
                     ("open311:" + str(it["service_request_id"]), raw, hashlib.sha256(raw).hexdigest()))
    conn.execute("COMMIT")
    n += len(items)
    if len(items) < size:
        break
    page += 1
print("%.6f %d %.3f" % (time.monotonic() - start, n, time.process_time()))
PY

# ---- the watcher for ours -------------------------------------------------------------------
cat > "$WORK/watch.py" <<'PY'
# Polls the daemon's database read-only every 0.2 s until `SELECT count(*) FROM inbox` reaches
# N (stored), then the spool until it holds N *.json (forwarded; the exact time is the newest
# file's mtime), noting when the count passed each tenth of N. On timeout it stops where it is
# (done=0) and reports how far it got. Before returning, reads the daemon's VmHWM, thread count
# and CPU (total and per thread name) from /proc. Prints one line of key=value.
import collections, os, sqlite3, sys, time
db, spool, n, t0, pid, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], float(sys.argv[6])
hz = os.sysconf("SC_CLK_TCK")
def alive():
    try:
        os.kill(int(pid), 0)
        return True
    except OSError:
        return False
def fail(msg):
    print("error=" + msg.replace(" ", "_"), flush=True)
    sys.exit(1)
def spooled():
    try:
        return sum(1 for e in os.scandir(spool) if e.name.endswith(".json"))
    except FileNotFoundError:
        return 0
stored, conn, tenths, done = 0, None, [], 1
t_stored = t_spooled = None
while True:
    if not alive():
        fail("daemon exited with %d in inbox" % stored)
    if conn is None and os.path.exists(db):
        try:
            conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=5)
        except sqlite3.Error:
            conn = None
    if conn is not None:
        try:
            stored = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
        except sqlite3.Error:
            pass  # not migrated yet
    el = time.time() - t0
    while len(tenths) < 10 and stored >= n * (len(tenths) + 1) / 10:
        tenths.append(el)
    if stored >= n:
        t_stored = el
        break
    if el > timeout:
        t_stored, done = el, 0
        break
    time.sleep(0.2)
if conn is not None:
    conn.close()
s = 0
while done:
    s = spooled()
    if s >= n:
        t_spooled = max(e.stat().st_mtime for e in os.scandir(spool) if e.name.endswith(".json")) - t0
        break
    if not alive():
        fail("daemon exited with %d spooled" % s)
    if time.time() - t0 > timeout:
        done = 0
        break
    time.sleep(0.2)
if not done:
    s = spooled()
def stat(path):
    raw = open(path).read()
    comm = raw[raw.index("(") + 1:raw.rindex(")")]
    f = raw[raw.rindex(")") + 2:].split()
    return comm, int(f[11]) / hz, int(f[12]) / hz
status = dict(l.split(":", 1) for l in open("/proc/%s/status" % pid) if ":" in l)
_, user, system = stat("/proc/%s/stat" % pid)
by = collections.Counter()
for t in os.listdir("/proc/%s/task" % pid):
    try:
        comm, u, sy = stat("/proc/%s/task/%s/stat" % (pid, t))
    except OSError:
        continue
    by[comm.replace(" ", "_")] += u + sy
print("done=%d stored_n=%d stored_s=%.3f spooled_n=%d spooled_s=%s tenths=%s hwm_kb=%s threads=%s cpu_user=%.2f cpu_sys=%.2f by_thread=%s" % (
    done, stored, t_stored, s, "%.3f" % t_spooled if t_spooled else "-", ",".join("%.1f" % x for x in tenths) or "-",
    status["VmHWM"].split()[0], status["Threads"].strip(), user, system,
    ",".join("%s:%.2f" % (k, v) for k, v in by.most_common())))
PY

now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); print ($12 + $13) / hz}' "/proc/$1/stat"; }
machine_idle() { awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
idle_pct() { # "idle0 total0" "idle1 total1"
  python3 -c "a='$1'.split(); b='$2'.split(); print('%.0f' % (100 * (float(b[0]) - float(a[0])) / max(1, float(b[1]) - float(a[1]))))"
}
server_stat() { python3 -c "
import json, urllib.request; s = json.load(urllib.request.urlopen('http://127.0.0.1:$FEED_PORT/stats'))
print('%.6f %d %d %d' % (s['gen_s'], s['requests'], s['bytes'], s['late_windows']))"; }

# ---- start the server -----------------------------------------------------------------------
python3 "$WORK/server.py" "$FEED_PORT" "$COUNT" > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  grep -q listening "$WORK/server.log" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "feed server exited:" >&2; cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.1
done
ITEM_BYTES="$(python3 -c "
import json, urllib.request
b = urllib.request.urlopen('$FEED_URL?page=1&page_size=$PAGE').read(); print(len(b) // max(1, len(json.loads(b))))")"

# Sets S_GEN (server seconds generating), S_REQ, S_CPU (server CPU seconds) since the last call.
S_LAST_GEN=0 S_LAST_REQ=0 S_LAST_CPU=0 S_LAST_LATE=0
server_delta() {
  local gen req _b cpu late
  read -r gen req _b late <<< "$(server_stat)"
  cpu="$(proc_cpu "$SERVER_PID")"
  S_GEN="$(calc "$gen - $S_LAST_GEN")"; S_REQ=$((req - S_LAST_REQ)); S_CPU="$(calc "round($cpu - $S_LAST_CPU, 2)")"
  S_LATE=$((late - S_LAST_LATE))
  S_LAST_GEN="$gen" S_LAST_REQ="$req" S_LAST_CPU="$cpu" S_LAST_LATE="$late"
}

# ---- one run of each side -------------------------------------------------------------------
run_peer() { # dir -> P_S P_N P_CPU
  local d="$1"; mkdir -p "$d"
  server_delta
  local i0 i1; i0="$(machine_idle)"
  python3 "$WORK/peer.py" "$FEED_PORT" "$PAGE" "$d/peer.db" > "$d/peer.out" &
  PEER_PID=$!
  wait "$PEER_PID" || { echo "peer failed" >&2; exit 1; }
  PEER_PID=""
  i1="$(machine_idle)"
  read -r P_S P_N P_CPU < "$d/peer.out"
  [ "$P_N" = "$COUNT" ] || { echo "peer inserted $P_N, expected $COUNT" >&2; exit 1; }
  server_delta
  IDLE="$(idle_pct "$i0" "$i1")"
}

run_ours() { # dir -> O_STORED O_SPOOLED O_RSS O_REPORTS O_CPU ...
  local d="$1"
  write_daemon_config "$d" "$HTTP_PORT"
  if [ -n "$PRE_SQL" ]; then
    # Untimed: a daemon without channels migrates the database and is stopped; then the SQL.
    "$BIN" run --config "$d/phananh.toml" 2> "$d/pre.log" &
    DAEMON_PID=$!
    local j
    for j in $(seq 1 100); do grep -q "phananh is running" "$d/pre.log" && break; sleep 0.1; done
    stop_daemon "$DAEMON_PID"; DAEMON_PID=""
    sqlite3 "$d/state/phananh.db" "$PRE_SQL"
  fi
  cat > "$d/channels/portal.toml" <<EOF
kind = "feed"
format = "open311"
url = "$FEED_URL"
poll_interval = "1s"
page_size = $PAGE
backlog = "30d"
rate_per_second = 1000
EOF
  server_delta
  local i0 i1; i0="$(machine_idle)"
  local t0; t0="$(now)"
  PHANANH_LOG="${PHANANH_LOG:-info}" "$BIN" run --config "$d/phananh.toml" 2> "$d/daemon.log" &
  DAEMON_PID=$!
  local out rc=0
  # In the background and waited for, so that a signal to this script is handled at once.
  python3 "$WORK/watch.py" "$d/state/phananh.db" "$d/state/spool" "$COUNT" "$t0" "$DAEMON_PID" "$TIMEOUT" > "$d/watch.out" &
  WATCH_PID=$!
  wait "$WATCH_PID" || rc=$?
  WATCH_PID=""
  out="$(cat "$d/watch.out")"
  [ "$rc" = 0 ] || { echo "ours: $out; last log lines:" >&2; tail -20 "$d/daemon.log" >&2; exit 1; }
  i1="$(machine_idle)"
  server_delta
  IDLE="$(idle_pct "$i0" "$i1")"
  eval "$(echo "$out" | tr ' ' '\n' | sed 's/^/O_/; s/=/="/; s/$/"/')"
  kill -TERM "$DAEMON_PID"
  local i
  for i in $(seq 1 300); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$DAEMON_PID" 2>/dev/null; then
    echo "phananh still running 30 s after SIGTERM (a page in the writer?); SIGKILL" >&2
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
  fi
  wait "$DAEMON_PID" || rc=$?
  DAEMON_PID=""
  if [ "$rc" != 0 ]; then
    echo "phananh exited with $rc; last log lines:" >&2; tail -5 "$d/daemon.log" >&2
    [ "$O_done" = 1 ] && exit 1
  fi
  O_REPORTS="$(sqlite3 "$d/state/phananh.db" "SELECT count(*) FROM reports")"
  O_INBOX="$(sqlite3 "$d/state/phananh.db" "SELECT count(*) FROM inbox")"
  O_QUAR="$(sqlite3 "$d/state/phananh.db" "SELECT count(*) FROM inbox WHERE status = 'quarantined'")"
  O_WARN="$(grep -c -E ' (WARN|ERROR) ' "$d/daemon.log" || true)"
  # With PHANANH_LOG=...phananh::store=trace: commits, mean size, mean and total duration.
  O_COMMITS="$(python3 - "$d/daemon.log" <<'PY'
import re, sys
sizes, ms = [], []
units = {"s": 1e3, "ms": 1.0, "µs": 1e-3, "us": 1e-3, "ns": 1e-6}
for line in open(sys.argv[1], errors="replace"):
    if "Committed a batch" not in line:
        continue
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    s = re.search(r"size=(\d+)", line)
    e = re.search(r"elapsed=([0-9.]+)(s|ms|µs|us|ns)", line)
    if s and e:
        sizes.append(int(s.group(1))); ms.append(float(e.group(1)) * units[e.group(2)])
if sizes:
    print("%d commits, size mean %.1f max %d, %.1f ms mean, %.1f s in all" % (
        len(sizes), sum(sizes) / len(sizes), max(sizes), sum(ms) / len(ms), sum(ms) / 1e3))
PY
)"
}

echo "== machine: $(nproc) cores, $(lscpu | awk -F': +' '/Model name/ {print $2}'), work dir $WORK ($(df -T "$WORK" | awk 'NR==2 {print $2}'))" >&2
echo "== feed: $COUNT requests, pages of $PAGE, ~$ITEM_BYTES bytes per item, server $FEED_URL" >&2
echo "== tree: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "?")$(cd "$ROOT" && git diff --quiet HEAD -- src 2>/dev/null || echo " + uncommitted changes in src/"), $("$BIN" --version)" >&2
[ -z "$PRE_SQL" ] || echo "== ours: before each timed start, on the migrated database: $PRE_SQL" >&2
printf '%-6s %-5s %9s %9s %10s %10s %8s %8s %6s %7s\n' round side stored_s spooled_s stored/s spooled/s rss_MB cpu_s idle% srv_gen
RES_OURS=() RES_SPOOL_S=() RES_PEER=() RES_RATIO=() RES_RSS=() RES_GEN=() PARTIAL=()
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="peer ours"; else order="ours peer"; fi
  echo "== round $r: load average $(cut -d' ' -f1-3 /proc/loadavg) (other processes share these cores)" >&2
  for side in $order; do
    sync -f "$WORK"
    if [ "$side" = peer ]; then
      run_peer "$WORK/r$r-peer"
      printf '%-6s %-5s %9.2f %9s %10.0f %10s %8s %8s %6s %7.2f\n' "$r" peer "$P_S" - "$(calc "$COUNT / $P_S")" - - \
        "$P_CPU" "$IDLE" "$S_GEN"
      echo "       peer: server CPU ${S_CPU}s for $S_REQ requests"
    else
      run_ours "$WORK/r$r-ours"
      O_CPU="$(calc "round($O_cpu_user + $O_cpu_sys, 2)")"
      O_RSS="$(calc "round($O_hwm_kb / 1024, 1)")"
      O_RATE="$(calc "$O_stored_n / $O_stored_s")"
      if [ "$O_done" = 1 ]; then
        [ "$O_REPORTS" = "$COUNT" ] || { echo "expected $COUNT reports, found $O_REPORTS ($O_QUAR quarantined)" >&2; exit 1; }
        printf '%-6s %-5s %9.2f %9.2f %10.0f %10.0f %8s %8s %6s %7.2f\n' "$r" ours "$O_stored_s" "$O_spooled_s" \
          "$O_RATE" "$(calc "$COUNT / $O_spooled_s")" "$O_RSS" "$O_CPU" "$IDLE" "$S_GEN"
        RES_SPOOL_S+=("$O_spooled_s")
      else
        printf '%-6s %-5s %9s %9s %10.0f %10s %8s %8s %6s %7.2f\n' "$r" ours "TIMEOUT" - "$O_RATE" - "$O_RSS" "$O_CPU" "$IDLE" "$S_GEN"
        echo "       ours: TIMED OUT after ${O_stored_s}s with $O_stored_n of $COUNT in the inbox, $O_spooled_n spooled; stored/s is over that partial drain"
        PARTIAL+=("round $r: $O_stored_n of $COUNT in ${O_stored_s}s")
        [ "$O_REPORTS" = "$((O_INBOX - O_QUAR))" ] || echo "       ours: WARNING $O_REPORTS reports for $O_INBOX inbox rows ($O_QUAR quarantined)"
      fi
      echo "       ours: time (s) at each tenth of N in the inbox: $O_tenths"
      echo "       ours: CPU user $O_cpu_user sys $O_cpu_sys = $(calc "round(($O_cpu_user + $O_cpu_sys) * 1e6 / max(1, $O_stored_n))") us/item; $O_threads threads; by thread: $O_by_thread"
      echo "       ours: server CPU ${S_CPU}s for $S_REQ requests ($S_LATE of them later polls, answered []); $O_WARN WARN/ERROR log lines${O_COMMITS:+; $O_COMMITS}"
      RES_GEN+=("$S_GEN")
    fi
  done
  RES_OURS+=("$O_RATE")
  RES_PEER+=("$(calc "$COUNT / $P_S")")
  RES_RATIO+=("$(calc "$O_RATE * $P_S / $COUNT")")
  RES_RSS+=("$O_RSS")
  [ "$KEEP" = 1 ] || rm -rf "$WORK/r$r-peer" "$WORK/r$r-ours"
done

python3 - "$COUNT" "$PAGE" "$ITEM_BYTES" "${RES_OURS[*]}" "${RES_SPOOL_S[*]:-}" "${RES_PEER[*]}" "${RES_RATIO[*]}" "${RES_RSS[*]}" "${RES_GEN[*]}" "${PARTIAL[*]:-}" <<'PY'
import statistics as st, sys
count, page, item = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ours, spool_s, peer, ratio, rss, gen = ([float(x) for x in a.split()] for a in sys.argv[4:10])
partial = sys.argv[10]
def fmt(v, f="%.0f"):
    if not v:
        return "-"
    s = f % st.median(v)
    return s if len(v) == 1 else "%s (range %s-%s, n=%d)" % (s, f % min(v), f % max(v), len(v))
print()
print("feed drain: %d Open311 requests, pages of %d, ~%d bytes each" % (count, page, item))
if partial:
    print("  PARTIAL (timed out, rate over what was stored): %s" % partial)
print("  ours, stored (items/s):             %s" % fmt(ours))
print("  ours, time to N spool files (s):    %s" % fmt(spool_s, "%.2f"))
print("  ours, stored + forwarded (items/s): %s" % fmt([count / x for x in spool_s]))
print("  peer, HTTP + sqlite txn/page FULL:  %s" % fmt(peer))
print("  ours/peer ratio (stored):           %s" % fmt(ratio, "%.3f"))
print("  ours peak RSS, VmHWM (MB):          %s" % fmt(rss, "%.1f"))
print("  server time generating, ours' run:  %s s" % fmt(gen, "%.2f"))
m, r = st.median(ours), max(rss)
print("TARGET >= 20000 items/s: %s (%.0f items/s stored, %.2fx the target%s)" % (
    "met" if m >= 20000 and not partial else "MISSED", m, m / 20000, "; some rounds timed out" if partial else ""))
print("TARGET peak RSS <= 64 MB: %s (max %.1f MB%s)" % ("met" if r <= 64 else "MISSED", r,
    "; timed-out rounds saw only part of the drain" if partial else ""))
PY
