#!/usr/bin/env bash
# Local operator stack: Redis (via ensure-redis.sh), the API and one hazard-worker in the background.
#   scripts/stack.sh up|down|status|logs|restart-web|restart-worker   (the Makefile's targets of the same names)
# The API's PID file is $RUN_DIR/api.pid, its log $LOG_FILE, and the address it was started with
# $RUN_DIR/api.env: HOST, PORT and REDIS_URL not given in the environment are taken from there, so
# `status`, `down` and `restart-web` find the API that `up` started. The worker (hazard-worker: the model, the
# job queue, metrics on WORKER_METRICS_PORT) has $RUN_DIR/worker.pid, $WORKER_LOG_FILE and $RUN_DIR/worker.env
# (its metrics port and REDIS_URL). Both files also keep the settings the two processes must agree on (the
# queue they share: FLEET_NAME, QUEUE_REDIS_URL) and INFERENCE_MODE/EMBEDDED_WORKER, so a restart keeps them.
# `restart-web` leaves the worker (and its loaded model) alone; `restart-worker` leaves the API alone.
# A redis-server that ensure-redis.sh started (for `up` or `make run`) is recorded in
# $RUN_DIR/redis-<port>.pid, data and log in $REDIS_DIR/<port>/; `down` stops only those. A Redis that was
# already answering is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

GIVEN_HOST="${HOST:-}"
GIVEN_PORT="${PORT:-}"
GIVEN_REDIS_URL="${REDIS_URL:-}"
GIVEN_METRICS_PORT="${WORKER_METRICS_PORT:-}"
# Kept across restarts (recorded in api.env and worker.env); given ones win, unset ones keep the app's defaults.
KEPT_SETTINGS="FLEET_NAME QUEUE_REDIS_URL INFERENCE_MODE EMBEDDED_WORKER"
declare -A GIVEN_SETTING=()
for key in $KEPT_SETTINGS; do GIVEN_SETTING[$key]="${!key:-}"; done
VENV="${VENV:-.venv}"
RUN_DIR="${RUN_DIR:-var/run}"
REDIS_DIR="${REDIS_DIR:-var/redis}"
LOG_FILE="${LOG_FILE:-var/log/api.log}"
WORKER_LOG_FILE="${WORKER_LOG_FILE:-$(dirname "$LOG_FILE")/worker.log}"
# The worker's own upload spool and local store, beside the run dir: a process picks up the spool it finds at
# start, and the worker must never retry (or clean up) the API's.
WORKER_STATE_DIR="${WORKER_STATE_DIR:-$(dirname "$RUN_DIR")/worker}"
READY_TIMEOUT="${READY_TIMEOUT:-90}"
# uvicorn's graceful shutdown (10 s) + SHUTDOWN_DRAIN_SECONDS (10 s) + UPLOAD_FLUSH_SECONDS (5 s) + margin.
STOP_TIMEOUT="${STOP_TIMEOUT:-40}"
# The worker: WORKER_SHUTDOWN_SECONDS (10 s, the frames in hand) + SHUTDOWN_DRAIN_SECONDS (10 s)
# + UPLOAD_FLUSH_SECONDS (5 s) + margin.
WORKER_STOP_TIMEOUT="${WORKER_STOP_TIMEOUT:-40}"
export RUN_DIR REDIS_DIR # for ensure-redis.sh

API_PID_FILE="$RUN_DIR/api.pid"
API_ENV_FILE="$RUN_DIR/api.env"
WORKER_PID_FILE="$RUN_DIR/worker.pid"
WORKER_ENV_FILE="$RUN_DIR/worker.env"
HOST="" PORT="" REDIS_URL="" BASE_URL="" # set by resolve_address
METRICS_PORT="" METRICS_URL=""           # set by resolve_worker
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

# A value recorded in file $1 (api.env or worker.env) by the command that started that process (read, never
# sourced); `recorded KEY` reads $API_ENV_FILE.
recorded_in() {
  local file="$1" key value
  [ -f "$file" ] || return 0
  while IFS='=' read -r key value; do
    if [ "$key" = "$2" ]; then
      echo "$value"
      return 0
    fi
  done <"$file"
}
recorded() { recorded_in "$API_ENV_FILE" "$1"; }

# HOST, PORT and REDIS_URL: the ones given, else the recorded ones, else the defaults. With "if-running"
# the recorded ones count only while the API or the worker they belong to is alive (otherwise `up` starts
# afresh). The same for $KEPT_SETTINGS, exported when set and unset otherwise (the app's defaults).
resolve_address() {
  local rec_host="" rec_port="" rec_redis="" use_records="" key value
  if [ "$1" = always ] || live_pid "$API_PID_FILE" >/dev/null || live_pid "$WORKER_PID_FILE" >/dev/null; then
    use_records=yes
    rec_host="$(recorded HOST)"
    rec_port="$(recorded PORT)"
    rec_redis="$(recorded REDIS_URL)"
    [ -n "$rec_redis" ] || rec_redis="$(recorded_in "$WORKER_ENV_FILE" REDIS_URL)"
  fi
  HOST="${GIVEN_HOST:-${rec_host:-127.0.0.1}}"
  PORT="${GIVEN_PORT:-${rec_port:-8000}}"
  REDIS_URL="${GIVEN_REDIS_URL:-${rec_redis:-redis://127.0.0.1:6379/0}}"
  export REDIS_URL
  [[ "$PORT" =~ ^[0-9]+$ ]] || fail "PORT must be a number, not '$PORT'"
  BASE_URL="http://$HOST:$PORT"
  for key in $KEPT_SETTINGS; do
    value="${GIVEN_SETTING[$key]}"
    if [ -z "$value" ] && [ -n "$use_records" ]; then
      value="$(recorded "$key")"
      [ -n "$value" ] || value="$(recorded_in "$WORKER_ENV_FILE" "$key")"
    fi
    if [ -n "$value" ]; then export "$key=$value"; else unset "$key"; fi
  done
  # A worker process runs beside the API here, so the API starts without its embedded worker: batch frames go
  # to the worker, which holds its own model and keeps it across `restart-web`; the API's engine serves live
  # /detect frames only, and a `restart-web` never interrupts batch frames in hand. (`make run`, one process,
  # keeps the embedded worker.) EMBEDDED_WORKER=true in the environment turns it back on.
  export EMBEDDED_WORKER="${EMBEDDED_WORKER:-false}"
}

# The worker's metrics port: the one given (WORKER_METRICS_PORT), else the recorded one, else the app's default.
resolve_worker() {
  local rec_port=""
  if [ "$1" = always ] || live_pid "$WORKER_PID_FILE" >/dev/null; then
    rec_port="$(recorded_in "$WORKER_ENV_FILE" WORKER_METRICS_PORT)"
  fi
  METRICS_PORT="${GIVEN_METRICS_PORT:-${rec_port:-9101}}"
  [[ "$METRICS_PORT" =~ ^[1-9][0-9]*$ ]] || fail "WORKER_METRICS_PORT must be a port number, not '$METRICS_PORT'"
  METRICS_URL="http://127.0.0.1:$METRICS_PORT/metrics"
}

# What a process was started with ("KEY=value" arguments, then $KEPT_SETTINGS), for status/restart/down.
# REDIS_URL and QUEUE_REDIS_URL may hold a password: 0600.
record_env() {
  local file="$1" key
  shift
  (
    umask 077
    {
      printf '%s\n' "$@"
      for key in $KEPT_SETTINGS; do printf '%s=%s\n' "$key" "${!key:-}"; done
    } >"$file"
  )
}

# The address the API was started with, for status/restart-web/down.
record_address() { record_env "$API_ENV_FILE" "HOST=$HOST" "PORT=$PORT" "REDIS_URL=$REDIS_URL"; }

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
  local file="${1:-$LOG_FILE}"
  if [ -f "$file" ]; then
    echo "---- last lines of $file ----" >&2
    tail -n 40 "$file" >&2
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
    [ -x "$VENV/bin/hazard-api" ] || fail "$VENV/bin/hazard-api not found; run 'make run' or 'make test' once to install"
    if [ "$(http_code "$BASE_URL/health/live")" != "000" ]; then
      fail "something already answers on $BASE_URL, not started by this stack"
    fi
    echo "---- $(date -u +%Y-%m-%dT%H:%M:%SZ) starting api on $BASE_URL" >>"$LOG_FILE"
    # setsid: its own session, so a Ctrl-C or a closed terminal in this shell does not reach the server.
    # hazard-api: one uvicorn worker, 10 s graceful shutdown, the connection bounds of app/entrypoints/server.py.
    $DETACH nohup "$VENV/bin/hazard-api" --host "$HOST" --port "$PORT" </dev/null >>"$LOG_FILE" 2>&1 &
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

# Whether the worker's metrics say its model is compiled and warm (it takes frames from then on).
worker_model_ready() {
  local body
  body="$(curl --silent --max-time 2 "$METRICS_URL" 2>/dev/null || true)"
  [[ "$body" == *$'\n'"hazard_model_ready 1.0"* ]]
}

WORKER_PID="" # set by launch_worker
# Starts hazard-worker in the background unless the recorded one is alive; `wait_worker_ready` waits for it.
launch_worker() {
  mkdir -p "$RUN_DIR" "$(dirname "$WORKER_LOG_FILE")" "$WORKER_STATE_DIR"
  if WORKER_PID="$(live_pid "$WORKER_PID_FILE")"; then
    log "worker already running (pid $WORKER_PID), metrics on $METRICS_URL"
    return 0
  fi
  [ -x "$VENV/bin/hazard-worker" ] || fail "$VENV/bin/hazard-worker not found; run 'make run' or 'make test' once to install"
  if [ "$(http_code "$METRICS_URL")" != "000" ]; then
    fail "something already answers on port $METRICS_PORT, not started by this stack (WORKER_METRICS_PORT=<port> picks another)"
  fi
  echo "---- $(date -u +%Y-%m-%dT%H:%M:%SZ) starting worker, metrics on $METRICS_URL" >>"$WORKER_LOG_FILE"
  # Same settings as the API (REDIS_URL, FLEET_NAME, QUEUE_REDIS_URL: the queue they share), its own spool.
  WORKER_METRICS_PORT="$METRICS_PORT" SPOOL_DIR="$WORKER_STATE_DIR/spool" STORAGE_DIR="$WORKER_STATE_DIR/uploads" \
    $DETACH nohup "$VENV/bin/hazard-worker" </dev/null >>"$WORKER_LOG_FILE" 2>&1 &
  WORKER_PID=$!
  echo "$WORKER_PID" >"$WORKER_PID_FILE"
  record_env "$WORKER_ENV_FILE" "WORKER_METRICS_PORT=$METRICS_PORT" "REDIS_URL=$REDIS_URL"
  log "worker started (pid $WORKER_PID), logs in $WORKER_LOG_FILE; waiting for its model on $METRICS_URL"
}

wait_worker_ready() {
  local pid="$1" i
  for ((i = 0; i < READY_TIMEOUT * 4; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$WORKER_PID_FILE" "$WORKER_ENV_FILE"
      log_tail "$WORKER_LOG_FILE"
      fail "worker (pid $pid) exited during start"
    fi
    if worker_model_ready; then
      log "worker ready (pid $pid): model warm, taking frames; metrics on $METRICS_URL"
      return 0
    fi
    sleep 0.25
  done
  stop_worker
  log_tail "$WORKER_LOG_FILE"
  fail "worker's model was not ready within ${READY_TIMEOUT}s (hazard_model_ready on $METRICS_URL)"
}

# SIGTERM: the worker takes no new frame, finishes the ones in hand (WORKER_SHUTDOWN_SECONDS) and leaves the
# rest queued; SIGKILL only past $WORKER_STOP_TIMEOUT (its frames in hand are then retried by SAQ's sweep).
stop_worker() {
  local pid
  if ! pid="$(live_pid "$WORKER_PID_FILE")"; then
    rm -f "$WORKER_PID_FILE" "$WORKER_ENV_FILE"
    log "worker not running"
    return 0
  fi
  log "stopping worker (pid $pid): SIGTERM, waiting up to ${WORKER_STOP_TIMEOUT}s for the frames in hand"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_for_exit "$pid" "$WORKER_STOP_TIMEOUT"; then
    log "worker (pid $pid) still running after ${WORKER_STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_for_exit "$pid" 5 || true
  fi
  rm -f "$WORKER_PID_FILE" "$WORKER_ENV_FILE"
  log "worker stopped"
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
  resolve_worker if-running
  if live_pid "$WORKER_PID_FILE" >/dev/null && [ -f "$WORKER_ENV_FILE" ]; then
    running="$(recorded_in "$WORKER_ENV_FILE" WORKER_METRICS_PORT)"
    if [ "$running" != "$METRICS_PORT" ]; then
      fail "worker already running with metrics on port $running; 'make down' first, or 'make restart-worker WORKER_METRICS_PORT=$METRICS_PORT'"
    fi
  fi
  ./scripts/ensure-redis.sh
  # The worker first: its model loads while the API starts; `up` returns when both are ready.
  launch_worker
  start_api
  wait_worker_ready "$WORKER_PID"
}

# The API first (no new frames reach the queue), then the worker (its frames in hand finish), then Redis.
cmd_down() {
  resolve_address always
  resolve_worker always
  stop_api
  stop_worker
  stop_owned_redis
}

cmd_restart_web() {
  resolve_address always
  stop_api
  start_api
}

# Only the worker: the API keeps serving (live frames in remote mode wait in the queue, up to their deadline).
cmd_restart_worker() {
  resolve_address always
  resolve_worker always
  stop_worker
  launch_worker
  wait_worker_ready "$WORKER_PID"
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
  log "  INFERENCE_MODE=${INFERENCE_MODE:-local} EMBEDDED_WORKER=$EMBEDDED_WORKER FLEET_NAME=${FLEET_NAME:-default}"
  resolve_worker always
  if pid="$(live_pid "$WORKER_PID_FILE")"; then
    log "worker: running (pid $pid), metrics on $METRICS_URL"
    if worker_model_ready; then
      log "  model ready -> yes (taking frames)"
    else
      log "  model ready -> no (loading or failed: see $WORKER_LOG_FILE)"
    fi
  else
    [ -f "$WORKER_PID_FILE" ] && log "worker: stale pid file $WORKER_PID_FILE (process gone)"
    log "worker: not running"
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
  local files=() file
  for file in "$LOG_FILE" "$WORKER_LOG_FILE"; do
    if [ -f "$file" ]; then files+=("$file"); fi
  done
  [ "${#files[@]}" -gt 0 ] || fail "no log yet at $LOG_FILE (start the stack with 'make up')"
  exec tail -n "${LOG_LINES:-100}" -F "${files[@]}"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  logs) cmd_logs ;;
  restart-web) cmd_restart_web ;;
  restart-worker) cmd_restart_worker ;;
  *) fail "usage: $0 up|down|status|logs|restart-web|restart-worker" ;;
esac
