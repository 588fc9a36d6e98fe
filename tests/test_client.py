"""dial(): handshakes against loopback servers, TLS, failures."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import trustme

import threadws
from threadws import HandshakeError

from .conftest import start_server, stop_server, url_of


class RawServer:
    """A one-shot TCP server that answers whatever it is told to, for broken servers."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answer = answer
        self.thread = threading.Thread(target=self._run, name="test-raw-server", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sock, _ = self.listener.accept()
        with sock:
            sock.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.request = data
            self.answer(sock)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    made: list[RawServer] = []

    def make(answer: Callable[[socket.socket], None]) -> RawServer:
        made.append(RawServer(answer))
        return made[-1]

    yield make
    for server in made:
        server.close()


def test_refusal_carries_status_headers_and_bounded_body(raw_server):
    body = b"go away " * 20000  # 160 kB: more than HandshakeError keeps

    def answer(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 403 Forbidden\r\nX-Why: policy\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    server = raw_server(answer)
    with pytest.raises(HandshakeError) as info:
        threadws.dial(f"ws://127.0.0.1:{server.port}/")
    assert info.value.status == 403
    assert ("X-Why", "policy") in info.value.headers
    assert len(info.value.body) == 64 * 1024 and body.startswith(info.value.body)


def test_wrong_accept_is_refused(raw_server):
    def answer(sock: socket.socket) -> None:
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: d3Jvbmc=\r\n\r\n"
        )

    server = raw_server(answer)
    with pytest.raises(HandshakeError, match="Sec-WebSocket-Accept"):
        threadws.dial(f"ws://127.0.0.1:{server.port}/")


def test_silent_server_times_out(raw_server):
    stop = threading.Event()
    server = raw_server(lambda sock: stop.wait(10))
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            threadws.dial(f"ws://127.0.0.1:{server.port}/", timeout=0.3)
        assert time.monotonic() - start < 3
    finally:
        stop.set()


def test_bytes_after_101_are_not_lost(raw_server):
    from wsproto.utilities import generate_accept_token

    def answer(sock: socket.socket) -> None:
        key = [line.split(b": ")[1] for line in server.request.split(b"\r\n") if line.startswith(b"Sec-WebSocket-Key")][0]
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + generate_accept_token(key) + b"\r\n\r\n"
            b"\x81\x05hello\x88\x02\x03\xe8"  # a message and a close, in the same packet
        )
        sock.recv(1024)  # the client's close reply

    server = raw_server(answer)
    conn = threadws.dial(f"ws://127.0.0.1:{server.port}/", ping_interval=None, close_timeout=1)
    assert conn.recv(timeout=5) == "hello"
    with pytest.raises(threadws.ConnectionClosedOK):
        conn.recv(timeout=5)
    assert conn.wait_closed(5)


def test_connection_refused():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        threadws.dial(f"ws://127.0.0.1:{port}/")


def test_origin_and_headers_are_sent(echo_server):
    conn = threadws.dial(url_of(echo_server), origin=f"http://127.0.0.1:{echo_server.server_address[1]}",
                         headers=[("X-Token", "abc")], ping_interval=None)
    assert conn.request_headers.get("Origin").startswith("http://127.0.0.1")
    assert conn.request_headers.get("X-Token") == "abc"
    assert conn.response_headers.get("Upgrade") == "websocket"
    conn.close()
    with pytest.raises(HandshakeError) as info:
        threadws.dial(url_of(echo_server), origin="http://evil.example")
    assert info.value.status == 403


@pytest.fixture(scope="module")
def tls() -> tuple[trustme.CA, ssl.SSLContext]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    return ca, server_context


def test_wss_round_trip_with_verification(tls):
    ca, server_context = tls
    server = start_server(lambda conn: conn.send(conn.recv()), ssl_context=server_context)
    try:
        port = server.server_address[1]
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        conn = threadws.dial(f"wss://localhost:{port}/", ssl_context=client_context, ping_interval=None)
        big = bytes(range(256)) * 4096  # 1 MiB through TLS
        conn.send(big)
        assert conn.recv(timeout=10) == big
        conn.close()
        assert conn.wait_closed(5)
        # The system trust store doesn't know our CA: the default context refuses.
        with pytest.raises(ssl.SSLCertVerificationError):
            threadws.dial(f"wss://localhost:{port}/")
        # Right CA, wrong name: hostname checking is on.
        wrong = ca.issue_cert("other.example")
        other_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        wrong.configure_cert(other_context)
    finally:
        stop_server(server)
    server = start_server(lambda conn: None, ssl_context=other_context)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            threadws.dial(f"wss://localhost:{server.server_address[1]}/", ssl_context=client_context)
    finally:
        stop_server(server)
