"""The client: :func:`dial` opens one WebSocket connection.

A dial runs these steps, all within one total *timeout*:

1. the transport: a socket the caller connected (``sock=``), a Unix socket,
   or TCP to the server (its name resolved, then each address tried in turn),
   or to a proxy that opens a tunnel to it (``threadws._proxy``);
2. TLS for ``wss://`` (:func:`_start_tls`);
3. the opening handshake: the upgrade request, and the server's response
   read with h11 (:func:`threadws.read_response`);
4. if the server redirects and the caller asked to follow, all of it again
   for the new URL.

What it must never do
---------------------
Read or write frames: once the 101 is in, the connection (:class:`~threadws.Conn`)
owns the socket and the TLS session.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import ssl
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Union
from urllib.parse import urljoin, urlsplit, urlunsplit

from . import handshake
from ._net import Deadline, Response, connect_tcp, connect_unix, read_response
from ._proxy import check_proxy_url, choose_proxy, open_tunnel
from ._trace import connection_name, describe_head
from ._version import __version__
from .compression import Compression, PerMessageDeflate, resolve
from ._tls import TLSSocket
from .connection import Conn
from .exceptions import HandshakeError
from .settings import Settings

__all__ = ["MAX_ERROR_BODY", "MAX_REDIRECTS", "USER_AGENT", "dial"]

#: The ``User-Agent`` dial sends unless told otherwise.
USER_AGENT = f"threadws/{__version__} Python/{sys.version_info[0]}.{sys.version_info[1]}"
#: The most of a refused handshake's response body that HandshakeError keeps.
MAX_ERROR_BODY = 64 * 1024
#: The most redirects ``follow_redirects=True`` follows in one dial.
MAX_REDIRECTS = 10
_MAX_HEAD = 64 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Request headers that carry credentials: not sent on to another host after a redirect.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})

_logger = logging.getLogger("threadws")

Headers = Union[Mapping[str, str], Iterable[tuple[str, str]], None]
Logger = Union[logging.Logger, "logging.LoggerAdapter[Any]"]


def dial(
    url: str,
    *,
    headers: Headers = None,
    subprotocols: str | Sequence[str] = (),
    origin: str | None = None,
    user_agent: str | None = USER_AGENT,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    proxy: str | bool | None = True,
    sock: socket.socket | None = None,
    unix_socket: str | os.PathLike[str] | None = None,
    follow_redirects: bool = False,
    timeout: float | None = 10.0,
    logger: Logger | None = None,
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
) -> Conn:
    """Open a WebSocket connection to *url* and return it (blocks until it is open).

    Args:
        url: ``ws://`` or ``wss://``, e.g. ``"ws://localhost:8000/chat"``. A
            non-ASCII host is sent IDNA-encoded and a non-ASCII path or query
            percent-encoded (UTF-8). Credentials in it
            (``ws://user:password@host/``) are sent as Basic auth.
        headers: extra request headers (a dict or ``(name, value)`` pairs).
            A ``Host``, ``Origin``, ``User-Agent`` or ``Authorization`` here
            replaces the one dial would send; the handshake's own headers
            (``Upgrade``, ``Connection``, ``Sec-WebSocket-*``) are refused.
        subprotocols: subprotocols to offer, most preferred first (one str is
            one subprotocol); the one the server chose is ``conn.subprotocol``.
        origin: an ``Origin`` header to send (browsers always do; scripts needn't).
        user_agent: the ``User-Agent`` header; None sends none. The default
            is ``threadws/<version> Python/<x.y>``.
        ssl_context: for ``wss://``; the default verifies the certificate and
            the host name (with SNI) against the system's trust store.
        server_hostname: the name TLS sends (SNI) and checks the certificate
            against; by default the URL's host.
        proxy: True (the default) takes the proxy from the environment as
            urllib does (``HTTPS_PROXY`` for ``wss://``, ``HTTP_PROXY`` for
            ``ws://``, then ``ALL_PROXY``; ``NO_PROXY`` lists hosts to reach
            directly); None or False connects directly; a URL uses that proxy:
            ``http://[user:password@]host:port`` (``CONNECT``) or, with the
            ``socks`` extra (python-socks), ``socks5://``, ``socks5h://``
            (the proxy resolves the server's name), ``socks4://``, ``socks4a://``.
        sock: a connected stream socket to use instead of connecting (TLS
            still runs over it for ``wss://``); dial owns it from then on and
            closes it if the dial fails.
        unix_socket: the path of a Unix socket to connect to instead of the
            URL's host and port (the URL still gives ``Host`` and the path).
        follow_redirects: follow 301, 302, 303, 307 and 308 answers (at most
            10), never from ``wss://`` to ``ws://``, and dropping the
            credentials (URL, ``Authorization``, ``Cookie``) when the
            redirect leads to another host, port or scheme.
        timeout: seconds for everything from name resolution to the server's
            101, redirects included; None waits as long as the system does.
        logger: where this connection logs (default: the ``threadws`` logger).
            At DEBUG it logs the handshake's request and response heads
            (credentials hidden) and every frame sent and received.
        read_limit: longest message accepted, in bytes; a longer one closes the
            connection with 1009.
        ping_interval: send a ping after this many seconds without hearing from
            the server; None turns keepalive off.
        ping_timeout: drop the connection if nothing arrives this many seconds
            after a keepalive ping (None: never).
        close_timeout: how long :meth:`Conn.close` waits for the closing handshake.
        max_read_queue: bytes of received messages held for the application
            before the reader stops reading (TCP then pushes back).
        max_write_queue: bytes of frames queued for sending before
            :meth:`Conn.write_message` waits.
        max_queued_messages, max_fragments, idle_timeout, idle_close_code:
            see :class:`threadws.settings.Settings` (the message count bound
            of each queue, the most frames per message, closing a connection
            on which no message arrives).
        compression: offer permessage-deflate (RFC 7692). Off by default;
            True offers the defaults of :class:`threadws.Compression`, or pass
            one. If the server declines, the connection is uncompressed. The
            read limit applies to the decompressed size.

    Raises:
        HandshakeError: the server refused (``status``, ``headers`` and at most
            64 KiB of ``body`` tell why; the message has the status line and
            the start of the body) or answered with an invalid handshake.
        ProxyError: the proxy refused to open a tunnel (a HandshakeError).
        TimeoutError: *timeout* passed; the message says during which step.
        OSError: the connection failed (refused, unreachable, a name that does
            not resolve is a :class:`socket.gaierror`, TLS errors are
            :class:`ssl.SSLError`).
        ValueError: *url* is not a WebSocket URL, or *headers* has a header
            dial cannot send (see above).
    """
    try:
        dialer = _Dialer(
            url,
            headers=headers,
            subprotocols=subprotocols,
            origin=origin,
            user_agent=user_agent,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            proxy=proxy,
            sock=sock,
            unix_socket=unix_socket,
            follow_redirects=follow_redirects,
            timeout=timeout,
            logger=logger,
            settings=Settings(
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
            ),
            compression=resolve(compression),
        )
        return dialer.run()
    except BaseException:
        if sock is not None:
            sock.close()  # ours from the call on, whatever went wrong
        raise


def _start_tls(
    sock: socket.socket, context: ssl.SSLContext, server_hostname: str, deadline: Deadline
) -> TLSSocket:
    """TLS over the connected *sock*, in memory (see threadws._tls), its handshake done within *deadline*.

    From here on the dial uses only ``sendall``, ``recv``, ``settimeout`` and
    ``close`` on what this returns; the connection gets its TCP socket and TLS session.
    """
    with deadline.step(f"in the TLS handshake with {server_hostname}"):
        return TLSSocket.client(sock, context, server_hostname, deadline.at)


def _header_pairs(headers: Headers) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    if isinstance(headers, (str, bytes)):
        raise TypeError("headers must be a mapping or (name, value) pairs, not a string")
    return [(name, value) for name, value in headers]


def _message(headers: Iterable[tuple[str, str]]) -> http.client.HTTPMessage:
    message = http.client.HTTPMessage()
    for name, value in headers:
        message[name] = value  # appends: repeated headers stay repeated
    return message


class _Dialer:
    """One call of :func:`dial`: its checked arguments, its name, its deadline."""

    def __init__(
        self,
        url: str,
        *,
        headers: Headers,
        subprotocols: str | Sequence[str],
        origin: str | None,
        user_agent: str | None,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        proxy: str | bool | None,
        sock: socket.socket | None,
        unix_socket: str | os.PathLike[str] | None,
        follow_redirects: bool,
        timeout: float | None,
        logger: Logger | None,
        settings: Settings,
        compression: Compression | None,
    ) -> None:
        self.target = handshake.parse_url(url)
        self.headers = _header_pairs(headers)
        self.subprotocols = handshake.as_subprotocols(subprotocols)
        self.origin = origin
        self.user_agent = user_agent
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        if sock is not None and unix_socket is not None:
            raise ValueError("give sock= or unix_socket=, not both")
        if (sock is not None or unix_socket is not None) and isinstance(proxy, str):
            raise ValueError("proxy= cannot be used with sock= or unix_socket=")
        if isinstance(proxy, str):
            check_proxy_url(proxy)  # a bad proxy URL is an error before anything is sent
        self.proxy: str | bool | None = None if sock is not None or unix_socket is not None else proxy
        self.sock = sock
        self.unix_socket = unix_socket
        self.follow_redirects = follow_redirects
        self.deadline = Deadline(timeout, f"dial {self.target.url}")
        self.logger = logger
        self.log = logger or _logger
        self.debug = self.log.isEnabledFor(logging.DEBUG)
        self.settings = settings
        self.compression = compression
        self.name = connection_name(client=True)
        # A first check of the request headers, so that a bad header fails before connecting.
        self._request_headers(self.target, self.headers, handshake.new_key())

    def run(self) -> Conn:
        """Dial, following redirects if asked; see :func:`dial`."""
        target, headers = self.target, self.headers
        redirects = 0
        while True:
            outcome = self._attempt(target, headers)
            if isinstance(outcome, Conn):
                return outcome
            if redirects == MAX_REDIRECTS:
                raise HandshakeError(
                    f"more than {MAX_REDIRECTS} redirects, the last to {outcome.header('Location')}",
                    outcome.status,
                    outcome.headers,
                    outcome.body,
                )
            redirects += 1
            target, headers = self._redirect(target, headers, outcome)

    def trace(self, direction: str, lines: list[str]) -> None:
        """Log *lines* at DEBUG under the connection's name (``>`` sent, ``<`` received).

        Callers check ``self.debug`` first, so that nothing is formatted when DEBUG is off.
        """
        for line in lines:
            if direction:
                self.log.debug("%s %s %s", self.name, direction, line)
            else:
                self.log.debug("%s %s", self.name, line)

    def _request_headers(self, target: handshake.Target, headers: list[tuple[str, str]], key: str) -> list[tuple[str, str]]:
        return handshake.request_headers(
            target,
            key,
            headers=headers,
            subprotocols=self.subprotocols,
            origin=self.origin,
            compression=self.compression,
            user_agent=self.user_agent,
        )

    def _attempt(self, target: handshake.Target, headers: list[tuple[str, str]]) -> Conn | Response:
        """One handshake: the open Conn, or the redirect response to follow."""
        key = handshake.new_key()
        request_headers = self._request_headers(target, headers, key)
        sock = self._open(target)
        try:
            if self.debug:
                self.trace(">", describe_head(f"GET {target.resource} HTTP/1.1", request_headers))
            with self.deadline.step(f"while sending the handshake request to {target.host_header}"):
                sock.settimeout(self.deadline.left())
                sock.sendall(handshake.format_request(target.resource, request_headers))
            with self.deadline.step(f"while waiting for the handshake response from {target.host_header}"):
                response = read_response(
                    sock,
                    self.deadline,
                    "GET",
                    target.resource,
                    request_headers,
                    max_head=_MAX_HEAD,
                    max_body=MAX_ERROR_BODY,
                )
            if self.debug:
                self.trace("<", describe_head(response.status_line, response.headers))
            if response.status != 101:
                if self.follow_redirects and response.status in _REDIRECT_STATUSES and response.header("Location"):
                    sock.close()
                    return response
                raise _refusal(response)
            response_headers = _message(response.headers)
            try:
                subprotocol = handshake.check_response(101, response_headers, key, self.subprotocols, self.compression)
                agreement = handshake.check_compression(101, response_headers, self.compression)
            except HandshakeError as exc:
                exc.headers = response.headers
                raise
            extensions = []
            if agreement is not None and self.compression is not None:
                extensions.append(
                    PerMessageDeflate(agreement, self.compression, client=True, read_limit=self.settings.read_limit)
                )
            sock.settimeout(None)
            tls = sock.tls if isinstance(sock, TLSSocket) else None
            return Conn(
                sock.raw if isinstance(sock, TLSSocket) else sock,
                client=True,
                settings=self.settings,
                trailing_data=response.trailing,
                subprotocol=subprotocol,
                path=target.resource,
                request_headers=_message(request_headers),
                response_headers=response_headers,
                extensions=extensions,
                logger=self.logger,
                name=self.name,
                tls=tls,
            )
        except BaseException:
            sock.close()
            raise

    def _open(self, target: handshake.Target) -> socket.socket | TLSSocket:
        """The transport to *target*, with TLS on it for ``wss://``."""
        if self.sock is not None:
            sock = self.sock
        elif self.unix_socket is not None:
            sock = connect_unix(self.unix_socket, self.deadline)
            if self.debug:
                self.trace("", [f"connected to Unix socket {os.fspath(self.unix_socket)}"])
        else:
            proxy = choose_proxy(self.proxy, target)
            if proxy is None:
                sock = connect_tcp(target.host, target.port, self.deadline)
                if self.debug:
                    self.trace("", [f"connected to {_peer(sock)}"])
            else:
                sock = open_tunnel(
                    proxy,
                    target.host,
                    target.port,
                    self.deadline,
                    user_agent=self.user_agent,
                    trace=self.trace if self.debug else None,
                )
        if not target.secure:
            return sock
        try:
            context = self.ssl_context or ssl.create_default_context()
            hostname = self.server_hostname or target.host
            tls_sock = _start_tls(sock, context, hostname, self.deadline)
        except BaseException:
            sock.close()
            raise
        if self.debug:
            self.trace("", [f"TLS with {hostname} established"])
        return tls_sock

    def _redirect(
        self, target: handshake.Target, headers: list[tuple[str, str]], response: Response
    ) -> tuple[handshake.Target, list[tuple[str, str]]]:
        """Where *response* sends the dial, and the headers to send there."""
        location = response.header("Location") or ""
        joined = urlsplit(urljoin(target.url.replace("ws", "http", 1), location))
        scheme = {"http": "ws", "https": "wss"}.get(joined.scheme, joined.scheme)
        url = urlunsplit((scheme, joined.netloc, joined.path, joined.query, joined.fragment))

        def refuse(why: str) -> HandshakeError:
            return HandshakeError(
                f"cannot follow the redirect ({response.status_line}) to {location}: {why}",
                response.status,
                response.headers,
                response.body,
            )

        try:
            new = handshake.parse_url(url)
        except ValueError as exc:
            raise refuse(str(exc)) from None
        if target.secure and not new.secure:
            raise refuse("it leaves TLS (wss:// to ws://)")
        if self.sock is not None:
            raise refuse("the connection given as sock= is used up")
        if target.same_origin(new):
            if new.username is None:
                new = replace(new, username=target.username, password=target.password)
        else:
            if self.unix_socket is not None:
                raise refuse("it leads to another host, but the dial goes to a Unix socket")
            if self.server_hostname is not None:
                raise refuse("it leads to another host, but server_hostname= names this one")
            headers = [(name, value) for name, value in headers if name.lower() not in _CREDENTIAL_HEADERS]
        if self.debug:
            self.trace("", [f"following the redirect to {new.url}"])
        return new, headers


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _refusal(response: Response) -> HandshakeError:
    """The HandshakeError for a server that answered the upgrade with another status."""
    text = f"server refused the WebSocket upgrade: {response.status_line}"
    location = response.header("Location")
    if response.status in _REDIRECT_STATUSES and location:
        text += f" (a redirect to {location}: dial(..., follow_redirects=True) follows it)"
    excerpt = response.excerpt()
    if excerpt:
        text += f": {excerpt}"
    return HandshakeError(text, response.status, response.headers, response.body)
