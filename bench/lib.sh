# Shared by the scripts in bench/: source it, do not run it.

# Sets ROOT, CARGO_TARGET_DIR (default <repo>/target), BIN and WORK (a fresh folder Dovecot, which
# runs as nobody under root, can enter), after building the release binary.
bench_init() {
  ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
  BIN="$CARGO_TARGET_DIR/release/phananh"
  echo "== building release binary (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
  (cd "$ROOT" && cargo build --release --quiet --bin phananh)
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/phananh-$1.XXXXXX")"
  chmod 755 "$WORK"
}

# Prints N free TCP ports on 127.0.0.1, asked of the kernel.
free_ports() {
  python3 -c "
import socket; s=[socket.socket() for _ in range($1)]
[x.bind(('127.0.0.1',0)) for x in s]; print(*[x.getsockname()[1] for x in s])"
}

# Writes DIR/phananh.toml: state and channels under DIR, HTTP on PORT, everything else default
# (so one spool sink at DIR/state/spool).
write_daemon_config() {
  mkdir -p "$1/channels" "$1/state"
  printf 'state_dir = "%s/state"\nchannels_dir = "%s/channels"\nlisten = "127.0.0.1:%s"\n' "$1" "$1" "$2" \
    > "$1/phananh.toml"
}

# Starts tests/support/dovecot.sh DIR IMAP_PORT TLS_PORT PASSWORD in a session of its own, logging
# to LOG; sets DOVE_PID and waits until it listens.
start_dovecot() {
  setsid "$ROOT/tests/support/dovecot.sh" "$1" "$2" "$3" "$4" > "$5" 2>&1 &
  DOVE_PID=$!
  local _
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    kill -0 "$DOVE_PID" 2>/dev/null || { echo "dovecot exited:" >&2; tail -20 "$5" >&2; exit 1; }
    sleep 0.1
  done
  echo "dovecot not listening" >&2
  exit 1
}

# Stops the Dovecot started above: its whole process group.
stop_dovecot() {
  if [ -n "${DOVE_PID:-}" ]; then
    kill -TERM -- "-$DOVE_PID" 2>/dev/null || true; sleep 0.5; kill -KILL -- "-$DOVE_PID" 2>/dev/null || true
    wait "$DOVE_PID" 2>/dev/null || true
  fi
}

# Stops a daemon by PID: TERM, then KILL after a second.
stop_daemon() {
  if [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true; sleep 1; kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}
