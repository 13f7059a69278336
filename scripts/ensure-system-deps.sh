#!/usr/bin/env bash
# Installs the Debian packages the project needs when they are missing: redis-server, curl, python3-venv, chromium,
# postgresql, iproute2; and unpacks Debian's prometheus (server and promtool, for tests/system/monitoring) into
# var/tools/prometheus and Debian's haproxy (for the rehearsal) into var/tools/haproxy.
set -euo pipefail

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

tools="$(cd "$(dirname "$0")/.." && pwd)/var/tools"

# unpack DIR PACKAGE...: Debian packages unpacked (dpkg -x) into var/tools/DIR, not installed.
unpack() {
  local root="$tools/$1" download
  shift
  echo "unpacking Debian's $* into $root"
  download=$(mktemp -d)
  chmod 777 "$download"  # apt's _apt user writes the download there
  (cd "$download" && apt-get download "$@") || { $sudo apt-get update && (cd "$download" && apt-get download "$@"); }
  mkdir -p "$root"
  for deb in "$download"/*.deb; do dpkg -x "$deb" "$root"; done
  rm -rf "$download"
}

# Unpacked, not installed: the package's postinst would start a server on :9090 (and recommends node-exporter).
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$tools/prometheus/usr/bin/promtool" ]; then
  unpack prometheus prometheus
fi
# The multi-host rehearsal (`make rehearsal`) puts HAProxy in front of the API replicas. Unpacked with the two
# libraries it needs that a base system lacks (run with LD_LIBRARY_PATH=var/tools/haproxy/usr/lib/x86_64-linux-gnu):
# its postinst would start a haproxy service of its own.
if [ ! -x "$tools/haproxy/usr/sbin/haproxy" ]; then
  unpack haproxy haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1
fi

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)  # the rehearsal's network namespaces  # scripts/stack.sh probes the API with it
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# The control center's browser tests drive Debian's Chromium through Playwright (never `playwright install`).
[ -x /usr/bin/chromium ] || missing+=(chromium)
# The registry's tests start a private PostgreSQL on a free port (tests/support/postgres_process.py); Debian keeps
# initdb and pg_ctl off the PATH, under /usr/lib/postgresql/N/bin. The cluster the package starts on 5432 is unused.
command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing missing system packages: ${missing[*]}"
$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
