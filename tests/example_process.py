"""Running an example server the way a reader would: a subprocess that prints its URL first."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 15.0


@dataclass
class ExampleServer:
    proc: subprocess.Popen[bytes]
    url: str  # the page, as printed: http://127.0.0.1:PORT/
    stderr_path: Path

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc

    def ws_url(self, path: str = "/ws") -> str:
        return f"ws://{self.netloc}{path}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def example_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _first_line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no complete line from the server in time; got {data!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"the server exited (code {proc.wait(5)}) before printing its URL; got {data!r}")
            data += chunk
    return data.split(b"\n", 1)[0].decode()


@contextmanager
def run_example(script: Path, args: Sequence[str], stderr_path: Path) -> Iterator[ExampleServer]:
    """Start ``python script --host 127.0.0.1 --port 0 args...``; kill it and its children at the end."""
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), "--host", "127.0.0.1", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=example_env(),
            bufsize=0,
            start_new_session=True,  # its own process group: killing it takes the commands it runs too
        )
    try:
        line = _first_line(proc, time.monotonic() + STARTUP_TIMEOUT)
        match = re.search(r"http://\S+", line)
        assert match, f"no URL in the server's first line: {line!r}"
        url = match.group(0)
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1" and parts.port not in (None, 0) and parts.path == "/", url
        yield ExampleServer(proc, url, stderr_path)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
