#!/usr/bin/env bash
# Set up everything the tests need and run the whole suite (lint, unit, integration, e2e).
# Extra arguments go to pytest, e.g. `hack/test.sh -m "not slow"` for the fast suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh operator,runtime,dev
echo "==> ruff"
.venv/bin/ruff check .
echo "==> pytest"
exec .venv/bin/pytest "$@"
