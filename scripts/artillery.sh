#!/usr/bin/env bash
# The pinned Artillery (artillery/package-lock.json; scripts/ensure-artillery.sh installs it when missing), run
# offline: telemetry off and its client stubbed (artillery/offline.cjs), so a run sends nothing but its own requests.
#   scripts/artillery.sh run --target http://127.0.0.1:8000 artillery/smoke.yml
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
binary=$("$root/scripts/ensure-artillery.sh")
export ARTILLERY_DISABLE_TELEMETRY=true
export NODE_OPTIONS="--require=$root/artillery/offline.cjs${NODE_OPTIONS:+ $NODE_OPTIONS}"
exec "$binary" "$@"
