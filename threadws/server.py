"""The server side: :class:`Upgrader` (for any ``http.server`` handler) and :func:`serve`."""

from __future__ import annotations

import http.client
import http.server
import io
import logging
import os
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import handshake, wsgi
from ._http import read_head, take_buffered
from ._tls import TLS, TLSSocket
from .compression import Compression, PerMessageDeflate, resolve
from .connection import Conn
from .settings import Settings
from .enums import CloseCode, MessageType
from .exceptions import ConnectionClosed, HandshakeError

__all__ = ["Server", "Upgrader", "serve"]

logger = logging.getLogger("threadws")


class Upgrader:
    """Turns an HTTP request into a WebSocket connection (gorilla's ``Upgrader``).

    Args:
        check_origin: which browser origins may connect. None (the default) is
            safe: a request whose ``Origin`` names another host than its
            ``Host`` header gets 403; a request without ``Origin`` (not from a
            browser) is allowed. A list allows exactly those origins
            (``["https://example.com"]``); a callable ``(origin, headers) -> bool``
            decides itself.
        subprotocols: the subprotocols the server speaks, most preferred first.
        compression: permessage-deflate (RFC 7692). Off by default; True
            accepts clients' offers with the defaults of
            :class:`threadws.Compression`, or pass one. An offer the server
            can't accept is declined (the connection goes on uncompressed).
            The read limit applies to the decompressed size.
        read_limit, ping_interval, ping_timeout, close_timeout, max_read_queue, max_write_queue, max_queued_messages, max_fragments, idle_timeout, idle_close_code:
            per-connection settings, as for :func:`threadws.dial` (see
            :class:`threadws.settings.Settings`).
    """

    def __init__(
        self,
        *,
        check_origin: handshake.OriginCheck = None,
        subprotocols: Sequence[str] = (),
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
        compression: Compression | bool | None = None,
    ) -> None:
        self.check_origin = check_origin
        self.subprotocols = tuple(subprotocols)
        self.compression = resolve(compression)
        self.settings = Settings(
            read_limit=read_limit,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_read_queue=max_read_queue,
            max_write_queue=max_write_queue,
            max_queued_messages=max_queued_messages,
            max_fragments=max_fragments,
            idle_timeout=idle_timeout,
            idle_close_code=idle_close_code,
        )

    def upgrade(
        self,
        request_handler: http.server.BaseHTTPRequestHandler,
        response_headers: Iterable[tuple[str, str]] | None = None,
    ) -> Conn:
        """Complete the WebSocket handshake for the request being handled and return the connection.

        Call it from a ``BaseHTTPRequestHandler.do_GET``. It takes the socket
        over: bytes the HTTP parser already buffered are kept, the handler's
        timeout is cleared, and the server can no longer close the connection
        when the handler returns, so the handler may hand the connection to
        another thread and return.

        TLS: a request that came over an :class:`ssl.SSLSocket` (a listener the
        application wrapped itself) is refused with RuntimeError before
        anything is sent, because an ``SSLSocket`` can't safely be shared by a
        reader and a writer thread, nor detached from the HTTP server (whose
        ``shutdown`` would drop TLS under the connection, sending the rest in
        the clear). Serve ``wss://`` with ``threadws.serve(ssl_context=...)``,
        which does TLS its own way, or terminate TLS in a proxy in front.

        Args:
            request_handler: the handler of the current request.
            response_headers: extra headers for the 101 response (e.g. a cookie).

        Raises:
            HandshakeError: the request is not an acceptable WebSocket
                handshake; the Upgrader has already answered it (400, 403,
                405 or 426) and the handler should just return.
            RuntimeError: the request came over an ``ssl.SSLSocket`` (see
                above); nothing has been sent.
        """
        handler = request_handler
        sock: Any = handler.connection
        if isinstance(sock, ssl.SSLSocket):
            raise RuntimeError(
                "Upgrader.upgrade: this request came over an ssl.SSLSocket, which a connection's reader and "
                "writer threads can't share safely; serve wss:// with threadws.serve(ssl_context=...) "
                "or terminate TLS in a proxy in front of the server"
            )
        try:
            accepted = self._check(handler.command, handler.request_version, handler.headers)
        except HandshakeError as exc:
            _refuse(handler, exc)
            raise
        response = handshake.build_response(accepted, response_headers or ())
        leftover = take_buffered(handler.rfile, sock)
        handler.close_connection = True
        tls: TLS | None = None
        raw: socket.socket = sock
        if isinstance(sock, TLSSocket):  # serve(ssl_context=...): TLS in memory, over the TCP socket
            tls, raw = sock.tls, sock.raw
        try:
            sock.settimeout(None)
            sock.sendall(response)
            if raw.family in (socket.AF_INET, socket.AF_INET6):
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise HandshakeError(f"connection lost during the handshake: {exc}") from exc
        handler.log_request(101)
        # Hijack: detach the file descriptor so the HTTP server's own
        # shutdown/close of its socket object can't touch our connection.
        raw = socket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        return self._connection(raw, accepted, response, leftover, handler.path, handler.headers, tls)

    def _check(self, method: str, http_version: str, headers: handshake.HeaderSource) -> handshake.Accepted:
        """Decide on a request with this Upgrader's policy (HandshakeError if refused)."""
        return handshake.check_request(
            method,
            http_version,
            headers,
            check_origin=self.check_origin,
            subprotocols=self.subprotocols,
            compression=self.compression,
        )

    def _connection(
        self,
        sock: socket.socket,
        accepted: handshake.Accepted,
        response: bytes,
        leftover: bytes,
        path: str,
        request_headers: Any,
        tls: TLS | None = None,
    ) -> Conn:
        """The server-side Conn for a socket whose 101 has been sent."""
        extensions = []
        if accepted.compression is not None and self.compression is not None:
            extensions.append(
                PerMessageDeflate(
                    accepted.compression, self.compression, client=False, read_limit=self.settings.read_limit
                )
            )
        return Conn(
            sock,
            client=False,
            settings=self.settings,
            trailing_data=leftover,
            subprotocol=accepted.subprotocol,
            path=path,
            request_headers=request_headers,
            response_headers=handshake.parse_head(response[:-4])[3],
            extensions=extensions,
            tls=tls,
        )

    def upgrade_wsgi(
        self,
        environ: Mapping[str, Any],
        response_headers: Iterable[tuple[str, str]] | None = None,
    ) -> Conn:
        """Complete the WebSocket handshake for a request inside a WSGI app and return the connection.

        Call it from a view (Flask: ``upgrader.upgrade_wsgi(request.environ)``).
        It works under servers that hand over their socket: Werkzeug's
        development server (threaded) and gunicorn's sync and gthread workers.
        It takes the connection from the server, keeping bytes the server
        already buffered; whatever the view returns afterwards is not sent
        (the server finds the connection gone and drops it quietly), so return
        an empty response, e.g. ``return "", 101`` in Flask.

        The returned connection no longer needs the request's thread: serve it
        there (under gthread that holds one of ``--threads`` until it ends) or
        hand it to a thread of your own and return (under sync workers you
        must, since the worker is killed after ``--timeout`` seconds in one
        request).

        Args:
            environ: the WSGI environ of the current request.
            response_headers: extra headers for the 101 response (e.g. a cookie).

        Raises:
            HandshakeError: the request is not an acceptable WebSocket
                handshake; it has already been answered (400, 403, 405 or
                426, as :meth:`upgrade` does) and the view should just return.
            RuntimeError: the server does not give up its socket (waitress,
                wsgiref, uWSGI, ...) or the request came over TLS; the message
                names the servers that work. Nothing has been sent.
        """
        sock = wsgi.server_socket(environ)
        headers = wsgi.environ_headers(environ)
        method, version = str(environ.get("REQUEST_METHOD", "")), str(environ.get("SERVER_PROTOCOL", ""))
        try:
            accepted = self._check(method, version, headers)
        except HandshakeError as exc:
            wsgi.refuse(sock, handshake.build_error_response(exc))
            raise
        response = handshake.build_response(accepted, response_headers or ())
        leftover = wsgi.take_buffered(environ, sock)
        ours = wsgi.take_over(sock)
        try:
            ours.settimeout(None)  # the descriptor's blocking mode is shared with the server's; make it ours
            ours.sendall(response)
            if ours.family in (socket.AF_INET, socket.AF_INET6):
                ours.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return self._connection(ours, accepted, response, leftover, wsgi.request_target(environ), headers)
        except OSError as exc:
            ours.close()
            raise HandshakeError(f"connection lost during the handshake: {exc}") from exc


def _refuse(handler: http.server.BaseHTTPRequestHandler, error: HandshakeError) -> None:
    handler.close_connection = True
    try:
        handler.wfile.write(handshake.build_error_response(error))
        handler.wfile.flush()
    except OSError:
        pass  # the client is gone; it won't read the explanation
    handler.log_request(error.status)


# --- serve() -------------------------------------------------------------------


Handler = Callable[[Conn], Any]


class _RequestHandler(http.server.SimpleHTTPRequestHandler):
    """One connection: read a bounded head in bounded time, then upgrade or serve a file."""

    server: _TCPServer
    protocol_version = "HTTP/1.1"

    def __init__(self, request: Any, client_address: Any, server: _TCPServer) -> None:
        super().__init__(request, client_address, server, directory=server.owner.static_dir or os.devnull)

    def handle(self) -> None:
        owner = self.server.owner
        deadline = time.monotonic() + owner.handshake_timeout
        self.close_connection = True
        try:
            if owner.ssl_context is not None:
                # TLS in memory over the TCP socket (threadws._tls): the head,
                # the 101 and then the connection all go through it.
                tls_sock = TLSSocket.server(self.connection, owner.ssl_context, deadline)
                self.connection = tls_sock
                self.wfile = tls_sock.makefile("wb", 0)
            head, rest = read_head(
                self.connection, deadline, max_line=owner.max_request_line, max_head=owner.max_header_bytes
            )
        except HandshakeError as exc:
            self._answer_error(exc)
            return
        except (OSError, ssl.SSLError):
            return  # timed out (slowloris) or gone: drop it
        if not self._parse(head, rest):
            return
        wants_websocket = "websocket" in (self.headers.get("Upgrade") or "").lower()
        if owner.path is not None and self.path.split("?", 1)[0] != owner.path:
            if owner.static_dir is None or wants_websocket:
                self._answer_error(HandshakeError("not found", 404))
                return
            wants_websocket = False
        if owner.static_dir is not None and not wants_websocket and self.command in ("GET", "HEAD"):
            self.connection.settimeout(owner.handshake_timeout)
            method = self.do_GET if self.command == "GET" else self.do_HEAD
            method()
            self.wfile.flush()
            if isinstance(self.connection, TLSSocket):
                self.connection.close_notify()
            return
        try:
            conn = owner.upgrader.upgrade(self)
        except HandshakeError:
            return
        owner._run(conn)

    def _parse(self, head: bytes, rest: bytes) -> bool:
        line, _, fields = head.partition(b"\r\n")
        if len(line.split()) != 3:  # not "METHOD target HTTP/x.y" (HTTP/0.9 has no place here)
            self._answer_error(HandshakeError("malformed request line", 400))
            return False
        self.raw_requestline = line + b"\r\n"
        # parse_request reads the headers from rfile: give it exactly the head.
        self.rfile = io.BytesIO(fields + b"\r\n\r\n" if fields else b"\r\n")
        try:
            ok = self.parse_request()
        except http.client.HTTPException:
            ok = False
            self.send_error(400, "Bad request headers")
        self.rfile = io.BytesIO(rest)  # what follows the head belongs to the WebSocket
        return ok

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        # Serve files, never a listing of what else lies in the directory.
        self.send_error(404, "File not found")

    def _answer_error(self, error: HandshakeError) -> None:
        try:
            self.connection.sendall(handshake.build_error_response(error))
        except OSError:
            pass
        self.requestline = ""
        self.log_message('"%s" %s', "(unparsed request)", error.status)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s - %s", self.address_string(), format % args)


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
        super().__init__(address, _RequestHandler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        thread = threading.current_thread()
        thread.name = f"threadws-http-{client_address[0]}:{client_address[1]}"
        self.owner._track(thread, request, True)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.owner._track(thread, request, False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("error while handling a request from %s", client_address)


class Server:
    """A threaded WebSocket (and static file) server; see :func:`serve`.

    Attributes:
        server_address: the ``(host, port)`` it listens on (the real port when 0 was asked).
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
        handshake_timeout: float = 10.0,
        max_request_line: int = 8192,
        max_header_bytes: int = 16384,
    ) -> None:
        self.handler = handler
        self.path = path
        self.upgrader = upgrader or Upgrader()
        self.static_dir = os.fspath(static_dir) if static_dir is not None else None
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self._lock = threading.Lock()
        self._conns: set[Conn] = set()
        self._threads: dict[threading.Thread, Any] = {}
        self._serving = threading.Event()
        self._stopped = False
        self._tcp = _TCPServer(self, (host, port))
        self.server_address: tuple[str, int] = self._tcp.server_address[:2]  # type: ignore[assignment]

    @property
    def connections(self) -> list[Conn]:
        """The WebSocket connections currently open."""
        with self._lock:
            return list(self._conns)

    def serve_forever(self, poll_interval: float = 0.2) -> None:
        """Accept and serve connections until :meth:`shutdown` is called (from another thread)."""
        if self._stopped:
            return
        self._serving.set()
        try:
            self._tcp.serve_forever(poll_interval)
        finally:
            self._serving.clear()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting, close every connection with 1001, wait for their threads.

        Connections that haven't finished their closing handshake within
        *timeout* seconds are aborted. Idempotent.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            first = not self._stopped
            self._stopped = True
        if first:
            if self._serving.is_set():
                self._tcp.shutdown()
            self._tcp.server_close()
        with self._lock:
            pending = [sock for sock, in_handshake in self._threads.values() if in_handshake]
        for sock in pending:
            _shutdown_socket(sock)  # a request still in its handshake: drop it
        conns = self.connections
        payload = CloseCode.GOING_AWAY.to_bytes(2, "big") + b"server shutting down"
        for conn in conns:
            try:
                conn.write_control(MessageType.CLOSE, payload)
            except ConnectionClosed:
                pass
        for conn in conns:
            if not conn.wait_closed(max(0.0, deadline - time.monotonic())):
                conn.abort()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _track(self, thread: threading.Thread, request: Any, start: bool) -> None:
        with self._lock:
            if start:
                self._threads[thread] = (request, True)
            else:
                self._threads.pop(thread, None)

    def _run(self, conn: Conn) -> None:
        """Run the handler for *conn* on this (the request's) thread, then close."""
        thread = threading.current_thread()
        with self._lock:
            if thread in self._threads:
                self._threads[thread] = (self._threads[thread][0], False)
            stopped = self._stopped
            if not stopped:
                self._conns.add(conn)
        if not stopped:
            conn.add_done_callback(self._forget)
        if stopped:
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        try:
            self.handler(conn)
        except ConnectionClosed:
            conn.close()
        except Exception:
            logger.exception("connection handler %r raised", self.handler)
            conn.close(CloseCode.INTERNAL_ERROR, "internal error")
        else:
            conn.close()

    def _forget(self, conn: Conn) -> None:
        with self._lock:
            self._conns.discard(conn)


def _shutdown_socket(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def serve(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    upgrader: Upgrader | None = None,
    path: str | None = None,
    static_dir: str | os.PathLike[str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float = 10.0,
    max_request_line: int = 8192,
    max_header_bytes: int = 16384,
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
    logged to the ``threadws`` logger).

    Args:
        handler: called with each new :class:`Conn`.
        host, port: where to listen; port 0 picks a free port (see
            :attr:`Server.server_address`).
        upgrader: the :class:`Upgrader` (origin policy, subprotocols,
            per-connection settings); the default is same-origin only.
        path: if given, WebSocket upgrades are accepted only at this path
            (``"/ws"``); requests for other paths get 404 unless
            *static_dir* serves them. None accepts upgrades at any path (the
            handler sees ``conn.path``).
        static_dir: if given, plain GET and HEAD requests (not WebSocket
            upgrades) are answered with files from this directory
            (``index.html`` for a directory; never a listing).
        ssl_context: a server-side TLS context to serve ``wss://``.
        handshake_timeout: seconds a client has to send its whole request
            head; slower ones are dropped.
        max_request_line: longest request line accepted (else 414).
        max_header_bytes: largest request head accepted (else 431).
    """
    return Server(
        handler,
        host,
        port,
        upgrader=upgrader,
        path=path,
        static_dir=static_dir,
        ssl_context=ssl_context,
        handshake_timeout=handshake_timeout,
        max_request_line=max_request_line,
        max_header_bytes=max_header_bytes,
    )
