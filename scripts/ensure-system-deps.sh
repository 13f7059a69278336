#!/usr/bin/env bash
# Installs the Debian packages the project needs when they are missing: redis-server, curl, python3-venv, chromium,
# postgresql and PostGIS for it, iproute2, GStreamer's RTSP server (tests/support/rtsp_source.py); and unpacks
# Debian's prometheus (server and promtool, for tests/system/monitoring), caddy (the HTTPS front, for
# tests/system/test_https_front.py) and haproxy (the rehearsal's load balancer, tests/support/haproxy.py) into
# var/tools/<package>.
set -euo pipefail

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

# unpack PACKAGE BINARY [LIBRARY...]: Debian's PACKAGE (and the library packages it needs that a base system lacks)
# extracted into var/tools/PACKAGE (never installed: no postinst, no service started) unless BINARY is on the PATH or
# already unpacked there.
tools="$(cd "$(dirname "$0")/.." && pwd)/var/tools"
unpack() {
  local package=$1 binary=$2 root="$tools/$1"
  shift 2
  if command -v "$binary" >/dev/null 2>&1 || [ -x "$root/usr/bin/$binary" ] || [ -x "$root/usr/sbin/$binary" ]; then
    return 0
  fi
  echo "unpacking Debian's $package into $root"
  local download
  download=$(mktemp -d)
  chmod 777 "$download"  # apt's _apt user writes the download there
  (cd "$download" && apt-get download "$package" "$@") ||
    { $sudo apt-get update && (cd "$download" && apt-get download "$package" "$@"); }
  mkdir -p "$root"
  for deb in "$download"/*.deb; do dpkg -x "$deb" "$root"; done
  rm -rf "$download"
}
# prometheus' postinst would start a server on :9090 (and it recommends node-exporter).
unpack prometheus promtool
# The HTTPS front of deploy/caddy/Caddyfile (tests/system/test_https_front.py): caddy's postinst would start a
# server on :80 and :443.
unpack caddy caddy
# The rehearsal's load balancer (tests/support/haproxy.py, run with LD_LIBRARY_PATH=var/tools/haproxy/usr/lib/...):
# haproxy's postinst would start a service of its own; liblua5.3-0 and the opentracing wrapper are not on a base system.
unpack haproxy haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)  # scripts/stack.sh probes the API with it
command -v ip >/dev/null 2>&1 || missing+=(iproute2)  # the rehearsal's network namespaces
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# The control center's browser tests drive Debian's Chromium through Playwright (never `playwright install`).
[ -x /usr/bin/chromium ] || missing+=(chromium)
# The registry's tests start a private PostgreSQL on a free port (tests/support/postgres_process.py); Debian keeps
# initdb and pg_ctl off the PATH, under /usr/lib/postgresql/N/bin. The cluster the package starts on 5432 is unused.
command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
# `hazard stream rtsp://...` is tested against GStreamer's RTSP server (tests/support/rtsp_source.py), driven from the
# system Python; it only serves while a test runs it.
/usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' >/dev/null 2>&1 ||
  missing+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good)
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
