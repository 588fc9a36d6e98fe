"""A real redis-server (Debian's package, installed by tests/run.sh) on a free loopback port.

Nothing is saved to disk (``--save '' --appendonly no``) and nothing but
loopback is listened on. A test that stops Redis mid-run makes its own with
:func:`RedisServer`, kills it and starts it again on the same port; the
others share the session's (the ``redis_server`` fixture in conftest.py)
and keep apart by using hub names of their own.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from .polling import poll

REDIS_SERVER = "redis-server"
START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process: :meth:`start`, :meth:`kill`, :meth:`start` again on the same port."""

    def __init__(self) -> None:
        binary = shutil.which(REDIS_SERVER)
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `bash tests/run.sh` (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="threadws-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers PING (raises after START_TIMEOUT)."""
        assert self.proc is None, "already running"
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.dir), "--daemonize", "no"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        proc = self.proc
        # Until it answers PING, or exits.
        if not poll(lambda: proc.poll() is not None or _pong(self.port), START_TIMEOUT) or proc.poll() is not None:
            self.kill()
            raise RuntimeError(f"redis-server did not start: {(self.dir / 'redis.log').read_text()[-2000:]}")

    def kill(self) -> None:
        """Stop it at once (SIGKILL): its clients see their connections reset."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)  # in case a test froze it
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing is answered (a host gone silent)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        # The signal is delivered asynchronously.
        assert poll(lambda: self._state() == "T", START_TIMEOUT), f"redis-server not stopped: state {self._state()}"

    def _state(self) -> str:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
