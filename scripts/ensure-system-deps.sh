#!/usr/bin/env bash
# Installs the Debian packages the project needs when they are missing: redis-server, curl, python3-venv, chromium,
# postgresql and PostGIS for it; and unpacks Debian's prometheus (server and promtool, for tests/system/monitoring) into
# var/tools/prometheus.
set -euo pipefail

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

# Unpacked, not installed: the package's postinst would start a server on :9090 (and recommends node-exporter).
prometheus_root="$(cd "$(dirname "$0")/.." && pwd)/var/tools/prometheus"
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$prometheus_root/usr/bin/promtool" ]; then
  echo "unpacking Debian's prometheus into $prometheus_root"
  download=$(mktemp -d)
  chmod 777 "$download"  # apt's _apt user writes the download there
  (cd "$download" && apt-get download prometheus) || { $sudo apt-get update && (cd "$download" && apt-get download prometheus); }
  mkdir -p "$prometheus_root"
  dpkg -x "$download"/prometheus_*.deb "$prometheus_root"
  rm -rf "$download"
fi

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)  # scripts/stack.sh probes the API with it
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# The control center's browser tests drive Debian's Chromium through Playwright (never `playwright install`).
[ -x /usr/bin/chromium ] || missing+=(chromium)
# The registry's tests start a private PostgreSQL on a free port (tests/support/postgres_process.py); Debian keeps
# initdb and pg_ctl off the PATH, under /usr/lib/postgresql/N/bin. The cluster the package starts on 5432 is unused.
command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing missing system packages: ${missing[*]}"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
fi

# PostGIS for the PostgreSQL the tests start (the newest installed, as tests/support/postgres_process.py picks): the
# registry's migration adds a geometry column where the server has it. Only extension files and libraries (its
# postinst starts nothing); without recommends, which would add the command-line tools and documentation.
pg_major=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n 1)
if [ -n "$pg_major" ] && [ ! -f "/usr/share/postgresql/$pg_major/extension/postgis.control" ]; then
  echo "installing PostGIS for PostgreSQL $pg_major"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "postgresql-$pg_major-postgis-3" ||
    { $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends \
      "postgresql-$pg_major-postgis-3"; }
fi
