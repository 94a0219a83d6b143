# Process helpers shared by cluster.sh and node.sh (sourced). The caller sets `dir` (the state directory,
# with logs/ and pids/), `timeout` (seconds wait_for allows) and `me` (its name, for messages).

log() { echo "==> $*" >&2; }
die() { echo "$me: $*" >&2; exit 1; }

free_ports() {  # N free loopback TCP ports
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

start() {  # start NAME ARGS...: in its own session, logging to logs/NAME.log, pid in pids/NAME
  local name=$1; shift
  setsid "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/$name"
}

wait_for() {  # wait_for WHAT COMMAND...: poll until COMMAND succeeds; past the timeout, show every log's tail
  local what=$1 log_file; shift
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "$me: $what not ready after ${timeout}s; last log lines:" >&2
      for log_file in "$dir"/logs/*.log; do
        [ -f "$log_file" ] && { echo "--- $(basename "$log_file" .log)" >&2; tail -n 15 "$log_file" >&2; }
      done
      return 1
    fi
    sleep 0.5
  done
}

stop_pid() {  # stop_pid NAME: TERM the recorded process (its own session), then KILL after 10 s
  local name=$1 pid
  [ -f "$dir/pids/$name" ] || return 0
  pid=$(cat "$dir/pids/$name")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pids/$name"
}
