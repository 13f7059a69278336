#!/usr/bin/env bash
# Installs the Debian packages the project needs when they are missing: redis-server, curl, python3-venv, chromium,
# postgresql, GStreamer's RTSP server; and unpacks Debian's prometheus (server and promtool, for tests/system/monitoring) into
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
# `hazard stream rtsp://...` is tested against GStreamer's RTSP server (tests/support/rtsp_source.py), driven from the
# system Python; it only serves while a test runs it.
/usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' >/dev/null 2>&1 ||
  missing+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing missing system packages: ${missing[*]}"
$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
