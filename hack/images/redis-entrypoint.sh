#!/bin/sh
# Start redis-server with the password from REDIS_PASSWORD written into a private config file (a password on the
# command line would show in `ps`). Defaults: 127.0.0.1:6379, append-only file in /data; arguments override them.
set -eu
if [ -z "${REDIS_PASSWORD:-}" ]; then
  echo "redis: REDIS_PASSWORD is not set (compose.yaml passes GPT_REDIS_PASSWORD from .env)" >&2
  exit 1
fi
case "$REDIS_PASSWORD" in
  *[!A-Za-z0-9._~-]*)  # it also goes into redis:// URLs and a quoted config line: nothing to escape there
    echo "redis: REDIS_PASSWORD may hold only letters, digits and . _ ~ - (e.g. openssl rand -hex 24)" >&2
    exit 1 ;;
esac
umask 077
conf=$(mktemp /tmp/redis.XXXXXX.conf)
printf 'bind 127.0.0.1\nport 6379\ndir /data\nappendonly yes\nrequirepass "%s"\n' "$REDIS_PASSWORD" >"$conf"
unset REDIS_PASSWORD
exec redis-server "$conf" "$@"
