#!/usr/bin/env bash
# Starts a local redis-server on REDIS_URL's port when none answers there (for `make run` / `make up`).
set -euo pipefail
url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
hostport="${url#*://}"; hostport="${hostport##*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"; [ "$port" = "$host" ] && port=6379
if redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1; then
  echo "redis reachable at $host:$port"
  exit 0
fi
case "$host" in
  127.*|localhost) ;;
  *) echo "redis at $host:$port is not reachable and is not local; not starting one" >&2; exit 1 ;;
esac
mkdir -p var/redis
redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --dir "$PWD/var/redis" \
  --pidfile "$PWD/var/redis/redis.pid" --logfile "$PWD/var/redis/redis.log" --appendonly yes
for _ in $(seq 1 50); do
  redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1 && { echo "started redis at $host:$port"; exit 0; }
  sleep 0.1
done
echo "redis did not start; see var/redis/redis.log" >&2
exit 1
