#!/usr/bin/env bash
# Install Debian's nginx for the deployment tests (idempotent, quiet).
#
# Usage: bash tests/peers/install_nginx.sh
#
# Does nothing when an nginx binary is already on PATH or in /usr/sbin.
# The tests never use the system's nginx service: they start their own nginx in
# the foreground on free loopback ports, with a config and logs in a temporary
# directory. So the package's post-install step must not start the service
# either (it would take port 80): unless the machine already forbids that (as
# Docker images do with /usr/sbin/policy-rc.d), a policy-rc.d is put in place
# for the install and removed afterwards.
set -euo pipefail

if command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_nginx: apt-get not found; install nginx so that /usr/sbin/nginx exists" >&2
    exit 2
fi

SUDO=""
if [[ "$(id -u)" != "0" ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_nginx: need root (or passwordless sudo) to apt-get install nginx" >&2
        exit 2
    fi
fi

POLICY=/usr/sbin/policy-rc.d
if [[ ! -e "$POLICY" ]]; then
    trap '$SUDO rm -f "$POLICY"' EXIT
    printf '#!/bin/sh\n# installed by threadws tests/peers/install_nginx.sh for the install only\nexit 101\n' \
        | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_nginx: apt-get install nginx" >&2
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends nginx >/dev/null
/usr/sbin/nginx -v
