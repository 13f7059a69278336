#!/usr/bin/env bash
# Local operator stack: Redis (via ensure-redis.sh) plus the API in the background.
#   scripts/stack.sh up|down|status|logs|restart-web      (the Makefile's up/down/status/logs/restart-web)
# The API's PID file is $RUN_DIR/api.pid and its log $LOG_FILE. A Redis that `up` started is recorded in
# $RUN_DIR/redis.pid, and `down` stops only that one; a Redis that was already answering is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
VENV="${VENV:-.venv}"
RUN_DIR="${RUN_DIR:-var/run}"
LOG_FILE="${LOG_FILE:-var/log/api.log}"
READY_TIMEOUT="${READY_TIMEOUT:-90}"
# uvicorn's graceful shutdown (10 s) + SHUTDOWN_DRAIN_SECONDS (10 s) + UPLOAD_FLUSH_SECONDS (5 s) + margin.
STOP_TIMEOUT="${STOP_TIMEOUT:-40}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export REDIS_URL

API_PID_FILE="$RUN_DIR/api.pid"
OWNED_REDIS_PID_FILE="$RUN_DIR/redis.pid"
REDIS_PID_FILE="var/redis/redis.pid" # written by ensure-redis.sh when it starts a redis-server
BASE_URL="http://$HOST:$PORT"
DETACH=""
command -v setsid >/dev/null 2>&1 && DETACH="setsid"

log() { echo "stack: $*"; }
fail() { echo "stack: $*" >&2; exit 1; }

# The PID recorded in a file, if that process is still alive.
live_pid() {
  local file="$1" pid
  [ -f "$file" ] || return 1
  pid="$(tr -dc '0-9' <"$file")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
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

ensure_redis() {
  local before after i
  mkdir -p "$RUN_DIR"
  before="$(live_pid "$REDIS_PID_FILE" || true)"
  ./scripts/ensure-redis.sh
  for ((i = 0; i < 20; i++)); do # redis writes its pidfile just after it daemonizes
    after="$(live_pid "$REDIS_PID_FILE" || true)"
    [ -n "$after" ] && break
    sleep 0.05
  done
  if [ -n "$after" ] && [ "$after" != "$before" ]; then
    echo "$after" >"$OWNED_REDIS_PID_FILE"
    log "redis-server pid $after started by this stack (stopped by 'down')"
  fi
}

wait_until_ready() {
  local pid="$1" i code body
  for ((i = 0; i < READY_TIMEOUT * 4; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$API_PID_FILE"
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
    log "api already running (pid $pid)"
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
    log "api started (pid $pid), logs in $LOG_FILE; waiting for $BASE_URL/health/ready"
  fi
  wait_until_ready "$pid"
  log "api ready on $BASE_URL"
}

stop_api() {
  local pid
  if ! pid="$(live_pid "$API_PID_FILE")"; then
    rm -f "$API_PID_FILE"
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
  rm -f "$API_PID_FILE"
  log "api stopped"
}

stop_owned_redis() {
  local pid
  if ! pid="$(live_pid "$OWNED_REDIS_PID_FILE")"; then
    rm -f "$OWNED_REDIS_PID_FILE"
    return 0
  fi
  # Guard against a recycled PID: only a redis-server is ours to stop.
  case "$(ps -o comm= -p "$pid" 2>/dev/null || true)" in
    redis-server*) ;;
    *)
      rm -f "$OWNED_REDIS_PID_FILE"
      log "pid $pid is no longer a redis-server; left alone"
      return 0
      ;;
  esac
  log "stopping redis-server (pid $pid) started by this stack"
  kill -TERM "$pid" 2>/dev/null || true
  wait_for_exit "$pid" 10 || log "redis-server (pid $pid) did not stop within 10s"
  rm -f "$OWNED_REDIS_PID_FILE"
}

cmd_up() {
  ensure_redis
  start_api
}

cmd_down() {
  stop_api
  stop_owned_redis
}

cmd_status() {
  local pid host port redis_state
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
  if pid="$(live_pid "$OWNED_REDIS_PID_FILE")"; then
    log "redis: $redis_state, pid $pid started by this stack"
  else
    log "redis: $redis_state"
  fi
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
  restart-web)
    stop_api
    start_api
    ;;
  *) fail "usage: $0 up|down|status|logs|restart-web" ;;
esac
