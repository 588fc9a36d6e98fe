"""threadws behind a real nginx (Debian's package), with the config file the docs show.

The fixture reads ``docs/deploy/nginx.conf`` (the file docs/howto/nginx.md
includes), swaps its example ports, upstream address and certificate paths for
free loopback ports and trustme's files, wraps it in a minimal top-level config
(pid, logs and temp paths in a temporary directory) and runs nginx in the
foreground. A threadws server in this process is the upstream.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import threadws
from threadws import CloseCode, MessageType

from .conftest import start_server, stop_server, wait_until

ROOT = Path(__file__).resolve().parent.parent
SITE_CONF = ROOT / "docs" / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = pytest.mark.skipif(
    not os.path.exists(NGINX), reason="nginx is not installed (tests/peers/install_nginx.sh)"
)

TOP_LEVEL = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/site.conf;
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def substitute(text: str, old: str, new: str, count: int = 1) -> str:
    """Replace *old*, which must occur exactly *count* times: a docs edit that moves it fails here."""
    found = text.count(old)
    assert found == count, f"{SITE_CONF.name}: expected {old!r} {count} time(s), found {found}"
    return text.replace(old, new)


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    http_port: int
    https_port: int
    ca: Any  # trustme.CA
    tmp: Path

    def url(self, path: str, tls: bool = False) -> str:
        return f"wss://localhost:{self.https_port}{path}" if tls else f"ws://127.0.0.1:{self.http_port}{path}"

    def origin(self, tls: bool = False) -> str:
        return f"https://localhost:{self.https_port}" if tls else f"http://127.0.0.1:{self.http_port}"

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def dial(self, path: str, tls: bool, **kwargs: Any) -> threadws.Conn:
        if tls:
            kwargs["ssl_context"] = self.ssl_context()
        kwargs.setdefault("ping_interval", None)  # like a browser: only the server pings
        return threadws.dial(self.url(path, tls), timeout=10, **kwargs)

    def error_log(self) -> str:
        path = self.tmp / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _start(tmp: Path, backend_port: int, ca: Any, proxy_read_timeout: str | None) -> Nginx:
    trustme_cert = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in trustme_cert.cert_chain_pems))
    trustme_cert.private_key_pem.write_to_path(str(key))
    http_port, https_port = free_port(), free_port()
    site = SITE_CONF.read_text()
    site = substitute(site, "listen 80;", f"listen 127.0.0.1:{http_port};")
    site = substitute(site, "listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
    site = substitute(site, "server 127.0.0.1:8000;", f"server 127.0.0.1:{backend_port};")
    site = substitute(site, "/etc/ssl/certs/example.com.pem", str(cert))
    site = substitute(site, "/etc/ssl/private/example.com.key", str(key))
    if proxy_read_timeout is not None:
        site = substitute(site, "proxy_read_timeout 60s;", f"proxy_read_timeout {proxy_read_timeout};", count=2)
    (tmp / "site.conf").write_text(site)
    (tmp / "nginx.conf").write_text(TOP_LEVEL.format(tmp=tmp))
    proc = subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log"), "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: stopping it takes its worker too
    )
    nginx = Nginx(proc, http_port, https_port, ca, tmp)
    def listening() -> bool:
        return _accepting(http_port) and _accepting(https_port)

    try:
        wait_until(lambda: proc.poll() is not None or listening(), 15)
    except AssertionError:
        pass  # reported below, with nginx's error log
    if proc.poll() is not None or not listening():
        _stop(proc)
        raise RuntimeError(f"nginx did not start (exit code {proc.returncode}):\n{nginx.error_log()}")
    return nginx


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # nginx's fast shutdown: tunnels are cut, not waited for
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[..., Nginx]]:
    """``nginx(backend_port, proxy_read_timeout=None)`` starts nginx in front of *backend_port*."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    started: list[Nginx] = []

    def start(backend_port: int, proxy_read_timeout: str | None = None) -> Nginx:
        for attempt in range(3):  # a free port may be taken between our probe and nginx's bind
            tmp = tmp_path / f"nginx{len(started)}-{attempt}"
            tmp.mkdir()
            try:
                server = _start(tmp, backend_port, ca, proxy_read_timeout)
            except RuntimeError as exc:
                if "Address already in use" in str(exc) and attempt < 2:
                    continue
                raise
            started.append(server)
            return server
        raise AssertionError("unreachable")

    try:
        yield start
    finally:
        for server in started:
            _stop(server.proc)


class Backend:
    """A threadws echo server that reports how each connection ended."""

    def __init__(self, **upgrader: Any) -> None:
        upgrader.setdefault("ping_interval", None)
        upgrader.setdefault("close_timeout", 2.0)
        self.ended: queue.Queue[threadws.ConnectionClosed | None] = queue.Queue()
        self.headers: queue.Queue[Any] = queue.Queue()
        self.server = start_server(self.handle, upgrader=threadws.Upgrader(**upgrader))

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def handle(self, conn: threadws.Conn) -> None:
        conn.add_done_callback(lambda c: self.ended.put(c.close_exception))
        self.headers.put(conn.request_headers)
        if conn.path == "/bye":
            conn.close(4001, "bye")
            return
        for message in conn:
            conn.send(message)

    def stop(self) -> None:
        stop_server(self.server)


@pytest.fixture
def backend() -> Iterator[Callable[..., Backend]]:
    made: list[Backend] = []

    def make(**upgrader: Any) -> Backend:
        made.append(Backend(**upgrader))
        return made[-1]

    try:
        yield make
    finally:
        for item in made:
            item.stop()


TLS = pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])


@TLS
def test_echo_and_a_client_close(nginx: Callable[..., Nginx], backend: Callable[..., Backend], tls: bool) -> None:
    app = backend()
    proxy = nginx(app.port)
    with proxy.dial("/echo", tls, origin=proxy.origin(tls)) as conn:
        conn.send("text through nginx")
        assert conn.recv(timeout=10) == "text through nginx"
        conn.send(b"\x00\xff" * 5)
        assert conn.recv(timeout=10) == b"\x00\xff" * 5
        big = os.urandom(600_000)  # larger than nginx's proxy buffers
        conn.send(big)
        assert conn.recv(timeout=10) == big
    # Leaving the block closed with 1000; the closing handshake crossed nginx both ways.
    assert conn.close_exception is not None
    assert conn.close_exception.sent is not None and conn.close_exception.sent.code == CloseCode.NORMAL_CLOSURE
    assert conn.close_exception.rcvd is not None and conn.close_exception.rcvd.code == CloseCode.NORMAL_CLOSURE
    seen = app.ended.get(timeout=10)
    assert seen is not None and seen.rcvd is not None and seen.rcvd.code == CloseCode.NORMAL_CLOSURE
    # What the server sees of the client, through the headers the config sets.
    headers = app.headers.get(timeout=10)
    assert headers["Host"] == proxy.origin(tls).split("://")[1]
    assert headers["X-Forwarded-Proto"] == ("https" if tls else "http")
    assert headers["X-Forwarded-For"] == "127.0.0.1"


@TLS
def test_server_close_codes_reach_the_client(
    nginx: Callable[..., Nginx], backend: Callable[..., Backend], tls: bool
) -> None:
    app = backend()
    proxy = nginx(app.port)
    conn = proxy.dial("/bye", tls)
    with pytest.raises(threadws.ConnectionClosed) as info:
        conn.recv(timeout=10)
    assert info.value.rcvd is not None and (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "bye")
    assert info.value.sent is not None and info.value.sent.code == 4001  # the client echoed it back

    conn = proxy.dial("/echo", tls)
    conn.send("before the shutdown")
    assert conn.recv(timeout=10) == "before the shutdown"
    app.stop()  # Server.shutdown: every connection closes with 1001
    with pytest.raises(threadws.ConnectionClosedOK) as going:
        conn.recv(timeout=10)
    assert going.value.rcvd is not None and going.value.rcvd.code == CloseCode.GOING_AWAY
    assert conn.wait_closed(10)


@TLS
def test_the_origin_check_works_behind_the_proxy(
    nginx: Callable[..., Nginx], backend: Callable[..., Backend], tls: bool
) -> None:
    app = backend()
    proxy = nginx(app.port)
    # The browser's Origin names the proxy's host and port, and so does the
    # Host header nginx forwards ($http_host), so the default check passes...
    with proxy.dial("/echo", tls, origin=proxy.origin(tls)) as conn:
        conn.send("same origin")
        assert conn.recv(timeout=10) == "same origin"
    # ... and still refuses another site's page.
    with pytest.raises(threadws.HandshakeError) as info:
        proxy.dial("/echo", tls, origin="https://evil.example")
    assert info.value.status == 403


# The docs say: keep the server's ping_interval well below proxy_read_timeout.
# Here both are shortened in the same proportion as the docs' 20 s and 60 s.
PROXY_READ_TIMEOUT = 3.0
PING_INTERVAL = PROXY_READ_TIMEOUT / 3


def test_keepalive_pings_keep_an_idle_connection_open_past_proxy_read_timeout(
    nginx: Callable[..., Nginx], backend: Callable[..., Backend]
) -> None:
    app = backend(ping_interval=PING_INTERVAL, ping_timeout=5.0)
    proxy = nginx(app.port, proxy_read_timeout=f"{int(PROXY_READ_TIMEOUT * 1000)}ms")
    pings: list[bytes] = []
    with proxy.dial("/echo", False) as conn:

        def on_ping(payload: bytes) -> None:
            pings.append(payload)
            conn.write_control(MessageType.PONG, payload)

        conn.set_ping_handler(on_ping)
        conn.send("hello")
        assert conn.recv(timeout=10) == "hello"
        # Idle (no message either way) for twice nginx's timeout: still open.
        assert not conn.wait_closed(2 * PROXY_READ_TIMEOUT)
        assert len(pings) >= 3, pings  # the server's pings crossed the proxy and kept it open
        conn.send("still here")
        assert conn.recv(timeout=10) == "still here"
    assert conn.close_exception is not None and conn.close_exception.code == CloseCode.NORMAL_CLOSURE


def test_without_pings_nginx_drops_an_idle_connection_after_proxy_read_timeout(
    nginx: Callable[..., Nginx], backend: Callable[..., Backend]
) -> None:
    # The control for the test above: the same setup with keepalive off on both ends.
    app = backend(ping_interval=None)
    proxy = nginx(app.port, proxy_read_timeout=f"{int(PROXY_READ_TIMEOUT * 1000)}ms")
    conn = proxy.dial("/echo", False)
    conn.send("hello")
    assert conn.recv(timeout=10) == "hello"
    start = time.monotonic()
    assert conn.wait_closed(PROXY_READ_TIMEOUT + 10), "nginx kept an idle connection past proxy_read_timeout"
    assert time.monotonic() - start >= PROXY_READ_TIMEOUT - 0.5
    # nginx just closes TCP: no close frame, so both ends see 1006.
    assert conn.close_exception is not None and conn.close_exception.code == CloseCode.ABNORMAL_CLOSURE
    seen = app.ended.get(timeout=10)
    assert seen is not None and seen.code == CloseCode.ABNORMAL_CLOSURE
    assert "upstream timed out" in proxy.error_log()
