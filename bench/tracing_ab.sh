#!/usr/bin/env bash
# Tracing off vs on, alternating: a fresh server each run (own Redis on REDIS_PORT), exporting to bench/otlp_sink.py
# when on; CPU seconds of the server per answered frame (/proc/<pid>/stat) at RATE frames/s for SECS seconds.
#   bench/tracing_ab.sh                                  # every frame traced when on
#   ON_ENV="OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1" bench/tracing_ab.sh
# docs/PERFORMANCE.md "Tracing". Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-40} SECS=${SECS:-25} ROUNDS=${ROUNDS:-3} REDIS_PORT=${REDIS_PORT:-16391} API_PORT=${API_PORT:-18011}
SINK_PORT=${SINK_PORT:-14318} PY=.venv/bin/python
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
$PY -m bench.otlp_sink --port "$SINK_PORT" &
sink=$!
trap 'kill -INT $sink 2>/dev/null; redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true' EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for round in $(seq "$ROUNDS"); do
  for mode in off on; do
    env_args=(REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" LOG_LEVEL=WARNING)
    if [ "$mode" = on ]; then
      # shellcheck disable=SC2206  # ON_ENV is a list of NAME=value words
      env_args+=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" ${ON_ENV:-})
    fi
    env "${env_args[@]}" $PY -m app --host 127.0.0.1 --port "$API_PORT" >/dev/null 2>&1 &
    api=$!
    for _ in $(seq 240); do curl -sf "http://127.0.0.1:$API_PORT/health/ready" >/dev/null && break; sleep 0.5; done
    $PY -m bench.load --url "http://127.0.0.1:$API_PORT" --rate 10 --seconds 5 --out /tmp/tracing_ab-warm.json >/dev/null
    before=$(cpu_ticks $api)
    $PY -m bench.load --url "http://127.0.0.1:$API_PORT" --rate "$RATE" --seconds "$SECS" \
      --out "/tmp/tracing_ab-$mode.json" >/dev/null
    after=$(cpu_ticks $api)
    kill $api
    wait $api || true
    $PY - "$mode" "$round" "$before" "$after" <<'PY'
import json, os, sys
mode, rnd, before, after = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
run = json.load(open(f"/tmp/tracing_ab-{mode}.json"))["runs"][0]
answered = run["statuses"].get("200", 0)
cpu_ms = 1000 * (after - before) / os.sysconf("SC_CLK_TCK") / max(answered, 1)
print(f"round {rnd} {mode}: {answered} answered, CPU per frame {cpu_ms:.2f} ms, P50 {run['latency_ms']['p50']} ms")
PY
  done
done
