"""``python -m threadws``, used as a person would: typed into a pseudo-terminal, read off the screen.

The command runs in a pty of 80x24 that is its controlling terminal (so
Ctrl-C typed there interrupts it, as in a shell); what it writes is rendered
by pyte, a VT100 emulator, and the tests read the screen's lines.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pyte
import pytest
from websockets.sync.server import serve as ws_serve

import threadws

from .conftest import start_server, stop_server, url_of, wait_until

ROWS, COLUMNS = 24, 80
# The child makes the pty its controlling terminal, then becomes python -m threadws.
_LAUNCH = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable] + sys.argv[1:])"
)


class Terminal:
    """``python -m threadws ARGS`` in a pseudo-terminal, its screen rendered by pyte."""

    def __init__(self, *args: str) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        env = dict(os.environ, TERM="xterm", INPUTRC="/dev/null", COLUMNS=str(COLUMNS), LINES=str(ROWS))
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, "-m", "threadws", *args],
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True, env=env,
        )
        os.close(slave)
        self.master = master
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, name="test-pty-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the child has gone and the pty is closed
                return
            if not data:
                return
            with self.lock:
                self.stream.feed(data)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def lines(self) -> list[str]:
        with self.lock:
            return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())

    def wait_for(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """Wait until *pattern* (a regex) matches one line of the screen."""

        def found() -> re.Match[str] | None:
            return next((m for line in self.lines() if (m := re.search(pattern, line))), None)

        try:
            return wait_until(found, timeout=timeout)  # type: ignore[no-any-return]
        except AssertionError:
            raise AssertionError(f"{pattern!r} not on the screen:\n{self.text()}") from None

    def prompt(self) -> None:
        """Wait for an empty prompt: typing before it would be echoed by the tty, not by readline."""
        wait_until(lambda: self.cursor_line() == ">")

    def cursor_line(self) -> str:
        with self.lock:
            return self.screen.display[self.screen.cursor.y].rstrip()

    def wait_exit(self, timeout: float = 20) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.reader.join(10)
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[Any]:
    made: list[Terminal] = []

    def run(*args: str) -> Terminal:
        made.append(Terminal(*args))
        return made[-1]

    yield run
    for term in made:
        term.close()


#: The messages each server_conns connection received, by connection name.
RECEIVED: dict[str, list[str | bytes]] = {}


@pytest.fixture
def server_conns() -> Iterator[tuple[threadws.Server, list[threadws.Conn]]]:
    """A threadws echo server that keeps its connections, for pushing messages and seeing closes."""
    conns: list[threadws.Conn] = []

    def handler(conn: threadws.Conn) -> None:
        conns.append(conn)
        for message in conn:
            RECEIVED.setdefault(conn.name, []).append(message)
            if message == "bye":
                conn.close(1001, "see you")
                return
            try:
                conn.send(message)
            except threadws.ConnectionClosed:
                pass  # the client closed right after sending: keep reading what it sent

    server = start_server(handler)
    try:
        yield server, conns
    finally:
        stop_server(server)


def test_help_documents_the_client_the_server_and_the_exit_codes():
    out = subprocess.run([sys.executable, "-m", "threadws", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for text in ("python -m threadws [options] URL", "python -m threadws serve", "/ping [text]",
                 "/close [code [reason]]", "/binary HEX", "Ctrl-D", "--subprotocol", "--trace", "--insecure",
                 "exit status", "3    the connection could not be opened"):
        assert text in out.stdout
    out = subprocess.run([sys.executable, "-m", "threadws", "serve", "--help"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and "--echo" in out.stdout and "--static DIR" in out.stdout


def test_typing_and_reading_against_a_threadws_server(terminal, server_conns):
    server, conns = server_conns
    term = terminal(url_of(server, "/chat"))
    term.wait_for(r"^Connected to ws://127\.0\.0\.1:\d+/chat\.$")
    term.prompt()
    term.type("hello\r")
    term.wait_for(r"^< hello$")
    term.prompt()
    term.type("/binary 00 ff 10\r")
    term.wait_for(r"^< \(binary, 3 bytes\) 00 ff 10$")
    term.prompt()
    term.type("/ping are you there\r")
    term.wait_for(r"^< \(pong\) are you there$")
    term.prompt()
    term.type("//slash\r")
    term.wait_for(r"^< /slash$")
    # A message that arrives while a line is half typed goes above it; the line stays as it was.
    term.prompt()
    term.type("half a li")
    wait_until(lambda: term.cursor_line() == "> half a li")
    conns[0].send("pushed while typing")
    conns[0].send("x" * 100)  # wider than the screen: it takes two rows
    term.wait_for(r"^< pushed while typing$")
    term.wait_for(r"^x{22}$")
    assert term.cursor_line() == "> half a li"
    term.type("ne\r")
    term.wait_for(r"^< half a line$")
    term.prompt()
    term.type("\x04")  # Ctrl-D on an empty line: close cleanly
    assert term.wait_exit() == 0
    term.wait_for(r"^Connection closed: sent 1000 \(NORMAL_CLOSURE\); then received 1000")


def test_server_closing_ends_the_session_while_waiting_for_input(terminal, server_conns):
    server, _ = server_conns
    term = terminal(url_of(server))
    term.wait_for("^Connected to")
    term.prompt()
    term.type("bye\r")  # the server answers by closing with 1001
    term.wait_for(r"^Connection closed: received 1001 \(GOING_AWAY\) see you")
    assert term.wait_exit() == 0  # nobody pressed anything after: the prompt was woken


def test_ctrl_c_closes_with_going_away(terminal, server_conns):
    server, conns = server_conns
    term = terminal(url_of(server))
    term.wait_for("^Connected to")
    term.prompt()
    term.type("typing something")
    wait_until(lambda: term.cursor_line() == "> typing something")
    term.type("\x03")
    assert term.wait_exit() == 0
    wait_until(lambda: conns[0].close_exception is not None)
    assert conns[0].close_exception.code == 1001


def test_against_a_websockets_server_with_a_subprotocol_and_an_error_close(terminal):
    def handler(ws: Any) -> None:
        ws.send(f"subprotocol={ws.subprotocol}")
        for message in ws:
            ws.send(message[::-1])

    server = ws_serve(handler, "127.0.0.1", 0, subprotocols=["echo.v1"], ping_interval=None)
    thread = threading.Thread(target=server.serve_forever, name="test-websockets-serve", daemon=True)
    thread.start()
    try:
        port = server.socket.getsockname()[1]
        term = terminal(f"ws://127.0.0.1:{port}/", "--subprotocol", "echo.v1", "--header", "X-Who: tester")
        term.wait_for(r"^Connected to ws://127\.0\.0\.1:\d+/ \(subprotocol echo\.v1\)\.$")
        term.wait_for(r"^< subprotocol=echo\.v1$")
        term.prompt()
        term.type("stressed\r")
        term.wait_for(r"^< desserts$")
        term.prompt()
        term.type("/close 4001 done here\r")
        term.wait_for(r"^Connection closed: sent 4001 \(application code\) done here; then received 4001")
        assert term.wait_exit() == 1  # closed, but not with 1000 or 1001
    finally:
        server.shutdown()
        thread.join(5)


def test_trace_shows_the_handshake_and_the_frames(terminal, echo_server):
    term = terminal("--trace", url_of(echo_server))
    term.wait_for(r"^\[trace\] > GET / HTTP/1\.1$")
    term.wait_for(r"^\[trace\] < HTTP/1\.1 101 Switching Protocols$")
    term.wait_for("^Connected to")
    term.prompt()
    term.type("abc\r")
    term.wait_for(r"^\[trace\] > TEXT 'abc' \[3 bytes\]$")
    term.wait_for(r"^\[trace\] < TEXT 'abc' \[3 bytes\]$")
    term.prompt()
    term.type("\x04")
    term.wait_for(r"^\[trace\] < CLOSE 1000 \(NORMAL_CLOSURE\)$")
    assert term.wait_exit() == 0


def test_a_peer_cannot_drive_the_terminal(terminal, server_conns):
    server, conns = server_conns
    term = terminal(url_of(server))
    term.wait_for("^Connected to")
    conns[0].send("\x1b[2J\x1b[Hgotcha\x07")
    term.wait_for(r"^< \\x1b\[2J\\x1b\[Hgotcha\\x07$")  # shown, not obeyed: the screen was not cleared
    assert any(line.startswith("Connected to") for line in term.lines())
    term.prompt()
    term.type("\x04")
    assert term.wait_exit() == 0


def test_failures_have_their_exit_status():
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = [sys.executable, "-m", "threadws"]
    out = subprocess.run(run + [f"ws://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 3 and "Could not connect" in out.stderr and "Connection refused" in out.stderr
    out = subprocess.run(run + ["http://example.com/"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "not a WebSocket URL" in out.stderr
    out = subprocess.run(run + ["--header", "no colon", "ws://127.0.0.1:9/"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "Name: value" in out.stderr


def test_lines_from_a_pipe(server_conns):
    server, conns = server_conns
    out = subprocess.run([sys.executable, "-m", "threadws", url_of(server)], input="one\n\ntwo\n",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Connected to") and lines[-1].startswith("Connection closed: sent 1000")
    assert "\x1b" not in out.stdout  # no prompt and no terminal sequences when not on a terminal
    wait_until(lambda: len(RECEIVED.get(conns[0].name, [])) == 3)
    assert RECEIVED[conns[0].name] == ["one", "", "two"]


def test_serve_echoes_and_serves_static_files(terminal, tmp_path):
    (tmp_path / "index.html").write_text("<h1>hi from static</h1>")
    term = terminal("serve", "--echo", "--port", "0", "--static", str(tmp_path))
    port = int(term.wait_for(r"^Serving WebSockets on ws://127\.0\.0\.1:(\d+)/ \(echo\)\.$").group(1))
    term.wait_for(rf"^Static files: http://127\.0\.0\.1:{port}/ \(from /")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
        assert page.read() == b"<h1>hi from static</h1>"
    with threadws.dial(f"ws://127.0.0.1:{port}/ws", ping_interval=None) as conn:
        conn.send("anyone?")
        assert conn.recv(timeout=5) == "anyone?"
    term.wait_for(r"^127\.0\.0\.1:\d+ connected \(/ws\)$")
    term.wait_for(r"^127\.0\.0\.1:\d+ < anyone\?$")
    term.wait_for(r"^127\.0\.0\.1:\d+ closed: received 1000")
    term.type("\x03")  # Ctrl-C stops it
    assert term.wait_exit() == 0


def test_serve_refuses_a_missing_directory_and_a_busy_port(echo_server):
    run = [sys.executable, "-m", "threadws", "serve"]
    out = subprocess.run(run + ["--static", "/nonexistent/dir"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "no such directory" in out.stderr
    port = echo_server.server_address[1]
    out = subprocess.run(run + ["--port", str(port)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 3 and "Could not listen" in out.stderr


# --- the options that shape the handshake, checked on the server's side ---------------------


def _run_piped(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m threadws ARGS`` with nothing on stdin: connect, then close at once (1000)."""
    return subprocess.run([sys.executable, "-m", "threadws", *args], input="", capture_output=True, text=True,
                          timeout=30)


def _recording_server(**kwargs: Any) -> tuple[threadws.Server, list[threadws.Conn]]:
    """A server whose handler keeps each connection (its request and response headers) and waits for the close."""
    conns: list[threadws.Conn] = []

    def handler(conn: threadws.Conn) -> None:
        conns.append(conn)
        for _ in conn:
            pass

    return start_server(handler, **kwargs), conns


def test_origin_option_is_the_origin_the_server_sees():
    server, conns = _recording_server()
    try:
        # The default check_origin takes an Origin naming the Host (a page from the same server).
        origin = "http://{}:{}".format(*server.server_address)
        out = _run_piped("--origin", origin, url_of(server))
        assert out.returncode == 0, out.stderr
        wait_until(lambda: len(conns) == 1)
        assert conns[0].request_headers["Origin"] == origin
        out = _run_piped(url_of(server))  # without it, no Origin at all (not a browser)
        assert out.returncode == 0, out.stderr
        wait_until(lambda: len(conns) == 2)
        assert conns[1].request_headers.get("Origin") is None
    finally:
        stop_server(server)


def test_origin_option_is_what_check_origin_refuses():
    upgrader = threadws.Upgrader(ping_interval=None, close_timeout=2.0, check_origin=["https://good.example"])
    server, conns = _recording_server(upgrader=upgrader)
    try:
        out = _run_piped("--origin", "https://evil.example", url_of(server))
        assert out.returncode == 3 and "403" in out.stderr, out.stderr
        assert conns == []
        out = _run_piped("--origin", "https://good.example", url_of(server))
        assert out.returncode == 0, out.stderr
        wait_until(lambda: len(conns) == 1)
    finally:
        stop_server(server)


def test_compression_option_negotiates_permessage_deflate():
    upgrader = threadws.Upgrader(ping_interval=None, close_timeout=2.0, compression=True)
    server, conns = _recording_server(upgrader=upgrader)
    try:
        out = _run_piped("--compression", url_of(server))
        assert out.returncode == 0, out.stderr
        wait_until(lambda: len(conns) == 1)
        assert "permessage-deflate" in conns[0].request_headers["Sec-WebSocket-Extensions"]
        assert conns[0].response_headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        assert "permessage-deflate" in out.stdout.splitlines()[0]  # "Connected to ... (permessage-deflate...)"
        out = _run_piped(url_of(server))  # not offered: not agreed, though the server would
        assert out.returncode == 0, out.stderr
        wait_until(lambda: len(conns) == 2)
        assert conns[1].response_headers.get("Sec-WebSocket-Extensions") is None
    finally:
        stop_server(server)


def test_insecure_option_accepts_a_certificate_nobody_vouches_for(tls_certs):
    server, conns = _recording_server(ssl_context=tls_certs.server)  # signed by a CA the child doesn't trust
    try:
        url = f"wss://localhost:{server.server_address[1]}/"
        out = _run_piped(url)
        assert out.returncode == 3 and "CERTIFICATE_VERIFY_FAILED" in out.stderr, out.stderr
        out = _run_piped("--insecure", url)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"Connected to {url}")
        wait_until(lambda: len(conns) == 1)
    finally:
        stop_server(server)
