#!/usr/bin/env bash
# Facebook webhook, whole process, beside a bare nginx. `phananh run` with one facebook channel on a
# fresh state dir, and nginx (worker_processes 2, access_log off, `return 200;`) on another free
# port, are driven by the same load generator (examples/webhook_load.rs: signed Messenger bodies,
# a unique mid per event and a new sender per request, HTTP/1.1 keep-alive):
#   * closed loop: N workers x E events per body, for each N in --concurrency and E in --events;
#   * open loop: --rate events/s, one event per request on a fixed timeline, latency from the
#     scheduled send time (no coordinated omission).
# Ours answers 200 only after the events are committed to SQLite (WAL, synchronous=FULL, group
# commit); nginx answers 200 without storing anything, so ours/nginx is "cost of durability and
# parsing", not a like-for-like race. Afterwards the daemon is SIGKILLed and `SELECT count(*) FROM
# inbox` is compared with the events answered 200. Targets (issue): >= 10,000 events/s committed
# before the 200; p99 <= 100 ms at 1,000 events/s.
#
# Usage: bench/facebook-webhook.sh [--duration S] [--open-duration S] [--rate R]
#                                  [--concurrency "32 128"] [--events "1 10"] [--keep]
#   --duration S       closed-loop measuring window per run, after 1 s warm-up (default 8)
#   --open-duration S  open-loop run length (default 20)
#   --rate R           open-loop events/s (default 1000)
#   --concurrency L    closed-loop worker counts (default "32 128")
#   --events L         closed-loop events per body (default "1 10")
#   --keep             keep the work folder (daemon.log, nginx error.log, phananh.db, results)
# The generator runs on the same cores as the server under test (2 tokio threads). Needs nginx
# (apt-get install -y nginx) and sqlite3. CARGO_TARGET_DIR is honoured (default <repo>/target).
# PHANANH_LOG is passed to the daemon (default "info,phananh::store=trace", for the group-commit
# sizes). Default run: about 2 minutes after the build (8 closed runs of 9 s, 2 open runs of 20 s).
set -euo pipefail

DURATION=8 OPEN_DURATION=20 RATE=1000 CONCURRENCY="32 128" EVENTS="1 10" KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --open-duration) OPEN_DURATION="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    --events) EVENTS="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$DURATION$OPEN_DURATION$RATE${CONCURRENCY// /}${EVENTS// /}" in
  *[!0-9]*|"") echo "--duration, --open-duration, --rate, --concurrency, --events take integers" >&2; exit 2 ;;
esac
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$NGINX" ] || { echo "nginx missing: apt-get install -y nginx" >&2; exit 1; }
command -v sqlite3 >/dev/null || { echo "sqlite3 missing: apt-get install -y sqlite3" >&2; exit 1; }

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init facebook-webhook
echo "== building the load generator (examples/webhook_load.rs)" >&2
(cd "$ROOT" && cargo build --release --quiet --example webhook_load)
LOAD="$CARGO_TARGET_DIR/release/examples/webhook_load"

OURS_PID="" NGX_PID=""
stop_nginx() {
  if [ -n "$NGX_PID" ]; then
    kill -TERM -- "-$NGX_PID" 2>/dev/null || true
    local _; for _ in $(seq 1 20); do kill -0 "$NGX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$NGX_PID" 2>/dev/null || true
    wait "$NGX_PID" 2>/dev/null || true
    NGX_PID=""
  fi
}
cleanup() {
  stop_daemon "$OURS_PID"
  stop_nginx
  if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r HTTP_PORT NGX_PORT < <(free_ports 2)
D="$WORK/ours" N="$WORK/nginx"
mkdir -p "$D" "$N"

# ---- phananh: one facebook channel, fresh state dir ----
write_daemon_config "$D" "$HTTP_PORT"
printf 'bench-app-secret-%s\n' "$$" > "$D/app.secret"
printf 'bench-verify-token\n' > "$D/verify.token"
chmod 600 "$D/app.secret" "$D/verify.token"
cat > "$D/channels/fb.toml" <<EOF
kind = "facebook"
page_id = "104200000000001"
app_secret_file = "$D/app.secret"
verify_token_file = "$D/verify.token"
assemble_quiet = "3m"
assemble_max = "15m"
EOF
PHANANH_LOG="${PHANANH_LOG:-info,phananh::store=trace}" "$BIN" run --config "$D/phananh.toml" 2> "$D/daemon.log" &
OURS_PID=$!
for i in $(seq 1 100); do
  kill -0 "$OURS_PID" 2>/dev/null || { echo "phananh exited early:" >&2; tail -20 "$D/daemon.log" >&2; exit 1; }
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/readyz" || true)" = 200 ] \
     && grep -q "Facebook channel started" "$D/daemon.log"; then break; fi
  [ "$i" = 100 ] && { echo "phananh not ready after 10 s:" >&2; tail -20 "$D/daemon.log" >&2; exit 1; }
  sleep 0.1
done

# ---- nginx: the bare peer ----
mkdir -p "$N/tmp"
cat > "$N/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 2;
pid $N/nginx.pid;
error_log $N/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $N/tmp/body;
  proxy_temp_path $N/tmp/proxy;
  fastcgi_temp_path $N/tmp/fastcgi;
  uwsgi_temp_path $N/tmp/uwsgi;
  scgi_temp_path $N/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_max_body_size 10m;
  server {
    listen 127.0.0.1:$NGX_PORT;
    location / { return 200; }
  }
}
EOF
setsid "$NGINX" -p "$N" -c "$N/nginx.conf" -e "$N/error.log" > "$N/stdout.log" 2>&1 &
NGX_PID=$!
for i in $(seq 1 50); do
  kill -0 "$NGX_PID" 2>/dev/null || { echo "nginx exited early:" >&2; cat "$N/error.log" "$N/stdout.log" >&2; exit 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$NGX_PORT/webhooks/facebook/fb" || true)" = 200 ] && break
  [ "$i" = 50 ] && { echo "nginx not answering:" >&2; cat "$N/error.log" >&2; exit 1; }
  sleep 0.1
done

# ---- helpers ----
TCK="$(getconf CLK_TCK)"
cpu_ticks() { # PID... -> utime+stime ticks summed (0 for gone processes)
  local t=0 p v
  for p in "$@"; do
    v="$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')" || true
    t=$(( t + ${v:-0} ))
  done
  echo "$t"
}
side_pids() { if [ "$1" = ours ]; then echo "$OURS_PID"; else pgrep -s "$NGX_PID" | tr '\n' ' '; fi; }
url_of() { if [ "$1" = ours ]; then echo "http://127.0.0.1:$HTTP_PORT/webhooks/facebook/fb"; else echo "http://127.0.0.1:$NGX_PORT/webhooks/facebook/fb"; fi; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$2"; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
log_lines() { wc -l < "$D/daemon.log"; }
commit_stats() { # FROM TO -> "commits mean_events_per_commit mean_ms" from the store's trace lines
  sed -n "$(( $1 + 1 )),$2p" "$D/daemon.log" | awk '/Committed a batch/ {
      if (match($0, /size=[0-9]+/)) s += substr($0, RSTART + 5, RLENGTH - 5)
      if (match($0, /elapsed=[0-9.]+[^0-9. ]+/)) {
        v = substr($0, RSTART + 8, RLENGTH - 8); u = v; sub(/^[0-9.]+/, "", u); v += 0
        t += (u == "ns") ? v / 1e6 : (u == "ms") ? v : (u == "s") ? v * 1e3 : v / 1e3
      }
      n++ }
    END { if (n) printf "%d %.1f %.2f", n, s / n, t / n; else printf "0 - -" }'
}
cpu_times() { awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6, $9}' /proc/stat; } # total idle steal

OURS_OK_EVENTS=0 OURS_SENT_EVENTS=0 NON200=0
declare -A RES CPU COMMITS IDLE STEAL
run_load() { # side key args... -> RES[side/key] = RESULT line, CPU[side/key] = server CPU s
  local side="$1" key="$2"; shift 2
  local pids c0 c1 b0 b1 line t0 i0 s0 t1 i1 s1
  pids="$(side_pids "$side")"; c0="$(cpu_ticks $pids)"; b0="$(log_lines)"
  read -r t0 i0 s0 < <(cpu_times)
  line="$("$LOAD" --url "$(url_of "$side")" --secret-file "$D/app.secret" --threads 2 "$@" 2>> "$WORK/load.log" \
          | grep '^RESULT' || true)"
  c1="$(cpu_ticks $pids)"; b1="$(log_lines)"
  read -r t1 i1 s1 < <(cpu_times)
  IDLE[$side/$key]="$(calc "100 * ($i1 - $i0) / ($t1 - $t0)" 0)"
  STEAL[$side/$key]="$(calc "100 * ($s1 - $s0) / ($t1 - $t0)" 0)"
  [ -n "$line" ] || { echo "load generator failed ($side $key):" >&2; tail -5 "$WORK/load.log" >&2; exit 1; }
  echo "$side $key $line" >> "$WORK/results.txt"
  RES[$side/$key]="$line"
  CPU[$side/$key]="$(calc "($c1 - $c0) / $TCK")"
  COMMITS[$side/$key]="$(commit_stats "$b0" "$b1")"
  if [ "$(field ok_requests "$line")" != "$(field sent_requests "$line")" ]; then
    echo "WARNING: $side $key: not every request answered 200: $(field statuses "$line")" >&2
    NON200=$(( NON200 + $(field sent_requests "$line") - $(field ok_requests "$line") ))
  fi
  if [ "$side" = ours ]; then
    OURS_OK_EVENTS=$(( OURS_OK_EVENTS + $(field ok_events "$line") ))
    OURS_SENT_EVENTS=$(( OURS_SENT_EVENTS + $(field sent_events "$line") ))
  fi
  echo "   $side $key: $(field events_per_s "$line") events/s, p50 $(field p50_ms "$line") ms, p99 $(field p99_ms "$line") ms, statuses $(field statuses "$line"), server CPU ${CPU[$side/$key]} s, generator CPU $(field gen_cpu_s "$line") s, machine idle ${IDLE[$side/$key]} % (steal ${STEAL[$side/$key]} %)" >&2
  [ "$side" = ours ] && echo "     group commits (commits, events/commit, ms/commit): ${COMMITS[$side/$key]}" >&2
  return 0
}

echo "== machine: $(nproc) cores, $(lscpu | awk -F': +' '/Model name/ {print $2}'), work dir $WORK ($(df -T "$WORK" | awk 'NR==2 {print $2}')), nginx $("$NGINX" -v 2>&1 | sed 's/.*\///')" >&2
echo "== the load generator shares these $(nproc) cores with the server under test (2 tokio threads)" >&2
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
FSYNC="$(python3 - "$WORK/fsync-probe" <<'PY'
# fdatasync after a 4 KiB write, 200 times, in the work dir: this VM's fsync cost drifts.
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600); ts = []
for i in range(200):
    os.pwrite(fd, b"x" * 4096, (i % 16) * 4096)
    t = time.perf_counter(); os.fdatasync(fd); ts.append((time.perf_counter() - t) * 1e3)
os.close(fd); os.unlink(sys.argv[1]); ts.sort()
print("fdatasync of a 4 KiB write: p50 %.3f ms, p99 %.3f ms" % (ts[99], ts[197]))
PY
)"
echo "== $FSYNC" >&2

# Closed loop: alternate which side goes first.
KEYS=() flip=0
for c in $CONCURRENCY; do
  for e in $EVENTS; do
    key="closed-c$c-e$e"; KEYS+=("$key")
    if [ $flip = 0 ]; then order="ours nginx"; flip=1; else order="nginx ours"; flip=0; fi
    echo "== $key (closed loop, $c workers, $e events/body, ${DURATION}s after 1s warm-up)" >&2
    for side in $order; do
      run_load "$side" "$key" --mode closed --workers "$c" --events "$e" --duration "$DURATION" --warmup 1
    done
  done
done
# Open loop.
key="open-r$RATE"; KEYS+=("$key")
echo "== $key (open loop, $RATE events/s, 1 event/request, ${OPEN_DURATION}s)" >&2
for side in nginx ours; do
  run_load "$side" "$key" --mode open --rate "$RATE" --events 1 --duration "$OPEN_DURATION"
done
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# Durability: SIGKILL (no clean shutdown, no final checkpoint), then count what is on disk.
kill -KILL "$OURS_PID"; wait "$OURS_PID" 2>/dev/null || true; OURS_PID=""
DB="$D/state/phananh.db"
read -r INBOX DISTINCT STORED FRAGMENTS < <(sqlite3 -separator ' ' "$DB" \
  "SELECT count(*), count(DISTINCT external_id), sum(status = 'stored'), (SELECT count(*) FROM fb_fragments) FROM inbox")
WARNS="$(grep -c ' WARN \| ERROR ' "$D/daemon.log" || true)"

# ---- summary ----
echo
echo "facebook webhook: ours = phananh (commit to SQLite before 200), nginx = return 200 (stores nothing)"
echo "load generator on the same $(nproc) cores as the server; server CPU = the server's own CPU seconds during the run"
printf '%-16s %10s %10s %6s %8s %8s %8s %8s %9s %8s %8s %5s\n' \
  setting ours_ev/s nginx_ev/s ratio ours_p50 ours_p99 ngx_p50 ngx_p99 ours_cpu "us/event" "ev/cmt" idle%
for key in "${KEYS[@]}"; do
  o="${RES[ours/$key]}" n="${RES[nginx/$key]}"
  oe="$(field events_per_s "$o")" ne="$(field events_per_s "$n")"
  read -r _ per_commit _ <<< "${COMMITS[ours/$key]}"
  printf '%-16s %10.0f %10.0f %6s %8s %8s %8s %8s %8ss %8s %8s %5s\n' "$key" "$oe" "$ne" "$(calc "$oe / $ne")" \
    "$(field p50_ms "$o")" "$(field p99_ms "$o")" "$(field p50_ms "$n")" "$(field p99_ms "$n")" \
    "${CPU[ours/$key]}" "$(calc "${CPU[ours/$key]} * 1000000 / $(field ok_events "$o")" 0)" "$per_commit" "${IDLE[ours/$key]}"
done
echo "(ratio = ours/nginx events/s; p50/p99 in ms per request; ours_cpu = the daemon's CPU seconds in the run,"
echo " us/event = that per event answered 200, warm-up included; ev/cmt = events per group commit, from the"
echo " store's trace log (\"-\" if PHANANH_LOG hides it); idle% = whole machine idle during our run)"
o="${RES[ours/open-r$RATE]}"
echo
echo "open loop at $RATE events/s, ours: p50 $(field p50_ms "$o") ms, p90 $(field p90_ms "$o") ms, p99 $(field p99_ms "$o") ms, p99.9 $(field p999_ms "$o") ms, max $(field max_ms "$o") ms, max in flight $(field max_in_flight "$o")"
echo "$FSYNC; database $(du -m "$DB" | cut -f1) MB at the end"
echo "durability (after SIGKILL): inbox rows $INBOX ($DISTINCT distinct external ids, $STORED stored, $FRAGMENTS fb_fragments); events sent $OURS_SENT_EVENTS, answered 200 $OURS_OK_EVENTS"
echo "non-200 answers (both sides): $NON200; daemon WARN/ERROR log lines: $WARNS"
[ "$INBOX" -ge "$OURS_OK_EVENTS" ] || echo "WARNING: fewer inbox rows ($INBOX) than events answered 200 ($OURS_OK_EVENTS)" >&2

best="$(for key in "${KEYS[@]}"; do field events_per_s "${RES[ours/$key]}"; echo; done | sort -g | tail -1)"
p99="$(field p99_ms "$o")"
echo "TARGET >= 10000 events/s committed before the 200: $(awk "BEGIN{print ($best >= 10000) ? \"met\" : \"MISSED\"}") (best $(calc "$best" 0) events/s)"
echo "TARGET p99 <= 100 ms at $RATE events/s: $(awk "BEGIN{print ($p99 <= 100) ? \"met\" : \"MISSED\"}") ($p99 ms)"
