"""Shared fixtures: a raw wsproto peer over socketpair(), a loopback server, and leak checks."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event

import threadws
from threadws.connection import Settings

from .polling import wait_until  # noqa: F401 (the tests import it from here)
from .redis_server import RedisServer


#: An opening handshake request to send by hand (``.format(host=..., extra=...)``;
#: *extra* is more header lines, each ending in CRLF).
REQUEST = (
    "GET /chat HTTP/1.1\r\n"
    "Host: {host}\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "{extra}\r\n"
)


def recv_head(sock: socket.socket, step: int = 4096) -> bytes:
    """Read until an HTTP head's blank line has arrived (or EOF): everything read.

    *step* 1 reads nothing past the head, leaving what follows on the socket.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(step)
        if not chunk:
            break
        data += chunk
    return data


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Every thread the library starts must end: the count returns to where it was."""
    before = {t for t in threading.enumerate()}
    yield
    # Finished connection threads wait to be reused (threadws.reuse_threads):
    # end the waiting ones, so what is left running is what really leaked.
    threadws.reuse_threads(0)
    threadws.reuse_threads()
    def settled() -> bool:
        extra = [t for t in threading.enumerate() if t not in before and t.name.startswith("threadws")]
        return not extra
    try:
        wait_until(settled, timeout=15)
    except AssertionError:
        extra = [t.name for t in threading.enumerate() if t not in before]
        raise AssertionError(f"threads left running: {extra}") from None


@pytest.fixture
def threads_fail(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """``threads_fail("-reader")``: from then on, threads whose name contains that fail to start.

    ``Thread.start`` raises as it does at a thread limit (``RuntimeError: can't
    start new thread``); ``"-reader"`` and ``"-writer"`` hit a connection's
    threads, ``"threadws-http-"`` a server's request threads. Call it again
    with another name to change which. Thread reuse is off meanwhile, so that
    every connection thread is a new one (an idle one would take the task
    without starting).
    """
    threadws.reuse_threads(0)
    real_start = threading.Thread.start

    def make_fail(part: str) -> None:
        def start(thread: threading.Thread) -> None:
            if part in thread.name:
                raise RuntimeError("can't start new thread")
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", start)

    yield make_fail
    monkeypatch.setattr(threading.Thread, "start", real_start)
    threadws.reuse_threads()


@pytest.fixture(autouse=True)
def no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients connect directly, whatever proxy the machine's environment names (tests set their own)."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    """Build one raw frame, for feeding threadws bytes a well-behaved peer would never send."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_payload(payload, key)


def mask_payload(payload: bytes, key: bytes) -> bytes:
    """XOR *payload* with the 4-byte *key* (RFC 6455 section 5.3), fast for big payloads."""
    full = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(full, "big")).to_bytes(len(payload), "big")


class Peer:
    """The other end of a socketpair, speaking WebSocket through wsproto directly."""

    def __init__(self, sock: socket.socket, client: bool) -> None:
        self.sock = sock
        self.client = client
        self.ws = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        self.events: deque[Event] = deque()
        self.eof = False

    def send(self, event: Event) -> None:
        self.sock.sendall(self.ws.send(event))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, opcode: int, payload: bytes = b"", **kwargs: Any) -> bytes:
        """A raw frame masked as this peer's role requires (unless mask= says otherwise)."""
        kwargs.setdefault("mask", self.client)
        return frame(opcode, payload, **kwargs)

    def next_event(self, timeout: float = 5.0) -> Event | None:
        """The next event from threadws; None at EOF. Raises TimeoutError if nothing comes."""
        deadline = time.monotonic() + timeout
        while not self.events:
            if self.eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no event from threadws")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                continue
            if self.ws.state is ConnectionState.CLOSED:
                continue  # bytes after the close frame: the test may inspect raw data instead
            self.ws.receive_data(data)
            self.events.extend(self.ws.events())
        return self.events.popleft()

    def expect_close(self, timeout: float = 5.0) -> CloseConnection:
        while True:
            event = self.next_event(timeout)
            assert event is not None, "EOF before a close frame"
            if isinstance(event, CloseConnection):
                return event

    def wait_eof(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.eof:
            if self.events:
                self.events.popleft()
                continue
            self.next_event(max(0.0, deadline - time.monotonic()))


ROLES = ["server", "client"]


@pytest.fixture
def pair() -> Iterator[Callable[..., tuple[threadws.Conn, Peer]]]:
    """Make (conn, peer) over a socketpair; conn plays the given role."""
    made: list[tuple[threadws.Conn, Peer]] = []

    def make(role: str, **settings: Any) -> tuple[threadws.Conn, Peer]:
        settings.setdefault("ping_interval", None)
        settings.setdefault("close_timeout", 2.0)
        a, b = socket.socketpair()
        conn = threadws.Conn(a, client=role == "client", settings=Settings(**settings))
        peer = Peer(b, client=role != "client")
        made.append((conn, peer))
        return conn, peer

    yield make
    for conn, peer in made:
        conn.abort()
        peer.sock.close()


@pytest.fixture
def echo_server() -> Iterator[threadws.Server]:
    """A loopback echo server on a free port."""
    server = start_server(echo)
    try:
        yield server
    finally:
        stop_server(server)


def echo(conn: threadws.Conn) -> None:
    for message in conn:
        conn.send(message)


def start_server(handler: Callable[[threadws.Conn], Any], **kwargs: Any) -> threadws.Server:
    kwargs.setdefault("upgrader", threadws.Upgrader(ping_interval=None, close_timeout=2.0))
    server = threadws.serve(handler, "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, name="threadws-test-serve", daemon=True)
    thread.start()
    server._test_thread = thread  # type: ignore[attr-defined]
    return server


def stop_server(server: threadws.Server) -> None:
    server.shutdown(timeout=5)
    server._test_thread.join(5)  # type: ignore[attr-defined]
    assert not server._test_thread.is_alive()  # type: ignore[attr-defined]


def url_of(server: threadws.Server, path: str = "/") -> str:
    host, port = server.server_address
    return f"ws://{host}:{port}{path}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server on a free loopback port, one per test session."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may kill and start again."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One trustme CA and a server certificate for ``localhost`` and ``127.0.0.1``, for every wss test.

    A :class:`tests.tls_tools.Certificates`: server and client ``SSLContext``\\ s
    (the client trusts the CA) and the same as PEM files, for peers in other
    processes (Node, gunicorn, wstest, Chromium).
    """
    from .tls_tools import make_certificates  # trustme only where a test wants TLS

    return make_certificates(str(tmp_path_factory.mktemp("tls")))


#: Tests that run whole outside systems (Chromium, nginx, gunicorn, the examples on
#: Redis, a package build, the docs build, a 2,000-connection soak): CI runs them on
#: its newest Python only (`-m "not system"` on the others, see .ci/run).
SYSTEM_MODULES = {
    "test_interop_browser",
    "test_deploy_nginx",
    "test_deploy_gunicorn",
    "test_example_chat_redis",
    "test_packaging",
    "test_docs",
    "test_doc_examples",
    "test_install",
    "test_soak",
    "test_stream_memory",
}
SYSTEM_TESTS = {"test_two_browser_windows_chat", "test_page_in_a_browser", "test_flask_chat_in_two_windows"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__.rsplit(".", 1)[-1] if module is not None else ""
        if name in SYSTEM_MODULES or getattr(item, "originalname", "") in SYSTEM_TESTS:
            item.add_marker(pytest.mark.system)
