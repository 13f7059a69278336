#!/usr/bin/env bash
# Starts a local redis-server on REDIS_URL's port when none answers there (for `make run` / `make up`).
# A redis-server started here keeps its data and log in $REDIS_DIR/<port>/ and is recorded in
# $RUN_DIR/redis-<port>.pid; `make down` (scripts/stack.sh down) stops exactly the ones recorded there.
# A Redis that already answered (the machine's own, say) is never recorded, so never stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR="${RUN_DIR:-var/run}"
REDIS_DIR="${REDIS_DIR:-var/redis}"
url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
hostport="${url#*://}"; hostport="${hostport##*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"; [ "$port" = "$host" ] && port=6379
[[ "$port" =~ ^[0-9]+$ ]] || { echo "ensure-redis: no port in REDIS_URL" >&2; exit 1; }
record="$RUN_DIR/redis-$port.pid"

answers() { redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1; }

if answers; then
  pid=""
  [ -f "$record" ] && pid="$(head -n 1 "$record" | tr -dc '0-9')"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "redis reachable at $host:$port (pid $pid, started by make run/up; 'make down' stops it)"
  else
    echo "redis reachable at $host:$port (not started here; 'make down' leaves it alone)"
  fi
  exit 0
fi
case "$host" in
  127.*|localhost) ;;
  *) echo "redis at $host:$port is not reachable and is not local; not starting one" >&2; exit 1 ;;
esac
command -v redis-server >/dev/null 2>&1 || { echo "redis-server not found; run 'make system-deps'" >&2; exit 1; }

mkdir -p "$RUN_DIR" "$REDIS_DIR/$port"
data="$(cd "$REDIS_DIR/$port" && pwd)"
record="$(cd "$RUN_DIR" && pwd)/redis-$port.pid"
# Redis writes the pid file itself (and removes it when it stops); it is written before Redis answers.
redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --dir "$data" \
  --pidfile "$record" --logfile "$data/redis.log" --appendonly yes
for _ in $(seq 1 100); do
  if answers; then
    # Record the pid of the server that answers (the one just started: nothing answered before).
    pid="$(redis-cli -h "$host" -p "$port" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p' || true)"
    if [ -n "$pid" ]; then echo "$pid" >"$record"; fi
    echo "started redis-server at $host:$port (pid ${pid:-?}, data and log in $data; 'make down' stops it)"
    exit 0
  fi
  sleep 0.1
done
echo "redis did not start; see $data/redis.log" >&2
exit 1
