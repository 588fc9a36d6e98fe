#!/usr/bin/env bash
# Install threadws and everything its tests need, then run the whole test suite.
#
#   bash tests/run.sh                      # with python3
#   bash tests/run.sh --python python3.12  # with another interpreter
#   bash tests/run.sh -k close -x          # extra arguments go to pytest
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
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'

for setup in tests/peers/setup.sh; do
    if [ -f "$setup" ]; then
        bash "$setup"
    fi
done

echo "== pytest on Python $version"
exec "$venv/bin/python" -m pytest "$@"
