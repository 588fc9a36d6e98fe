"""Upgrader.upgrade_wsgi inside a real Flask app (tests/wsgi_apps/flask_app.py), under real servers.

Each test starts its server as a subprocess on a free loopback port, waits for
it to say where it listens, and kills its whole process group at the end. A
server name ending in ``+tls`` serves https with the trustme test certificate.
"""

from __future__ import annotations

import http.client
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import threadws
from threadws import CloseCode, handshake
from threadws.exceptions import HandshakeError
from threadws.wsgi import environ_headers

from .conftest import frame, recv_head
from .tls_tools import Certificates

pytest.importorskip("flask")

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 20.0
APP = "tests.wsgi_apps.flask_app"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def _gunicorn(worker: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "--worker-class", worker, *extra,
        "--bind", "127.0.0.1:0", "--no-control-socket", "--config", "/dev/null",
        "--graceful-timeout", "1", f"{APP}:app",
    ]  # fmt: skip


# name -> (command, stream and pattern that give the port once it listens)
SERVERS = {
    "werkzeug": ([sys.executable, "-m", APP, "werkzeug"], "stdout", r"listening on (\d+)"),
    "gunicorn-gthread": (_gunicorn("gthread", "--threads", "4"), "stderr", r"Listening at: http://127\.0\.0\.1:(\d+)"),
    "gunicorn-sync": (_gunicorn("sync"), "stderr", r"Listening at: http://127\.0\.0\.1:(\d+)"),
    "wsgiref": ([sys.executable, "-m", APP, "wsgiref"], "stdout", r"listening on (\d+)"),
    "waitress": ([sys.executable, "-m", APP, "waitress"], "stdout", r"listening on (\d+)"),
}


def _tls_server(name: str, certs: Certificates) -> tuple[list[str], str, str]:
    """What SERVERS has for *name*, serving https with the test certificate instead."""
    if name == "werkzeug":
        return [sys.executable, "-m", APP, "werkzeug", certs.cert_pem, certs.key_pem], "stdout", r"listening on (\d+)"
    worker = name.removeprefix("gunicorn-")
    threads = ["--threads", "4"] if worker == "gthread" else []
    command = _gunicorn(worker, *threads, "--certfile", certs.cert_pem, "--keyfile", certs.key_pem)
    return command, "stderr", r"Listening at: https://127\.0\.0\.1:(\d+)"


@dataclass
class RunningServer:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: bytes
    secure: bool = False

    def ws(self, path: str) -> str:
        return f"{'wss' if self.secure else 'ws'}://127.0.0.1:{self.port}{path}"

    def http(self, path: str) -> str:
        return f"{'https' if self.secure else 'http'}://127.0.0.1:{self.port}{path}"

    def read_stderr_until(self, pattern: str, timeout: float = 10.0) -> bytes:
        """What the server writes to stderr from now on, up to and including a match of *pattern*."""
        _, seen = _read_until(self.proc, "stderr", pattern, timeout, "the server never wrote that")
        return seen


def _read_until(
    proc: subprocess.Popen[bytes], stream: str, pattern: str, timeout: float, failure: str
) -> tuple[re.Match[bytes], bytes]:
    """Read the server's *stream* until *pattern* matches, or fail the test with *failure* at *timeout*."""
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    assert pipe is not None
    deadline = time.monotonic() + timeout
    seen = b""
    while True:
        match = re.search(pattern.encode(), seen)
        if match:
            return match, seen
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{failure} in time; it wrote {seen!r}")
        ready, _, _ = select.select([pipe], [], [], remaining)
        if ready:
            chunk = os.read(pipe.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"the server exited (code {proc.wait(5)}); it wrote {seen!r}")
            seen += chunk


def _wait_for_port(proc: subprocess.Popen[bytes], stream: str, pattern: str) -> tuple[int, bytes]:
    match, seen = _read_until(proc, stream, pattern, STARTUP_TIMEOUT, "the server did not say where it listens")
    return int(match.group(1)), seen


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # gunicorn's arbiter and its worker, together
    except ProcessLookupError:
        pass
    proc.wait(10)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    name = request.param
    if name.startswith("gunicorn"):
        pytest.importorskip("gunicorn")
    if name == "waitress":
        pytest.importorskip("waitress")
    secure = name.endswith("+tls")
    if secure:
        command, stream, pattern = _tls_server(name.removesuffix("+tls"), request.getfixturevalue("tls_certs"))
    else:
        command, stream, pattern = SERVERS[name]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so that killing it takes gunicorn's worker too
    )
    try:
        port, log = _wait_for_port(proc, stream, pattern)
        yield RunningServer(name, proc, port, log, secure)
    finally:
        _kill(proc)


THREADED = ["werkzeug", "gunicorn-gthread"]
TAKING_OVER = [*THREADED, "gunicorn-sync"]


def _raw_request(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send *request*, return everything the server sends until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def _upgrade_request(port: int, path: str = "/echo", extra: str = "", version: str = "13") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


def _get(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, data=data, timeout=10) as response:
        return response.status, response.read()


@pytest.mark.parametrize("server", THREADED, indirect=True)
def test_echo_on_the_request_thread(server: RunningServer) -> None:
    with threadws.dial(server.ws("/echo?room=1")) as conn:
        assert conn.recv(timeout=10) == "hello from /echo?room=1"
        conn.send("text")
        assert conn.recv(timeout=10) == "text"
        conn.send(b"\x00\xffbinary")
        assert conn.recv(timeout=10) == b"\x00\xffbinary"
        big = os.urandom(300_000)
        conn.send(big)
        assert conn.recv(timeout=10) == big
    with pytest.raises(threadws.ConnectionClosedOK) as info:
        conn.recv(timeout=1)
    assert info.value.sent is not None and info.value.sent.code == CloseCode.NORMAL_CLOSURE
    assert info.value.rcvd is not None and info.value.rcvd.code == CloseCode.NORMAL_CLOSURE


@pytest.mark.parametrize("server", TAKING_OVER, indirect=True)
def test_echo_handed_to_another_thread(server: RunningServer) -> None:
    with threadws.dial(server.ws("/handoff")) as conn:
        assert conn.recv(timeout=10) == "hello from /handoff"
        conn.send("after the view returned")
        assert conn.recv(timeout=10) == "after the view returned"
    # The server answered nothing of its own: the one response was our 101, and
    # the view's return value went nowhere (else the frames above would be garbage).


@pytest.mark.parametrize("server", THREADED, indirect=True)
def test_websockets_and_ordinary_routes_side_by_side(server: RunningServer) -> None:
    conns = [threadws.dial(server.ws(f"/echo?n={i}")) for i in range(2)]
    try:
        handed = threadws.dial(server.ws("/handoff"))
        conns.append(handed)
        for conn in conns:
            assert conn.recv(timeout=10).startswith("hello from ")
        # With three WebSockets open, ordinary requests still get answers...
        assert _get(server.http("/")) == (200, b"an ordinary route\n")
        assert _get(server.http("/upload"), data=b"x" * 10_000) == (200, b"got 10000 bytes\n")
        # ... and every WebSocket still works afterwards.
        for i, conn in enumerate(conns):
            conn.send(f"message {i}")
        for i, conn in enumerate(conns):
            assert conn.recv(timeout=10) == f"message {i}"
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.parametrize("server", ["gunicorn-sync"], indirect=True)
def test_sync_worker_serves_ordinary_routes_while_a_websocket_is_open(server: RunningServer) -> None:
    with threadws.dial(server.ws("/handoff")) as conn:
        assert conn.recv(timeout=10) == "hello from /handoff"
        assert _get(server.http("/")) == (200, b"an ordinary route\n")
        conn.send("still here")
        assert conn.recv(timeout=10) == "still here"


@pytest.mark.parametrize("server", THREADED, indirect=True)
def test_frames_sent_right_behind_the_request_are_kept(server: RunningServer) -> None:
    # The client sends its request and a first frame in one write, so the
    # server's HTTP parser may buffer the frame along with the head.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_upgrade_request(server.port) + frame(1, b"pipelined"))
        data = b""
        while b"pipelined" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed; got {data!r}"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"hello from /echo" in rest
        sock.sendall(frame(8, CloseCode.NORMAL_CLOSURE.to_bytes(2, "big")))
        while sock.recv(65536):
            pass  # the server closes TCP after the closing handshake


@pytest.mark.parametrize("server", TAKING_OVER, indirect=True)
@pytest.mark.parametrize(
    ("extra", "version", "status"),
    [
        ("", "12", 426),
        ("Origin: http://evil.example\r\n", "13", 403),
    ],
)
def test_handshake_errors_are_answered_like_the_stdlib_server(
    server: RunningServer, extra: str, version: str, status: int
) -> None:
    request = _upgrade_request(server.port, extra=extra, version=version)
    data = _raw_request(server.port, request)
    # Exactly the response Upgrader.upgrade gives under http.server, and nothing after it.
    error = _expected_error(status)
    assert data == handshake.build_error_response(error)


@pytest.mark.parametrize("server", THREADED, indirect=True)
def test_bad_key_is_400(server: RunningServer) -> None:
    request = _upgrade_request(server.port).replace(KEY.encode(), b"not base64!")
    data = _raw_request(server.port, request)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert data.endswith(b"\r\n\r\n'Sec-WebSocket-Key' is not 16 bytes in base64\n")


def _expected_error(status: int) -> HandshakeError:
    """The HandshakeError that the stdlib path (check_request, as Upgrader.upgrade calls it) gives."""
    environ = {
        "HTTP_HOST": "h",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": KEY,
        "HTTP_SEC_WEBSOCKET_VERSION": "12" if status == 426 else "13",
    }
    if status == 403:
        environ["HTTP_ORIGIN"] = "http://evil.example"
    with pytest.raises(HandshakeError) as info:
        handshake.check_request("GET", "HTTP/1.1", environ_headers(environ))
    assert info.value.status == status
    return info.value


@pytest.mark.parametrize("server", ["werkzeug", "gunicorn-gthread"], indirect=True)
def test_websockets_library_client(server: RunningServer) -> None:
    sync_client = pytest.importorskip("websockets.sync.client")
    with sync_client.connect(server.ws("/echo"), open_timeout=10, close_timeout=5) as ws:
        assert ws.recv(timeout=10) == "hello from /echo"
        ws.send("from websockets")
        assert ws.recv(timeout=10) == "from websockets"


@pytest.mark.parametrize("server", ["wsgiref", "waitress"], indirect=True)
def test_servers_that_keep_their_socket_raise_naming_the_ones_that_work(server: RunningServer) -> None:
    with pytest.raises(HandshakeError) as info:
        threadws.dial(server.ws("/echo"), timeout=10)
    assert info.value.status == 500
    message = info.value.body.decode()
    assert "does not hand over its connections' sockets" in message
    assert "Werkzeug's development server" in message and "gunicorn with sync or gthread workers" in message
    assert _get(server.http("/")) == (200, b"an ordinary route\n")  # the rest of the app is unaffected


def test_environ_without_a_socket_raises_before_anything_is_sent() -> None:
    upgrader = threadws.Upgrader()
    environ = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_SOFTWARE": "waitress"}
    with pytest.raises(RuntimeError, match=r"^upgrade_wsgi: waitress does not hand over"):
        upgrader.upgrade_wsgi(environ)


def test_environ_headers() -> None:
    headers = environ_headers(
        {
            "HTTP_HOST": "example.com",
            "HTTP_SEC_WEBSOCKET_KEY": KEY,
            "CONTENT_LENGTH": "",
            "CONTENT_TYPE": "text/plain",
            "wsgi.input": None,
            "PATH_INFO": "/x",
        }
    )
    assert headers.get_all("Sec-WebSocket-Key") == [KEY]
    assert headers["host"] == "example.com"
    assert headers["Content-Type"] == "text/plain"
    assert "Content-Length" not in headers
    assert len(headers) == 3


@pytest.mark.parametrize("server", ["gunicorn-gthread"], indirect=True)
def test_upgrade_on_a_kept_alive_connection(server: RunningServer) -> None:
    # gthread keeps connections alive between requests; the second request on
    # this one is the upgrade, and the WebSocket must get the socket, not the poller.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        data = b""
        while not data.endswith(b"an ordinary route\n"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed; got {data!r}"
            data += chunk
        assert b"Connection: keep-alive\r\n" in data
        sock.sendall(_upgrade_request(server.port, "/echo?again=1"))
        data = b""
        while b"hello from /echo?again=1" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed; got {data!r}"
            data += chunk
        assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        sock.sendall(frame(1, b"still mine"))
        data = b""
        while b"still mine" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed; got {data!r}"
            data += chunk
        sock.sendall(frame(8, CloseCode.NORMAL_CLOSURE.to_bytes(2, "big")))
        while sock.recv(65536):
            pass


@pytest.mark.parametrize("server", TAKING_OVER, indirect=True)
def test_the_client_receives_nothing_but_the_101_and_frames(server: RunningServer) -> None:
    # The view hands the connection off and returns "", 101 at once, so the
    # server tries to send that response while the WebSocket runs: none of it
    # may reach the client.
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import CloseConnection, TextMessage

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_upgrade_request(server.port, "/handoff"))
        data = recv_head(sock, 65536)
        assert b"\r\n\r\n" in data, f"connection closed; got {data!r}"
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        ws = Connection(ConnectionType.CLIENT)
        ws.receive_data(rest)
        events = list(ws.events())
        while not any(isinstance(event, TextMessage) for event in events):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed; events so far {events!r}"
            ws.receive_data(chunk)
            events += ws.events()
        sock.sendall(frame(8, CloseCode.NORMAL_CLOSURE.to_bytes(2, "big")))
        while chunk := sock.recv(65536):  # everything until the server closes TCP
            ws.receive_data(chunk)
            events += ws.events()  # a stray HTTP response here would be a protocol error
    assert [type(event) for event in events] == [TextMessage, CloseConnection]
    assert events[0].data == "hello from /handoff"
    assert events[1].code == CloseCode.NORMAL_CLOSURE


TLS_SERVERS = ["werkzeug+tls", "gunicorn-gthread+tls", "gunicorn-sync+tls"]
TLS_REFUSED = "upgrade_wsgi: a connection that came over TLS can't be taken over from the WSGI server"


@pytest.mark.parametrize("server", TLS_SERVERS, indirect=True)
def test_a_request_over_tls_is_refused_with_the_clear_error(server: RunningServer, tls_certs: Certificates) -> None:
    """The server's TLS session lives in its SSLSocket: upgrade_wsgi raises RuntimeError before sending anything.

    /echo turns the error into a 500 carrying its message (tests/wsgi_apps/flask_app.py): the
    first and only response the client gets is that 500, never a 101.
    """
    with pytest.raises(HandshakeError) as info:
        threadws.dial(server.ws("/echo"), ssl_context=tls_certs.client, timeout=10)
    assert info.value.status == 500
    message = info.value.body.decode()
    assert message.startswith(TLS_REFUSED)
    assert "terminate TLS in a proxy" in message and "threadws.serve(ssl_context=...)" in message
    # The rest of the app still works over https.
    with urllib.request.urlopen(server.http("/"), timeout=10, context=tls_certs.client) as response:
        assert (response.status, response.read()) == (200, b"an ordinary route\n")


@pytest.mark.parametrize("server", TLS_SERVERS, indirect=True)
def test_a_view_that_lets_the_tls_error_out_answers_500_and_logs_it(
    server: RunningServer, tls_certs: Certificates
) -> None:
    """/handoff doesn't catch the RuntimeError: Flask answers its own 500 and logs the error on the server's stderr."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with tls_certs.client.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(_upgrade_request(server.port, "/handoff"))
        response = http.client.HTTPResponse(sock)
        response.begin()  # the first status line on the wire: a 101 here would have been read as one
        assert response.status == 500
        response.read()
    log = server.read_stderr_until(r"RuntimeError: upgrade_wsgi: [^\n]*\n")
    assert TLS_REFUSED.encode() in log
