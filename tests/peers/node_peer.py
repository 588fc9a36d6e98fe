"""Drive the Node.js ``ws`` interop peer (``tests/peers/node/``) from Python.

Standard library only.  Typical use in a test::

    from tests.peers.node_peer import start_node_echo_server, run_node_client

    with start_node_echo_server(compression=True) as srv:
        ...  # connect a threadws client to srv.url
        close = srv.wait_for_close()          # {"code": 4000, "reason": "bye", ...}

    # wss://: PEM files for the server, the CA to trust for the client
    with start_node_echo_server(cert="cert.pem", key="key.pem") as srv:
        ...  # srv.url is wss://127.0.0.1:PORT/
    report = run_node_client("wss://127.0.0.1:8443/", script, ca="ca.pem")

    report = run_node_client(url, [
        {"op": "send", "text": "hi", "expect_echo": True},
        {"op": "send", "hex": "00ff", "expect_echo": True},
        {"op": "ping", "text": "p"},
        {"op": "close", "code": 4000, "reason": "bye"},
    ])
    assert report["ok"], report["errors"]

The script language and the report format are documented at the top of
``node/client.js``; the echo server's stdout protocol at the top of
``node/echo_server.js``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "NODE_DIR",
    "NodeEchoServer",
    "NodePeerError",
    "ensure_node_ws",
    "run_node_client",
    "start_node_echo_server",
]

NODE_DIR = Path(__file__).resolve().parent / "node"
_ECHO_SERVER_JS = NODE_DIR / "echo_server.js"
_CLIENT_JS = NODE_DIR / "client.js"

_install_lock = threading.Lock()


class NodePeerError(RuntimeError):
    """The Node peer could not be installed, started or run."""


def _node_exe() -> str:
    node = shutil.which("node")
    if node is None:
        raise NodePeerError(
            "`node` not found on PATH: the Node.js interop peer needs Node.js >= 18 "
            "and npm (Debian: apt-get install nodejs npm)"
        )
    return node


def _npm_exe() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise NodePeerError(
            "`npm` not found on PATH: needed once to install the `ws` package for the "
            "Node.js interop peer (Debian: apt-get install npm)"
        )
    return npm


def _locked_ws_version() -> str | None:
    try:
        lock = json.loads((NODE_DIR / "package-lock.json").read_text())
        return lock["packages"]["node_modules/ws"]["version"]
    except (OSError, ValueError, KeyError):
        return None


def _installed_ws_version() -> str | None:
    try:
        return json.loads((NODE_DIR / "node_modules" / "ws" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def ensure_node_ws(*, timeout: float = 300.0) -> Path:
    """Make sure ``tests/peers/node/node_modules`` holds the pinned ``ws``.

    Runs ``npm ci`` in :data:`NODE_DIR` when ``node_modules`` is missing or holds
    another ``ws`` version than ``package-lock.json``.  Safe to call from several
    threads or processes at once (an ``flock`` serialises the install).
    Returns :data:`NODE_DIR`.  Raises :class:`NodePeerError` with the reason
    (node/npm missing, npm failure output, timeout).
    """
    _node_exe()
    wanted = _locked_ws_version()
    if wanted is None:
        raise NodePeerError(f"cannot read the ws version from {NODE_DIR / 'package-lock.json'}")
    if _installed_ws_version() == wanted:
        return NODE_DIR

    npm = _npm_exe()
    with _install_lock, _FileLock(Path(tempfile.gettempdir()) / "threadws-node-peer-npm.lock"):
        if _installed_ws_version() == wanted:  # another process did it meanwhile
            return NODE_DIR
        cmd = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            proc = subprocess.run(
                cmd,
                check=False,
                cwd=NODE_DIR,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise NodePeerError(f"`npm ci` in {NODE_DIR} timed out after {timeout:.0f}s") from exc
        if proc.returncode != 0:
            raise NodePeerError(
                f"`npm ci` in {NODE_DIR} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}".rstrip()
            )
        got = _installed_ws_version()
        if got != wanted:
            raise NodePeerError(f"`npm ci` finished but node_modules/ws is {got!r}, expected {wanted!r}")
    return NODE_DIR


class _FileLock:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def __enter__(self) -> _FileLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: only the in-process lock applies
            return self
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# --------------------------------------------------------------------------
# Echo server
# --------------------------------------------------------------------------


class NodeEchoServer:
    """A running ``node/echo_server.js``.  Create with :func:`start_node_echo_server`.

    Attributes: ``host``, ``port``, ``url`` (``ws://host:port/``, ``wss://`` when
    ``secure``), ``compression``, ``proc`` (the :class:`subprocess.Popen`),
    ``events`` (list of event dicts the server printed so far: ``connection``,
    ``message``, ``ping``, ``pong``, ``close``, ``error``, ``handshake_error``,
    ``tls_error``).
    """

    def __init__(self, proc: subprocess.Popen, host: str, compression: bool, secure: bool = False) -> None:
        self.proc = proc
        self.host = host
        self.port: int = 0
        self.compression = compression
        self.secure = secure
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._listening = False
        self._stdout_done = False
        self._stderr_chunks: list[str] = []
        self._bad_lines: list[str] = []
        self._stopped = False
        self._t_out = threading.Thread(target=self._read_stdout, name="node-echo-stdout", daemon=True)
        self._t_err = threading.Thread(target=self._read_stderr, name="node-echo-stderr", daemon=True)
        self._t_out.start()
        self._t_err.start()

    # -- readers -----------------------------------------------------------
    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._cond:
                if line.startswith("LISTENING "):
                    self.port = int(line.split()[1])
                    self._listening = True
                elif line.startswith("EVENT "):
                    try:
                        self.events.append(json.loads(line[6:]))
                    except ValueError:
                        self._bad_lines.append(line)
                elif line:
                    self._bad_lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._stdout_done = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr_chunks.append(line)

    # -- public ------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.secure else 'ws'}://{host}:{self.port}/"

    @property
    def stderr(self) -> str:
        return "".join(self._stderr_chunks)

    @property
    def connections(self) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("event") == "connection"]

    @property
    def closes(self) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("event") == "close"]

    def _wait_listening(self, deadline: float) -> None:
        with self._cond:
            while not self._listening:
                remaining = deadline - time.monotonic()
                if self._stdout_done or remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.1))
            ok = self._listening
        if not ok:
            what = "exited" if self.proc.poll() is not None else "did not print LISTENING in time"
            self.stop()
            raise NodePeerError(
                f"node echo server {what} (exit {self.proc.returncode}); stderr:\n{self.stderr}"
                + ("\nstdout:\n" + "\n".join(self._bad_lines) if self._bad_lines else "")
            )

    def wait_for_event(
        self,
        match: str | Callable[[dict[str, Any]], bool],
        timeout: float = 5.0,
        *,
        start: int = 0,
    ) -> dict[str, Any]:
        """Return the first event (from index ``start``) whose ``event`` equals
        ``match`` (or for which ``match(event)`` is true), waiting up to ``timeout``
        seconds.  Raises :class:`TimeoutError` listing the events seen."""
        pred = (lambda e: e.get("event") == match) if isinstance(match, str) else match
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events[start:]:
                    if pred(e):
                        return e
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stdout_done:
                    raise TimeoutError(
                        f"no matching event from node echo server within {timeout}s; events so far: {self.events!r}"
                    )
                self._cond.wait(min(remaining, 0.1))

    def wait_for_close(self, conn_id: int | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Wait for the ``close`` event (of connection ``conn_id``, default: any)
        and return it: ``{"code", "reason", "reason_hex", "initiated_by", "id"}``."""
        return self.wait_for_event(
            lambda e: e.get("event") == "close" and (conn_id is None or e.get("id") == conn_id),
            timeout,
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (close its stdin, then SIGTERM, then SIGKILL)."""
        if self._stopped:
            return
        self._stopped = True
        proc = self.proc
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=min(2.0, timeout))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._t_out.join(2.0)
        self._t_err.join(2.0)
        for f in (proc.stdout, proc.stderr):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass

    def __enter__(self) -> NodeEchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<NodeEchoServer {self.url} pid={self.proc.pid} compression={self.compression}>"


def start_node_echo_server(
    compression: bool = False,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    subprotocols: Sequence[str] | None = None,
    control: bool = False,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    startup_timeout: float = 15.0,
) -> NodeEchoServer:
    """Start ``node/echo_server.js`` and wait (up to ``startup_timeout`` s) for
    its ``LISTENING <port>`` line.

    ``compression``: accept permessage-deflate when offered.  ``subprotocols``:
    supported subprotocols in preference order (default: accept the client's
    first).  ``control``: text messages ``"!close CODE REASON"``, ``"!ping X"``,
    ``"!terminate"`` are acted on instead of echoed.  ``cert`` and ``key``
    (PEM files, both or neither) serve ``wss://``.  Calls
    :func:`ensure_node_ws` first.  Use the result as a context manager or call
    ``.stop()``.
    """
    if (cert is None) != (key is None):
        raise ValueError("cert and key go together")
    ensure_node_ws()
    cmd = [_node_exe(), str(_ECHO_SERVER_JS), str(port), "--host", host, "--exit-on-stdin-eof"]
    if compression:
        cmd.append("--offer-compression")
    if subprotocols:
        cmd += ["--subprotocols", ",".join(subprotocols)]
    if control:
        cmd.append("--control")
    if cert is not None and key is not None:
        cmd += ["--cert", os.fspath(cert), "--key", os.fspath(key)]
    deadline = time.monotonic() + startup_timeout
    proc = subprocess.Popen(
        cmd,
        cwd=NODE_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        bufsize=1,
    )
    server = NodeEchoServer(proc, host, compression, secure=cert is not None)
    server._wait_listening(deadline)
    return server


# --------------------------------------------------------------------------
# Scripted client
# --------------------------------------------------------------------------


def run_node_client(
    url: str,
    script: Iterable[Mapping[str, Any]],
    *,
    subprotocols: Sequence[str] | str | None = None,
    compression: bool = False,
    headers: Mapping[str, str] | None = None,
    origin: str | None = None,
    ca: str | os.PathLike[str] | None = None,
    timeout: float = 30.0,
    step_timeout: float = 10.0,
) -> dict[str, Any]:
    """Run ``node/client.js`` against ``url`` with ``script`` (a list of step
    dicts, see ``node/client.js``) and return its JSON report as a dict.

    ``compression`` offers permessage-deflate; ``subprotocols`` are offered in
    order; ``ca`` (a PEM file) is the authority a ``wss://`` server's certificate
    must chain to; ``timeout`` bounds the whole run, ``step_timeout`` each waiting step.
    The report is returned also when the connection or a step failed: check
    ``report["ok"]`` / ``report["errors"]``.  Raises :class:`NodePeerError` only
    when node itself misbehaves (no report, crash, hang past ``timeout``).
    """
    ensure_node_ws()
    cmd = [
        _node_exe(),
        str(_CLIENT_JS),
        url,
        "--timeout",
        repr(float(timeout)),
        "--step-timeout",
        repr(float(step_timeout)),
    ]
    if isinstance(subprotocols, str):
        subprotocols = [subprotocols]
    for p in subprotocols or ():
        cmd += ["--subprotocol", p]
    if compression:
        cmd.append("--compression")
    for k, v in (headers or {}).items():
        cmd += ["--header", f"{k}: {v}"]
    if origin is not None:
        cmd += ["--origin", origin]
    if ca is not None:
        cmd += ["--ca", os.fspath(ca)]
    try:
        proc = subprocess.run(
            cmd,
            check=False,
            cwd=NODE_DIR,
            input=json.dumps(list(script)),
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=timeout + 15.0,
        )
    except subprocess.TimeoutExpired as exc:
        raise NodePeerError(
            f"node client did not finish within {timeout + 15.0:.0f}s; stderr:\n{exc.stderr!r}"
        ) from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise NodePeerError(
            f"node client failed (exit {proc.returncode}); stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    try:
        report = json.loads(lines[-1])
    except ValueError as exc:
        raise NodePeerError(f"node client printed no JSON report; stdout:\n{proc.stdout}") from exc
    if proc.stderr:
        report["stderr"] = proc.stderr
    return report
