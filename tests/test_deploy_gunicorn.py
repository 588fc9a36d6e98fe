"""A graceful stop under a real gunicorn with several workers, as docs/howto/gunicorn.md describes it.

The app and the config are the docs' own files (``docs/deploy/app.py``,
``docs/deploy/gunicorn.conf.py``); only the address, the worker class and the
graceful timeout are set on the command line (which overrides the file). The
test sends SIGTERM to the arbiter, as ``systemctl stop`` does with
``KillMode=mixed``, and checks what each client saw and how long the stop took.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import threadws
from threadws import CloseCode

pytest.importorskip("gunicorn")
pytest.importorskip("flask")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "docs" / "deploy"
CONFIG = DEPLOY / "gunicorn.conf.py"
WORKERS = 2
GRACEFUL_TIMEOUT = 5
STARTUP_TIMEOUT = 30.0
# Keep --threads above it: under gthread each WebSocket on /echo holds a thread.
MAX_CONNECTIONS = 64


@dataclass
class Gunicorn:
    proc: subprocess.Popen[bytes]
    port: int
    log: bytearray

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def read_log(self, timeout: float) -> None:
        """Add to self.log what gunicorn wrote to stderr, until EOF or *timeout*."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.log += chunk

    def workers(self) -> set[int]:
        """The arbiter's children: its workers."""
        children = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    children.add(int(entry))
        return children

    def worker_of(self, conn: threadws.Conn) -> int | None:
        """Which worker process holds the server side of *conn* (from /proc/net/tcp and each worker's fds)."""
        client_port = conn.local_address[1]
        inode = None
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == self.port and int(remote.split(":")[1], 16) == client_port:
                inode = fields[9]
        for pid in self.workers():
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
                except OSError:
                    continue
        return None


@pytest.fixture
def gunicorn() -> Iterator[Callable[..., Gunicorn]]:
    started: list[Gunicorn] = []

    def start(*options: str) -> Gunicorn:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        command = [
            sys.executable, "-m", "gunicorn", *options, "--chdir", str(DEPLOY),
            "--bind", "127.0.0.1:0", "--workers", str(WORKERS), "--graceful-timeout", str(GRACEFUL_TIMEOUT),
            "--no-control-socket", "app:app",
        ]  # fmt: skip
        proc = subprocess.Popen(
            command, cwd=DEPLOY, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        server = Gunicorn(proc, 0, bytearray())
        started.append(server)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while (booted := server.log.count(b"Booting worker")) < WORKERS or not server.port:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gunicorn did not start; it wrote {bytes(server.log)!r}")
            server.read_log(0.5)
            if match := re.search(rb"Listening at: http://127\.0\.0\.1:(\d+)", server.log):
                server.port = int(match.group(1))
        assert booted == WORKERS
        return server

    try:
        yield start
    finally:
        for server in started:
            try:
                os.killpg(server.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.proc.wait(10)
            if server.proc.stderr is not None:
                server.proc.stderr.close()


def open_on_every_worker(server: Gunicorn, path: str) -> tuple[list[threadws.Conn], set[int]]:
    """Open connections until each worker holds at least one, or MAX_CONNECTIONS are open.

    Which worker accepts a connection is up to the kernel and rarely even:
    runs here needed 2 to 12 connections to reach both workers.
    """
    conns: list[threadws.Conn] = []
    holders: set[int] = set()
    while len(holders) < WORKERS and len(conns) < MAX_CONNECTIONS:
        conn = threadws.dial(server.url(path), timeout=10, ping_interval=None)
        conns.append(conn)
        conn.send("hello")
        assert conn.recv(timeout=10) == "hello"  # served: the server side exists now
        pid = server.worker_of(conn)
        assert pid is not None, "no worker holds the connection"
        holders.add(pid)
    return conns, holders


STOPS = [
    pytest.param("gthread", "/echo", id="gthread-on-the-request-thread"),
    pytest.param("gthread", "/echo-in-a-thread", id="gthread-handed-off"),
    pytest.param("sync", "/echo-in-a-thread", id="sync-handed-off"),
]


@pytest.mark.parametrize(("worker_class", "path"), STOPS)
def test_sigterm_closes_every_websocket_with_1001_and_exits_in_time(
    gunicorn: Callable[..., Gunicorn], worker_class: str, path: str
) -> None:
    server = gunicorn("--config", str(CONFIG), "--worker-class", worker_class)
    conns, holders = open_on_every_worker(server, path)
    assert holders == server.workers(), "some worker holds no connection: the test would prove less"

    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for conn in conns:
        with pytest.raises(threadws.ConnectionClosedOK) as info:
            conn.recv(timeout=GRACEFUL_TIMEOUT)
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (CloseCode.GOING_AWAY, "server shutting down")
        assert info.value.sent is not None and info.value.sent.code == CloseCode.GOING_AWAY  # our answer
        assert conn.wait_closed(5)
    assert server.proc.wait(GRACEFUL_TIMEOUT + 5) == 0
    elapsed = time.monotonic() - start
    server.read_log(5)
    log = bytes(server.log).decode(errors="replace")
    assert elapsed < GRACEFUL_TIMEOUT, f"the stop took {elapsed:.1f} s:\n{log}"
    assert "SIGKILL" not in log and "Traceback" not in log, log
    assert log.count("Worker exiting") == WORKERS, log


@pytest.mark.parametrize(
    ("worker_class", "path"),
    [
        pytest.param("gthread", "/echo", id="gthread-on-the-request-thread"),
        pytest.param("sync", "/echo-in-a-thread", id="sync-handed-off"),
    ],
)
def test_without_the_hook_clients_see_1006(gunicorn: Callable[..., Gunicorn], worker_class: str, path: str) -> None:
    # The control: the same app under gunicorn's defaults (no config file).
    # gthread waits out the graceful timeout for the requests holding
    # WebSockets, then the worker is killed; sync exits at once, and the
    # threads serving its WebSockets die with it.
    server = gunicorn("--config", "/dev/null", "--worker-class", worker_class, "--threads", str(MAX_CONNECTIONS + 8))
    conns, _ = open_on_every_worker(server, path)
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for conn in conns:
        assert conn.wait_closed(GRACEFUL_TIMEOUT + 10)
        assert conn.close_exception is not None and conn.close_exception.code == CloseCode.ABNORMAL_CLOSURE
        assert conn.close_exception.rcvd is None  # no close frame
    server.proc.wait(10)
    elapsed = time.monotonic() - start
    if worker_class == "gthread":
        assert elapsed >= GRACEFUL_TIMEOUT - 0.5
    else:
        assert elapsed < GRACEFUL_TIMEOUT
