"""Hundreds of connections, ended every way there is: threads and file descriptors come back."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

import threadws

from .conftest import Peer, open_fds, recv_head, start_server, stop_server, url_of, wait_until

PER_WAY = 25


def handler(conn: threadws.Conn) -> None:
    path = conn.path
    if path == "/return":
        return
    if path == "/raise":
        raise RuntimeError("handler failed on purpose")
    if path == "/server-close":
        conn.close(4000, "server says bye")
        return
    for message in conn:  # /echo and the rest
        conn.send(message)


def handshake(port: int, path: str, extra: str = "") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    recv_head(sock, 1)  # the frames after it are the test's to read
    return sock


def test_every_way_to_end_leaks_nothing(caplog):
    caplog.set_level("CRITICAL", logger="threadws")  # the /raise tracebacks are expected
    threads_before = threading.active_count()
    fds_before = open_fds()
    upgrader = threadws.Upgrader(read_limit=1000, close_timeout=1.0)
    server = start_server(handler, upgrader=upgrader)
    port = server.server_address[1]
    url = url_of(server)
    # Its own server for the ping timeouts: a keepalive this tight would also
    # fire for healthy peers when hundreds of threads share two cores.
    impatient = start_server(handler, upgrader=threadws.Upgrader(ping_interval=0.05, ping_timeout=0.1))

    def client_close() -> None:
        conn = threadws.dial(url + "echo")
        conn.send("x")
        assert conn.recv(timeout=5) == "x"
        conn.close()
        assert conn.wait_closed(5)

    def server_close() -> None:
        conn = threadws.dial(url + "server-close")
        with pytest.raises(threadws.ConnectionClosedError) as info:
            conn.recv(timeout=5)
        assert info.value.code == 4000
        assert conn.wait_closed(5)

    def handler_return() -> None:
        conn = threadws.dial(url + "return")
        with pytest.raises(threadws.ConnectionClosedOK):
            conn.recv(timeout=5)
        assert conn.wait_closed(5)

    def handler_raise() -> None:
        conn = threadws.dial(url + "raise")
        with pytest.raises(threadws.ConnectionClosedError):
            conn.recv(timeout=5)
        assert conn.wait_closed(5)

    def peer_reset() -> None:
        sock = handshake(port, "/echo")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST instead of FIN

    def read_limit() -> None:
        conn = threadws.dial(url + "echo")
        conn.send(b"x" * 1001)
        with pytest.raises(threadws.ConnectionClosedError) as info:
            conn.recv(timeout=5)
        assert info.value.code == threadws.CloseCode.MESSAGE_TOO_BIG
        assert conn.wait_closed(5)

    def origin_rejected() -> None:
        with pytest.raises(threadws.HandshakeError):
            threadws.dial(url + "echo", origin="http://evil.example")

    def ping_timeout() -> None:
        sock = handshake(impatient.server_address[1], "/echo")
        peer = Peer(sock, client=True)
        try:  # never answer: the server's keepalive gives up and closes
            assert peer.expect_close(timeout=5).code == threadws.CloseCode.INTERNAL_ERROR
            peer.wait_eof()
        finally:
            sock.close()

    ways = [client_close, server_close, handler_return, handler_raise, peer_reset, read_limit, origin_rejected, ping_timeout]
    errors: list[BaseException] = []

    def run(way) -> None:
        try:
            for _ in range(PER_WAY):
                way()
        except BaseException as exc:
            errors.append(exc)

    runners = [threading.Thread(target=run, args=(way,), name=f"test-{way.__name__}") for way in ways]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(120)
    assert not errors, errors
    # Some left open, to be closed by the server's shutdown (1001).
    open_ones = [threadws.dial(url + "echo") for _ in range(PER_WAY)]
    wait_until(lambda: len(server.connections) == PER_WAY)
    stop_server(server)
    stop_server(impatient)
    for conn in open_ones:
        assert conn.wait_closed(5)
        assert conn.close_exception is not None and conn.close_exception.code == 1001
    # Finished connection threads wait to be reused (up to MAX_IDLE of them):
    # that is bounded, and they end on request or after their idle timeout.
    assert len([t for t in threading.enumerate() if t.name == "threadws-idle"]) <= 256  # the default bound
    threadws.reuse_threads(0)
    threadws.reuse_threads()
    wait_until(lambda: threading.active_count() == threads_before, timeout=15)
    wait_until(lambda: open_fds() <= fds_before, timeout=15)
