#!/usr/bin/env bash
# Pinned Go-built developer tools, installed once into a cache; prints the binary's path.
#
#   hack/tools.sh actionlint     the GitHub Actions workflow linter
#   hack/tools.sh mailpit        an SMTP server with an HTTP API: the mail tests send through it
#
#   GPT_TOOLS_CACHE=DIR   cache root (default ${XDG_CACHE_HOME:-~/.cache}/gpt-operator/tools)
set -euo pipefail
declare -A module=([actionlint]=github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
                   [mailpit]=github.com/axllent/mailpit@v1.33.1)
name=${1:?usage: $0 TOOL}
[ -n "${module[$name]:-}" ] || { echo "tools.sh: unknown tool $name (known: ${!module[*]})" >&2; exit 2; }
version=${module[$name]##*@}
bin="${GPT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpt-operator/tools}/$name-$version"
if [ ! -x "$bin/$name" ]; then
  echo "==> building $name $version" >&2
  mkdir -p "$bin"
  GOBIN="$bin" CGO_ENABLED=0 go install -trimpath "${module[$name]}" >&2
fi
echo "$bin/$name"
