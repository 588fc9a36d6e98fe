"""Run an example server the way a reader would: as a subprocess that prints its URL."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _first_line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no line from the example in time; got {data!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"the example exited ({proc.wait(5)}) before printing its URL: {data!r}")
            data += chunk
    return data.split(b"\n", 1)[0].decode()


@contextmanager
def example_server(script: str, *args: str, timeout: float = 15.0) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start ``examples/<script>`` on a free port; yield (process, the http:// URL it printed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / script), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        line = _first_line(proc, time.monotonic() + timeout)
        match = re.search(r"http://[\w.\[\]:]+/", line)
        assert match, f"no URL in {line!r}"
        yield proc, match.group(0)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
