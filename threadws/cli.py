"""``python -m threadws``: an interactive WebSocket client, and a server to try it on.

The client sends each line typed and prints each message as it arrives,
above the line being typed (the terminal's own insert-line, so typing is
never garbled); with stdin not a terminal it reads lines from it and prints
plainly. The server (``serve``) echoes or prints what it receives and can
serve a directory of static files next to the WebSocket endpoint.

What it must never do
---------------------
Print a peer's text unescaped (control characters are shown escaped, so a
server can't drive the terminal), or use more of threadws than its public API.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import ssl
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from .client import dial
from .compression import Compression
from .connection import Conn
from .enums import MessageType
from .exceptions import ConnectionClosed, ConnectionClosedOK, HandshakeError
from .server import serve
from .upgrader import Upgrader

__all__ = ["main"]

# Exit statuses (documented in --help).
EXIT_CLEAN = 0
EXIT_UNCLEAN = 1
EXIT_USAGE = 2
EXIT_CONNECT_FAILED = 3
EXIT_INTERRUPTED = 130

_CLIENT_HELP = """\
Type a line and press Enter to send it as a text message. Messages from the
server appear as they arrive: text as it is (after "< "), binary as hex.

commands:
  /ping [text]             send a ping (its pong is shown)
  /close [code [reason]]   close the connection (default 1000)
  /binary HEX              send a binary message, e.g. /binary 00 ff 10
  /help                    show these commands
  //text                   send a line that starts with "/"
  Ctrl-D                   close the connection cleanly (1000) and exit
  Ctrl-C                   close with 1001 (going away) and exit

exit status:
  0    the connection closed cleanly, with 1000, 1001 or no code
  1    it closed with another code, or was lost without a closing handshake
  2    usage error (bad option, URL or header)
  3    the connection could not be opened (refused, unknown host, TLS,
       refused by the server or a proxy, timeout)
  130  interrupted (Ctrl-C) before the connection opened

The server side: python -m threadws serve --help
"""

_SERVE_HELP = """\
Each connection's messages are printed as they arrive; with --echo each one
is sent back. Ctrl-C stops the server (connections close with 1001).

exit status:
  0    stopped with Ctrl-C
  2    usage error
  3    could not listen (e.g. the port is in use)
"""

_COMMANDS = "/ping [text], /close [code [reason]], /binary HEX, /help; Ctrl-D closes"
#: Binary messages longer than this are shown cut short.
_HEX_SHOWN = 256
_PROMPT = "> "
#: Seconds to wait for the closing handshake (dial's close_timeout, and then some).
_CLOSE_WAIT = 15.0
# ANSI/VT100 sequences: save the cursor, insert a blank line above the one
# being typed, print there, restore the cursor (one line lower, with the line).
_SAVE, _RESTORE, _UP, _DOWN, _INSERT_LINE = "\x1b7", "\x1b8", "\x1b[A", "\x1b[B", "\x1b[L"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (``argv`` without the program name); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        return _serve(args[1:])
    return _client(args)


def _client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m threadws",
        usage="%(prog)s [options] URL\n       %(prog)s serve [--echo] [--static DIR] [--host HOST] [--port N]",
        description="An interactive WebSocket client: connect to URL (ws:// or wss://),\n"
        "type lines to send them, see messages as they arrive.",
        epilog=_CLIENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", metavar="URL", help="where to connect, e.g. ws://localhost:8000/")
    parser.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'", help="add a request header (repeatable)"
    )
    parser.add_argument(
        "-s", "--subprotocol", action="append", default=[], metavar="NAME", help="offer a subprotocol (repeatable)"
    )
    parser.add_argument("--origin", help="send this Origin header (as a browser page at that origin would)")
    parser.add_argument("--compression", action="store_true", help="offer permessage-deflate compression")
    parser.add_argument(
        "-k", "--insecure", action="store_true", help="wss://: do not verify the server's certificate (testing only)"
    )
    parser.add_argument("--trace", action="store_true", help="print the handshake and every frame sent and received")
    parser.add_argument(
        "--proxy", metavar="URL", help="use this proxy (http://, socks5://, ...); default: HTTP(S)_PROXY/ALL_PROXY"
    )
    parser.add_argument("--no-proxy", action="store_true", help="connect directly, whatever the environment says")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="to connect (default 10)")
    return parser


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m threadws serve",
        description="A WebSocket server to try clients on: it prints what it receives,\n"
        "echoes it with --echo, and serves static files with --static.",
        epilog=_SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--echo", action="store_true", help="send every message back")
    parser.add_argument("--static", metavar="DIR", help="serve the files in DIR to plain HTTP requests")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0 picks a free one)")
    parser.add_argument("--compression", action="store_true", help="accept permessage-deflate compression")
    parser.add_argument("--trace", action="store_true", help="print every handshake and frame")
    return parser


def _printable(text: str) -> str:
    """*text* with control characters escaped, so that a peer cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Console:
    """Lines printed from any thread, above the line being typed if there is one."""

    def __init__(self, out: TextIO, interactive: bool) -> None:
        self.out = out
        self.interactive = interactive
        self.lock = threading.Lock()

    def show(self, text: str) -> None:
        with self.lock:
            for line in text.split("\n"):
                line = _printable(line)
                if not self.interactive:
                    self.out.write(line + "\n")
                    continue
                width = max(20, shutil.get_terminal_size().columns)
                # One inserted row per screen row the line takes.
                for start in range(0, max(1, len(line)), width):
                    row = line[start : start + width]
                    self.out.write(f"{_SAVE}\n{_UP}{_INSERT_LINE}{row}\n{_RESTORE}{_DOWN}")
            self.out.flush()


class _ConsoleHandler(logging.Handler):
    """--trace: threadws's DEBUG lines on the console, without the connection's name if it is the only one."""

    def __init__(self, console: Console, strip_name: bool) -> None:
        super().__init__(logging.DEBUG)
        self.console = console
        self.strip_name = strip_name

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if self.strip_name and text.startswith("threadws-client-"):
                text = text.split(" ", 1)[-1]
            self.console.show(f"[trace] {text}")
        except Exception:
            self.handleError(record)


def _trace_to(console: Console, strip_name: bool) -> None:
    logger = logging.getLogger("threadws")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(_ConsoleHandler(console, strip_name))


def _describe(message_type: MessageType, data: Any) -> str:
    if message_type == MessageType.TEXT:
        return f"< {data}"
    shown = bytes(data[:_HEX_SHOWN]).hex(" ") + (" ..." if len(data) > _HEX_SHOWN else "")
    return f"< (binary, {len(data)} bytes) {shown}".rstrip()


def _exit_status(exc: ConnectionClosed | None) -> int:
    return EXIT_CLEAN if isinstance(exc, ConnectionClosedOK) else EXIT_UNCLEAN


class _Ended(Exception):
    """Raised in the main thread, out of input(), when the connection has ended."""


class _Session:
    """One interactive connection: the main thread reads lines, a receiver thread prints.

    When the connection ends while the main thread waits for a line, the
    receiver wakes it with SIGINT, which the session's handler turns into
    :class:`_Ended` (and a Ctrl-C typed by the user into KeyboardInterrupt).
    A signal that lands just before input() starts waiting is lost, so the
    receiver repeats it until the main thread has woken.
    """

    def __init__(self, conn: Conn, console: Console) -> None:
        self.conn = conn
        self.console = console
        self.reading = False  # the main thread is in input() (or about to be)
        self.woken = False  # _Ended has been raised: once is enough
        self.ended = threading.Event()
        self.done_waking = threading.Event()
        self.main = threading.main_thread()
        conn.set_pong_handler(lambda payload: console.show(f"< (pong) {payload.decode('utf-8', 'replace')}"))
        self.receiver = threading.Thread(target=self._receive, name=f"{conn.name}-cli-receiver", daemon=True)

    def run(self) -> int:
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            self.receiver.start()
            why = self._read_lines()
            try:
                if why == "interrupt":
                    self.conn.close(1001)
                elif why == "eof":
                    self.conn.close()
                self.conn.wait_closed(_CLOSE_WAIT)
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the server
                self.conn.abort()
            self.done_waking.set()
            self.receiver.join(10)
        finally:
            signal.signal(signal.SIGINT, previous)
        return _exit_status(self.conn.close_exception)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if not self.ended.is_set():
            raise KeyboardInterrupt  # the user's Ctrl-C
        if self.reading and not self.woken:
            self.woken = True
            raise _Ended
        # Otherwise a repeated wake-up that came late: nothing left to wake.

    def _receive(self) -> None:
        try:
            while True:
                message_type, data = self.conn.read_message()
                self.console.show(_describe(message_type, data))
        except ConnectionClosed as exc:
            self.console.show(f"Connection closed: {exc}")
        finally:
            self.ended.set()
            # Wake the main thread out of input(): the session is over. (It
            # sets reading before it checks ended, so one of the two sees the other.)
            for _ in range(100):
                if not self.reading or self.woken:
                    break
                _interrupt(self.main)
                if self.done_waking.wait(0.05):
                    break

    def _read_lines(self) -> str:
        """Send what is typed until end of input, Ctrl-C or the end of the connection."""
        interactive = self.console.interactive
        try:
            while True:
                try:
                    self.reading = True
                    if self.ended.is_set():
                        return "closed"
                    line = input(_PROMPT) if interactive else sys.stdin.readline()
                    self.reading = False
                    if not interactive:
                        if not line:
                            return "eof"
                        line = line.rstrip("\n")
                    self._handle(line)
                except EOFError:
                    return "eof"
                except KeyboardInterrupt:
                    return "interrupt"
                except ConnectionClosed:
                    return "closed"
        except _Ended:
            return "closed"
        finally:
            self.reading = False
            if interactive:
                self.console.out.write("\n")  # leave the prompt's line to the shell
                self.console.out.flush()

    def _handle(self, line: str) -> None:
        if not line.startswith("/") or line.startswith("//"):
            self.conn.send(line[1:] if line.startswith("//") else line)
            return
        command, _, rest = line.partition(" ")
        try:
            if command == "/ping":
                self.conn.write_control(MessageType.PING, rest.encode("utf-8"))
            elif command == "/close":
                code_text, _, reason = rest.strip().partition(" ")
                self.conn.close(int(code_text) if code_text else 1000, reason)
            elif command == "/binary":
                self.conn.send(bytes.fromhex(rest))
            elif command == "/help":
                self.console.show(_CLIENT_HELP.split("\n\nexit status")[0])
            else:
                self.console.show(f"unknown command {command} (/help lists them; //text sends /text)")
        except ValueError as exc:
            self.console.show(f"{command}: {exc}")


def _interrupt(thread: threading.Thread) -> None:
    if hasattr(signal, "pthread_kill") and thread.ident is not None:
        signal.pthread_kill(thread.ident, signal.SIGINT)
    else:  # Windows: the main thread wakes at the next Enter
        import _thread

        _thread.interrupt_main()


def _client(argv: list[str]) -> int:
    parser = _client_parser()
    args = parser.parse_args(argv)
    headers = []
    for header in args.header:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            parser.error(f"--header needs 'Name: value', not {header!r}")
        headers.append((name.strip(), value.strip()))
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    console = Console(sys.stdout, interactive)
    if args.trace:
        _trace_to(console, strip_name=True)
    context = None
    if args.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    proxy: str | bool | None = None if args.no_proxy else (args.proxy or True)
    try:
        conn = dial(
            args.url,
            headers=headers,
            subprotocols=args.subprotocol,
            origin=args.origin,
            ssl_context=context,
            proxy=proxy,
            timeout=args.timeout,
            compression=Compression() if args.compression else None,
        )
    except (HandshakeError, OSError) as exc:  # first: a certificate error is an OSError *and* a ValueError
        print(f"Could not connect to {args.url}: {exc}", file=sys.stderr)
        return EXIT_CONNECT_FAILED
    except (ValueError, ImportError) as exc:  # a bad URL, header or proxy; python-socks missing
        parser.error(str(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())
    details = []
    if conn.subprotocol:
        details.append(f"subprotocol {conn.subprotocol}")
    extensions = conn.response_headers.get("Sec-WebSocket-Extensions")
    if extensions:
        details.append(f"extensions {extensions}")
    console.show(f"Connected to {args.url}" + (f" ({', '.join(details)})" if details else "") + ".")
    if interactive:
        console.show(f"Type a message and press Enter to send it. Commands: {_COMMANDS}.")
    return _Session(conn, console).run()


def _serve(argv: list[str]) -> int:
    parser = _serve_parser()
    args = parser.parse_args(argv)
    if args.static is not None and not os.path.isdir(args.static):
        parser.error(f"--static: no such directory: {args.static}")
    console = Console(sys.stdout, interactive=False)
    if args.trace:
        _trace_to(console, strip_name=False)
    echo = args.echo

    def handler(conn: Conn) -> None:
        peer = conn.remote_address
        who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        console.show(f"{who} connected ({conn.path})")
        try:
            while True:
                message_type, data = conn.read_message()
                console.show(f"{who} {_describe(message_type, data)}")
                if echo:
                    conn.write_message(message_type, data)
        except ConnectionClosed as exc:
            console.show(f"{who} closed: {exc}")

    upgrader = Upgrader(compression=Compression() if args.compression else None)
    try:
        server = serve(handler, args.host, args.port, upgrader=upgrader, static_dir=args.static)
    except OSError as exc:
        print(f"Could not listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_CONNECT_FAILED
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    what = "echo" if echo else "printing messages"
    console.show(f"Serving WebSockets on ws://{shown}:{port}/ ({what}).")
    if args.static:
        console.show(f"Static files: http://{shown}:{port}/ (from {os.path.abspath(args.static)})")
    console.show("Ctrl-C stops the server.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return EXIT_CLEAN
