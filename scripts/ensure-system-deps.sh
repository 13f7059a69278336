#!/usr/bin/env bash
# Installs the Debian packages the project needs when they are missing: redis-server, curl, python3-venv, chromium,
# postgresql, GStreamer's RTSP server (tests/support/rtsp_source.py); and unpacks Debian's prometheus (server and
# promtool, for tests/system/monitoring) and caddy (the HTTPS front, for tests/system/test_https_front.py) into
# var/tools/<package>.
set -euo pipefail

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

# unpack PACKAGE BINARY: Debian's PACKAGE extracted into var/tools/PACKAGE (never installed: no postinst, no service
# started) unless BINARY is on the PATH or already unpacked there.
tools="$(cd "$(dirname "$0")/.." && pwd)/var/tools"
unpack() {
  local package=$1 binary=$2 root="$tools/$1"
  if command -v "$binary" >/dev/null 2>&1 || [ -x "$root/usr/bin/$binary" ]; then
    return 0
  fi
  echo "unpacking Debian's $package into $root"
  local download
  download=$(mktemp -d)
  chmod 777 "$download"  # apt's _apt user writes the download there
  (cd "$download" && apt-get download "$package") || { $sudo apt-get update && (cd "$download" && apt-get download "$package"); }
  mkdir -p "$root"
  dpkg -x "$download/${package}"_*.deb "$root"
  rm -rf "$download"
}
# prometheus' postinst would start a server on :9090 (and it recommends node-exporter).
unpack prometheus promtool
# The HTTPS front of deploy/caddy/Caddyfile (tests/system/test_https_front.py): caddy's postinst would start a
# server on :80 and :443.
unpack caddy caddy

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)  # scripts/stack.sh probes the API with it
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
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing missing system packages: ${missing[*]}"
$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
