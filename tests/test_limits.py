"""What a server admits: its limits, each at its edge, and what it does with bytes that aren't HTTP.

The request-line and header checks run without sockets; the limits against a
real loopback server; running out of threads both through a failing
``Thread.start`` and, as root, at a real ``RLIMIT_NPROC``, and out of file
descriptors at a real ``RLIMIT_NOFILE``, in a server process of its own.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import threadws
from threadws import HandshakeError
from threadws._http import check_request_start, parse_fields
from threadws.settings import ServerLimits

from .conftest import REQUEST, recv_head, start_server, stop_server, url_of, wait_until
from .tls_tools import make_certificates

ROOT = Path(__file__).resolve().parent.parent

#: The first bytes of a real TLS 1.3 ClientHello (record header, handshake header, version, random).
CLIENT_HELLO = bytes.fromhex("16030100f8010000f40303") + os.urandom(32)


def answer(address: tuple[str, int], data: bytes = b"", timeout: float = 10.0) -> bytes:
    """Connect, send *data* (maybe nothing) and keep the socket open; return everything until the server closes.

    Raises TimeoutError if the server neither answers nor closes within *timeout*.
    """
    with socket.create_connection(address, timeout=timeout) as sock:
        if data:
            sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""  # a reset after the answer: the answer was read already
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def response_head(address: tuple[str, int], data: bytes, timeout: float = 10.0) -> bytes:
    """Send *data*; return the response head (up to its blank line), then close."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        return recv_head(sock)


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:100]
    return int(response.split(b" ", 2)[1])


def echo(conn: threadws.Conn) -> None:
    for message in conn:
        conn.send(message)


# --- the request line, byte by byte (no sockets) ---------------------------------


GOOD_LINES = [
    b"GET / HTTP/1.1\r\n",
    b"GET /chat?room=1&x=%20y HTTP/1.1\r\n",
    b"OPTIONS * HTTP/1.0\r\n",
    b"M-SEARCH http://example.com:80/a HTTP/1.1\r\n",
    b"GET /caf\xc3\xa9 HTTP/1.1\r\n",  # obs-text in the target: left to parse_request, as before
]


@pytest.mark.parametrize("line", GOOD_LINES)
def test_every_beginning_of_a_request_line_waits_for_more(line):
    for cut in range(len(line)):
        assert check_request_start(line[:cut]) is False, line[:cut]
    assert check_request_start(line) is True
    assert check_request_start(line + b"Host: x\r\n\r\n") is True


@pytest.mark.parametrize(
    ("data", "bad_at"),
    [
        (CLIENT_HELLO, 0),  # TLS on the plain port
        (b"\x00\x00\x00\x01", 0),
        (b'{"jsonrpc": "2.0"}', 0),
        (b"SSH-2.0-OpenSSH_9.2\r\n", 19),  # "SSH-2.0-OpenSSH_9.2" is a token; the CR can't follow it
        (b"GET\t/ HTTP/1.1\r\n", 3),
        (b"GET  / HTTP/1.1\r\n", 4),  # one space, exactly
        (b" GET / HTTP/1.1\r\n", 0),
        (b"\r\nGET / HTTP/1.1\r\n", 0),
        (b"GET /a\x00b HTTP/1.1\r\n", 6),
        (b"GET / http/1.1\r\n", 6),
        (b"GET / HTTP/1.1 \r\n", 14),
        (b"GET / HTTP/11\r\n", 12),
        (b"GET / HTTP/1.1\n", 14),  # a bare LF
    ],
)
def test_what_cannot_be_http_is_refused_at_the_first_wrong_byte(data, bad_at):
    assert check_request_start(data[:bad_at]) is False
    with pytest.raises(HandshakeError) as info:
        check_request_start(data[: bad_at + 1])
    assert info.value.status == 400


def test_a_tls_client_hello_is_named_in_the_refusal():
    with pytest.raises(HandshakeError, match="TLS handshake"):
        check_request_start(CLIENT_HELLO[:2])


# --- header fields (no sockets) -------------------------------------------------------


def test_header_fields_are_parsed_strictly():
    headers = parse_fields(b"Host: a\r\nX-Two:  1 \t\r\nx-two: 2\r\nEmpty:\r\nLatin: caf\xe9", max_fields=100)
    assert headers["host"] == "a"
    assert headers.get_all("X-Two") == ["1", "2"]  # repeated fields are all kept, stripped
    assert headers["Empty"] == "" and headers["Latin"] == "café"
    assert len(parse_fields(b"", max_fields=1)) == 0


@pytest.mark.parametrize(
    "fields",
    [
        b"Host : a",  # whitespace before the colon (RFC 9112 section 5.1)
        b"Host: a\r\n folded",  # obs-fold
        b"Host: a\x00b",
        b"Host: a\rb",
        b"Host: a\nb",
        b"no colon at all",
        b": no name",
        b"Bad[name]: a",
        b"Host: a\r\n\r\nX: smuggled",  # an empty line inside the fields
    ],
)
def test_malformed_header_lines_are_refused(fields):
    with pytest.raises(HandshakeError) as info:
        parse_fields(fields, max_fields=100)
    assert info.value.status == 400


def test_header_field_count_at_its_edge():
    fields = b"\r\n".join(b"X-%d: v" % i for i in range(100))
    assert len(parse_fields(fields, max_fields=100)) == 100
    with pytest.raises(HandshakeError) as info:
        parse_fields(fields + b"\r\nOne-More: v", max_fields=100)
    assert info.value.status == 431


def test_a_long_run_of_spaces_parses_in_linear_time():
    # A value of 15,000 spaces then a letter: a backtracking pattern would take minutes.
    headers = parse_fields(b"X: " + b" " * 15_000 + b"x", max_fields=100)
    assert headers["X"] == "x"


def test_server_limits_are_checked():
    assert ServerLimits().max_connections == 4096 and ServerLimits().max_handshakes == 128
    assert ServerLimits(max_connections=None, max_handshakes=None).max_connections is None
    for bad in ({"max_connections": 0}, {"max_handshakes": 0}, {"handshake_timeout": 0}, {"max_header_fields": 0}):
        with pytest.raises(ValueError):
            ServerLimits(**bad)


# --- bytes that aren't HTTP, against a server -------------------------------------------


@pytest.fixture
def patient_server() -> Iterator[threadws.Server]:
    """A server whose handshake timeout is far longer than any wait in these tests."""
    server = start_server(echo, handshake_timeout=600)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.mark.parametrize(
    "data", [CLIENT_HELLO, b"\x00\x01\x02", b"SSH-2.0-OpenSSH_9.2\r\n"], ids=["tls", "binary", "ssh"]
)
def test_bytes_that_are_not_http_are_answered_at_once(patient_server, data):
    # The client keeps its socket open: only the server's own decision ends
    # the exchange before the 10 s of answer()'s timeout (the handshake
    # timeout is 600 s).
    response = answer(patient_server.server_address, data)
    assert status_of(response) == 400
    if data is CLIENT_HELLO:
        assert b"TLS handshake" in response


def test_a_real_tls_client_on_the_plain_port_fails_at_once(patient_server):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(patient_server.server_address, timeout=10) as raw:
        with pytest.raises(ssl.SSLError):  # not TimeoutError: the server answered at once
            context.wrap_socket(raw, server_hostname="localhost")


def test_too_many_header_fields_get_431(patient_server):
    address = patient_server.server_address
    host = "%s:%d" % address
    extra = "".join(f"X-{i}: v\r\n" for i in range(95))  # with the request's own 5: 100, the default limit
    assert status_of(response_head(address, REQUEST.format(host=host, extra=extra).encode())) == 101
    response = answer(address, REQUEST.format(host=host, extra=extra + "X: v\r\n").encode())
    assert status_of(response) == 431 and b"more than 100 header fields" in response


def test_max_header_fields_is_a_setting():
    server = start_server(echo, max_header_fields=5)
    try:
        host = "%s:%d" % server.server_address
        assert status_of(response_head(server.server_address, REQUEST.format(host=host, extra="").encode())) == 101
        response = answer(server.server_address, REQUEST.format(host=host, extra="X: 6\r\n").encode())
        assert status_of(response) == 431 and b"more than 5 header fields" in response
    finally:
        stop_server(server)


def test_malformed_header_line_gets_400(patient_server):
    host = "%s:%d" % patient_server.server_address
    response = answer(patient_server.server_address, REQUEST.format(host=host, extra="X-Bad : v\r\n").encode())
    assert status_of(response) == 400


# --- max_connections ----------------------------------------------------------------


def test_max_connections_at_its_edge(caplog):
    server = start_server(echo, max_connections=3)
    conns = []
    try:
        for _ in range(3):  # up to the limit: all in
            conn = threadws.dial(url_of(server), ping_interval=None)
            conn.send("in")
            assert conn.recv(timeout=5) == "in"
            conns.append(conn)
        with caplog.at_level(logging.WARNING, logger="threadws"):
            for _ in range(3):  # one more: refused before the upgrade, each time
                with pytest.raises(HandshakeError) as info:
                    threadws.dial(url_of(server), ping_interval=None)
                assert info.value.status == 503
                assert ("Retry-After", "1") in info.value.headers
        stats = server.stats()
        assert (stats.connections, stats.refused_connections, stats.handshake_waits) == (3, 3, 0)
        warnings = [r for r in caplog.records if "max_connections (3)" in r.getMessage()]
        assert len(warnings) == 1, "a run of refusals is logged once, not once each"
        conns.pop().close()  # one leaves: one more may come in
        wait_until(lambda: server.stats().connections == 2)
        conn = threadws.dial(url_of(server), ping_interval=None)
        conn.send("back in")
        assert conn.recv(timeout=5) == "back in"
        conns.append(conn)
    finally:
        for conn in conns:
            conn.close()
        stop_server(server)


def test_max_connections_leaves_static_files_alone(tmp_path):
    (tmp_path / "index.html").write_text("page")
    server = start_server(echo, max_connections=1, static_dir=tmp_path)
    try:
        with threadws.dial(url_of(server, "/ws"), ping_interval=None):
            host, port = server.server_address
            request = f"GET /index.html HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
            response = answer(server.server_address, request)
            assert status_of(response) == 200 and response.endswith(b"page")
    finally:
        stop_server(server)


# --- max_handshakes ------------------------------------------------------------------


def http_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("threadws-http-")]


def dial_and_echo(server, results: list) -> None:
    with threadws.dial(url_of(server), ping_interval=None, timeout=10) as conn:
        conn.send("in")
        results.append(conn.recv(timeout=5))


def test_max_handshakes_at_its_edge(caplog):
    server = start_server(echo, max_handshakes=4, handshake_timeout=600)
    silent: list[socket.socket] = []
    results: list[str] = []
    try:
        for _ in range(4):  # connect and say nothing: each holds a slot and a thread
            silent.append(socket.create_connection(server.server_address, timeout=10))
        wait_until(lambda: server.stats().handshakes == 4)
        with caplog.at_level(logging.INFO, logger="threadws"):
            # More clients: not accepted (no thread, no refusal) while the
            # slots are taken; each waits in the listen backlog.
            with pytest.raises(TimeoutError, match="waiting for the handshake response"):
                threadws.dial(url_of(server), ping_interval=None, timeout=0.5)
            waiting = threading.Thread(target=dial_and_echo, args=(server, results))
            waiting.start()
            wait_until(lambda: server.stats().handshake_waits >= 1)
            assert len(http_threads()) == 4 and server.stats().handshakes == 4
            assert not results
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        assert "wait in the listen backlog" in caplog.text
        silent.pop().close()  # a slot frees: the waiting client is accepted and served
        waiting.join(10)
        assert results == ["in"]
        wait_until(lambda: server.stats().handshakes == 3)  # the first dial's socket was given up by its client
        with threadws.dial(url_of(server), ping_interval=None) as conn:
            conn.send("in")
            assert conn.recv(timeout=5) == "in"
            assert server.stats().handshakes == 3  # the upgraded one has left its handshake slot
    finally:
        for sock in silent:
            sock.close()
        stop_server(server)


def test_shutdown_while_the_accept_loop_waits_for_a_handshake_slot():
    server = start_server(echo, max_handshakes=2, handshake_timeout=600)
    silent = []
    try:
        for _ in range(3):
            silent.append(socket.create_connection(server.server_address, timeout=10))
        wait_until(lambda: server.stats().handshake_waits == 1)
    finally:
        stop_server(server)  # the waiting accept loop ends (serve_forever returns), the handshakes are dropped
        for sock in silent:
            sock.close()
    assert server.stats().handshakes == 0
    assert not http_threads()


def test_silent_peers_cannot_pin_a_thread_each_with_the_defaults():
    # The probe: 300 TCP connections that never send a byte.
    server = start_server(echo, handshake_timeout=600)
    limit = ServerLimits.max_handshakes
    assert limit is not None and limit < 300
    silent = []
    try:
        for _ in range(300):
            silent.append(socket.create_connection(server.server_address, timeout=10))
        wait_until(lambda: server.stats().handshakes == limit and server.stats().handshake_waits == 1)
        assert len(http_threads()) == limit  # the other 172 wait in the backlog, holding no thread
    finally:
        for sock in silent:
            sock.close()
        stop_server(server)


# --- running out of threads -----------------------------------------------------------


@pytest.mark.parametrize("failing", ["threadws-http-", "-writer", "-reader"])
def test_out_of_threads_answers_503_and_closes(threads_fail, caplog, failing):
    server = start_server(echo)
    try:
        host = "%s:%d" % server.server_address
        threads_fail(failing)
        with caplog.at_level(logging.ERROR, logger="threadws"):
            response = answer(server.server_address, REQUEST.format(host=host, extra="").encode())
        assert status_of(response) == 503 and b"Retry-After: 1\r\n" in response
        assert b"Switching Protocols" not in response
        wait_until(lambda: server.stats().refused_threads == 1)
        assert "can't start" in caplog.text
        wait_until(lambda: server.stats().connections + server.stats().handshakes == 0)
        threads_fail("(no thread has this name)")
        with threadws.dial(url_of(server), ping_interval=None) as conn:  # the server carries on
            conn.send("fine")
            assert conn.recv(timeout=5) == "fine"
    finally:
        stop_server(server)


class LimitedServer:
    """tests/scripts/limited_server.py in a process of its own, driven a line at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "scripts" / "limited_server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )
        port = int(self.command("port"))
        self.address = ("127.0.0.1", port)
        self.request = REQUEST.format(host=f"127.0.0.1:{port}", extra="").encode()

    def command(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().strip()  # bounded by the test's timeout
        assert reply, f"the server process said nothing to {line!r}"
        return reply

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = json.loads(self.command("stats"))
        return stats

    def finish(self) -> str:
        """End the process (it shuts the server down); return its log."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0
        return self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def limited_server() -> Iterator[LimitedServer]:
    server = LimitedServer()
    try:
        yield server
    finally:
        server.kill()


def test_out_of_threads_over_tls_the_503_is_encrypted(threads_fail, tmp_path):
    certs = make_certificates(str(tmp_path))
    server = start_server(echo, ssl_context=certs.server)
    try:
        threads_fail("-reader")
        with pytest.raises(HandshakeError) as info:
            threadws.dial(f"wss://localhost:{server.server_address[1]}/", ssl_context=certs.client)
        assert info.value.status == 503 and ("Retry-After", "1") in info.value.headers
        wait_until(lambda: server.stats().refused_threads == 1)
    finally:
        stop_server(server)


def _can_drop_to_another_uid() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "setuid") and os.geteuid() == 0


@pytest.mark.skipif(
    not _can_drop_to_another_uid(),
    reason="needs Linux and root: RLIMIT_NPROC doesn't bind root, so the server process drops to an unused uid",
)
def test_at_a_real_thread_limit_the_server_answers_503(limited_server):
    """RLIMIT_NPROC allows 0, 1, then 2 more threads: the accept loop's, the writer's, then the reader's start fails."""
    server = limited_server
    for more in (0, 1, 2):
        assert server.command(f"threads {more}") == "ok"
        response = answer(server.address, server.request)
        assert status_of(response) == 503, (more, response)
        assert b"Retry-After: 1\r\n" in response
    assert server.command("unlimit") == "ok"
    with threadws.dial("ws://%s:%d/" % server.address, ping_interval=None) as conn:
        conn.send("after")
        assert conn.recv(timeout=5) == "after"
    assert server.stats()["refused_threads"] == 3
    log = server.finish()
    assert log.count("can't start a request thread") == 1, log
    assert log.count("can't start a connection's threads") == 2, log


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_out_of_file_descriptors_the_accept_loop_backs_off(limited_server):
    server = limited_server
    assert server.command("files 0") == "ok"  # accept() now fails with EMFILE
    with socket.create_connection(server.address, timeout=10) as sock:  # it waits in the backlog
        sock.sendall(server.request)
        failures = wait_until(lambda: (n := server.stats()["accept_failures"]) >= 4 and n)
        # Backing off from 5 ms, doubling: the 12th failure comes 4 s after the
        # first. A loop retrying at once would be in the thousands by now.
        assert failures < 12, failures
        assert server.command("unlimit") == "ok"
        head = recv_head(sock)  # then it is served, as if nothing had happened
        assert head.startswith(b"HTTP/1.1 101 "), head
    log = server.finish()
    assert log.count("can't accept connections") == 1, log


# --- the request line as the server reads it (its own parse, not http.server's) ------


def test_request_line_version_and_path_as_http_server_would(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.html").write_text("docs")
    server = start_server(echo, static_dir=tmp_path)
    try:
        host = "%s:%d" % server.server_address
        response = answer(server.server_address, REQUEST.format(host=host, extra="").replace("1.1", "2.0").encode())
        assert status_of(response) == 505 and b"101" not in response.split(b"\r\n")[0]
        # "//evil.example/docs" is a path here: the redirect to the directory's
        # slash stays on this host (a browser would read "//evil.example/..." as another host).
        response = answer(server.server_address, f"GET //evil.example/../docs HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert status_of(response) in (301, 404)
        assert b"//evil" not in response
        response = answer(server.server_address, f"GET //docs HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert status_of(response) == 301 and b"\r\nLocation: /docs/\r\n" in response
        with threadws.dial(url_of(server, "/chat?x=1"), ping_interval=None) as conn:  # and upgrades still work
            conn.send("ok")
            assert conn.recv(timeout=5) == "ok"
            assert conn.path == "/chat?x=1"
    finally:
        stop_server(server)
