#!/usr/bin/env bash
# Local operator stack: Redis (via ensure-redis.sh) plus the API in the background.
#   scripts/stack.sh up|down|status|logs|restart-web      (the Makefile's up/down/status/logs/restart-web)
# The API's PID file is $RUN_DIR/api.pid, its log $LOG_FILE, and the address it was started with
# $RUN_DIR/api.env: HOST, PORT and REDIS_URL not given in the environment are taken from there, so
# `status`, `down` and `restart-web` find the API that `up` started. A redis-server that ensure-redis.sh
# started (for `up` or `make run`) is recorded in $RUN_DIR/redis-<port>.pid, data and log in
# $REDIS_DIR/<port>/; `down` stops only those. A Redis that was already answering is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

GIVEN_HOST="${HOST:-}"
GIVEN_PORT="${PORT:-}"
GIVEN_REDIS_URL="${REDIS_URL:-}"
VENV="${VENV:-.venv}"
RUN_DIR="${RUN_DIR:-var/run}"
REDIS_DIR="${REDIS_DIR:-var/redis}"
LOG_FILE="${LOG_FILE:-var/log/api.log}"
READY_TIMEOUT="${READY_TIMEOUT:-90}"
# uvicorn's graceful shutdown (10 s) + SHUTDOWN_DRAIN_SECONDS (10 s) + UPLOAD_FLUSH_SECONDS (5 s) + margin.
STOP_TIMEOUT="${STOP_TIMEOUT:-40}"
export RUN_DIR REDIS_DIR # for ensure-redis.sh

API_PID_FILE="$RUN_DIR/api.pid"
API_ENV_FILE="$RUN_DIR/api.env"
HOST="" PORT="" REDIS_URL="" BASE_URL="" # set by resolve_address
DETACH=""
command -v setsid >/dev/null 2>&1 && DETACH="setsid"

log() { echo "stack: $*"; }
fail() { echo "stack: $*" >&2; exit 1; }

# The PID recorded in a file, if that process is still alive.
live_pid() {
  local file="$1" pid
  [ -f "$file" ] || return 1
  pid="$(head -n 1 "$file" | tr -dc '0-9')"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

# A value recorded in $API_ENV_FILE by the `up` or `restart-web` that started the API (read, never sourced).
recorded() {
  local key value
  [ -f "$API_ENV_FILE" ] || return 0
  while IFS='=' read -r key value; do
    if [ "$key" = "$1" ]; then
      echo "$value"
      return 0
    fi
  done <"$API_ENV_FILE"
}

# HOST, PORT and REDIS_URL: the ones given, else the recorded ones, else the defaults. With "if-running"
# the recorded ones count only while the API they belong to is alive (otherwise `up` starts afresh).
resolve_address() {
  local rec_host="" rec_port="" rec_redis=""
  if [ "$1" = always ] || live_pid "$API_PID_FILE" >/dev/null; then
    rec_host="$(recorded HOST)"
    rec_port="$(recorded PORT)"
    rec_redis="$(recorded REDIS_URL)"
  fi
  HOST="${GIVEN_HOST:-${rec_host:-127.0.0.1}}"
  PORT="${GIVEN_PORT:-${rec_port:-8000}}"
  REDIS_URL="${GIVEN_REDIS_URL:-${rec_redis:-redis://127.0.0.1:6379/0}}"
  export REDIS_URL
  [[ "$PORT" =~ ^[0-9]+$ ]] || fail "PORT must be a number, not '$PORT'"
  BASE_URL="http://$HOST:$PORT"
}

# The address the API was started with, for status/restart-web/down; REDIS_URL may hold a password: 0600.
record_address() {
  (
    umask 077
    printf 'HOST=%s\nPORT=%s\nREDIS_URL=%s\n' "$HOST" "$PORT" "$REDIS_URL" >"$API_ENV_FILE"
  )
}

# HTTP status of GET $1 ("000" when nothing answers).
http_code() {
  curl --silent --output /dev/null --max-time 2 --write-out '%{http_code}' "$1" 2>/dev/null || true
}

redis_host_port() {
  local hostport="${REDIS_URL#*://}"
  hostport="${hostport##*@}"
  hostport="${hostport%%/*}"
  local host="${hostport%%:*}" port="${hostport##*:}"
  [ "$port" = "$host" ] && port=6379
  echo "$host" "$port"
}

wait_for_exit() {
  local pid="$1" seconds="$2" i
  for ((i = 0; i < seconds * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

log_tail() {
  if [ -f "$LOG_FILE" ]; then
    echo "---- last lines of $LOG_FILE ----" >&2
    tail -n 40 "$LOG_FILE" >&2
  fi
}

wait_until_ready() {
  local pid="$1" i code body
  for ((i = 0; i < READY_TIMEOUT * 4; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$API_PID_FILE" "$API_ENV_FILE"
      log_tail
      fail "api (pid $pid) exited during start"
    fi
    code="$(http_code "$BASE_URL/health/ready")"
    [ "$code" = "200" ] && return 0
    if [ "$code" = "503" ]; then
      body="$(curl --silent --max-time 2 "$BASE_URL/health/ready" || true)"
      case "$body" in
        *'"phase":"model_failed"'*)
          stop_api
          log_tail
          fail "api is not ready: $body"
          ;;
      esac
    fi
    sleep 0.25
  done
  stop_api
  log_tail
  fail "api did not become ready on $BASE_URL within ${READY_TIMEOUT}s"
}

start_api() {
  local pid
  mkdir -p "$RUN_DIR" "$(dirname "$LOG_FILE")"
  if pid="$(live_pid "$API_PID_FILE")"; then
    log "api already running (pid $pid) on $BASE_URL"
  else
    [ -x "$VENV/bin/uvicorn" ] || fail "$VENV/bin/uvicorn not found; run 'make run' or 'make test' once to install"
    if [ "$(http_code "$BASE_URL/health/live")" != "000" ]; then
      fail "something already answers on $BASE_URL, not started by this stack"
    fi
    echo "---- $(date -u +%Y-%m-%dT%H:%M:%SZ) starting api on $BASE_URL" >>"$LOG_FILE"
    # setsid: its own session, so a Ctrl-C or a closed terminal in this shell does not reach the server.
    $DETACH nohup "$VENV/bin/uvicorn" app.main:app --host "$HOST" --port "$PORT" --workers 1 --no-access-log \
      --timeout-graceful-shutdown 10 </dev/null >>"$LOG_FILE" 2>&1 &
    pid=$!
    echo "$pid" >"$API_PID_FILE"
    record_address
    log "api started (pid $pid), logs in $LOG_FILE; waiting for $BASE_URL/health/ready"
  fi
  wait_until_ready "$pid"
  log "api ready on $BASE_URL"
}

stop_api() {
  local pid
  if ! pid="$(live_pid "$API_PID_FILE")"; then
    rm -f "$API_PID_FILE" "$API_ENV_FILE"
    log "api not running"
    return 0
  fi
  log "stopping api (pid $pid): SIGTERM, waiting up to ${STOP_TIMEOUT}s for the drain"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_for_exit "$pid" "$STOP_TIMEOUT"; then
    log "api (pid $pid) still running after ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_for_exit "$pid" 5 || true
  fi
  rm -f "$API_PID_FILE" "$API_ENV_FILE"
  log "api stopped"
}

# The redis-servers ensure-redis.sh started: "pid port" per line, for records whose process is alive.
owned_redis() {
  local file port pid
  for file in "$RUN_DIR"/redis-*.pid; do
    [ -f "$file" ] || continue
    port="${file##*/redis-}"
    port="${port%.pid}"
    [[ "$port" =~ ^[0-9]+$ ]] || continue
    pid="$(live_pid "$file")" || continue
    echo "$pid" "$port"
  done
}

stop_owned_redis() {
  local file port pid stopped=0
  for file in "$RUN_DIR"/redis-*.pid; do
    [ -f "$file" ] || continue
    port="${file##*/redis-}"
    port="${port%.pid}"
    if ! pid="$(live_pid "$file")"; then
      rm -f "$file"
      continue
    fi
    # Guard against a recycled PID: only a redis-server serving the recorded port is ours to stop.
    if [ "$(ps -o comm= -p "$pid" 2>/dev/null || true)" != "redis-server" ] ||
      [[ " $(ps -o args= -p "$pid" 2>/dev/null || true) " != *":$port "* ]]; then
      rm -f "$file"
      log "pid $pid is no longer the redis-server on port $port; left alone"
      continue
    fi
    log "stopping redis-server (pid $pid, port $port) started by make run/up"
    kill -TERM "$pid" 2>/dev/null || true
    if wait_for_exit "$pid" 20; then
      rm -f "$file"
      log "redis-server (pid $pid) stopped"
      stopped=$((stopped + 1))
    else
      log "redis-server (pid $pid) did not stop within 20s; its record $file is kept"
    fi
  done
  [ "$stopped" -gt 0 ] || log "no redis-server started by make run/up is running"
}

cmd_up() {
  local running
  resolve_address if-running
  if live_pid "$API_PID_FILE" >/dev/null && [ -f "$API_ENV_FILE" ]; then
    running="$(recorded HOST):$(recorded PORT)"
    if [ "$running" != "$HOST:$PORT" ]; then
      fail "api already running on http://$running; 'make down' first, or 'make restart-web HOST=$HOST PORT=$PORT'"
    fi
  fi
  ./scripts/ensure-redis.sh
  start_api
}

cmd_down() {
  resolve_address always
  stop_api
  stop_owned_redis
}

cmd_restart_web() {
  resolve_address always
  stop_api
  start_api
}

cmd_status() {
  local pid port host redis_state
  resolve_address always
  if pid="$(live_pid "$API_PID_FILE")"; then
    log "api: running (pid $pid) on $BASE_URL"
    log "  /health/live  -> $(http_code "$BASE_URL/health/live")"
    log "  /health/ready -> $(http_code "$BASE_URL/health/ready")"
  else
    [ -f "$API_PID_FILE" ] && log "api: stale pid file $API_PID_FILE (process gone)"
    if [ "$(http_code "$BASE_URL/health/live")" != "000" ]; then
      log "api: not running from this stack, but something answers on $BASE_URL"
    else
      log "api: not running"
    fi
  fi
  read -r host port < <(redis_host_port)
  if command -v redis-cli >/dev/null 2>&1 && redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1; then
    redis_state="answering on $host:$port"
  else
    redis_state="not running (nothing answers on $host:$port)"
  fi
  log "redis: $redis_state"
  while read -r pid port; do
    log "redis: pid $pid on port $port started by make run/up ('make down' stops it)"
  done < <(owned_redis)
}

cmd_logs() {
  [ -f "$LOG_FILE" ] || fail "no log yet at $LOG_FILE (start the stack with 'make up')"
  exec tail -n "${LOG_LINES:-100}" -F "$LOG_FILE"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  logs) cmd_logs ;;
  restart-web) cmd_restart_web ;;
  *) fail "usage: $0 up|down|status|logs|restart-web" ;;
esac
