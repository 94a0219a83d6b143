#!/usr/bin/env bash
# Load test: start a local runtime (limits and quotas off, its own data dir), run hack/locustfile.py headless
# against it for a bounded time, print p50/p95/p99 per endpoint, and fail if any request failed or a route of the
# journey never ran.
#
#   hack/load_test.sh [USERS] [SECONDS]       default 10 users for 60 s (spawned at USERS per second)
#
#   GPT_MODEL_SOURCE=...       the runtime's model (default: the embedded default, builtin:smollm2-135m;
#                              fake:echo?delay_ms=10 is the test suite's instant model)
#   LOCUST_MAX_TOKENS=N        reply length of every generation (default 16)
#   LOAD_TEST_HOST=URL         test a runtime that is already running instead (its limits must let the load through)
#   LOAD_TEST_CSV=PREFIX       keep Locust's CSV files (PREFIX_stats.csv, ...); default: a temporary directory
set -euo pipefail
cd "$(dirname "$0")/.."
users=${1:-10} seconds=${2:-60}
work=$(mktemp -d -t gpt-load-test.XXXXXX)
runtime_pid=""
cleanup() {
  if [ -n "$runtime_pid" ]; then
    kill "$runtime_pid" 2>/dev/null || true
    wait "$runtime_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
csv=${LOAD_TEST_CSV:-$work/locust}

host=${LOAD_TEST_HOST:-}
if [ -z "$host" ]; then
  port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  host="http://127.0.0.1:$port"
  source=${GPT_MODEL_SOURCE:-builtin:smollm2-135m}
  echo "==> runtime on $host ($source)"
  GPT_HOST=127.0.0.1 GPT_PORT=$port GPT_DATA_DIR="$work/data" GPT_MODEL_SOURCE="$source" \
    GPT_JWT_SECRET=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(48))') \
    GPT_RATE_LIMIT_FREE=0 GPT_RATE_LIMIT_ANONYMOUS=0 GPT_QUOTA_FREE=0,0,0,0 GPT_LOG_LEVEL=warning \
    .venv/bin/python -m gpt_runtime >"$work/runtime.log" 2>&1 &
  runtime_pid=$!
  for _ in $(seq 600); do  # the model loads first: up to 2 minutes
    if ! kill -0 "$runtime_pid" 2>/dev/null; then
      echo "runtime exited:" >&2; grep -v '"mail": {' "$work/runtime.log" | tail -n 40 >&2; exit 1
    fi
    if .venv/bin/python -c "import httpx, sys; sys.exit(httpx.get('$host/ready', timeout=2).status_code != 200)" \
        2>/dev/null; then
      break
    fi
    sleep 0.2
  done
fi

echo "==> locust: $users users for ${seconds}s against $host"
status=0
# at the end of the run Locust stops the users at once: a request cut off then is not counted
timeout $(( seconds + 90 )) .venv/bin/locust -f hack/locustfile.py --host "$host" --headless -u "$users" -r "$users" \
  --run-time "${seconds}s" --only-summary --csv "$csv" --loglevel WARNING >"$work/locust.log" 2>&1 \
  || status=$?
.venv/bin/python - "$csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(f"{sys.argv[1]}_stats.csv")))
print("| endpoint | requests | failures | p50 ms | p95 ms | p99 ms | req/s |")
print("|---|---:|---:|---:|---:|---:|---:|")
for row in rows:
    name = "all" if row["Name"] == "Aggregated" else row["Name"]
    print(f"| {name} | {row['Request Count']} | {row['Failure Count']} | {row['50%']} | {row['95%']} | {row['99%']} "
          f"| {float(row['Requests/s']):.1f} |")
PY
if [ -s "${csv}_failures.csv" ] && [ "$(wc -l <"${csv}_failures.csv")" -gt 1 ]; then
  echo "==> failures:" >&2; cat "${csv}_failures.csv" >&2
fi
if [ "$status" != 0 ]; then
  echo "load test FAILED (locust exit $status)" >&2
  tail -n 40 "$work/locust.log" >&2
  # the runtime's last log lines, without the account mails it prints when no transport is set (one-time links)
  [ -z "$runtime_pid" ] || grep -v '"mail": {' "$work/runtime.log" | tail -n 20 >&2
  exit 1
fi
echo "==> load test passed: no request failed"
