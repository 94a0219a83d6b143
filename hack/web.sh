#!/usr/bin/env bash
# Build the web page (web/, TypeScript + Vite) into runtime/gpt_runtime/webui/dist/, which the runtime serves at /
# and the package (so the image) ships. Skipped when the build matches the sources (a hash stamp in the dist);
# without npm it warns and exits 0: the API works without the page (/ then says how to build it).
#   hack/web.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."
dist=runtime/gpt_runtime/webui/dist
stamp="$dist/.source-hash"
# everything the build reads; node_modules is ruled by package-lock.json
hash=$( (cd web && find index.html package.json package-lock.json tsconfig.json vite.config.ts src -type f -print0 \
  | sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1)
if [ "${1:-}" != "--force" ] && [ -f "$dist/index.html" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "web.sh: warning: npm is not installed, so the web page is not built (the API works; / says so)." >&2
  echo "web.sh: install Node.js 20.19+ with npm (Debian: apt-get install npm) and run bash hack/web.sh" >&2
  exit 0
fi
# Vite 7 needs Node.js 20.19+ (Debian 12's nodejs is 18: use NodeSource's or Debian 13's)
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
  echo "web.sh: warning: Node.js $(node --version) is older than 20.19, so the web page is not built (the API works)." >&2
  exit 0
fi
start=$(date +%s)
echo "==> building the web page (web/ -> $dist)" >&2
cd web
lock_stamp=node_modules/.package-lock.sha256
lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$lock_stamp" 2>/dev/null)" != "$lock_hash" ]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$lock_hash" > "$lock_stamp"
fi
npm run --silent build >&2
cd ..
echo "$hash" > "$stamp"
echo "==> web page built in $(( $(date +%s) - start ))s" >&2
