#!/usr/bin/env bash
# Installs the Artillery that artillery/package-lock.json pins into var/tools/artillery (`npm ci`, no install scripts,
# so no Playwright browser download), unless that exact lock is installed there already. Without npm it installs
# Debian's nodejs and npm first. Prints the artillery command's path last.
#   scripts/ensure-artillery.sh    # scripts/artillery.sh runs it first, then Artillery offline
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="$root/var/tools/artillery"
binary="$target/node_modules/.bin/artillery"
stamp="$target/installed.lock.json"  # the lock of the last install that finished

if [ -x "$binary" ] && cmp -s "$root/artillery/package-lock.json" "$stamp"; then
  echo "$binary"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing Debian's nodejs and npm" >&2
  $sudo apt-get update >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y nodejs npm >&2
fi

echo "installing Artillery (artillery/package-lock.json) into $target" >&2
rm -f "$stamp"
mkdir -p "$target"
cp "$root/artillery/package.json" "$root/artillery/package-lock.json" "$target/"
(cd "$target" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
cp "$root/artillery/package-lock.json" "$stamp"
echo "$binary"
