#!/usr/bin/env bash
# Make sure the system Chromium that the report's browser test drives is installed.
# Idempotent: does nothing when /usr/bin/chromium exists. Playwright's own browser download is not
# used; its Python wheel ships the node driver, so Debian's `chromium` package is all it needs.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "error: /usr/bin/chromium is missing and installing it needs root (or sudo)" >&2
    exit 1
fi

echo "== installing chromium (Debian package) for the report's browser test" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

if [ ! -x /usr/bin/chromium ]; then
    echo "error: apt-get installed chromium but /usr/bin/chromium is still missing" >&2
    exit 1
fi
/usr/bin/chromium --version >&2
