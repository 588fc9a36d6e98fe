"""The Upgrader: an HTTP request in, a WebSocket connection out (gorilla's ``Upgrader``).

It checks a request (origin, version, key, subprotocols, compression) with
the pure functions of :mod:`threadws.handshake`, answers a refusal itself,
takes the socket over from the HTTP server that parsed the request
(``http.server``, a WSGI server through :mod:`threadws.wsgi`, or
:func:`threadws.serve`), and hands it to a server-side :class:`Conn`, whose
writer sends the 101 once the connection's threads run.

What it must never do
---------------------
Send anything on a socket it hasn't taken over, or send the 101 before the
connection's threads are running (out of threads, the client gets a 503, not a
101 and silence); share an ``ssl.SSLSocket`` between two threads.
"""

from __future__ import annotations

import http.server
import logging
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import handshake, wsgi
from ._http import parse_fields, refuse_now, take_buffered
from ._tls import TLS, TLSSocket
from ._trace import connection_name, describe_head
from .compression import Compression, PerMessageDeflate, resolve
from .connection import Conn
from .exceptions import HandshakeError
from .settings import Settings

__all__ = ["Upgrader"]

_logger = logging.getLogger("threadws")

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
        logger: where the connections it makes log (the ``threadws`` logger
            by default). At DEBUG each one logs its handshake (the request
            and the 101, one line per header, credentials hidden) and every
            frame; see :attr:`Conn.logger`.
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
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.logger: logging.Logger | logging.LoggerAdapter[Any] = logger or _logger
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
                405 or 426) and the handler should just return. Also 503 (with
                ``Retry-After``) when the connection's threads can't be
                started: the client got that answer, the socket is closed,
                and the error is logged.
            RuntimeError: the request came over an ``ssl.SSLSocket`` (see
                above); nothing has been sent.
            ValueError: a header in *response_headers* can't be sent (its
                name isn't a token, or its value has a control character);
                nothing has been sent.
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
            if raw.family in (socket.AF_INET, socket.AF_INET6):
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise HandshakeError(f"connection lost during the handshake: {exc}") from exc
        # Hijack: detach the file descriptor so the HTTP server's own
        # shutdown/close of its socket object can't touch our connection.
        raw = socket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        try:
            request_line = f"{handler.command} {handler.path} {handler.request_version}"
            conn = self._start(raw, accepted, response, leftover, handler.path, handler.headers, tls, request_line)
        except HandshakeError as exc:
            handler.log_request(exc.status)
            raise
        handler.log_request(101)
        return conn

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

    def _start(
        self,
        sock: socket.socket,
        accepted: handshake.Accepted,
        response: bytes,
        leftover: bytes,
        path: str,
        request_headers: Any,
        tls: TLS | None = None,
        request_line: str = "",
    ) -> Conn:
        """The server-side Conn for *sock*; its writer sends the 101 (*response*) once both its threads run.

        Raises HandshakeError(503) when a thread can't be started, having
        answered 503 and closed the socket: nothing else was sent on it.
        """
        name = connection_name(client=False)
        # Our own 101, parsed back for Conn.response_headers (strictly, and
        # without email.parser: it is on every connection's path).
        status_line, _, fields = response[:-4].partition(b"\r\n")
        response_headers = parse_fields(fields, max_fields=len(response))
        if self.logger.isEnabledFor(logging.DEBUG):
            for direction, lines in (
                ("<", describe_head(request_line, request_headers.items())),
                (">", describe_head(status_line.decode("iso-8859-1"), response_headers.items())),
            ):
                for line in lines:
                    self.logger.debug("%s %s %s", name, direction, line)
        extensions = []
        if accepted.compression is not None and self.compression is not None:
            extensions.append(
                PerMessageDeflate(
                    accepted.compression, self.compression, client=False, read_limit=self.settings.read_limit
                )
            )
        try:
            return Conn(
                sock,
                client=False,
                settings=self.settings,
                trailing_data=leftover,
                subprotocol=accepted.subprotocol,
                path=path,
                request_headers=request_headers,
                response_headers=response_headers,
                extensions=extensions,
                logger=self.logger,
                tls=tls,
                name=name,
                greeting=response,
            )
        except RuntimeError as exc:  # "can't start new thread": the process is at a thread limit
            error = handshake.service_unavailable("the server can't start a thread for this connection")
            self.logger.error("%s: can't start a connection's threads (%s): answered 503", _peer(sock), exc)
            refuse_now(sock, handshake.build_error_response(error), tls)
            raise error from exc

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
                426, as :meth:`upgrade` does; 503 when the connection's
                threads can't be started) and the view should just return.
            RuntimeError: the server does not give up its socket (waitress,
                wsgiref, uWSGI, ...) or the request came over TLS; the message
                names the servers that work. Nothing has been sent.
            ValueError: a header in *response_headers* can't be sent;
                nothing has been sent.
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
            if ours.family in (socket.AF_INET, socket.AF_INET6):
                ours.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            ours.close()
            raise HandshakeError(f"connection lost during the handshake: {exc}") from exc
        target = wsgi.request_target(environ)
        return self._start(ours, accepted, response, leftover, target, headers, request_line=f"{method} {target} {version}")


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except (OSError, ValueError):
        return "(unknown peer)"
    return f"{host}:{port}"


def _refuse(handler: http.server.BaseHTTPRequestHandler, error: HandshakeError) -> None:
    handler.close_connection = True
    try:
        handler.wfile.write(handshake.build_error_response(error))
        handler.wfile.flush()
    except OSError:
        pass  # the client is gone; it won't read the explanation
    handler.log_request(error.status)
