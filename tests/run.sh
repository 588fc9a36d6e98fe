#!/usr/bin/env bash
# Install threadws and everything its tests need, then run the whole test suite.
#
#   bash tests/run.sh                      # with python3
#   bash tests/run.sh --python python3.12  # with another interpreter
#   bash tests/run.sh -k close -x          # extra arguments go to pytest
#   THREADWS_NO_SPEEDUPS=1 bash tests/run.sh  # the same on the pure-Python masking
#
# Each interpreter gets its own virtualenv under .venv/ (reused on later runs).
set -euo pipefail
cd "$(dirname "$0")/.."

python=python3
if [ "${1:-}" = "--python" ]; then
    python=$2
    shift 2
fi
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=".venv/py$version"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# The extras give lower bounds; tests/constraints.txt pins the exact versions CI tests.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c tests/constraints.txt -e '.[test,docs]'
# The editable install builds the C masking (threadws/_speedups.c) in place when a
# compiler works; pip --quiet hides the build log, so say here which path is in use
# (tests/test_speedups.py fails if a compiler exists but the extension wasn't built).
"$venv/bin/python" -c 'from threadws import _frames; print("== threadws masks in", "C (threadws._speedups)" if _frames.SPEEDUPS else "pure Python")'

# Real peers for the interop tests: Node.js (for the `ws` package, which the
# tests install with npm ci), headless Chromium and tinyproxy, all from Debian's
# packages (pproxy, the SOCKS5 proxy, comes from PyPI with the test extra).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
bash tests/peers/install_browser.sh
# nginx for the deployment tests (tests/test_deploy_nginx.py), from Debian's package.
bash tests/peers/install_nginx.sh
# An HTTP CONNECT proxy for the proxy interop tests (the binary only: no service).
if ! command -v tinyproxy >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq tinyproxy-bin >/dev/null
fi
# A real Redis for the Hub backplane tests (tests/redis_server.py starts its own
# redis-server processes on free loopback ports; the package's service is not used).
if ! command -v redis-server >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

echo "== pytest on Python $version"
exec "$venv/bin/python" -m pytest "$@"
