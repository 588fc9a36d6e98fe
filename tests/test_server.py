"""The server side against a real loopback listener: Upgrader, serve(), shutdown."""

from __future__ import annotations

import http.server
import logging
import queue
import socket
import threading
import time
import urllib.request
from typing import Any

import pytest

import threadws
from threadws import CloseCode, ConnectionClosedError, ConnectionClosedOK, HandshakeError, MessageType

from .conftest import REQUEST, recv_head, start_server, stop_server, url_of, wait_until


def raw_request(server: threadws.Server, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes; return everything the server answers until it closes."""
    with socket.create_connection(server.server_address, timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


# --- refusals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"\x16\x03\x01 this is not HTTP at all\r\n\r\n", 400),
        (REQUEST.replace("GET", "POST").format(host="x", extra="").encode(), 405),
        (REQUEST.replace("Version: 13", "Version: 7").format(host="x", extra="").encode(), 426),
        (REQUEST.replace("Upgrade: websocket\r\n", "").format(host="x", extra="").encode(), 400),
        (REQUEST.format(host="localhost", extra="Origin: http://evil.example\r\n").encode(), 403),
        (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n", 414),
        (REQUEST.format(host="x", extra="X-Big: " + "b" * 20000 + "\r\n").encode(), 431),
    ],
    ids=["garbage", "post", "version", "no-upgrade", "cross-origin", "long-line", "big-headers"],
)
def test_bad_handshakes_get_http_errors(echo_server, data, status):
    response = raw_request(echo_server, data)
    assert status_of(response) == status
    if status == 426:
        assert b"Sec-WebSocket-Version: 13\r\n" in response
    # The server goes on serving everyone else.
    with threadws.dial(url_of(echo_server), ping_interval=None) as conn:
        conn.send("still here")
        assert conn.recv(timeout=5) == "still here"


def test_slowloris_is_dropped():
    server = start_server(lambda conn: None, handshake_timeout=0.3)
    try:
        with socket.create_connection(server.server_address, timeout=5) as sock:
            start = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\n")
            dropped = False
            # Trickle a header byte at a time: each arrives well within any
            # per-read timeout, but the whole head never does.
            while time.monotonic() - start < 4:
                try:
                    sock.sendall(b"X")
                    sock.settimeout(0.05)
                    if sock.recv(1) == b"":
                        dropped = True
                        break
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    dropped = True
                    break
            assert dropped
            assert time.monotonic() - start < 2
    finally:
        stop_server(server)


def test_static_files_and_websocket_side_by_side(tmp_path, echo_server):
    (tmp_path / "index.html").write_text("<h1>hello</h1>")
    server = start_server(lambda conn: conn.send(conn.recv()), static_dir=tmp_path)
    try:
        host, port = server.server_address
        with urllib.request.urlopen(f"http://{host}:{port}/index.html", timeout=5) as response:
            assert response.status == 200 and response.read() == b"<h1>hello</h1>"
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://{host}:{port}/missing", timeout=5)
        assert info.value.code == 404
        with threadws.dial(url_of(server, "/ws"), ping_interval=None) as conn:
            conn.send("hi")
            assert conn.recv(timeout=5) == "hi"
    finally:
        stop_server(server)


# --- the handler's life ---------------------------------------------------------------


def test_handler_return_closes_1000(echo_server):
    server = start_server(lambda conn: conn.send("bye now"))
    try:
        conn = threadws.dial(url_of(server), ping_interval=None)
        assert conn.recv(timeout=5) == "bye now"
        with pytest.raises(ConnectionClosedOK) as info:
            conn.recv(timeout=5)
        assert info.value.code == CloseCode.NORMAL_CLOSURE
    finally:
        stop_server(server)


def test_handler_exception_closes_1011_and_logs(caplog):
    def broken(conn: threadws.Conn) -> None:
        raise RuntimeError("handler bug")

    server = start_server(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="threadws"):
            conn = threadws.dial(url_of(server), ping_interval=None)
            with pytest.raises(ConnectionClosedError) as info:
                conn.recv(timeout=5)
            assert info.value.code == CloseCode.INTERNAL_ERROR
            assert conn.wait_closed(5)
            wait_until(lambda: "handler bug" in caplog.text)
    finally:
        stop_server(server)


def test_request_details_reach_the_handler():
    seen: queue.Queue[Any] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        seen.put((conn.path, conn.subprotocol, conn.request_headers.get("Authorization"), conn.remote_address))
        conn.recv()

    upgrader = threadws.Upgrader(subprotocols=["v2", "v1"], ping_interval=None)
    server = start_server(handler, upgrader=upgrader)
    try:
        conn = threadws.dial(
            url_of(server, "/room?id=7"), headers={"Authorization": "Bearer t"}, subprotocols=["v1", "v2"],
            ping_interval=None,
        )
        path, subprotocol, auth, remote = seen.get(timeout=5)
        assert (path, subprotocol, auth) == ("/room?id=7", "v2", "Bearer t")
        assert remote == conn.local_address
        assert conn.subprotocol == "v2" and conn.response_headers.get("Sec-WebSocket-Protocol") == "v2"
        conn.close()
    finally:
        stop_server(server)


def test_shutdown_closes_every_connection_with_1001():
    started = threading.Semaphore(0)

    def handler(conn: threadws.Conn) -> None:
        started.release()
        for message in conn:
            conn.send(message)

    server = start_server(handler)
    clients = [threadws.dial(url_of(server), ping_interval=None) for _ in range(5)]
    for _ in clients:
        assert started.acquire(timeout=5)
    assert len(server.connections) == 5
    stop_server(server)
    for client in clients:
        with pytest.raises(ConnectionClosedOK) as info:
            client.recv(timeout=5)
        assert info.value.code == CloseCode.GOING_AWAY
        assert client.wait_closed(5)
    assert server.connections == []
    with pytest.raises(OSError):
        threadws.dial(url_of(server), timeout=2)


# --- Upgrader inside a plain http.server -------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    upgrader = threadws.Upgrader(ping_interval=None)
    timeout = 0.2  # the handler's own timeout: the upgrade must clear it
    conns: queue.Queue[threadws.Conn] = queue.Queue()

    def do_GET(self) -> None:
        try:
            conn = self.upgrader.upgrade(self, response_headers=[("X-Hello", "there")])
        except threadws.HandshakeError:
            return
        # Return at once and leave the connection to another thread: after the
        # hijack the HTTP server's cleanup must not touch it.
        self.conns.put(conn)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stdlib_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_upgrade_in_http_server_hijacks_the_socket(stdlib_server):
    host, port = stdlib_server.server_address[:2]
    # The first frame rides in the same packet as the request: the HTTP
    # parser buffers it, and the upgrade must hand it on, not lose it.
    from .conftest import frame

    request = REQUEST.format(host=f"{host}:{port}", extra="").encode() + frame(1, b"early bird")
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(request)
        head = recv_head(sock, 1)  # (the frame after it is the server's to read)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"X-Hello: there\r\n" in head
        conn = _Handler.conns.get(timeout=5)
        try:
            assert conn.recv(timeout=5) == "early bird"
            # Idle for longer than the handler's timeout: nothing breaks.
            with pytest.raises(TimeoutError):
                conn.recv(timeout=0.5)
            sock.sendall(frame(2, b"later"))
            assert conn.read_message(timeout=5) == (MessageType.BINARY, b"later")
            conn.send("from server")
            data = b""
            while len(data) < 13:
                data += sock.recv(64)
            assert data == b"\x81\x0bfrom server"
        finally:
            conn.abort()


def test_upgrade_in_http_server_refuses_politely(stdlib_server):
    host, port = stdlib_server.server_address[:2]
    request = REQUEST.replace("Version: 13", "Version: 99").format(host=f"{host}:{port}", extra="").encode()
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(request)
        response = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            response += chunk
    assert response.startswith(b"HTTP/1.1 426 ")
    assert b"Sec-WebSocket-Version: 13" in response


def test_path_restricts_upgrades_and_no_directory_listing(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "page.html").write_text("page")
    server = start_server(lambda conn: conn.send(conn.path), path="/ws", static_dir=tmp_path)
    try:
        host, port = server.server_address
        with urllib.request.urlopen(f"http://{host}:{port}/page.html", timeout=5) as response:
            assert response.read() == b"page"
        for listing in ("/", "/sub/"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(f"http://{host}:{port}{listing}", timeout=5)
            assert info.value.code == 404
        with pytest.raises(HandshakeError) as refused:
            threadws.dial(url_of(server, "/elsewhere"))
        assert refused.value.status == 404
        conn = threadws.dial(url_of(server, "/ws?x=1"), ping_interval=None)
        assert conn.recv(timeout=5) == "/ws?x=1"
        conn.close()
    finally:
        stop_server(server)


# --- serve()'s per-connection settings, and running out of threads under other servers -----------


def test_serve_takes_the_per_connection_settings():
    server = threadws.serve(lambda conn: conn.send(conn.recv()), read_limit=1000, ping_interval=None)
    thread = threading.Thread(target=server.serve_forever, name="threadws-test-serve", daemon=True)
    thread.start()
    try:
        assert server.upgrader.settings.read_limit == 1000
        conn = threadws.dial(url_of(server), ping_interval=None)
        conn.send(b"x" * 1001)  # the limit holds from the first byte
        with pytest.raises(ConnectionClosedError) as info:
            conn.recv(timeout=5)
        assert info.value.code == CloseCode.MESSAGE_TOO_BIG
    finally:
        server.shutdown(timeout=5)
        thread.join(5)


def test_serve_refuses_settings_beside_an_upgrader():
    with pytest.raises(TypeError, match="read_limit, close_timeout given with upgrader="):
        threadws.serve(lambda conn: None, upgrader=threadws.Upgrader(), read_limit=10, close_timeout=1)


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize("failing", ["-writer", "-reader"])
def test_upgrade_in_http_server_out_of_threads_answers_503(stdlib_server, threads_fail, caplog, failing):
    host, port = stdlib_server.server_address[:2]
    threads_fail(failing)
    with socket.create_connection((host, port), timeout=5) as sock, caplog.at_level(logging.ERROR, "threadws"):
        sock.sendall(REQUEST.format(host=f"{host}:{port}", extra="").encode())
        response = read_until_closed(sock)  # and the socket is closed at once
    assert response.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Retry-After: 1\r\n" in response and b"101" not in response
    assert "can't start a connection's threads" in caplog.text
    assert _Handler.conns.empty()


@pytest.mark.parametrize("failing", ["-writer", "-reader"])
def test_upgrade_wsgi_out_of_threads_answers_503(threads_fail, failing):
    serving = pytest.importorskip("werkzeug.serving")
    upgrader = threadws.Upgrader(ping_interval=None)
    outcomes: queue.Queue[Any] = queue.Queue()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            conn = upgrader.upgrade_wsgi(environ)
        except HandshakeError as exc:
            outcomes.put(exc.status)
        else:
            outcomes.put(conn)
            conn.close()
        start_response("200 OK", [])
        return [b""]

    server = serving.make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="test-werkzeug", daemon=True)
    thread.start()
    try:
        threads_fail(failing)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(REQUEST.format(host=f"127.0.0.1:{server.port}", extra="").encode())
            response = read_until_closed(sock)
        assert response.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), response
        assert b"Retry-After: 1\r\n" in response
        assert response.count(b"HTTP/1.") == 1  # what the app returned afterwards went nowhere
        assert outcomes.get(timeout=5) == 503
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_an_abort_right_after_the_upgrade_still_follows_the_101():
    """The 101 goes out on the connection's writer: the upgrade returns once it has, so nothing cuts it off."""
    server = start_server(lambda conn: conn.abort())
    try:
        host, port = server.server_address
        request = REQUEST.format(host=f"{host}:{port}", extra="").encode()
        for _ in range(50):
            response = raw_request(server, request)
            assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), response
    finally:
        stop_server(server)
