"""The client: :func:`dial`."""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import handshake
from ._http import read_head
from .compression import Compression, PerMessageDeflate, resolve
from .connection import Conn
from .settings import Settings
from ._tls import TLS, TLSSocket
from .exceptions import HandshakeError

__all__ = ["dial"]

#: The most of a refused handshake's response body that HandshakeError keeps.
MAX_ERROR_BODY = 64 * 1024
_MAX_HEAD = 64 * 1024


def dial(
    url: str,
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    subprotocols: Sequence[str] = (),
    origin: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    read_limit: int = Settings.read_limit,
    ping_interval: float | None = Settings.ping_interval,
    ping_timeout: float | None = Settings.ping_timeout,
    close_timeout: float = Settings.close_timeout,
    max_read_queue: int = Settings.max_read_queue,
    max_write_queue: int = Settings.max_write_queue,
    compression: Compression | bool | None = None,
) -> Conn:
    """Open a WebSocket connection to *url* (``ws://`` or ``wss://``) and return it.

    Args:
        url: where to connect, e.g. ``"ws://localhost:8000/chat"``.
        headers: extra request headers (e.g. ``Authorization``).
        subprotocols: subprotocols to offer, most preferred first; the one the
            server chose is ``conn.subprotocol``.
        origin: an ``Origin`` header to send (browsers always do; scripts needn't).
        ssl_context: for ``wss://``; the default verifies the certificate and
            the host name (with SNI) against the system's trust store.
        timeout: seconds for the TCP connect, the TLS and the WebSocket
            handshakes together.
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
        compression: offer permessage-deflate (RFC 7692). Off by default;
            True offers the defaults of :class:`threadws.Compression`, or pass
            one. If the server declines, the connection is uncompressed. The
            read limit applies to the decompressed size.

    Raises:
        HandshakeError: the server refused (``status``, ``headers`` and at most
            64 KiB of ``body`` tell why) or answered with an invalid handshake.
        TimeoutError: the handshake did not finish within *timeout*.
        OSError: the connection failed (refused, unreachable, TLS errors are
            :class:`ssl.SSLError`).
        ValueError: *url* is not a WebSocket URL.
    """
    settings = Settings(
        read_limit=read_limit,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
        max_read_queue=max_read_queue,
        max_write_queue=max_write_queue,
    )
    config = resolve(compression)
    target = handshake.parse_url(url)
    extra = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
    deadline = time.monotonic() + timeout
    raw: socket.socket = socket.create_connection((target.host, target.port), timeout=timeout)
    sock: Any = raw
    tls: TLS | None = None
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if target.secure:
            sock = _start_tls(raw, ssl_context or ssl.create_default_context(), target.host, deadline)
            tls = sock.tls
        key = handshake.new_key()
        request = handshake.build_request(
            target, key, headers=extra, subprotocols=subprotocols, origin=origin, compression=config
        )
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(request)
        try:
            head, rest = read_head(sock, deadline, max_line=_MAX_HEAD, max_head=_MAX_HEAD)
        except HandshakeError as exc:
            raise HandshakeError(f"invalid handshake response: {exc}") from None
        _, status, _, response_headers = handshake.parse_head(head)
        if status != 101:
            body = _read_body(sock, response_headers, rest, deadline)
            raise HandshakeError(
                f"server refused the WebSocket upgrade with HTTP {status}",
                status,
                handshake.header_list(response_headers),
                body,
            )
        try:
            subprotocol = handshake.check_response(status, response_headers, key, subprotocols, config)
            agreement = handshake.check_compression(status, response_headers, config)
        except HandshakeError as exc:
            exc.headers = handshake.header_list(response_headers)
            raise
        sock.settimeout(None)
        request_headers = http.client.parse_headers(io.BytesIO(request.split(b"\r\n", 1)[1]))
        extensions = []
        if agreement is not None and config is not None:
            extensions.append(PerMessageDeflate(agreement, config, client=True, read_limit=read_limit))
        return Conn(
            raw,
            client=True,
            settings=settings,
            trailing_data=rest,
            subprotocol=subprotocol,
            path=target.resource,
            request_headers=request_headers,
            response_headers=response_headers,
            extensions=extensions,
            tls=tls,
        )
    except TimeoutError:
        sock.close()
        raise TimeoutError(f"WebSocket handshake with {url} timed out after {timeout} s") from None
    except BaseException:
        sock.close()
        raise


def _start_tls(sock: socket.socket, context: ssl.SSLContext, server_hostname: str, deadline: float) -> TLSSocket:
    """The client's TLS handshake on a connected socket, in memory (see threadws._tls)."""
    return TLSSocket.client(sock, context, server_hostname, deadline)


def _read_body(sock: Any, headers: http.client.HTTPMessage, rest: bytes, deadline: float) -> bytes:
    """At most MAX_ERROR_BODY bytes of a refusal's body, without waiting past *deadline*."""
    length_text = headers.get("Content-Length")
    want = MAX_ERROR_BODY
    if length_text is not None and length_text.strip().isdigit():
        want = min(want, int(length_text))
    body = bytearray(rest[:want])
    try:
        while len(body) < want:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            chunk = sock.recv(want - len(body))
            if not chunk:
                break
            body += chunk
    except OSError:
        pass  # the body only explains the refusal: keep what arrived
    return bytes(body)
