#!/usr/bin/env bash
# Install headless Chromium + chromedriver from Debian packages (idempotent).
#
# Usage: bash tests/peers/install_browser.sh
#
# Does nothing when /usr/bin/chromium and /usr/bin/chromedriver both exist.
# Otherwise runs `apt-get update` (once) and installs Debian's `chromium` and
# `chromium-driver`.  Needs root (or passwordless sudo).  Selenium itself is
# installed by the test requirements (pip), not here.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

if [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; then
    echo "install_browser: chromium and chromedriver already present" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: apt-get not found; install chromium and chromedriver" \
         "so that $CHROMIUM and $CHROMEDRIVER exist" >&2
    exit 2
fi

SUDO=""
if [[ "$(id -u)" != "0" ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_browser: need root (or passwordless sudo) to apt-get install" \
             "chromium chromium-driver" >&2
        exit 2
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_browser: apt-get update" >&2
$SUDO apt-get update -q
echo "install_browser: apt-get install chromium chromium-driver" >&2
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver

for f in "$CHROMIUM" "$CHROMEDRIVER"; do
    if [[ ! -x "$f" ]]; then
        echo "install_browser: $f still missing after install" >&2
        exit 3
    fi
done
"$CHROMIUM" --version >&2 || true
"$CHROMEDRIVER" --version >&2 || true
