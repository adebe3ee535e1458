#!/usr/bin/env bash
# New mail to report while in IDLE: a throwaway Dovecot (tests/support/dovecot.sh) and `phananh run`
# with one imap channel (idle = true, poll_interval = "60s", so only IDLE explains fast pickup).
# After "IMAP channel started" and one warm-up message has reached the spool, N messages (default
# 30) are delivered one per second (written to Maildir/tmp, renamed into new/; the time is taken
# right after the rename) and state/spool is polled every 10 ms until its *.json count grows.
# Latency = spool file seen - delivery. The spool file is written after the store commit, so this
# slightly over-states "new mail to committed report". Prints p50, p90, p99, max (ms).
# Target: p50 <= 600 ms (Dovecot itself waits ~500 ms before it notifies an IDLE client).
#
# Usage: bench/imap-idle-latency.sh [--count N] [--keep]
#   --count N    timed messages (default 30)
#   --keep       keep the work folder (daemon.log, dovecot.log)
# Needs dovecot (apt-get install -y dovecot-imapd). CARGO_TARGET_DIR is honoured (default:
# <repo>/target). PHANANH_LOG is passed to the daemon (default "info").
set -euo pipefail

COUNT=30 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --count) COUNT="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$COUNT" in ''|*[!0-9]*) echo "--count takes an integer" >&2; exit 2 ;; esac
[ "$COUNT" -gt 0 ] || { echo "--count must be > 0" >&2; exit 2; }
command -v dovecot >/dev/null || { echo "dovecot missing: apt-get install -y dovecot-imapd" >&2; exit 1; }

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init imap-idle
DOVE_PID="" OURS_PID=""
cleanup() {
  stop_daemon "$OURS_PID"
  stop_dovecot
  if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r IMAP_PORT TLS_PORT HTTP_PORT < <(free_ports 3)
PASS="bench-pass" USER_NAME="idle1"
DOVE="$WORK/dovecot"
MD="$DOVE/mail/$USER_NAME/Maildir"
mkdir -p "$MD/tmp" "$MD/new" "$MD/cur"
[ "$(id -u)" = 0 ] && chown -R nobody:nogroup "$DOVE"

start_dovecot "$DOVE" "$IMAP_PORT" "$TLS_PORT" "$PASS" "$WORK/dovecot.log"

D="$WORK/ours"; mkdir -p "$D/channels" "$D/state"
printf '%s' "$PASS" > "$D/imap-pass"; chmod 600 "$D/imap-pass"
write_daemon_config "$D" "$HTTP_PORT"
cat > "$D/channels/dttm.toml" <<EOF
kind = "imap"
host = "127.0.0.1"
port = $IMAP_PORT
tls = "none"
username = "$USER_NAME"
password_file = "$D/imap-pass"
after_ingest = "move:Processed"
idle = true
poll_interval = "60s"
EOF
SPOOL="$D/state/spool"
shopt -s nullglob
spooled() { local f=("$SPOOL"/*.json); echo "${#f[@]}"; }

# One ~1 KB message: tmp/ -> chown nobody -> rename into new/ (atomic, as an MDA does).
# Sets DELIVERED (date +%s.%N taken right after the rename).
deliver() { # index
  local name; name="$(date +%s).M$1P$$.idle"
  cat > "$MD/tmp/$name" <<EOF
From: =?UTF-8?B?$(printf 'Công dân %s' "$1" | base64 -w0)?= <citizen$1@example.com>
To: dttm@hue.example.vn
Subject: =?UTF-8?B?$(printf 'Phản ánh: Đèn đường bị hỏng (#%s)' "$1" | base64 -w0)?=
Date: $(date -R)
Message-ID: <imap-idle-$1.$$@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit

Kính gửi Trung tâm Giám sát, điều hành đô thị thông minh tỉnh Thừa Thiên Huế,
Tôi xin phản ánh: đèn đường tại số $1 đường Lê Lợi, phường Phú Hội, bị hỏng nhiều ngày.
Đề nghị cơ quan chức năng sớm kiểm tra, xử lý. Xin trân trọng cảm ơn!
EOF
  [ "$(id -u)" = 0 ] && chown nobody:nogroup "$MD/tmp/$name"
  mv "$MD/tmp/$name" "$MD/new/$name"
  DELIVERED="$(date +%s.%N)"
}

# Waits (polling every 10 ms) until the spool holds more than $1 files; sets ARRIVED. Timeout 20 s.
wait_spool() { # previous count
  local i
  for ((i = 0; i < 2000; i++)); do
    if [ "$(spooled)" -gt "$1" ]; then ARRIVED="$(date +%s.%N)"; return 0; fi
    sleep 0.01
  done
  echo "no spool file within 20 s (have $(spooled))" >&2; tail -20 "$D/daemon.log" >&2; exit 1
}

PHANANH_LOG="${PHANANH_LOG:-info}" "$BIN" run --config "$D/phananh.toml" 2> "$D/daemon.log" &
OURS_PID=$!
for _ in $(seq 1 300); do
  grep -q 'IMAP channel started' "$D/daemon.log" && break
  kill -0 "$OURS_PID" 2>/dev/null || { echo "phananh exited early:" >&2; tail -20 "$D/daemon.log" >&2; exit 1; }
  sleep 0.1
done
grep -q 'IMAP channel started' "$D/daemon.log" || { echo "channel did not start" >&2; tail -20 "$D/daemon.log" >&2; exit 1; }
grep 'IMAP channel started' "$D/daemon.log" | grep -q 'idle=true' \
  || { echo "channel started without IDLE:" >&2; grep 'IMAP channel started' "$D/daemon.log" >&2; exit 1; }

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), work dir $WORK" >&2
deliver 0; wait_spool 0                        # warm-up, not timed
echo "== warm-up reached the spool; delivering $COUNT messages, one per second" >&2
LAT=()
for i in $(seq 1 "$COUNT"); do
  before="$(spooled)"
  deliver "$i"; wait_spool "$before"
  LAT+=("$(python3 -c "print(round(($ARRIVED - $DELIVERED) * 1000, 1))")")
  rest="$(python3 -c "print(max(0.0, 1.0 - ($(date +%s.%N) - $DELIVERED)))")"
  sleep "$rest"
done

python3 - "${LAT[*]}" <<'PY'
import sys
v = sorted(float(x) for x in sys.argv[1].split())
def pct(p):  # nearest rank
    import math
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]
print("imap idle latency: %d messages, new mail (rename into new/) to spool file (ms)" % len(v))
print("  p50 %.0f  p90 %.0f  p99 %.0f  max %.0f  (min %.0f)" % (pct(50), pct(90), pct(99), v[-1], v[0]))
print("TARGET p50 <= 600 ms: %s (%.0f ms)" % ("met" if pct(50) <= 600 else "MISSED", pct(50)))
PY
