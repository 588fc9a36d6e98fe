"""wss: TLS in memory under a reader and a writer thread (threadws._tls).

* Two application threads stream over one wss connection while the peer echoes
  (and while it pauses reading), threadws on either side, against threadws and
  against the ``websockets`` library: every message arrives intact and in order.
* Teardown during heavy streaming (abort, a close that times out, server
  shutdown) behind a proxy that records the raw TCP bytes: nothing but TLS
  records ever crosses the wire, and nothing but whole, intact messages reaches
  either application.
* The TLS close: close_notify after a clean WebSocket close, a bare TCP EOF
  accepted after the close frame but not before it.
* The Upgrader refuses an ``ssl.SSLSocket`` it can't share safely.
"""

from __future__ import annotations

import contextlib
import http.server
import queue
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve as ws_serve
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, CloseConnection, Request

import threadws
from threadws import ConnectionClosed, ConnectionClosedOK

from .conftest import wait_until
from .tls_tools import Certificates, RecordingProxy, make_certificates, tls_record_errors

T = 10.0  # the most any single wait may take


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(str(tmp_path_factory.mktemp("certs")))


# --- message streams ---------------------------------------------------------------


def payload(tid: int, i: int) -> str | bytes:
    """Message *i* of sender *tid*: mostly small, some across a TLS record, a few large; a third text."""
    if i % 200 == 199:
        size = 70_000
    elif i % 20 == 19:
        size = 16_385  # one byte over a TLS record
    else:
        size = (0, 1, 20, 125, 126, 300, 1000)[i % 7]
    head = f"{tid}:{i}:"
    if i % 3 == 0:
        return head + "é" * (size // 2)
    return head.encode() + bytes([i & 0xFF]) * size


def check_stream(received: Callable[[], Any], senders: int, count: int) -> None:
    """Read senders * count messages; each sender's must come whole and in its order."""
    expected = dict.fromkeys(range(senders), 0)
    for _ in range(senders * count):
        message = received()
        sep: Any = ":" if isinstance(message, str) else b":"
        tid, i = (int(part) for part in message.split(sep, 2)[:2])
        assert i == expected[tid], f"sender {tid}: message {i} arrived when {expected[tid]} was due"
        assert message == payload(tid, i), f"sender {tid}: message {i} damaged"
        expected[tid] += 1


def send_from_threads(conn: Any, senders: int, count: int) -> list[threading.Thread]:
    errors: list[BaseException] = []

    def send(tid: int) -> None:
        try:
            for i in range(count):
                conn.send(payload(tid, i))
        except BaseException as exc:  # reported by the test through the thread's errors
            errors.append(exc)
            raise

    threads = [threading.Thread(target=send, args=(tid,), name=f"test-sender-{tid}") for tid in range(senders)]
    for thread in threads:
        thread.errors = errors  # type: ignore[attr-defined]
        thread.start()
    return threads


def join_all(threads: list[threading.Thread], timeout: float = 60.0) -> None:
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), f"{thread.name} still running"
    errors = getattr(threads[0], "errors", []) if threads else []
    assert not errors, errors


def echo_threadws(conn: threadws.Conn, pause: Callable[[int], None] | None) -> None:
    count = 0
    for message in conn:
        conn.send(message)
        count += 1
        if pause is not None:
            pause(count)


def echo_websockets(ws: Any, pause: Callable[[int], None] | None) -> None:
    count = 0
    with contextlib.suppress(Exception):
        for message in ws:
            ws.send(message)
            count += 1
            if pause is not None:
                pause(count)


def echo_websockets_client(url: str, certs: Certificates, pause: Callable[[int], None] | None) -> None:
    with ws_connect(url, ssl=certs.client, max_size=None, ping_interval=None) as ws:
        echo_websockets(ws, pause)


class Pauser:
    """Makes the echoing peer stop reading every so often until the threadws
    sender's queue has backed up (its writer is then stuck in a send)."""

    def __init__(self) -> None:
        self.sender: threadws.Conn | None = None
        self.pauses = 0

    def __call__(self, count: int) -> None:
        # Early enough that plenty is left to send: the sender's queue fills.
        if count in (4000, 16000) and self.sender is not None:
            sender = self.sender
            wait_until(lambda: sender.queued_bytes >= 1 << 20 or sender.closed, timeout=T)
            self.pauses += 1


SENDERS = 2
COUNT = 20_000


@contextlib.contextmanager
def threadws_wss_server(handler: Callable[[threadws.Conn], Any], certs: Certificates) -> Iterator[threadws.Server]:
    upgrader = threadws.Upgrader(ping_interval=None, close_timeout=5.0, read_limit=1 << 20)
    server = threadws.serve(handler, "127.0.0.1", 0, upgrader=upgrader, ssl_context=certs.server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-wss-serve")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown(timeout=5)
        thread.join(10)
        assert not thread.is_alive()


@contextlib.contextmanager
def websockets_wss_server(handler: Callable[[Any], Any], certs: Certificates) -> Iterator[int]:
    server = ws_serve(handler, "127.0.0.1", 0, ssl=certs.server, ping_interval=None, max_size=None)
    thread = threading.Thread(target=server.serve_forever, name="test-websockets-wss-serve")
    thread.start()
    try:
        yield server.socket.getsockname()[1]
    finally:
        stopper = threading.Thread(target=server.shutdown, name="test-websockets-shutdown")
        stopper.start()
        stopper.join(10)
        thread.join(10)
        assert not thread.is_alive()


def dial_wss(port: int, certs: Certificates, **kwargs: Any) -> threadws.Conn:
    kwargs.setdefault("ping_interval", None)
    return threadws.dial(f"wss://localhost:{port}/", ssl_context=certs.client, read_limit=1 << 20, **kwargs)


@pytest.mark.parametrize("paused", [False, True], ids=["steady", "peer-pauses"])
@pytest.mark.parametrize("peer", ["threadws", "websockets"])
@pytest.mark.parametrize("role", ["client", "server"])
def test_two_threads_stream_over_one_wss_connection(certs: Certificates, role: str, peer: str, paused: bool) -> None:
    """Two threads each send 20,000 messages on threadws's side (*role*); the peer echoes them."""
    rounds = 3 if peer == "threadws" else 2
    pauser = Pauser() if paused else None
    if role == "client":
        if peer == "threadws":
            server_cm: Any = threadws_wss_server(lambda conn: echo_threadws(conn, pauser), certs)
        else:
            server_cm = websockets_wss_server(lambda ws: echo_websockets(ws, pauser), certs)
        with server_cm as server:
            port = server if isinstance(server, int) else server.server_address[1]
            for _ in range(rounds):
                conn = dial_wss(port, certs)
                if pauser is not None:
                    pauser.sender = conn
                threads = send_from_threads(conn, SENDERS, COUNT)
                check_stream(lambda: conn.recv(timeout=T), SENDERS, COUNT)
                join_all(threads)
                conn.close()
                assert isinstance(conn.close_exception, ConnectionClosedOK), conn.close_exception
    else:
        outcomes: queue.Queue[BaseException | None] = queue.Queue()

        def handler(conn: threadws.Conn) -> None:
            if pauser is not None:
                pauser.sender = conn
            try:
                threads = send_from_threads(conn, SENDERS, COUNT)
                check_stream(lambda: conn.recv(timeout=T), SENDERS, COUNT)
                join_all(threads)
                conn.close()
                outcomes.put(conn.close_exception)
            except BaseException as exc:
                outcomes.put(exc)
                raise

        with threadws_wss_server(handler, certs) as server:
            port = server.server_address[1]
            for _ in range(rounds):
                if peer == "threadws":
                    client: Any = dial_wss(port, certs)
                    echo = threading.Thread(target=echo_threadws, args=(client, pauser), name="test-echo")
                else:
                    url = f"wss://localhost:{port}/"
                    echo = threading.Thread(target=echo_websockets_client, args=(url, certs, pauser), name="test-echo")
                echo.start()
                outcome = outcomes.get(timeout=300)
                assert isinstance(outcome, ConnectionClosedOK), outcome
                echo.join(T)
                assert not echo.is_alive()
    if pauser is not None:
        assert pauser.pauses >= rounds, "the peer never paused"


# --- teardown during heavy streaming, with the raw bytes recorded -------------------------

CANARY = b"PLAINTEXT" * 7  # in every message: in the clear on the wire, it would show


def canary_message(i: int) -> bytes:
    return b"%d:" % i + CANARY * (65536 // len(CANARY))


class Streamer:
    """One side of a connection: a thread that sends canary messages as fast as it can,
    and a loop that reads and checks every message the other side sends."""

    def __init__(self, conn: threadws.Conn) -> None:
        self.conn = conn
        self.received = 0
        self.errors: list[str] = []
        self.reading = threading.Event()
        self.reading.set()
        self.sender = threading.Thread(target=self._send, name=f"test-stream-{conn.name}")
        self.sender.start()

    def _send(self) -> None:
        i = 0
        with contextlib.suppress(ConnectionClosed):
            while True:
                self.conn.send(canary_message(i))
                i += 1

    def read(self) -> None:
        """Read until the connection ends; every message must be whole and in order."""
        while True:
            self.reading.wait(T)
            try:
                message = self.conn.recv(timeout=T)
            except ConnectionClosed as exc:
                if "protocol error" in exc.detail or "TLS error" in exc.detail:
                    self.errors.append(f"ended by garbage: {exc}")
                break
            if message != canary_message(self.received):
                self.errors.append(f"message {self.received} damaged: {message[:40]!r}")
            self.received += 1
        self.sender.join(T)
        if self.sender.is_alive():
            self.errors.append("sender still running")


CONNECTIONS = 12


@pytest.mark.parametrize("ending", ["server-abort", "client-abort", "close-times-out", "server-shutdown"])
def test_teardown_mid_stream_never_puts_plaintext_on_the_wire(certs: Certificates, ending: str) -> None:
    server_sides: queue.Queue[Streamer] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        streamer = Streamer(conn)
        server_sides.put(streamer)
        streamer.read()

    upgrader = threadws.Upgrader(ping_interval=None, close_timeout=0.3)
    server = threadws.serve(handler, "127.0.0.1", 0, upgrader=upgrader, ssl_context=certs.server)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-wss-serve")
    serving.start()
    proxy = RecordingProxy(server.server_address)
    clients: list[Streamer] = []
    readers: list[threading.Thread] = []
    try:
        for _ in range(CONNECTIONS):
            conn = dial_wss(proxy.port, certs, close_timeout=0.3)
            streamer = Streamer(conn)
            clients.append(streamer)
            reader = threading.Thread(target=streamer.read, name="test-client-read")
            reader.start()
            readers.append(reader)
        servers = [server_sides.get(timeout=T) for _ in range(CONNECTIONS)]
        # Heavy traffic both ways on every connection before anything ends.
        wait_until(lambda: all(s.received >= 8 for s in servers + clients), timeout=30)
        if ending == "server-abort":
            for side in servers:
                side.conn.abort()
        elif ending == "client-abort":
            for side in clients:
                side.conn.abort()
        elif ending == "close-times-out":
            # The clients stop reading: the servers' writers get stuck mid-send,
            # so the close frame can't go out and close() gives up and aborts.
            for side in clients:
                side.reading.clear()
            wait_until(lambda: all(s.conn.queued_bytes > 1 << 20 for s in servers), timeout=30)
            for side in servers:
                side.conn.close(timeout=0.2)
            for side in clients:
                side.reading.set()
        else:
            server.shutdown(timeout=0.5)
        for side in servers + clients:
            assert side.conn.wait_closed(T), side.conn
        for reader in readers:
            reader.join(T)
            assert not reader.is_alive()
    finally:
        for side in clients:
            side.conn.abort()
        server.shutdown(timeout=5)
        serving.join(T)
        proxy.close()
    assert len(proxy.captures) == CONNECTIONS
    for capture in proxy.captures:
        for direction, stream in (("client to server", capture.upstream), ("server to client", capture.downstream)):
            assert len(stream) > 8 * 65536, f"{direction}: too little traffic to prove anything"
            assert CANARY[:18] not in stream, f"{direction}: application bytes in the clear"
            assert tls_record_errors(bytes(stream)) is None, f"{direction}: {tls_record_errors(bytes(stream))}"
    for side in servers + clients:
        assert not side.errors, side.errors


# --- closing TLS ---------------------------------------------------------------------


class RawTLSPeer:
    """The other end as a bare ssl-wrapped socket speaking wsproto, one thread, for
    checking exactly what threadws does at the TLS level."""

    def __init__(self, sock: ssl.SSLSocket, client: bool) -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT if client else ConnectionType.SERVER)

    def send(self, event: Any) -> None:
        self.sock.sendall(self.ws.send(event))

    def next_event(self) -> Any:
        while True:
            for event in self.ws.events():
                return event
            data = self.sock.recv(65536)
            assert data, "EOF where an event was due"
            self.ws.receive_data(data)


def raw_tls_client(port: int, certs: Certificates) -> RawTLSPeer:
    raw = socket.create_connection(("127.0.0.1", port), timeout=T)
    # suppress_ragged_eofs=False: a TCP EOF without close_notify raises instead of reading b"".
    sock = certs.client.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    peer = RawTLSPeer(sock, client=True)
    peer.send(Request(host="localhost", target="/"))
    assert isinstance(peer.next_event(), AcceptConnection)
    return peer


def test_server_ends_tls_with_close_notify_after_a_clean_close(certs: Certificates) -> None:
    with threadws_wss_server(lambda conn: conn.close(), certs) as server:
        peer = raw_tls_client(server.server_address[1], certs)
        event = peer.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1000
        peer.send(event.response())
        # What follows the close frame is close_notify, then EOF: recv reads b""
        # (a bare TCP EOF would raise SSLEOFError with suppress_ragged_eofs=False).
        assert peer.sock.recv(100) == b""
        peer.sock.close()


def test_server_reports_a_bare_eof_before_the_close_frame(certs: Certificates) -> None:
    ended: queue.Queue[ConnectionClosed] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        try:
            conn.recv(timeout=T)
        except ConnectionClosed as exc:
            ended.put(exc)

    with threadws_wss_server(handler, certs) as server:
        peer = raw_tls_client(server.server_address[1], certs)
        socket.socket.shutdown(peer.sock, socket.SHUT_RDWR)  # TCP FIN, no close_notify
        exc = ended.get(timeout=T)
        peer.sock.close()
    assert exc.code == 1006 and exc.rcvd is None
    assert "EOF without a close frame" in str(exc)


@contextlib.contextmanager
def raw_tls_server(certs: Certificates, script: Callable[[RawTLSPeer], None]) -> Iterator[int]:
    """A one-connection TLS server that runs *script* after the WebSocket handshake."""
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            raw, _ = listener.accept()
            raw.settimeout(T)
            sock = certs.server.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
            peer = RawTLSPeer(sock, client=False)
            request = peer.next_event()
            assert isinstance(request, Request)
            peer.send(AcceptConnection())
            script(peer)
            sock.close()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, name="test-raw-tls-server")
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(T)
        listener.close()
    assert not thread.is_alive()
    assert not errors, errors


def test_client_answers_close_notify_so_a_server_waiting_for_it_closes_at_once(certs: Certificates) -> None:
    """Servers that shut TLS down both ways (asyncio's) wait for the client's close_notify before closing TCP."""
    unwrapped = threading.Event()

    def script(peer: RawTLSPeer) -> None:
        peer.send(CloseConnection(code=1000, reason="bye"))
        assert isinstance(peer.next_event(), CloseConnection)
        peer.sock.unwrap()  # sends close_notify and waits for the client's
        unwrapped.set()

    with raw_tls_server(certs, script) as port:
        conn = dial_wss(port, certs, close_timeout=T)
        with pytest.raises(ConnectionClosedOK):
            conn.recv(timeout=T)
        assert conn.wait_closed(T)
        assert unwrapped.wait(T)
    assert conn.close_exception is not None and "timed out" not in str(conn.close_exception)


@pytest.mark.parametrize("how", ["close_notify", "bare-eof"])
def test_client_reports_tls_ending_before_the_close_frame(certs: Certificates, how: str) -> None:
    def script(peer: RawTLSPeer) -> None:
        if how == "close_notify":
            peer.sock = peer.sock.unwrap()  # type: ignore[assignment]
        else:
            socket.socket.shutdown(peer.sock, socket.SHUT_RDWR)

    with raw_tls_server(certs, script) as port:
        conn = dial_wss(port, certs, close_timeout=T)
        with pytest.raises(ConnectionClosed) as info:
            conn.recv(timeout=T)
    assert info.value.code == 1006
    expected = "a TLS close_notify without a close frame" if how == "close_notify" else "EOF without a close frame"
    assert expected in str(info.value)


@pytest.mark.parametrize("starts", ["server", "client"])
def test_a_ragged_eof_after_the_closing_handshake_is_a_clean_close(certs: Certificates, starts: str) -> None:
    """Close frames went both ways, then the peer drops TCP with no close_notify: nothing was lost."""

    def script(peer: RawTLSPeer) -> None:
        if starts == "server":
            peer.send(CloseConnection(code=1000, reason="bye"))
            assert isinstance(peer.next_event(), CloseConnection)
        else:
            event = peer.next_event()
            assert isinstance(event, CloseConnection)
            peer.send(event.response())
        socket.socket.shutdown(peer.sock, socket.SHUT_RDWR)  # TCP FIN, no close_notify

    with raw_tls_server(certs, script) as port:
        conn = dial_wss(port, certs, close_timeout=T)
        if starts == "server":
            with pytest.raises(ConnectionClosedOK):
                conn.recv(timeout=T)
        else:
            conn.close()
        assert conn.wait_closed(T)
    exc = conn.close_exception
    assert isinstance(exc, ConnectionClosedOK), exc
    assert exc.code == 1000 and exc.rcvd is not None and exc.sent is not None
    assert "timed out" not in str(exc) and "lost" not in str(exc)


def test_server_drops_a_client_that_never_starts_tls(certs: Certificates) -> None:
    upgrader = threadws.Upgrader(ping_interval=None, close_timeout=2.0)
    server = threadws.serve(lambda conn: None, "127.0.0.1", 0, upgrader=upgrader, ssl_context=certs.server,
                            handshake_timeout=0.5)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-wss-serve")
    thread.start()
    try:
        with socket.create_connection(server.server_address, timeout=T) as silent:  # TCP only, no ClientHello
            wait_until(lambda: server.stats().handshakes == 1)
            with contextlib.suppress(ConnectionResetError):
                assert silent.recv(100) == b""  # dropped (in ~0.5 s; a missing deadline fails on T)
        wait_until(lambda: server.stats().handshakes == 0)  # the request is done and its slot given back
        with dial_wss(server.server_address[1], certs) as conn:  # and the server is still serving
            assert not conn.closed
    finally:
        server.shutdown(timeout=5)
        thread.join(T)
    assert not thread.is_alive()


def test_client_handshake_timeout_covers_tls(certs: Certificates) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts TCP, never answers the ClientHello
    try:
        with pytest.raises(TimeoutError):
            dial_wss(listener.getsockname()[1], certs, timeout=0.3)
    finally:
        listener.close()


# --- what the Upgrader won't take ------------------------------------------------------


def test_upgrader_refuses_an_sslsocket_before_sending_anything(certs: Certificates) -> None:
    """An http.server behind a TLS-wrapped listener: its SSLSocket can't be shared safely."""
    errors: queue.Queue[BaseException] = queue.Queue()
    upgrader = threadws.Upgrader()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                upgrader.upgrade(self)
            except RuntimeError as exc:
                errors.put(exc)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = certs.server.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-https")
    thread.start()
    try:
        raw = socket.create_connection(httpd.server_address[:2], timeout=T)
        sock = certs.client.wrap_socket(raw, server_hostname="localhost")
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        exc = errors.get(timeout=T)
        assert "ssl.SSLSocket" in str(exc) and "serve(ssl_context=" in str(exc)
        with contextlib.suppress(OSError):
            assert sock.recv(100) == b""  # no 101, nothing at all
        sock.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(T)
