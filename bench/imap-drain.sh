#!/usr/bin/env bash
# IMAP drain beside mbsync: N messages (default 10,000) are delivered into a test Dovecot's
# Maildir for two users with identical content. `phananh run` drains one mailbox (imap channel,
# tls = "none", after_ingest = "move:Processed"; done when state/spool holds N *.json), and
# mbsync (isync, FSync yes) pulls the other into a local Maildir (`mbsync -c FILE -a`, end to end).
# Prints seconds and msg/s per side and the wall-time ratio ours/mbsync (median over rounds).
# Target: ratio <= 1.0. Rounds alternate which side goes first.
#
# Usage: bench/imap-drain.sh [--count N] [--rounds R] [--timeout S] [--keep]
#   --count N    messages per side and round (default 10000)
#   --rounds R   interleaved rounds (default 1)
#   --timeout S  give up on one side after S seconds (default 300)
#   --keep       keep the work folder (daemon.log, dovecot.log, mbsync.log)
# Needs dovecot and mbsync (apt-get install -y dovecot-imapd isync). CARGO_TARGET_DIR is honoured
# (default: <repo>/target). PHANANH_LOG is passed to the daemon (default "info").
set -euo pipefail

COUNT=10000 ROUNDS=1 TIMEOUT=300 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --count) COUNT="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$COUNT$ROUNDS$TIMEOUT" in *[!0-9]*) echo "--count, --rounds, --timeout take integers" >&2; exit 2 ;; esac
[ "$COUNT" -gt 0 ] && [ "$ROUNDS" -gt 0 ] || { echo "--count and --rounds must be > 0" >&2; exit 2; }
command -v mbsync >/dev/null || { echo "mbsync missing: apt-get install -y isync" >&2; exit 1; }
command -v dovecot >/dev/null || { echo "dovecot missing: apt-get install -y dovecot-imapd" >&2; exit 1; }

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init imap-drain
DOVE_PID="" OURS_PID=""
cleanup() {
  stop_daemon "$OURS_PID"
  stop_dovecot
  if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r IMAP_PORT TLS_PORT HTTP_PORT < <(free_ports 3)
PASS="bench-pass"
DOVE="$WORK/dovecot"
mkdir -p "$DOVE/mail"

cat > "$WORK/gen.py" <<'PY'
# COUNT ~2 KB messages, unique Message-ID and sender, Vietnamese subject and body, written to
# tmp/ and renamed into new/ of every Maildir given (identical content in each).
import os, sys, time
count, dirs = int(sys.argv[1]), sys.argv[2:]
for m in dirs:
    for d in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(m, d), exist_ok=True)
now, pid, total = int(time.time()), os.getpid(), 0
wards = ["Phú Hội", "Vĩnh Ninh", "Thuận Hòa", "An Cựu", "Kim Long", "Hương Sơ"]
topics = ["Đèn đường bị hỏng", "Rác thải tồn đọng", "Ngập nước sau mưa", "Tiếng ồn ban đêm",
          "Lấn chiếm vỉa hè", "Ổ gà trên đường"]
for i in range(count):
    ward, topic = wards[i % len(wards)], topics[i % len(topics)]
    body = ("Kính gửi Trung tâm Giám sát, điều hành đô thị thông minh tỉnh Thừa Thiên Huế,\r\n"
            "Tôi xin phản ánh: %s tại số %d đường Lê Lợi, phường %s, đã kéo dài nhiều ngày "
            "gây ảnh hưởng đến sinh hoạt và an toàn của người dân trong khu vực.\r\n"
            "Đề nghị cơ quan chức năng sớm kiểm tra, xử lý dứt điểm. Xin trân trọng cảm ơn! "
            "Người phản ánh: Nguyễn Văn Công dân %d, điện thoại 09%08d.\r\n") % (topic, i % 300 + 1, ward, i, i)
    head = ("Return-Path: <citizen%d@example.com>\r\n"
            "Received: from mx.example.com (mx.example.com [192.0.2.10]) by mail.hue.example.vn "
            "with ESMTPS id bench%07d; %s\r\n"
            "From: =?UTF-8?B?%s?= <citizen%d@example.com>\r\n"
            "To: dttm@hue.example.vn\r\n"
            "Subject: =?UTF-8?B?%s?=\r\n"
            "Date: %s\r\n"
            "Message-ID: <imap-drain-%07d.%d@example.com>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=UTF-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n"
            "X-Mailer: Thunderbird 115.0\r\n\r\n")
    import base64, email.utils
    date = email.utils.formatdate(now - count + i, localtime=False)
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    head = head % (i, i, date, b64("Công dân %d" % i), i,
                   b64("Phản ánh: %s tại phường %s (#%d)" % (topic, ward, i)), date, i, now)
    msg = (head + body * 3).encode()
    name = "%d.M%06dP%dQ%d.bench,S=%d" % (now, i % 1000000, pid, i, len(msg))
    for m in dirs:
        tmp = os.path.join(m, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(msg)
        os.rename(tmp, os.path.join(m, "new", name))
    total += len(msg)
print(total)
PY

# Every round's mailboxes before Dovecot starts (users oursR and mbsR; any user name logs in).
for r in $(seq 1 "$ROUNDS"); do
  BYTES="$(python3 "$WORK/gen.py" "$COUNT" "$DOVE/mail/ours$r/Maildir" "$DOVE/mail/mbs$r/Maildir")"
done
[ "$(id -u)" = 0 ] && chown -R nobody:nogroup "$DOVE"
sync -f "$WORK"

start_dovecot "$DOVE" "$IMAP_PORT" "$TLS_PORT" "$PASS" "$WORK/dovecot.log"

now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
count_files() { [ -d "$1" ] || { echo 0; return; }; find "$1" -mindepth 1 -maxdepth 1 -type f | wc -l; }

run_mbsync() { # round -> M_S
  local d="$WORK/r$1-mbsync"; mkdir -p "$d/near"
  cat > "$d/mbsyncrc" <<EOF
FSync yes

IMAPStore far
Host 127.0.0.1
Port $IMAP_PORT
User mbs$1
Pass $PASS
SSLType None
AuthMechs LOGIN

MaildirStore near
Path $d/near/
Inbox $d/near/INBOX

Channel bench
Far :far:INBOX
Near :near:INBOX
Sync Pull New
Create Near
SyncState *
EOF
  local t0 t1; t0="$(now)"
  timeout "$TIMEOUT" mbsync -c "$d/mbsyncrc" -a > "$d/mbsync.log" 2>&1 \
    || { echo "mbsync failed or timed out:" >&2; tail -20 "$d/mbsync.log" >&2; exit 1; }
  t1="$(now)"
  local got; got="$(( $(count_files "$d/near/INBOX/new") + $(count_files "$d/near/INBOX/cur") ))"
  [ "$got" = "$COUNT" ] || { echo "mbsync pulled $got of $COUNT" >&2; exit 1; }
  M_S="$(calc "$t1 - $t0")"
}

run_ours() { # round -> O_S
  local d="$WORK/r$1-ours"; mkdir -p "$d/channels" "$d/state"
  printf '%s' "$PASS" > "$d/imap-pass"; chmod 600 "$d/imap-pass"
  write_daemon_config "$d" "$HTTP_PORT"
  cat > "$d/channels/dttm.toml" <<EOF
kind = "imap"
host = "127.0.0.1"
port = $IMAP_PORT
tls = "none"
username = "ours$1"
password_file = "$d/imap-pass"
after_ingest = "move:Processed"
poll_interval = "2s"
EOF
  local spool="$d/state/spool" t0 t1 deadline spooled=0
  t0="$(now)"; deadline=$(( $(date +%s) + TIMEOUT ))
  PHANANH_LOG="${PHANANH_LOG:-info}" "$BIN" run --config "$d/phananh.toml" 2> "$d/daemon.log" &
  OURS_PID=$!
  while :; do
    kill -0 "$OURS_PID" 2>/dev/null || { echo "phananh exited early:" >&2; tail -20 "$d/daemon.log" >&2; exit 1; }
    spooled=0; [ -d "$spool" ] && spooled="$(find "$spool" -maxdepth 1 -name '*.json' | wc -l)"
    [ "$spooled" -ge "$COUNT" ] && break
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timeout after ${TIMEOUT}s: $spooled spooled" >&2; tail -20 "$d/daemon.log" >&2; exit 1; }
    sleep 0.1
  done
  t1="$(now)"
  sleep 0.5 # let the last MOVE land before counting Processed (not timed)
  kill -TERM "$OURS_PID"
  wait "$OURS_PID" || { echo "phananh did not exit cleanly:" >&2; tail -20 "$d/daemon.log" >&2; exit 1; }
  OURS_PID=""
  local proc="$DOVE/mail/ours$1/Maildir/.Processed"
  O_PROCESSED="$(( $(count_files "$proc/new") + $(count_files "$proc/cur") ))"
  O_BATCHES="$(grep -c 'Ingested messages' "$d/daemon.log" || true)"
  O_S="$(calc "$t1 - $t0")"
}

echo "== machine: $(nproc) cores, $(lscpu | awk -F': +' '/Model name/ {print $2}'), work dir $WORK ($(df -T "$WORK" | awk 'NR==2 {print $2}')), $COUNT messages, $((BYTES / COUNT)) bytes average" >&2
printf '%-6s %-7s %9s %9s\n' round side seconds msg/s
RATIOS=() OURS=() MBS=()
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="mbsync ours"; else order="ours mbsync"; fi
  echo "== round $r: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  for side in $order; do
    if [ "$side" = mbsync ]; then
      run_mbsync "$r"; printf '%-6s %-7s %9.2f %9.0f\n' "$r" mbsync "$M_S" "$(calc "$COUNT / $M_S")"
    else
      run_ours "$r"; printf '%-6s %-7s %9.2f %9.0f   (Processed: %s, "Ingested messages" log lines: %s)\n' \
        "$r" ours "$O_S" "$(calc "$COUNT / $O_S")" "$O_PROCESSED" "$O_BATCHES"
      [ "$O_PROCESSED" = "$COUNT" ] || echo "WARNING: Processed holds $O_PROCESSED, expected $COUNT" >&2
    fi
    sync -f "$WORK"
  done
  OURS+=("$O_S") MBS+=("$M_S") RATIOS+=("$(calc "$O_S / $M_S")")
done

python3 - "$COUNT" "${OURS[*]}" "${MBS[*]}" "${RATIOS[*]}" <<'PY'
import statistics as st, sys
n = int(sys.argv[1]); ours, mbs, ratio = ([float(x) for x in a.split()] for a in sys.argv[2:5])
rng = lambda v, f: "" if len(v) == 1 else " (range %s-%s, n=%d)" % (f % min(v), f % max(v), len(v))
print("\nimap drain: %d messages" % n)
print("  ours   %.2f s, %.0f msg/s%s" % (st.median(ours), n / st.median(ours), rng(ours, "%.2f")))
print("  mbsync %.2f s, %.0f msg/s%s" % (st.median(mbs), n / st.median(mbs), rng(mbs, "%.2f")))
m = st.median(ratio)
print("  ratio ours/mbsync (wall time): %.2f%s" % (m, rng(ratio, "%.2f")))
print("TARGET ratio <= 1.0: %s (%.2f)" % ("met" if m <= 1.0 else "MISSED", m))
PY
