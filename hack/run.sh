#!/usr/bin/env bash
# Set up and start the runtime on the embedded default: SQLite, in-memory cache/limits/queue,
# local files under ./data, and the default model. Extra arguments go to `python -m gpt_runtime`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh runtime
export GPT_HOST="${GPT_HOST:-127.0.0.1}" GPT_PORT="${GPT_PORT:-8000}"
cat <<MSG
==> gpt-runtime starting on http://${GPT_HOST}:${GPT_PORT}
    API docs:  http://${GPT_HOST}:${GPT_PORT}/docs
    try it:    bash hack/demo.sh          (signs up, chats over REST, SSE and WebSocket)
MSG
exec .venv/bin/python -m gpt_runtime "$@"
