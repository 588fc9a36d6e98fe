"""dial(..., follow_redirects=True): against a real http.server that redirects and then upgrades."""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest
import trustme

import threadws
from threadws import HandshakeError


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers.items())))
        redirect = self.server.redirects.get(self.path)
        if redirect is not None:
            status, location = redirect
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        conn = self.server.upgrader.upgrade(self)
        for message in conn:
            conn.send(message)

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, redirects: dict[str, tuple[int, str]], context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.redirects = redirects
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.upgrader = threadws.Upgrader(ping_interval=None, close_timeout=2)
        self.port = self.server_address[1]


@contextlib.contextmanager
def serving(redirects: dict[str, tuple[int, str]], context: ssl.SSLContext | None = None) -> Iterator[_Server]:
    server = _Server(redirects, context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="test-redirect-serve", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _talk(conn: threadws.Conn) -> None:
    with conn:
        conn.send("hi")
        assert conn.recv(timeout=5) == "hi"


def test_a_redirect_is_a_refusal_unless_asked_to_follow():
    with serving({"/old": (302, "/new")}) as server:
        with pytest.raises(HandshakeError) as info:
            threadws.dial(f"ws://127.0.0.1:{server.port}/old")
    assert info.value.status == 302
    assert ("Location", "/new") in info.value.headers
    assert "follow_redirects=True" in str(info.value) and "/new" in str(info.value)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_same_origin_redirect_is_followed_with_the_credentials(status):
    with serving({"/old": (status, "/new?x=1")}) as server:
        conn = threadws.dial(f"ws://u:pw@127.0.0.1:{server.port}/old", follow_redirects=True, ping_interval=None)
        _talk(conn)
    assert conn.path == "/new?x=1"
    assert [path for path, _ in server.requests] == ["/old", "/new?x=1"]
    assert server.requests[0][1]["Authorization"] == server.requests[1][1]["Authorization"]


def test_redirect_to_another_origin_drops_credentials():
    with serving({}) as other, serving({"/old": (307, f"http://127.0.0.1:{other.port}/there")}) as first:
        conn = threadws.dial(
            f"ws://u:pw@127.0.0.1:{first.port}/old",
            headers={"Cookie": "session=1", "X-Keep": "yes"},
            follow_redirects=True,
            ping_interval=None,
        )
        _talk(conn)
    assert "Authorization" in first.requests[0][1] and first.requests[0][1]["Cookie"] == "session=1"
    (path, headers), = other.requests
    assert path == "/there"  # http:// in Location means ws:// here
    assert "Authorization" not in headers and "Cookie" not in headers
    assert headers["X-Keep"] == "yes"
    assert headers["Host"] == f"127.0.0.1:{other.port}"


def test_redirect_from_wss_to_ws_is_never_followed():
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with serving({}) as plain, serving({"/": (302, f"ws://127.0.0.1:{plain.port}/")}, server_context) as secure:
        with pytest.raises(HandshakeError, match="leaves TLS") as info:
            threadws.dial(f"wss://127.0.0.1:{secure.port}/", ssl_context=client_context, follow_redirects=True)
    assert info.value.status == 302
    assert plain.requests == []


def test_redirect_loop_stops_after_ten():
    with serving({"/loop": (302, "/loop")}) as server:
        with pytest.raises(HandshakeError, match="more than 10 redirects"):
            threadws.dial(f"ws://127.0.0.1:{server.port}/loop", follow_redirects=True)
    assert len(server.requests) == 11


def test_redirect_cannot_reuse_a_given_socket():
    with serving({"/old": (302, "/new")}) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        with pytest.raises(HandshakeError, match="sock="):
            threadws.dial("ws://127.0.0.1/old", sock=sock, follow_redirects=True)


def test_redirect_to_something_else_than_websocket_is_refused():
    with serving({"/old": (301, "ftp://127.0.0.1/file")}) as server:
        with pytest.raises(HandshakeError, match="not a WebSocket URL"):
            threadws.dial(f"ws://127.0.0.1:{server.port}/old", follow_redirects=True)
