"""The server: :func:`serve` and :class:`Server` (socketserver, the limits, the request threads).

Theory of operation (:func:`serve`)
-----------------------------------
The accept loop (socketserver's ``serve_forever``) admits each TCP connection,
or refuses it at once with 503 when no thread can be started. While
:attr:`ServerLimits.max_handshakes` connections are in their handshake it stops
accepting: the next ones wait in the kernel's listen backlog (a reconnect storm
is served in turn, not refused) and silent peers can't pin more threads than
that. An admitted connection gets a request thread (one reused from an earlier
connection when one waits: :func:`threadws.reuse_threads`), which reads the
request head within the handshake timeout (bytes that can't be HTTP are
refused as they arrive), serves a static file or takes a connection slot (503
beyond :attr:`ServerLimits.max_connections`), upgrades, and runs the
application's handler. The slots are counted under the server's lock, by the
accepted socket, and given back when the request is done.

What it must never do
---------------------
Block the accept loop on anything but a free handshake slot (a refusal there
is one non-blocking send), hold its lock across I/O or a join, or touch a
connection's internals: once the :class:`~threadws.upgrader.Upgrader` has
made a :class:`Conn`, the server uses only its public API.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import http.server
import io
import logging
import os
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from . import handshake
from ._http import parse_fields, read_head, refuse_now
from ._tls import TLSSocket
from ._workers import WORKERS, Task
from .connection import Conn
from .settings import ServerLimits, ServerStats, Settings
from .enums import CloseCode, MessageType
from .exceptions import ConnectionClosed, HandshakeError
from .upgrader import Upgrader

__all__ = ["Server", "serve"]

_logger = logging.getLogger("threadws")



# --- serve() -------------------------------------------------------------------


Handler = Callable[[Conn], Any]

#: Seconds between two log warnings about the same kind of refusal ("at most one a minute").
_WARN_EVERY = 60
#: What makes ``accept`` fail until something is freed (not the client's fault).
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _RequestHandler(http.server.SimpleHTTPRequestHandler):
    """One connection: read a bounded head in bounded time, then upgrade or serve a file."""

    server: _TCPServer
    protocol_version = "HTTP/1.1"

    def __init__(self, request: Any, client_address: Any, server: _TCPServer) -> None:
        super().__init__(request, client_address, server, directory=server.owner.static_dir or os.devnull)

    def handle(self) -> None:
        owner = self.server.owner
        limits = owner.limits
        deadline = time.monotonic() + limits.handshake_timeout
        self.close_connection = True
        try:
            if owner.ssl_context is not None:
                # TLS in memory over the TCP socket (threadws._tls): the head,
                # the 101 and then the connection all go through it.
                tls_sock = TLSSocket.server(self.connection, owner.ssl_context, deadline)
                self.connection = tls_sock
                self.wfile = tls_sock.makefile("wb", 0)
            head, rest = read_head(
                self.connection, deadline, max_line=limits.max_request_line, max_head=limits.max_header_bytes
            )
        except HandshakeError as exc:
            self._answer_error(exc)
            return
        except (OSError, ssl.SSLError):
            return  # timed out (slowloris) or gone: drop it
        if not self._parse(head, rest, limits.max_header_fields):
            return
        wants_websocket = "websocket" in (self.headers.get("Upgrade") or "").lower()
        if owner.path is not None and self.path.split("?", 1)[0] != owner.path:
            if owner.static_dir is None or wants_websocket:
                self._answer_error(HandshakeError("not found", 404))
                return
            wants_websocket = False
        if owner.static_dir is not None and not wants_websocket and self.command in ("GET", "HEAD"):
            self.connection.settimeout(limits.handshake_timeout)
            method = self.do_GET if self.command == "GET" else self.do_HEAD
            method()
            self.wfile.flush()
            if isinstance(self.connection, TLSSocket):
                self.connection.close_notify()
            return
        if not owner._take_connection_slot(self.request):
            self._answer_error(handshake.service_unavailable("the server has all the connections it takes"))
            return
        try:
            conn = owner.upgrader.upgrade(self)
        except HandshakeError as exc:
            if exc.status == 503:  # the Upgrader's only 503: it couldn't start the connection's threads
                owner._count_thread_refusal()
            return
        owner._run(conn)

    def _parse(self, head: bytes, rest: bytes, max_fields: int) -> bool:
        # What BaseHTTPRequestHandler.parse_request sets, without it: it would
        # read the fields again through email.parser (a tenth of a short
        # connection's parsing), under http.client's limits rather than ours.
        line, _, fields = head.partition(b"\r\n")
        self.raw_requestline = line + b"\r\n"
        self.requestline = text = line.decode("iso-8859-1")
        # read_head has checked the line's shape: METHOD SP target SP HTTP/d.d
        self.command, self.path, self.request_version = text.split(" ")
        if self.request_version >= "HTTP/2":
            self._answer_error(HandshakeError(f"HTTP version {self.request_version[5:]} is not supported", 505))
            return False
        if self.path.startswith("//"):
            # As http.server does: a static file's redirect to "//host/x/"
            # would send a browser to another host.
            self.path = "/" + self.path.lstrip("/")
        try:
            self.headers = parse_fields(fields, max_fields=max_fields)
        except HandshakeError as exc:
            self._answer_error(exc)
            return False
        self.rfile = io.BytesIO(rest)  # what follows the head belongs to the WebSocket
        return True

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        # Serve files, never a listing of what else lies in the directory.
        self.send_error(404, "File not found")

    def _answer_error(self, error: HandshakeError) -> None:
        try:
            self.connection.sendall(handshake.build_error_response(error))
        except OSError:
            pass
        self.log_message('"%s" %s', getattr(self, "requestline", "") or "(unparsed request)", error.status)

    def log_message(self, format: str, *args: Any) -> None:
        self.server.owner.logger.info("%s - %s", self.address_string(), format % args)


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # socketserver's default backlog is 5: a burst of connects would be dropped
    # by the kernel and retried seconds later.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, owner: Server, address: tuple[str, int]) -> None:
        self.owner = owner
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        self._backoff = 0.0  # seconds to pause after accept failed for want of resources (0: it didn't)
        super().__init__(address, _RequestHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        if not self.owner._wait_for_handshake_slot():
            raise OSError("server shutting down")  # socketserver drops this round
        try:
            request = super().get_request()
        except OSError as exc:
            if exc.errno in _OUT_OF_RESOURCES:
                # The connection stays in the backlog and the listener stays
                # readable: without a pause the loop would spin at full CPU
                # until a descriptor frees (Go's net/http backs off the same
                # way, from 5 ms doubling to 1 s).
                self._backoff = min(1.0, self._backoff * 2 or 0.005)
                self.owner._accept_failed(exc, self._backoff)
            raise  # socketserver drops this round and selects again
        self._backoff = 0.0
        return request

    def process_request(self, request: Any, client_address: Any) -> None:
        # On the accept loop: admit (a thread of its own) or refuse at once.
        self.owner._admit(request, client_address, self.process_request_thread)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.owner._request_done(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.owner.logger.exception("error while handling a request from %s", client_address)




class Server:
    """A threaded WebSocket (and static file) server; see :func:`serve`, which makes one.

    Args:
        handler: called with each new :class:`Conn`.
        host, port: where to listen.
        upgrader: the :class:`Upgrader` (None: ``Upgrader()``).
        path, static_dir, ssl_context: as for :func:`serve`.
        limits: what the server admits (None: the defaults of
            :class:`threadws.settings.ServerLimits`).
        logger: where the server logs (the ``threadws`` logger by default).

    Attributes:
        server_address: the ``(host, port)`` it listens on (the real port when 0 was asked).
        limits: the :class:`threadws.settings.ServerLimits` in force.
        logger: where it logs requests, refusals and handlers' exceptions.
    """

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        upgrader: Upgrader | None = None,
        path: str | None = None,
        static_dir: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        limits: ServerLimits | None = None,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.logger: logging.Logger | logging.LoggerAdapter[Any] = logger or _logger
        self.handler = handler
        self.path = path
        self.upgrader = upgrader or Upgrader(logger=logger)
        self.static_dir = os.fspath(static_dir) if static_dir is not None else None
        self.ssl_context = ssl_context
        self.limits = limits or ServerLimits()
        self._lock = threading.Lock()  # guards the connections, slots, counts and _stopped below
        self._slot_freed = threading.Condition(self._lock)  # a handshake slot was given back, or shutdown
        self._conns: set[Conn] = set()
        self._requests: dict[socket.socket, Task] = {}  # each accepted socket and the task serving it
        self._handshaking: set[socket.socket] = set()  # holding a handshake slot
        self._serving: set[socket.socket] = set()  # holding a connection slot
        self._counts = {"connections": 0, "handshakes": 0, "threads": 0, "accept": 0}
        self._warned: dict[str, tuple[float, int]] = {}  # per kind of refusal: when last logged, and the count then
        self._serving_forever = threading.Event()
        self._stopping = threading.Event()  # set by shutdown: cuts short the accept loop's backoff
        self._stopped = False
        self._tcp = _TCPServer(self, (host, port))
        self.server_address: tuple[str, int] = self._tcp.server_address[:2]  # type: ignore[assignment]
        _warn_if_few_files(self.limits, self.logger)

    @property
    def connections(self) -> list[Conn]:
        """The WebSocket connections currently open."""
        with self._lock:
            return list(self._conns)

    def stats(self) -> ServerStats:
        """The slots in use and the refusals so far (a consistent snapshot; cheap, safe from any thread)."""
        with self._lock:
            return ServerStats(
                connections=len(self._serving),
                handshakes=len(self._handshaking),
                refused_connections=self._counts["connections"],
                handshake_waits=self._counts["handshakes"],
                refused_threads=self._counts["threads"],
                accept_failures=self._counts["accept"],
            )

    def serve_forever(self, poll_interval: float = 0.2) -> None:
        """Accept and serve connections until :meth:`shutdown` is called (from another thread)."""
        if self._stopped:
            return
        self._serving_forever.set()
        try:
            self._tcp.serve_forever(poll_interval)
        finally:
            self._serving_forever.clear()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting, close every connection with 1001, wait for their threads.

        Blocks for at most *timeout* seconds in all (plus up to
        ``serve_forever``'s *poll_interval* to stop accepting). Requests still
        in their handshake are dropped; open connections are sent a close
        frame with 1001 ("going away") and get until shortly before the
        deadline to finish the closing handshake, then are torn down; then
        handler threads are waited for until the deadline. Handlers that
        are still running then (one busy with something other than its
        connection) are logged and left to finish on their own: their threads
        are daemon threads. Idempotent; call it from another thread than the
        one in ``serve_forever``.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            first = not self._stopped
            self._stopped = True
            self._slot_freed.notify_all()
        if first:
            self._stopping.set()
            if self._serving_forever.is_set():
                self._tcp.shutdown()
            self._tcp.server_close()
        with self._lock:
            pending = list(self._handshaking)
            conns = list(self._conns)
            tasks = list(self._requests.values())
        for sock in pending:
            _shutdown_socket(sock)  # a request still in its handshake: drop it
        payload = CloseCode.GOING_AWAY.to_bytes(2, "big") + b"server shutting down"
        for conn in conns:
            try:
                conn.write_control(MessageType.CLOSE, payload)
            except ConnectionClosed:
                pass
        # The closing handshakes run at once, each on its connection's own
        # threads; the last part of the time goes to tearing down the ones
        # that don't finish (fail() doesn't wait) and to the joins.
        closed_by = deadline - min(1.0, timeout / 10)
        for conn in conns:
            conn.wait_closed(max(0.0, closed_by - time.monotonic()))
        for conn in conns:
            if not conn.closed:
                detail = "server shutdown: the closing handshake did not finish in time"
                conn.fail(CloseCode.GOING_AWAY, "server shutting down", detail=detail)
        for conn in conns:
            conn.wait_closed(max(0.0, deadline - time.monotonic()))
        tasks = [task for task in tasks if not task.is_current()]  # (shutdown called from a handler)
        for task in tasks:
            task.join(max(0.0, deadline - time.monotonic()))
        running = sum(1 for task in tasks if task.is_alive())
        if running:
            self.logger.warning(
                "server shutdown: %d handler thread%s still running after %.1f s; left to finish on their own",
                running, "s" if running > 1 else "", timeout,
            )  # fmt: skip

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # --- slots: taken and given back under the lock ---------------------------------

    def _wait_for_handshake_slot(self) -> bool:
        """On the accept loop, before ``accept``: wait while every handshake slot is taken.

        The connections that arrive meanwhile wait in the listen backlog
        (``SOMAXCONN``) rather than being refused: a burst of reconnects is
        served in turn. Returns False once the server is shutting down.
        """
        limit = self.limits.max_handshakes
        with self._lock:
            if limit is not None and len(self._handshaking) >= limit and not self._stopped:
                warn = self._count("handshakes")
                if warn is not None:
                    self.logger.warning(
                        "max_handshakes (%d) connections are in their handshake: new connections wait in the "
                        "listen backlog (%d waits since this was last logged; at most once a minute)",
                        limit, warn,
                    )  # fmt: skip
                while len(self._handshaking) >= limit and not self._stopped:
                    self._slot_freed.wait()
            return not self._stopped

    def _admit(self, sock: socket.socket, address: Any, serve: Callable[[Any, Any], None]) -> None:
        """On the accept loop: give *sock* a request thread and a handshake slot, or refuse it at once."""
        task = None
        with self._lock:
            if not self._stopped:
                task = Task(functools.partial(serve, sock, address), f"threadws-http-{_address(address)}")
                self._requests[sock] = task
                self._handshaking.add(sock)
        if task is None:
            sock.close()
            return
        try:
            WORKERS.run(task)
        except RuntimeError as exc:  # "can't start new thread"
            with self._lock:
                del self._requests[sock]
                self._handshaking.discard(sock)
                self._slot_freed.notify()
                warn = self._count("threads")
            self._log_refusal(warn, f"can't start a request thread ({exc})", logging.ERROR)
            self.logger.info("%s - refused with 503: no thread", _address(address))
            error = handshake.service_unavailable("the server can't start a thread for this connection")
            refuse_now(sock, handshake.build_error_response(error))

    def _take_connection_slot(self, sock: socket.socket) -> bool:
        """On a request about to upgrade: trade its handshake slot for a connection slot, if one is free."""
        limit = self.limits.max_connections
        with self._lock:
            if limit is None or len(self._serving) < limit:
                self._handshaking.discard(sock)
                self._slot_freed.notify()
                self._serving.add(sock)
                return True
            warn = self._count("connections")
        self._log_refusal(warn, f"max_connections ({limit}) connections are open")
        return False

    def _accept_failed(self, error: OSError, pause: float) -> None:
        """On the accept loop: ``accept`` failed for want of resources; log it (rate-limited), then pause."""
        with self._lock:
            count = self._count("accept")
        if count is not None:
            self.logger.error(
                "can't accept connections (%s): they wait in the listen backlog; raise the open files limit "
                "(ulimit -n) or lower max_connections (%d failures since the last such error, at most one a minute)",
                error, count,
            )  # fmt: skip
        self._stopping.wait(pause)

    def _count_thread_refusal(self) -> None:
        with self._lock:
            self._count("threads")  # the Upgrader has logged it

    def _request_done(self, sock: socket.socket) -> None:
        """A request is done (its socket closed): give back its slot."""
        with self._lock:
            self._requests.pop(sock, None)
            if sock in self._handshaking:
                self._handshaking.discard(sock)
                self._slot_freed.notify()
            self._serving.discard(sock)

    def _count(self, kind: str) -> int | None:
        """Under the lock: count a refusal (or an accept failure) of *kind*.

        Returns how many there were since the last log line about *kind* when
        it is time for one (the first, then at most one per ``_WARN_EVERY``
        seconds: a flood of refusals must not become a flood of log lines),
        else None.
        """
        self._counts[kind] += 1
        now = time.monotonic()
        when, total = self._warned.get(kind, (None, 0))
        if when is not None and now - when < _WARN_EVERY:
            return None
        self._warned[kind] = (now, self._counts[kind])
        return self._counts[kind] - total

    def _log_refusal(self, count: int | None, why: str, level: int = logging.WARNING) -> None:
        if count is not None:
            self.logger.log(
                level,
                "%s: refusing new connections with 503 (%d refused since this was last logged; at most once a minute)",
                why,
                count,
            )

    def _run(self, conn: Conn) -> None:
        """Run the handler for *conn* on this (the request's) thread, then close."""
        with self._lock:
            stopped = self._stopped
            if not stopped:
                self._conns.add(conn)
        if stopped:
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        conn.add_done_callback(self._forget)
        try:
            self.handler(conn)
        except ConnectionClosed:
            conn.close()
        except Exception:
            self.logger.exception("connection handler %r raised", self.handler)
            conn.close(CloseCode.INTERNAL_ERROR, "internal error")
        else:
            conn.close()

    def _forget(self, conn: Conn) -> None:
        with self._lock:
            self._conns.discard(conn)


def _address(address: Any) -> str:
    return f"{address[0]}:{address[1]}"


def _shutdown_socket(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _warn_if_few_files(limits: ServerLimits, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Warn when the process may run out of file descriptors before the server reaches its limits."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limits.max_connections is None or soft == resource.RLIM_INFINITY:
        return
    # One descriptor per connection and per handshake, and some for the rest of the process.
    needed = limits.max_connections + (limits.max_handshakes or 0) + 64
    if soft < needed:
        logger.warning(
            "the open files limit (ulimit -n: %d) is lower than max_connections (%d) + max_handshakes (%s) need: "
            "beyond about %d connections, accepting fails with 'Too many open files'; raise it (ulimit -n %d) "
            "or lower max_connections",
            soft, limits.max_connections, limits.max_handshakes, max(0, soft - 64), needed,
        )  # fmt: skip


def serve(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    upgrader: Upgrader | None = None,
    path: str | None = None,
    static_dir: str | os.PathLike[str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int | None = ServerLimits.max_connections,
    max_handshakes: int | None = ServerLimits.max_handshakes,
    handshake_timeout: float = ServerLimits.handshake_timeout,
    max_request_line: int = ServerLimits.max_request_line,
    max_header_bytes: int = ServerLimits.max_header_bytes,
    max_header_fields: int = ServerLimits.max_header_fields,
    read_limit: int = Settings.read_limit,
    ping_interval: float | None = Settings.ping_interval,
    ping_timeout: float | None = Settings.ping_timeout,
    close_timeout: float = Settings.close_timeout,
    max_read_queue: int = Settings.max_read_queue,
    max_write_queue: int = Settings.max_write_queue,
    max_queued_messages: int = Settings.max_queued_messages,
    max_fragments: int = Settings.max_fragments,
    idle_timeout: float | None = Settings.idle_timeout,
    idle_close_code: int = Settings.idle_close_code,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> Server:
    """Create a threaded server that runs ``handler(conn)`` for each WebSocket connection.

    The server is listening when this returns; call :meth:`Server.serve_forever`
    to accept connections, and :meth:`Server.shutdown` from another thread to
    stop. Typical use::

        def echo(conn):
            for message in conn:
                conn.send(message)

        with threadws.serve(echo, "127.0.0.1", 8765) as server:
            server.serve_forever()

    ``handler(conn)`` runs on the connection's own thread. When it returns the
    connection closes with 1000; when it raises, with 1011 (the traceback is
    logged to the ``threadws`` logger, or *logger*).

    The README's "Security and limits" explains each limit's default and what
    a deployment must add (TLS, per-client limits at a proxy).

    Args:
        handler: called with each new :class:`Conn`.
        host, port: where to listen; port 0 picks a free port (see
            :attr:`Server.server_address`).
        upgrader: the :class:`Upgrader` (origin policy, subprotocols,
            compression, per-connection settings); the default is
            same-origin only, with the per-connection settings given here.
        path: if given, WebSocket upgrades are accepted only at this path
            (``"/ws"``); requests for other paths get 404 unless
            *static_dir* serves them. None accepts upgrades at any path (the
            handler sees ``conn.path``).
        static_dir: if given, plain GET and HEAD requests (not WebSocket
            upgrades) are answered with files from this directory
            (``index.html`` for a directory; never a listing).
        ssl_context: a server-side TLS context to serve ``wss://``.
        max_connections: WebSocket connections served at once (None: no
            limit); an upgrade beyond it is refused with 503 and
            ``Retry-After``. Each connection takes three threads and a file
            descriptor.
        max_handshakes: TCP connections accepted but not yet upgraded (None:
            no limit); while that many are, the accept loop stops accepting
            and the next connections wait in the listen backlog, so that
            peers which connect and stay silent can't take every thread, and
            a burst of reconnects is served in turn rather than refused.
        handshake_timeout: seconds a client has to send its whole request
            head; slower ones are dropped.
        max_request_line: longest request line accepted (else 414).
        max_header_bytes: largest request head accepted (else 431).
        max_header_fields: most header fields accepted (else 431).
        read_limit, ping_interval, ping_timeout, close_timeout, max_read_queue, max_write_queue, max_queued_messages, max_fragments, idle_timeout, idle_close_code:
            per-connection settings, as for :func:`threadws.dial` (see
            :class:`threadws.settings.Settings`), for the default Upgrader.
            With *upgrader* given, give them to it instead: a value here
            other than the default then raises TypeError.
        logger: where the server logs (requests at INFO, refusals, handlers'
            exceptions) and, with the default Upgrader, where its connections
            log (their handshake and frames at DEBUG); the ``threadws``
            logger by default. A given *upgrader* keeps its own logger for
            the connections.

    Raises:
        TypeError: *upgrader* and a per-connection setting both given.
        ValueError: a limit out of range (see :class:`threadws.settings.ServerLimits`).
        OSError: the address can't be listened on.
    """
    per_connection: dict[str, Any] = {
        "read_limit": read_limit,
        "ping_interval": ping_interval,
        "ping_timeout": ping_timeout,
        "close_timeout": close_timeout,
        "max_read_queue": max_read_queue,
        "max_write_queue": max_write_queue,
        "max_queued_messages": max_queued_messages,
        "max_fragments": max_fragments,
        "idle_timeout": idle_timeout,
        "idle_close_code": idle_close_code,
    }
    settings = Settings(**per_connection)
    if upgrader is None:
        upgrader = Upgrader(**per_connection, logger=logger)
    elif settings != Settings():
        given = [f.name for f in dataclasses.fields(Settings) if getattr(settings, f.name) != f.default]
        raise TypeError(
            f"serve(): {', '.join(given)} given with upgrader=; pass the per-connection settings to the Upgrader"
        )
    limits = ServerLimits(
        max_connections=max_connections,
        max_handshakes=max_handshakes,
        handshake_timeout=handshake_timeout,
        max_request_line=max_request_line,
        max_header_bytes=max_header_bytes,
        max_header_fields=max_header_fields,
    )
    return Server(
        handler, host, port, upgrader=upgrader, path=path, static_dir=static_dir, ssl_context=ssl_context,
        limits=limits, logger=logger,
    )  # fmt: skip
