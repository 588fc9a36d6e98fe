#!/usr/bin/env bash
# Install the Autobahn|Testsuite 0.8.2 (`wstest`) into a cached Python 2.7
# virtualenv outside the git tree, and print the path of `wstest`.
#
#   tests/autobahn/install.sh            # install if needed, print wstest path
#   tests/autobahn/install.sh --force    # wipe the cached virtualenv first
#
# Environment:
#   THREADWS_AUTOBAHN_HOME  cache directory (default ~/.cache/threadws/autobahn)
#   THREADWS_PYTHON27       explicit Python 2.7 interpreter to use
#
# stdout carries exactly one line: the absolute path of wstest.  Progress and
# errors go to stderr.  Exit codes: 0 ok, 2 no Python 2.7, 1 anything else.
# Idempotent: when the stamp in the virtualenv matches the pinned package list
# (requirements-py27.txt) and the interpreter, nothing is downloaded.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQS="$HERE/requirements-py27.txt"
AB_HOME="${THREADWS_AUTOBAHN_HOME:-$HOME/.cache/threadws/autobahn}"
VENV="$AB_HOME/venv-0.8.2"
BOOTSTRAP="$AB_HOME/bootstrap-virtualenv"
VIRTUALENV_PIN="virtualenv==16.7.12"   # last line that runs on and creates 2.7
STAMP="$VENV/.threadws-autobahn-stamp"
WSTEST="$VENV/bin/wstest"

FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument: $arg" >&2; exit 1 ;;
    esac
done

log() { echo "[autobahn/install] $*" >&2; }
die() { echo "[autobahn/install] ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- Python 2.7
is_py27() {
    # A pyenv shim for python2.7 may exist on PATH without the version being
    # selected; it then fails to run, so really run every candidate.
    [ -n "$1" ] && "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' \
        >/dev/null 2>&1
}

find_python27() {
    local cand
    if [ -n "${THREADWS_PYTHON27:-}" ]; then
        if is_py27 "$THREADWS_PYTHON27"; then echo "$THREADWS_PYTHON27"; return 0; fi
        log "THREADWS_PYTHON27=$THREADWS_PYTHON27 is not a working Python 2.7"
    fi
    if command -v pyenv >/dev/null 2>&1; then
        local root
        root="$(pyenv root 2>/dev/null || true)"
        if [ -n "$root" ] && [ -d "$root/versions" ]; then
            # newest 2.7.x first
            for cand in $(ls -1 "$root/versions" 2>/dev/null | grep -E '^2\.7(\.[0-9]+)?$' | sort -t. -k3,3nr); do
                if is_py27 "$root/versions/$cand/bin/python"; then
                    echo "$root/versions/$cand/bin/python"; return 0
                fi
            done
        fi
    fi
    for cand in python2.7 python2; do
        if command -v "$cand" >/dev/null 2>&1 && is_py27 "$(command -v "$cand")"; then
            # resolve a pyenv shim to the real interpreter when possible
            "$(command -v "$cand")" -c 'import sys; print(sys.executable)'; return 0
        fi
    done
    return 1
}

if ! PY27="$(find_python27)"; then
    cat >&2 <<'EOF'
[autobahn/install] ERROR: Python 2.7 is required for the Autobahn Testsuite
(autobahntestsuite 0.8.2 runs only on Python 2.7) and was not found.
Looked at: $THREADWS_PYTHON27, pyenv versions 2.7.*, python2.7 and python2 on PATH.
Install one, e.g. `pyenv install 2.7.18`, or point THREADWS_PYTHON27 at it.
EOF
    exit 2
fi

# ------------------------------------------------------------- fast path
# The stamp ties the venv to the interpreter and the exact pinned list.
want_stamp="$( { echo "python=$PY27"; echo "virtualenv=$VIRTUALENV_PIN"; cat "$REQS"; } \
    | sha256sum | cut -d' ' -f1)"

installed() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] && [ -x "$WSTEST" ] \
        && [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import autobahntestsuite' >/dev/null 2>&1
}

if [ "$FORCE" = 0 ] && installed; then
    echo "$WSTEST"
    exit 0
fi

# ------------------------------------------------------------- slow path
mkdir -p "$AB_HOME"
# Serialise concurrent installers (e.g. parallel test workers).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$AB_HOME/.install.lock"
    flock 9
    # someone else may have finished while we waited
    if [ "$FORCE" = 0 ] && installed; then echo "$WSTEST"; exit 0; fi
fi

start=$(date +%s)
log "using Python 2.7 at $PY27"
log "installing into $VENV"

export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1
export PYTHONWARNINGS=ignore

rm -rf "$VENV"

# Python 2.7 has no `venv` module; use an old virtualenv kept in a private
# --target directory so nothing is installed into the interpreter itself.
if ! PYTHONPATH="$BOOTSTRAP" "$PY27" -c 'import virtualenv' >/dev/null 2>&1; then
    rm -rf "$BOOTSTRAP"
    log "bootstrapping $VIRTUALENV_PIN"
    "$PY27" -m pip --version >/dev/null 2>&1 \
        || die "$PY27 has no pip module (try: $PY27 -m ensurepip)"
    "$PY27" -m pip install -q --no-warn-script-location --target "$BOOTSTRAP" "$VIRTUALENV_PIN" >&2 \
        || die "could not install $VIRTUALENV_PIN with $PY27 -m pip"
fi
# --no-download: use the pip 20.3.4 / setuptools 44.1.1 / wheel 0.36.2 wheels
# that ship inside virtualenv 16.7.12 (the last releases that support 2.7).
PYTHONPATH="$BOOTSTRAP" "$PY27" -m virtualenv -q --no-download -p "$PY27" "$VENV" >&2 \
    || die "virtualenv creation failed"

# Exact set, no resolver surprises; `pip check` proves the list is complete.
# wsaccel and zope.interface compile C code: gcc and Python 2.7 headers are
# needed (a pyenv-built 2.7 always has its headers).
if ! "$VENV/bin/pip" install -q --no-deps --no-warn-script-location -r "$REQS" >&2; then
    die "pip install of the pinned set failed (see above); wsaccel/zope.interface need gcc and Python.h"
fi
"$VENV/bin/pip" check >&2 || die "pip check failed: requirements-py27.txt is incomplete"

# Verify the entry point really works.
if ! "$WSTEST" --help >/dev/null 2>"$AB_HOME/wstest-help.err"; then
    cat "$AB_HOME/wstest-help.err" >&2
    die "'wstest --help' failed"
fi
"$VENV/bin/python" -c 'import wsaccel' >/dev/null 2>&1 \
    || log "warning: wsaccel missing; 9.* performance cases will be slow"

echo "$want_stamp" > "$STAMP"
log "done in $(( $(date +%s) - start ))s: $("$WSTEST" -a 2>/dev/null | tr '\n' ' ')"
echo "$WSTEST"
