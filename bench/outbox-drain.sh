#!/usr/bin/env bash
# Outbox drain (issue 7): N queued events (default 100,000) forwarded from the outbox to RabbitMQ
# with publisher confirms, and to a local HTTP receiver, each beside a plain loop that sends the
# same payloads the same way in the same run. Targets: >= 10,000 events/s to RabbitMQ, and
# ours/plain >= 0.5 for both kinds.
#
# examples/outbox_drain.rs (release build) does the work:
#   fill      once, untimed: N generated reports through the real Store, each report's event
#             queued for the one sink `bench` (N pending outbox rows, the real ~1 KB event JSON).
#             Each run then starts from a fresh copy of that database (cp, no -wal).
#   ours      `drain`: config::load of a phananh.toml with [sinks.bench], Store::open, the
#             Forwarder built (untimed), then Forwarder::pump() timed until all N are delivered:
#             batches of [forward] batch = 256 rows, the sink (amqp: window 256, confirms;
#             http: 8 in flight, signed), one writer transaction per batch (WAL, synchronous=FULL).
#   plain     `plain-amqp` / `plain-http`: the same N payloads, ids and types read from the copy
#             (and, for amqp, their routing keys computed) before the clock; then lapin publishes
#             them 256 at a time awaiting each window's confirms, with the sink's properties
#             (persistent, mandatory, message_id, ...); or reqwest POSTs them 8 in flight with the
#             sink's headers and an HMAC-SHA256 signature computed per request. It writes nothing.
# amqp: a durable topic exchange and durable queue (bound with #, no consumer: a broker backlog),
# named uniquely for this run, purged after every run (the purge count checks N arrived) and
# deleted at the end. http: `outbox_drain receiver` (axum/hyper, 204 to every POST, counting).
# Each side's clock includes connecting. Rounds alternate which side goes first.
#
# Usage: bench/outbox-drain.sh [--count N] [--rounds R] [--kind amqp|http|both] [--timeout S]
#                              [--retries N] [--diagnose] [--keep]
#   --count N     queued events (default 100000)
#   --rounds R    interleaved rounds per kind; the summary gives median and range (default 3)
#   --kind K      amqp, http or both (default both)
#   --timeout S   give up on one run after S seconds (default 300)
#   --retries N   run a failed run again from a fresh copy up to N times (default 2; someone's
#                 test restarting the broker's application breaks an amqp run); reported
#   --diagnose    after the rounds, per kind: ours again through `drain --steps` (read, send and
#                 record phases timed separately), `drain --steps --overlap` (the writer records
#                 batch k while batch k+1 is sent), and the pump with [forward] batch = 1024;
#                 for amqp also the plain loop with non-persistent messages (the broker's cost)
#   --keep        keep the work folder
# CARGO_TARGET_DIR is honoured (default: <repo>/target). Needs RabbitMQ on 127.0.0.1:5672
# (guest/guest) for amqp. Work files go to $TMPDIR (default /tmp), which must be a real disk (the
# writer's fsyncs are part of ours): ~5 KB per event. The 100,000 fill takes a minute or two; a
# run takes 5-30 s. docs/BENCHMARKS.md explains the output and has the figures measured so far.
set -euo pipefail

COUNT=100000
ROUNDS=3
KIND=both
TIMEOUT=300
DIAGNOSE=0
RETRIES=2
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --count) COUNT="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --kind) KIND="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --diagnose) DIAGNOSE=1; shift ;;
    --retries) RETRIES="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$COUNT$ROUNDS$TIMEOUT$RETRIES" in *[!0-9]*|"") echo "--count, --rounds, --timeout, --retries take integers" >&2; exit 2 ;; esac
[ "$COUNT" -gt 0 ] && [ "$ROUNDS" -gt 0 ] && [ "$TIMEOUT" -gt 0 ] || { echo "--count, --rounds and --timeout must be > 0" >&2; exit 2; }
case "$KIND" in amqp) KINDS="amqp" ;; http) KINDS="http" ;; both) KINDS="amqp http" ;; *) echo "--kind is amqp, http or both" >&2; exit 2 ;; esac

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # free_ports
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
EX="$CARGO_TARGET_DIR/release/examples/outbox_drain"
# Errors as one message, not a backtrace.
export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0
echo "== building release example (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
(cd "$ROOT" && cargo build --release --quiet --example outbox_drain)

AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
if [[ " $KINDS " == *" amqp "* ]] && ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  echo "RabbitMQ is not listening on 127.0.0.1:5672 (try --kind http)" >&2; exit 1
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/phananh-outbox-drain.XXXXXX")"
NAME="phananh-bench-outbox-$$-$(date +%s)"
EXCHANGE="$NAME.x" QUEUE="$NAME"
RUN_PID="" RECV_PID="" DECLARED=0 RETRIED=()
cleanup() {
  # Only the processes this script started, by PID; only the exchange and queue it declared.
  for p in "$RUN_PID" "$RECV_PID"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
    fi
  done
  if [ "$DECLARED" = 1 ]; then
    # A few tries: the broker may be restarting (the integration tests restart its application).
    local i
    for i in 1 2 3 4; do
      timeout 30 "$EX" amqp-teardown --url "$AMQP_URL" --exchange "$EXCHANGE" --queue "$QUEUE" > /dev/null 2>&1 && break
      [ "$i" = 4 ] && echo "could not delete exchange $EXCHANGE / queue $QUEUE; delete them by hand" >&2
      sleep 5
    done
  fi
  if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_kb=$((COUNT * 12))
avail_kb=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
[ "$avail_kb" -gt "$need_kb" ] || { echo "need ~$((need_kb / 1024)) MB free under $WORK, have $((avail_kb / 1024)) MB" >&2; exit 1; }

# Runs the example with "$@" under `timeout`, stderr to $WORK/run.log, stdout to $WORK/out; sets OUT.
# On failure: exits, or with MAY_FAIL=1 returns 1 (RUN_ERR: the last line of its log).
run() {
  : > "$WORK/run.last"
  timeout "$TIMEOUT" "$EX" "$@" > "$WORK/out" 2> "$WORK/run.last" &
  RUN_PID=$!
  local rc=0
  wait "$RUN_PID" || rc=$?
  RUN_PID=""
  cat "$WORK/run.last" >> "$WORK/run.log"
  if [ "$rc" != 0 ]; then
    RUN_ERR="exit $rc$([ "$rc" = 124 ] && echo ", timed out after ${TIMEOUT}s"): $(grep -v '^\s*$' "$WORK/run.last" | tail -1)"
    [ "${MAY_FAIL:-0}" = 1 ] && return 1
    echo "outbox_drain $1 failed ($RUN_ERR); its log:" >&2
    tail -8 "$WORK/run.last" >&2
    exit 1
  fi
  OUT="$(cat "$WORK/out")"
}
# The value of KEY in a `KEY=value …` line.
field() { tr ' ' '\n' <<< "$2" | sed -n "s/^$1=//p" | head -1; }
calc() { python3 -c "print($1)"; }
# utime + stime of a process, in seconds.
proc_cpu() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz}' "/proc/$1/stat" || echo 0; }
machine_idle() { awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
idle_pct() { python3 -c "a='$1'.split(); b='$2'.split(); print('%.0f' % (100 * (float(b[0]) - float(a[0])) / max(1, float(b[1]) - float(a[1]))))"; }
# CPU seconds the whole machine was busy between two machine_idle samples.
busy_s() { python3 -c "a='$1'.split(); b='$2'.split(); print('%.2f' % (((float(b[1]) - float(a[1])) - (float(b[0]) - float(a[0]))) / $(getconf CLK_TCK)))"; }

# ---- fill once ----------------------------------------------------------------------------------
echo "== filling $COUNT reports (untimed)" >&2
run fill --state "$WORK/fill/state" --count "$COUNT" --sink bench
FILL="$OUT"
[ "$(field rows "$FILL")" = "$COUNT" ] || { echo "fill queued $(field rows "$FILL") rows, expected $COUNT: $FILL" >&2; exit 1; }
MASTER="$WORK/fill/state/phananh.db"
[ ! -s "$MASTER-wal" ] || { echo "the filled database has a non-empty -wal after close" >&2; exit 1; }
rm -f "$MASTER-wal" "$MASTER-shm"

# ---- sinks and configs --------------------------------------------------------------------------
mkdir -p "$WORK/secrets" "$WORK/channels" "$WORK/run/state"
printf '%s\n' "$AMQP_URL" > "$WORK/secrets/amqp-url"
python3 -c "import secrets; print(secrets.token_hex(32))" > "$WORK/secrets/hook"
chmod 600 "$WORK/secrets/"*
BEAM_PID=""
if [[ " $KINDS " == *" amqp "* ]]; then
  run amqp-setup --url "$AMQP_URL" --exchange "$EXCHANGE" --queue "$QUEUE"
  DECLARED=1
  BEAM_PID="$(rabbitmqctl status 2>/dev/null | awk '/^OS PID:/ {print $3}' || true)"
  cat > "$WORK/amqp.toml" <<EOF
state_dir = "$WORK/run/state"
channels_dir = "$WORK/channels"

[sinks.bench]
kind = "amqp"
url_file = "secrets/amqp-url"
exchange = "$EXCHANGE"
routing_key = "report.{category}.{unit}"
EOF
fi
HTTP_PORT=""
if [[ " $KINDS " == *" http "* ]]; then
  read -r HTTP_PORT <<< "$(free_ports 1)"
  "$EX" receiver --port "$HTTP_PORT" > "$WORK/receiver.out" 2> "$WORK/receiver.log" &
  RECV_PID=$!
  for _ in $(seq 1 100); do
    grep -q listening "$WORK/receiver.log" 2>/dev/null && break
    kill -0 "$RECV_PID" 2>/dev/null || { echo "receiver exited:" >&2; cat "$WORK/receiver.log" >&2; exit 1; }
    sleep 0.1
  done
  cat > "$WORK/http.toml" <<EOF
state_dir = "$WORK/run/state"
channels_dir = "$WORK/channels"

[sinks.bench]
kind = "http"
url = "http://127.0.0.1:$HTTP_PORT/hook"
secret_file = "secrets/hook"
EOF
fi
recv_count() { python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$HTTP_PORT/count').read().decode())"; }

# A fresh copy of the filled database for the next run, flushed so its writeback is not timed.
fresh_db() {
  rm -f "$WORK/run/state/phananh.db" "$WORK/run/state/phananh.db-wal" "$WORK/run/state/phananh.db-shm"
  cp "$MASTER" "$WORK/run/state/phananh.db"
  chmod 600 "$WORK/run/state/phananh.db"
  sync -f "$WORK/run/state/phananh.db"
}

# One run of one side: kind side [extra drain flags] -> R_RATE R_S R_RSS R_CPU R_BROKER R_OTHER R_IDLE
# R_LINE. R_BROKER: CPU of the broker (amqp) or the receiver (http) meanwhile; R_OTHER: CPU the
# rest of the machine used meanwhile (other people's work, kernel threads), from /proc/stat.
# A run that fails (e.g. the broker's application restarted by someone's test) is done again from
# a fresh copy after 15 s, up to --retries times; the retry is reported.
run_side() {
  local kind="$1" side="$2"; shift 2
  local before="" b0 i0 i1 try=0
  while :; do
    fresh_db
    [ "$kind" = http ] && before="$(recv_count)"
    if [ "$kind" = amqp ]; then b0="$(proc_cpu "$BEAM_PID")"; else b0="$(proc_cpu "$RECV_PID")"; fi
    i0="$(machine_idle)"
    local ok=1
    if [ "$side" = ours ]; then
      MAY_FAIL=1 run drain --config "$WORK/$kind${CONF_SUFFIX:-}.toml" --sink bench "$@" || ok=0
    elif [ "$kind" = amqp ]; then
      MAY_FAIL=1 run plain-amqp --db "$WORK/run/state/phananh.db" --sink bench --url "$AMQP_URL" --exchange "$EXCHANGE" \
        --routing-key 'report.{category}.{unit}' --window 256 $([ "$side" = plain-transient ] && echo --transient) || ok=0
    else
      MAY_FAIL=1 run plain-http --db "$WORK/run/state/phananh.db" --sink bench --url "http://127.0.0.1:$HTTP_PORT/hook" \
        --window 8 --secret-file "$WORK/secrets/hook" || ok=0
    fi
    i1="$(machine_idle)"
    local got="" detail=""
    if [ "$kind" = amqp ]; then
      R_BROKER="$(calc "round($(proc_cpu "$BEAM_PID") - $b0, 2)")"
      local j
      for j in 1 2 3 4; do
        got="$(timeout 60 "$EX" amqp-purge --url "$AMQP_URL" --queue "$QUEUE" 2>> "$WORK/run.log" | sed -n 's/^PURGED //p')" || true
        [ -n "$got" ] && break
        sleep 5
      done
      [ "$got" = "$COUNT" ] || detail="the queue held ${got:-?} messages after the run, expected $COUNT"
    else
      R_BROKER="$(calc "round($(proc_cpu "$RECV_PID") - $b0, 2)")"
      local after dp ds
      after="$(recv_count)"
      dp=$(( $(field posts "$after") - $(field posts "$before") ))
      ds=$(( $(field signed "$after") - $(field signed "$before") ))
      [ "$dp" = "$COUNT" ] && [ "$ds" = "$COUNT" ] || detail="the receiver got $dp POSTs ($ds signed), expected $COUNT"
    fi
    [ "$ok" = 1 ] || detail="$RUN_ERR"
    [ -z "$detail" ] && break
    try=$((try + 1))
    if [ "$try" -gt "$RETRIES" ]; then
      echo "$kind $side: $detail; giving up (--retries $RETRIES)" >&2
      exit 1
    fi
    echo "   $kind $side: $detail; running it again in 15 s ($try of $RETRIES)" >&2
    RETRIED+=("$kind $side: $detail")
    sleep 15
  done
  R_LINE="$OUT"
  R_RATE="$(field rate "$R_LINE")" R_S="$(field seconds "$R_LINE")"
  R_RSS="$(calc "round($(field rss_kb "$R_LINE") / 1024, 1)")"
  R_CPU="$(calc "round($(field cpu_user "$R_LINE") + $(field cpu_sys "$R_LINE"), 2)")"
  R_IDLE="$(idle_pct "$i0" "$i1")"
  R_OTHER="$(calc "round(max(0, $(busy_s "$i0" "$i1") - $R_CPU - $R_BROKER), 2)")"
}

echo "== machine: $(nproc) cores, $(lscpu | awk -F': +' '/Model name/ {print $2}'), work dir $WORK ($(df -T "$WORK" | awk 'NR==2 {print $2}'))" >&2
echo "== tree: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "?")$(cd "$ROOT" && git diff --quiet HEAD -- src 2>/dev/null || echo " + uncommitted changes in src/")" >&2
echo "== fill: $FILL" >&2
[ -z "$BEAM_PID" ] || echo "== RabbitMQ $(rabbitmqctl version 2>/dev/null || echo ?) (pid $BEAM_PID), exchange $EXCHANGE, queue $QUEUE" >&2
[ -z "$HTTP_PORT" ] || echo "== receiver: 127.0.0.1:$HTTP_PORT (pid $RECV_PID)" >&2
printf '%-5s %-5s %-5s %9s %10s %8s %7s %8s %9s %6s  %s\n' round kind side seconds events/s rss_MB cpu_s peer_cpu other_cpu idle% extra
: > "$WORK/results"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="ours plain"; else order="plain ours"; fi
  echo "== round $r: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  for kind in $KINDS; do
    for side in $order; do
      run_side "$kind" "$side"
      extra=""
      [ "$side" = ours ] && extra="writer $(field writer_commits "$R_LINE") commits, $(field writer_s "$R_LINE") s"
      printf '%-5s %-5s %-5s %9.3f %10.0f %8s %7s %8s %9s %6s  %s\n' "$r" "$kind" "$side" "$R_S" "$R_RATE" "$R_RSS" "$R_CPU" "$R_BROKER" "$R_OTHER" "$R_IDLE" "$extra"
      echo "$r $kind $side $R_RATE $R_RSS $R_CPU $R_BROKER $R_OTHER" >> "$WORK/results"
    done
  done
done

if [ "$DIAGNOSE" = 1 ]; then
  echo
  echo "diagnosis (ours through the public pieces, each phase timed; load average $(cut -d' ' -f1-3 /proc/loadavg)):"
  for kind in $KINDS; do
    for flags in "--steps" "--steps --overlap"; do
      # shellcheck disable=SC2086
      run_side "$kind" ours $flags
      printf '  %-5s %-17s %8.0f events/s in %.3f s: %s batches, read %s s, send %s s, %s %s s; writer %s commits %s s; other CPU %s s\n' \
        "$kind" "$flags" "$R_RATE" "$R_S" "$(field batches "$R_LINE")" "$(field read_s "$R_LINE")" "$(field send_s "$R_LINE")" \
        "$([ "$flags" = --steps ] && echo record || echo "waited for record")" \
        "$(field record_s "$R_LINE")$(field record_wait_s "$R_LINE")" "$(field writer_commits "$R_LINE")" "$(field writer_s "$R_LINE")" "$R_OTHER"
      echo "       threads (CPU s): $(field threads "$R_LINE")"
    done
    # The same pump with [forward] batch = 1024 (4x fewer writer transactions).
    sed 's/^channels_dir = .*/&\n\n[forward]\nbatch = 1024/' "$WORK/$kind.toml" > "$WORK/$kind-b1024.toml"
    CONF_SUFFIX=-b1024 run_side "$kind" ours
    printf '  %-5s %-17s %8.0f events/s in %.3f s: writer %s commits %s s; other CPU %s s\n' \
      "$kind" "batch = 1024" "$R_RATE" "$R_S" "$(field writer_commits "$R_LINE")" "$(field writer_s "$R_LINE")" "$R_OTHER"
    if [ "$kind" = amqp ]; then
      run_side amqp plain-transient
      printf '  %-5s %-17s %8.0f events/s in %.3f s (plain loop, delivery_mode 1): broker CPU %s s\n' amqp "transient" "$R_RATE" "$R_S" "$R_BROKER"
    fi
  done
fi

python3 - "$COUNT" "$WORK/results" "$(field payload_avg "$FILL")" "$(printf '%s; ' "${RETRIED[@]}")" <<'PY'
import statistics as st, sys
count, path, payload, retried = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].strip("; ")
rows = [l.split() for l in open(path) if l.strip()]
def fmt(v, f="%.0f"):
    if not v:
        return "-"
    s = f % st.median(v)
    return s if len(v) == 1 else "%s (range %s-%s, n=%d)" % (s, f % min(v), f % max(v), len(v))
print()
print("outbox drain: %d events, payload ~%s bytes" % (count, payload))
if retried:
    print("  runs done again after a failure: %s" % retried)
verdicts = []
for kind in ("amqp", "http"):
    got = [r for r in rows if r[1] == kind]
    if not got:
        continue
    ours = {int(r[0]): float(r[3]) for r in got if r[2] == "ours"}
    plain = {int(r[0]): float(r[3]) for r in got if r[2] == "plain"}
    ratio = [ours[k] / plain[k] for k in sorted(ours) if k in plain]
    rss = lambda side: [float(r[4]) for r in got if r[2] == side]
    col = lambda side, i: [float(r[i]) for r in got if r[2] == side]
    print("  %s, ours (events/s):        %s" % (kind, fmt(list(ours.values()))))
    print("  %s, plain loop (events/s):  %s" % (kind, fmt(list(plain.values()))))
    print("  %s, ours/plain per round:   %s" % (kind, fmt(ratio, "%.3f")))
    print("  %s, peak RSS ours / plain (MB): %s / %s" % (kind, fmt(rss("ours"), "%.1f"), fmt(rss("plain"), "%.1f")))
    print("  %s, CPU s ours / plain:     %s / %s" % (kind, fmt(col("ours", 5), "%.2f"), fmt(col("plain", 5), "%.2f")))
    print("  %s, %s CPU s during ours / plain: %s / %s" % (kind, "broker" if kind == "amqp" else "receiver", fmt(col("ours", 6), "%.2f"), fmt(col("plain", 6), "%.2f")))
    print("  %s, other CPU s during ours / plain: %s / %s" % (kind, fmt(col("ours", 7), "%.2f"), fmt(col("plain", 7), "%.2f")))
    m, q = st.median(ours.values()), st.median(ratio)
    if kind == "amqp":
        verdicts.append("TARGET amqp >= 10000 events/s: %s (%.0f events/s, %.2fx the target)" % ("met" if m >= 10000 else "MISSED", m, m / 10000))
    verdicts.append("TARGET %s ours/plain >= 0.5: %s (%.3f)" % (kind, "met" if q >= 0.5 else "MISSED", q))
print("\n".join(verdicts))
PY
