"""dial(): handshakes against loopback servers, TLS, failures."""

from __future__ import annotations

import base64
import http.server
import logging
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import trustme

import threadws
from threadws import HandshakeError

from .conftest import recv_head, start_server, stop_server, url_of, wait_until


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
            data = recv_head(sock)
            if b"\r\n\r\n" not in data:
                return  # the client gave up before its request was whole
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


# --- the URL, the request's headers -------------------------------------------------


class _Seen(list):  # type: ignore[type-arg]
    """The server-side connections, in order; ``seen[i]`` waits for the i-th one's handler to start."""

    def __getitem__(self, index: int) -> threadws.Conn:  # type: ignore[override]
        wait_until(lambda: len(self) > index, timeout=10)
        return super().__getitem__(index)  # type: ignore[no-any-return]


def _recording_server(**upgrader: object) -> tuple[threadws.Server, list[threadws.Conn]]:
    """An echo server that keeps each server-side Conn, to look at what the client sent."""
    seen: list[threadws.Conn] = _Seen()

    def handler(conn: threadws.Conn) -> None:
        seen.append(conn)
        for message in conn:
            conn.send(message)

    upgrader.setdefault("ping_interval", None)
    return start_server(handler, upgrader=threadws.Upgrader(**upgrader)), seen  # type: ignore[arg-type]


def test_non_ascii_path_and_query_are_percent_encoded():
    server, seen = _recording_server()
    try:
        port = server.server_address[1]
        with threadws.dial(f"ws://127.0.0.1:{port}/café/€?q=ü ß&x=%41", ping_interval=None) as conn:
            conn.send("ping")
            assert conn.recv(timeout=5) == "ping"
        # UTF-8, percent-encoded; an escape already in the URL stays as it was.
        assert seen[0].path == "/caf%C3%A9/%E2%82%AC?q=%C3%BC%20%C3%9F&x=%41"
        assert conn.path == seen[0].path
    finally:
        stop_server(server)


def test_non_ascii_path_reaches_a_websockets_server():
    # websockets drops a request whose target is not ASCII: this is the issue's case.
    from websockets.sync.server import serve as ws_serve

    paths: list[str] = []

    def handler(ws: object) -> None:
        paths.append(ws.request.path)  # type: ignore[attr-defined]
        ws.send(ws.recv(timeout=5))  # type: ignore[attr-defined]

    server = ws_serve(handler, "127.0.0.1", 0, ping_interval=None)
    thread = threading.Thread(target=server.serve_forever, name="test-websockets-serve", daemon=True)
    thread.start()
    try:
        port = server.socket.getsockname()[1]
        with threadws.dial(f"ws://127.0.0.1:{port}/чат?имя=Ω", ping_interval=None, timeout=5) as conn:
            conn.send("hi")
            assert conn.recv(timeout=5) == "hi"
        assert paths == ["/%D1%87%D0%B0%D1%82?%D0%B8%D0%BC%D1%8F=%CE%A9"]
    finally:
        server.shutdown()
        thread.join(5)


def test_non_ascii_host_is_idna_encoded(echo_server):
    target = threadws.handshake.parse_url("wss://bücher.example:8443/")
    assert (target.host, target.host_header) == ("xn--bcher-kva.example", "xn--bcher-kva.example:8443")
    # On the wire too: the Host header the server gets (over a socket we connected).
    sock = socket.create_connection(echo_server.server_address)
    with threadws.dial("ws://bücher.example/", sock=sock, ping_interval=None) as conn:
        assert conn.request_headers["Host"] == "xn--bcher-kva.example"
    for bad in ("ws://exa mple.com/", "ws://a..b/", "ws://host:99999/", "ws://[nothex::1]/", "ws://host:0/"):
        with pytest.raises(ValueError):
            threadws.dial(bad)


def test_host_and_origin_in_headers_replace_the_defaults():
    server, seen = _recording_server(check_origin=["http://app.example"])
    try:
        url = url_of(server)
        headers = {"Host": "app.example", "Origin": "http://app.example", "X-Trace": "1"}
        with threadws.dial(url, headers=headers, ping_interval=None) as conn:
            conn.send("x")
            assert conn.recv(timeout=5) == "x"
        sent = seen[0].request_headers
        assert sent.get_all("Host") == ["app.example"] and sent.get_all("Origin") == ["http://app.example"]
        assert sent["X-Trace"] == "1"
        with pytest.raises(ValueError, match="Origin given both"):
            threadws.dial(url, origin="http://a.example", headers={"Origin": "http://b.example"})
        with pytest.raises(ValueError, match="twice"):
            threadws.dial(url, headers=[("Host", "a"), ("host", "b")])
    finally:
        stop_server(server)


@pytest.mark.parametrize(
    "name",
    ["Upgrade", "connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Protocol",
     "sec-websocket-extensions", "Sec-WebSocket-Accept"],
)
def test_the_handshakes_own_headers_are_refused(name):
    with pytest.raises(ValueError, match=name):
        threadws.dial("ws://127.0.0.1:9/", headers={name: "x"})


@pytest.mark.parametrize("header", [("Bad Name", "x"), ("X-Evil", "a\r\nInjected: yes"), ("X-Snow", "☃")])
def test_headers_that_cannot_be_sent_are_refused(header):
    with pytest.raises(ValueError):
        threadws.dial("ws://127.0.0.1:9/", headers=[header])


def test_credentials_in_the_url_are_sent_as_basic_auth():
    server, seen = _recording_server()
    try:
        host, port = server.server_address
        with threadws.dial(f"ws://us%C3%A9r:p%40ss:w@{host}:{port}/", ping_interval=None) as conn:
            assert "p@ss" not in repr(threadws.handshake.parse_url(f"ws://u:p%40ss@{host}/"))
        assert seen[0].request_headers["Authorization"] == "Basic " + base64.b64encode(
            "usér:p@ss:w".encode()).decode()
        assert conn.request_headers["Authorization"].startswith("Basic ")
        # An Authorization header given explicitly wins over the URL's.
        with threadws.dial(f"ws://u:p@{host}:{port}/", headers={"Authorization": "Bearer t"}, ping_interval=None):
            pass
        assert seen[1].request_headers.get_all("Authorization") == ["Bearer t"]
    finally:
        stop_server(server)


def test_subprotocols_as_one_string_is_one_subprotocol():
    server, seen = _recording_server(subprotocols=["chat"])
    try:
        with threadws.dial(url_of(server), subprotocols="chat", ping_interval=None) as conn:
            assert conn.subprotocol == "chat"
        assert seen[0].request_headers["Sec-WebSocket-Protocol"] == "chat"
        with pytest.raises(ValueError):
            threadws.dial(url_of(server), subprotocols=["a b"])
    finally:
        stop_server(server)


def test_user_agent_by_default_overridable_and_removable(echo_server):
    url = url_of(echo_server)
    python = "%d.%d" % sys.version_info[:2]
    with threadws.dial(url, ping_interval=None) as conn:
        assert conn.request_headers["User-Agent"] == f"threadws/{threadws.__version__} Python/{python}"
    with threadws.dial(url, user_agent="probe/2", ping_interval=None) as conn:
        assert conn.request_headers.get_all("User-Agent") == ["probe/2"]
    with threadws.dial(url, headers={"user-agent": "mine/1"}, ping_interval=None) as conn:
        assert conn.request_headers.get_all("User-Agent") == ["mine/1"]
    with threadws.dial(url, user_agent=None, ping_interval=None) as conn:
        assert "User-Agent" not in conn.request_headers


# --- the response ------------------------------------------------------------------------


def test_chunked_refusal_is_read_to_its_end_without_waiting(raw_server):
    stop = threading.Event()

    def answer(sock: socket.socket) -> None:
        sock.sendall(
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
            b"9\r\nnot today\r\n8\r\n, sorry\n\r\n0\r\n\r\n"
        )
        stop.wait(10)  # keep-alive: the connection stays open after the response

    server = raw_server(answer)
    start = time.monotonic()
    try:
        with pytest.raises(HandshakeError) as info:
            threadws.dial(f"ws://127.0.0.1:{server.port}/", timeout=5)
        assert time.monotonic() - start < 2
    finally:
        stop.set()
    assert info.value.status == 403
    assert info.value.body == b"not today, sorry\n"
    assert ("Content-Type", "text/plain") in info.value.headers


def test_refusal_message_shows_status_line_and_body(echo_server):
    with pytest.raises(HandshakeError) as info:
        threadws.dial(url_of(echo_server), origin="http://evil.example")
    message = str(info.value)
    assert "HTTP/1.1 403 Forbidden" in message
    assert "request origin not allowed" in message


def test_garbage_response_is_an_invalid_handshake(raw_server):
    server = raw_server(lambda sock: sock.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"))
    with pytest.raises(HandshakeError, match="invalid HTTP response"):
        threadws.dial(f"ws://127.0.0.1:{server.port}/", timeout=5)


def test_oversized_response_head_is_refused(raw_server):
    def answer(sock: socket.socket) -> None:
        try:
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\n" + b"X-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n")
        except OSError:
            pass  # the client hung up once it had seen enough

    server = raw_server(answer)
    with pytest.raises(HandshakeError, match="invalid HTTP response"):
        threadws.dial(f"ws://127.0.0.1:{server.port}/", timeout=5)


def test_connection_closed_before_the_response(raw_server):
    server = raw_server(lambda sock: None)
    with pytest.raises(HandshakeError, match="closed before"):
        threadws.dial(f"ws://127.0.0.1:{server.port}/", timeout=5)


# --- one total timeout, and which step ran out ------------------------------------------


def test_timeout_none_means_no_limit(echo_server):
    with threadws.dial(url_of(echo_server), timeout=None, ping_interval=None) as conn:
        conn.send("x")
        assert conn.recv(timeout=5) == "x"
    with pytest.raises(ValueError):
        threadws.dial(url_of(echo_server), timeout=0)
    with pytest.raises(TypeError):
        threadws.dial(url_of(echo_server), timeout="10")  # type: ignore[arg-type]


def test_tcp_connect_timeout_names_the_step():
    # A listener whose accept queue is full drops further SYNs: connect() hangs.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            start = time.monotonic()
            with pytest.raises(TimeoutError) as info:
                threadws.dial(f"ws://127.0.0.1:{port}/", timeout=0.5)
            assert time.monotonic() - start < 2
        finally:
            for filler in fillers:
                filler.close()
    assert f"connecting to 127.0.0.1 port {port}" in str(info.value)
    assert "after 0.5 s" in str(info.value)


def test_dns_is_bounded_by_the_timeout(monkeypatch):
    real = socket.getaddrinfo
    release = threading.Event()

    def slow_getaddrinfo(host, *args, **kwargs):
        if host == "slow.example":
            release.wait(5)  # a resolver that takes its time (bounded, for the old code)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="while resolving slow.example"):
            threadws.dial("ws://slow.example/", timeout=0.3)
        assert time.monotonic() - start < 2
    finally:
        release.set()  # the resolver thread ends (the leak check waits for it)


@pytest.fixture
def black_holes() -> Iterator[Callable[[int], list[tuple[str, int]]]]:
    """``make(n)``: *n* loopback addresses whose listeners' accept queues are full, so a SYN to them is dropped."""
    opened: list[socket.socket] = []

    def make(count: int) -> list[tuple[str, int]]:
        addresses = []
        for _ in range(count):
            listener = socket.create_server(("127.0.0.1", 0), backlog=0)
            opened.append(listener)
            port = listener.getsockname()[1]
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                opened.append(filler)
            addresses.append(("127.0.0.1", port))
        return addresses

    yield make
    for sock in opened:
        sock.close()


def _resolving(monkeypatch: pytest.MonkeyPatch, name: str, addresses: list[tuple[str, int]]) -> list[str]:
    """Make *name* resolve to *addresses* (in order); returns the list of names looked up."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host, *args, **kwargs):
        asked.append(host)
        if host == name:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", address) for address in addresses]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_one_timeout_covers_every_address_a_name_resolves_to(monkeypatch, black_holes):
    holes = black_holes(4)
    asked = _resolving(monkeypatch, "many.example", holes)
    start = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        threadws.dial("ws://many.example/", timeout=1.0)
    # One timeout for the dial, not one per address (that would be 4 s).
    assert time.monotonic() - start < 3
    assert "many.example" in asked
    last = "127.0.0.1:{}".format(holes[-1][1])
    assert f"after 1 s while connecting to many.example ({last})" in str(info.value)  # it got to the last one


def test_an_address_that_drops_syns_leaves_time_for_the_next(monkeypatch, black_holes, echo_server):
    # Each address gets its share of what is left: 2 s / 3, then the rest / 2, then the rest.
    _resolving(monkeypatch, "mixed.example", black_holes(2) + [echo_server.server_address])
    with threadws.dial("ws://mixed.example/", timeout=2.0, ping_interval=None) as conn:
        conn.send("through")
        assert conn.recv(timeout=5) == "through"


def test_silent_tls_server_times_out_in_the_tls_step(raw_server):
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="in the TLS handshake with 127.0.0.1"):
            threadws.dial(f"wss://127.0.0.1:{port}/", timeout=0.4)
        assert time.monotonic() - start < 2
    stop.set()


def test_silent_server_times_out_waiting_for_the_response(raw_server):
    stop = threading.Event()
    server = raw_server(lambda sock: stop.wait(10))
    try:
        with pytest.raises(TimeoutError, match="after 0.3 s while waiting for the handshake response"):
            threadws.dial(f"ws://127.0.0.1:{server.port}/", timeout=0.3)
    finally:
        stop.set()


# --- a proxy's side of CONNECT, byte by byte (real proxies: test_interop_proxy.py) -------


def test_connect_request_and_a_proxy_that_hangs_up(raw_server):
    server = raw_server(lambda sock: None)  # reads the CONNECT, then closes
    with pytest.raises(threadws.ProxyError, match="did not open a tunnel to example.test:8080"):
        threadws.dial("ws://example.test:8080/", proxy=f"http://me:p%C3%A4ss@127.0.0.1:{server.port}", timeout=5)
    lines = server.request.decode("latin-1").split("\r\n")
    assert lines[0] == "CONNECT example.test:8080 HTTP/1.1"
    assert "Host: example.test:8080" in lines
    assert "Proxy-Authorization: Basic " + base64.b64encode("me:päss".encode()).decode() in lines
    assert f"User-Agent: {threadws.client.USER_AGENT}" in lines


def test_proxy_that_speaks_before_the_server(raw_server):
    server = raw_server(lambda sock: sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 101 ..."))
    with pytest.raises(threadws.ProxyError, match="sent data after its answer"):
        threadws.dial("ws://example.test/", proxy=f"http://127.0.0.1:{server.port}", timeout=5)


def test_unreachable_proxy_says_so():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError, match=f"connecting to proxy 127.0.0.1 port {port}"):
        threadws.dial("ws://example.test/", proxy=f"http://127.0.0.1:{port}", timeout=5)


# --- other transports -----------------------------------------------------------------


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def test_unix_socket(tmp_path):
    upgrader = threadws.Upgrader(ping_interval=None)
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            conn = upgrader.upgrade(self)
            seen.append(conn.request_headers["Host"])
            for message in conn:
                conn.send(message)

        def log_message(self, *args: object) -> None:
            pass  # a Unix socket's client address is "": the default log line can't show it

    path = str(tmp_path / "ws.sock")
    server = _UnixServer(path, Handler)
    thread = threading.Thread(target=server.serve_forever, name="test-unix-serve", daemon=True)
    thread.start()
    try:
        with threadws.dial("ws://app.local/chat", unix_socket=path, ping_interval=None) as conn:
            conn.send("over unix")
            assert conn.recv(timeout=5) == "over unix"
            assert conn.path == "/chat"
        assert seen == ["app.local"]
        with pytest.raises(FileNotFoundError, match="Unix socket"):
            threadws.dial("ws://app.local/", unix_socket=str(tmp_path / "missing.sock"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_preconnected_socket_is_used_and_closed_on_failure(echo_server):
    sock = socket.create_connection(echo_server.server_address)
    with threadws.dial("ws://example.test/", sock=sock, ping_interval=None) as conn:
        conn.send("via sock")
        assert conn.recv(timeout=5) == "via sock"
    other = socket.create_connection(echo_server.server_address)
    with pytest.raises(HandshakeError):
        threadws.dial("ws://example.test/", sock=other, origin="http://evil.example")
    assert other.fileno() == -1  # dial owned it: closed on failure


def test_server_hostname_for_tls(tls):
    ca, server_context = tls
    only_localhost = ca.issue_cert("localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    only_localhost.configure_cert(context)
    server = start_server(lambda conn: conn.send(conn.recv()), ssl_context=context)
    try:
        port = server.server_address[1]
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        with pytest.raises(ssl.SSLCertVerificationError):
            threadws.dial(f"wss://127.0.0.1:{port}/", ssl_context=client_context)
        with threadws.dial(f"wss://127.0.0.1:{port}/", ssl_context=client_context, server_hostname="localhost",
                           ping_interval=None) as conn:
            conn.send("tls")
            assert conn.recv(timeout=5) == "tls"
    finally:
        stop_server(server)


def test_logger_argument_gets_the_handshake_and_the_frames(echo_server, caplog):
    caplog.set_level(logging.DEBUG, logger="app.ws")
    logger = logging.getLogger("app.ws")
    with threadws.dial(url_of(echo_server), logger=logger, ping_interval=None) as conn:
        conn.send("hi")
        assert conn.recv(timeout=5) == "hi"
    assert conn.logger is logger
    mine = [r.getMessage() for r in caplog.records if r.name == "app.ws"]
    assert f"{conn.name} > GET / HTTP/1.1" in mine
    assert f"{conn.name} < HTTP/1.1 101 Switching Protocols" in mine
    assert f"{conn.name} > TEXT 'hi' [2 bytes]" in mine
