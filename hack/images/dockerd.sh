#!/usr/bin/env bash
# A Docker engine for building the images on a host that has none running (Debian's docker.io).
#
#   hack/images/dockerd.sh start   start dockerd unless an engine already answers; no default bridge, no
#                                  iptables rules, no NAT: builds use `--network host`, and nothing the
#                                  engine does routes traffic off this machine
#   hack/images/dockerd.sh stop    stop the dockerd that `start` started (an engine it found running stays)
#
#   GPT_DOCKERD_STATE=DIR   pid file and log (default /run/gpt-operator-dockerd)
set -euo pipefail
state="${GPT_DOCKERD_STATE:-/run/gpt-operator-dockerd}"

case "${1:-}" in
  start)
    if docker info >/dev/null 2>&1; then exit 0; fi
    command -v dockerd >/dev/null || { echo "dockerd.sh: no dockerd (apt-get install docker.io)" >&2; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "dockerd.sh: starting dockerd needs root" >&2; exit 1; }
    mkdir -p "$state"
    echo "==> starting dockerd (log: $state/dockerd.log)" >&2
    setsid dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
      --pidfile="$state/dockerd.pid" >"$state/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
      docker info >/dev/null 2>&1 && exit 0
      sleep 0.5
    done
    echo "dockerd.sh: dockerd did not answer in 60 s; last log lines:" >&2
    tail -n 20 "$state/dockerd.log" >&2
    exit 1
    ;;
  stop)
    [ -f "$state/dockerd.pid" ] || exit 0
    pid=$(cat "$state/dockerd.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    rm -f "$state/dockerd.pid"
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
