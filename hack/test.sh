#!/usr/bin/env bash
# Set up everything the tests need and run the whole suite (lint, unit, integration, e2e).
# Extra arguments go to pytest, e.g. `hack/test.sh -m "not slow"` for the fast suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh operator,runtime,dev
if ! command -v redis-server >/dev/null; then
  echo "==> installing redis-server (Debian)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null
fi
echo "==> ruff"
.venv/bin/ruff check .
echo "==> pytest"
exec .venv/bin/pytest "$@"
