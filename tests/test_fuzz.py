"""A coverage-guided fuzz run of the frame path and the handshake path, with a fixed budget.

The targets and what each checks are in :mod:`tests.fuzz_targets`: the frame
path is ``Protocol.receive`` for both roles, with and without
permessage-deflate, any bytes cut into any reads (only the events it
documents come out, never more than one per input byte, no message over the
read limit, nothing after the end, and without compression the same events
as ``Protocol(fast=False)``); the handshake path is ``read_head``, ``check_request``
and the response builders on the server's side, ``read_response`` and
``check_response`` on the client's (only ``HandshakeError`` comes out).

Two drivers, both deterministic:

* atheris (libFuzzer, coverage-guided), in a subprocess per target, from the
  seeds in ``fuzz_targets.seeds()``, libFuzzer seed 1, a fixed number of runs,
  10 s per input before it counts as a hang, 1 GiB of memory; with
  PYTHONHASHSEED fixed and libFuzzer's time-dependent parts off, two runs
  try the same inputs (checked: the same corpus, byte for byte). atheris
  ships wheels for Linux x86-64 only (setup.cfg's test extra installs it
  there); elsewhere that test skips.
* hypothesis, in-process: the same seeds, mutated (bytes flipped, inserted,
  deleted, repeated, cut), a fixed number of examples per target. It runs
  everywhere, and is what stands in for atheris where atheris can't.

Budget and result when this was written (on a 2-core machine shared with
other test runs): atheris 20,000 runs of the frame path and 10,000 of each
handshake side, 25 to 45 s in all; hypothesis 1,000 examples per target,
about 10 s; 0 crashes, 0 hangs on Pythons 3.10 (atheris 2.3.0), 3.11, 3.12
and 3.13 (atheris 3.0.0). A longer run on 3.11 (the commands below, libFuzzer
seed 7, inputs up to 8 KiB, entropic schedule on): 300,000 runs of the frame
path (305 s), 200,000 of the server side (29 s) and of the client side
(80 s), 0 crashes, 0 hangs, at most 61 MB resident. A crash leaves its input
in ./crash-*; pass that file instead of the corpus to replay it::

    .venv/py3.11/bin/python -m tests.fuzz_targets seeds /tmp/corpus
    .venv/py3.11/bin/python -m tests.fuzz_targets protocol /tmp/corpus/protocol -runs=300000 -seed=7 -max_len=8192
    .venv/py3.11/bin/python -m tests.fuzz_targets server /tmp/corpus/server -runs=200000 -seed=7 -max_len=8192
    .venv/py3.11/bin/python -m tests.fuzz_targets client /tmp/corpus/client -runs=200000 -seed=7 -max_len=8192
"""

from __future__ import annotations

import email.message
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threadws import handshake
from threadws.exceptions import HandshakeError

from . import fuzz_targets

ROOT = Path(__file__).resolve().parent.parent
#: libFuzzer runs per target: what CI pays for (see the module docstring).
RUNS = {"protocol": 20_000, "server": 10_000, "client": 10_000}
#: Where setup.cfg's test extra installs atheris (its wheels' platforms).
HAS_ATHERIS_WHEEL = sys.platform == "linux" and platform.machine() == "x86_64" and sys.version_info < (3, 14)

SEEDS: dict[str, list[bytes]] = {}
for _target, _data in fuzz_targets.seeds():
    SEEDS.setdefault(_target, []).append(_data)


@pytest.mark.parametrize("target", sorted(SEEDS))
def test_every_seed_passes(target):
    """The starting inputs are valid and reach deep: each must pass every check as it is."""
    for data in SEEDS[target]:
        fuzz_targets.TARGETS[target](data)


@pytest.mark.skipif(not HAS_ATHERIS_WHEEL, reason="atheris has wheels for Linux x86-64 and Python < 3.14 only")
@pytest.mark.parametrize("target", sorted(RUNS))
def test_atheris(target, tmp_path):
    """libFuzzer's run over one target ends with its budget spent: no crash, no hang, no runaway memory."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, data in enumerate(SEEDS[target]):
        (corpus / f"seed-{i}").write_bytes(data)
    command = [
        sys.executable,
        "-m",
        "tests.fuzz_targets",
        target,
        f"-runs={RUNS[target]}",
        "-seed=1",
        # libFuzzer's two clocks: re-reading the corpus folder every second, and
        # the entropic schedule (it weighs inputs by how long they ran). Without
        # them the same seed gives the same run, input for input.
        "-reload=0",
        "-entropic=0",
        "-max_len=4096",
        "-timeout=10",  # seconds one input may take before it is a hang
        "-rss_limit_mb=1024",
        f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
        str(corpus),
    ]
    # PYTHONHASHSEED: the same set and dict orders, so the same coverage, so the same run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    log = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("INFO: Instrumenting"))
    artifacts = sorted(p.name for p in tmp_path.iterdir() if p.name != "corpus")
    assert result.returncode == 0 and not artifacts, f"{artifacts}\n{log[-6000:]}"
    done = re.search(r"Done (\d+) runs", log)
    assert done and int(done.group(1)) == RUNS[target], log[-3000:]


# --- the same targets under hypothesis -------------------------------------------------

INTERESTING = [b"\x00", b"\x7e", b"\x7f", b"\x80", b"\xff", b"\r\n", b"\r\n\r\n", b":", b",", b";", b"="]


@st.composite
def mutated(draw: st.DrawFn, target: str) -> bytes:
    """One of *target*'s seeds with a few random edits."""
    data = bytearray(draw(st.sampled_from(SEEDS[target])))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 5))
        at = draw(st.integers(0, len(data)))
        if op == 0 and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            data[at:at] = draw(st.one_of(st.binary(min_size=1, max_size=16), st.sampled_from(INTERESTING)))
        elif op == 2:
            del data[at : at + draw(st.integers(1, 64))]
        elif op == 3:
            size = draw(st.integers(1, 64))
            data[at:at] = data[at : at + size] * draw(st.integers(1, 4))
        elif op == 4:
            del data[at:]
        elif at < len(data):
            data[at] = draw(st.integers(0, 255))
    return bytes(data[:8192])


@pytest.mark.parametrize("target", sorted(RUNS))
def test_hypothesis(target):
    @settings(
        max_examples=1000,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutated(target))
    def run(data: bytes) -> None:
        fuzz_targets.TARGETS[target](data)

    run()


# --- what building the targets turned up ------------------------------------------------


def _upgrade_headers() -> email.message.Message:
    headers = email.message.Message()
    for name, value in [
        ("Host", "example.com"),
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]:
        headers[name] = value
    return headers


def test_check_request_refuses_a_version_with_superscript_digits():
    # str.isdigit() is true for "²", which int() refuses: the check takes ASCII digits only.
    with pytest.raises(HandshakeError) as info:
        handshake.check_request("GET", "HTTP/\u00b2.1", _upgrade_headers())
    assert info.value.status == 400


def test_check_request_version_numbers():
    headers = _upgrade_headers()
    for version in ("HTTP/1.1", "HTTP/1.10", "HTTP/2.0", "HTTP/10.0"):
        assert handshake.check_request("GET", version, headers).accept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    for version in ("HTTP/1.0", "HTTP/0.9", "HTTP/1", "HTTP/1.", "HTTP/.1", "HTTP/1.1.1", "HTTPS/1.1", "http/1.1", ""):
        with pytest.raises(HandshakeError) as info:
            handshake.check_request("GET", version, headers)
        assert info.value.status == 400
