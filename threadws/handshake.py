"""The opening handshake (RFC 6455 section 4) as pure functions: no sockets here.

The server side checks a request that an HTTP parser already parsed and builds
the 101 response or the HTTP error that explains a refusal. The client side
builds the upgrade request and checks the server's response. The I/O lives in
:mod:`threadws.server` and :mod:`threadws.client`.

What it must never do
---------------------
Touch a socket or read a head off the wire (its callers do, bounded in size
and time), or accept a request or a response that RFC 6455 section 4 says to
refuse: a refusal is a :class:`~threadws.HandshakeError` with the HTTP status
that explains it.
"""

from __future__ import annotations

import base64
import binascii
import email.message
import http
import http.client
import io
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Union
from urllib.parse import quote, unquote, urlsplit

from wsproto.utilities import generate_accept_token

from . import compression as _compression
from .compression import Agreement, Compression
from .exceptions import HandshakeError

__all__ = [
    "Accepted",
    "HeaderSource",
    "OriginCheck",
    "Target",
    "as_subprotocols",
    "basic_auth",
    "build_error_response",
    "build_request",
    "build_response",
    "check_compression",
    "check_request",
    "check_header",
    "check_response",
    "format_request",
    "new_key",
    "parse_head",
    "parse_url",
    "request_headers",
    "service_unavailable",
]

#: The only protocol version RFC 6455 defines (section 4.1).
VERSION = "13"


class HeaderSource(Protocol):
    """Anything with ``get_all`` like :class:`email.message.Message` (http.server's headers)."""

    def get_all(self, name: str, failobj: None = None) -> list[str] | None: ...


#: ``check_origin`` is a callable ``(origin, request_headers) -> bool`` or a list
#: of allowed origins such as ``["https://example.com"]``.
OriginCheck = Union[Callable[[str, HeaderSource], bool], Sequence[str], None]


def _tokens(headers: HeaderSource, name: str) -> list[str]:
    """All comma-separated values of header *name*, stripped, in order."""
    values = headers.get_all(name) or []
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _has_token(headers: HeaderSource, name: str, token: str) -> bool:
    return any(item.lower() == token for item in _tokens(headers, name))


def _single(headers: HeaderSource, name: str) -> str | None:
    values = headers.get_all(name) or []
    return values[0].strip() if len(values) == 1 else None


def _check_header_text(text: str) -> None:
    # A CR or LF in a header would let the caller inject headers or a body.
    if "\r" in text or "\n" in text or "\0" in text:
        raise ValueError(f"invalid character in header: {text!r}")


def _format_headers(headers: Iterable[tuple[str, str]]) -> str:
    lines = []
    for name, value in headers:
        _check_header_text(name)
        _check_header_text(value)
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines)


# --- server side ---------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """What :func:`check_request` decided: the accept token, the subprotocol and the compression.

    ``extensions`` is the ``Sec-WebSocket-Extensions`` answer (None: none) and
    ``compression`` the permessage-deflate agreement it stands for.
    """

    accept: str
    subprotocol: str | None
    extensions: str | None = None
    compression: Agreement | None = None


def _same_origin(origin: str, headers: HeaderSource) -> bool:
    # gorilla's rule: the Origin's host[:port] must equal the Host header.
    host = _single(headers, "Host")
    if host is None:
        return False
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    return bool(parsed.netloc) and parsed.netloc.lower() == host.lower()


def _origin_allowed(check_origin: OriginCheck, origin: str | None, headers: HeaderSource) -> bool:
    if origin is None:
        # Browsers always send Origin; a request without one is not a
        # cross-site browser request, so there is nothing to protect.
        return True
    if check_origin is None:
        return _same_origin(origin, headers)
    if callable(check_origin):
        return bool(check_origin(origin, headers))
    allowed = {item.lower().rstrip("/") for item in check_origin}
    return origin.lower().rstrip("/") in allowed


#: An HTTP version (RFC 9110 section 2.5), with ASCII digits only (str.isdigit
#: would let through digits such as "²" that int() refuses).
_HTTP_VERSION = re.compile(r"HTTP/([0-9]+)\.([0-9]+)")


def _at_least_http11(version: str) -> bool:
    match = _HTTP_VERSION.fullmatch(version)
    return match is not None and (int(match[1]), int(match[2])) >= (1, 1)


def check_request(
    method: str,
    http_version: str,
    headers: HeaderSource,
    *,
    check_origin: OriginCheck = None,
    subprotocols: Sequence[str] = (),
    compression: Compression | None = None,
) -> Accepted:
    """Check an upgrade request (RFC 6455 section 4.2.1) and decide the answer.

    Args:
        method: the request method, e.g. ``"GET"``.
        http_version: the request's version string, e.g. ``"HTTP/1.1"``.
        headers: the request headers.
        check_origin: see :class:`threadws.Upgrader`.
        subprotocols: the server's subprotocols, most preferred first.
        compression: the server's permessage-deflate settings, None for none.

    Returns:
        the accept token, the chosen subprotocol (None if none matched) and
        the permessage-deflate answer (None if off, not offered or declined:
        an unacceptable offer is declined, never refused, RFC 7692 section 5.1).

    Raises:
        HandshakeError: with the HTTP status to answer (400, 403, 405 or 426),
            the headers to add, and a short plain-text body.
    """
    if method != "GET":
        raise HandshakeError("method not allowed: the WebSocket handshake needs GET", 405, [("Allow", "GET")])
    if not _at_least_http11(http_version):
        raise HandshakeError("the WebSocket handshake needs HTTP/1.1 or later", 400)
    if not _has_token(headers, "Connection", "upgrade"):
        raise HandshakeError("'upgrade' token not found in 'Connection' header", 400)
    if not _has_token(headers, "Upgrade", "websocket"):
        raise HandshakeError("'websocket' token not found in 'Upgrade' header", 400)
    if _single(headers, "Host") is None:
        raise HandshakeError("missing or repeated 'Host' header", 400)
    if _single(headers, "Sec-WebSocket-Version") != VERSION:
        raise HandshakeError(
            "unsupported WebSocket version: 13 not found in 'Sec-WebSocket-Version' header",
            426,
            [("Sec-WebSocket-Version", VERSION)],
        )
    origins = headers.get_all("Origin") or []
    if len(origins) > 1:
        raise HandshakeError("repeated 'Origin' header", 400)
    if not _origin_allowed(check_origin, origins[0] if origins else None, headers):
        raise HandshakeError("request origin not allowed by Upgrader.check_origin", 403)
    key = _single(headers, "Sec-WebSocket-Key")
    if key is None:
        raise HandshakeError("missing or repeated 'Sec-WebSocket-Key' header", 400)
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError("'Sec-WebSocket-Key' is not 16 bytes in base64", 400)
    offered = _tokens(headers, "Sec-WebSocket-Protocol")
    chosen = next((p for p in subprotocols if p in offered), None)
    answer = None
    if compression is not None:
        answer = _compression.accept_offer(headers.get_all("Sec-WebSocket-Extensions") or [], compression)
    return Accepted(
        generate_accept_token(key.encode("ascii")).decode("ascii"),
        chosen,
        answer[0] if answer else None,
        answer[1] if answer else None,
    )


def build_response(accepted: Accepted, extra_headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """The ``101 Switching Protocols`` response for an accepted request (always HTTP/1.1).

    Raises:
        ValueError: an extra header whose name isn't a token or whose value
            has a control character or can't be sent as ISO-8859-1.
    """
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accepted.accept),
    ]
    if accepted.subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", accepted.subprotocol))
    if accepted.extensions is not None:
        headers.append(("Sec-WebSocket-Extensions", accepted.extensions))
    for name, value in extra_headers:
        check_header(name, value)  # ValueError now, before the socket is taken over
        headers.append((name, value))
    return f"HTTP/1.1 101 Switching Protocols\r\n{_format_headers(headers)}\r\n".encode("latin-1")


def build_error_response(error: HandshakeError) -> bytes:
    """An HTTP/1.1 response that explains *error* in plain text and closes the connection."""
    body = (str(error) + "\n").encode("utf-8")
    try:
        phrase = http.HTTPStatus(error.status).phrase
    except ValueError:
        phrase = "Error"
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *error.headers,
    ]
    return f"HTTP/1.1 {error.status} {phrase}\r\n{_format_headers(headers)}\r\n".encode("latin-1") + body


#: Seconds a 503 refusal asks the client to wait before it tries again
#: (``Retry-After``): a server's slot frees as soon as a handshake or a
#: connection ends, and :func:`threadws.reconnecting` waits at least this long,
#: then adds its own random backoff, so that refused clients don't come back at once.
RETRY_AFTER = 1


def service_unavailable(reason: str) -> HandshakeError:
    """The ``503 Service Unavailable`` refusal (with ``Retry-After``) of a server at a limit or out of threads."""
    return HandshakeError(reason, 503, [("Retry-After", str(RETRY_AFTER))])


# --- client side ---------------------------------------------------------


#: Request headers the handshake writes itself, and what to do instead.
_OWN_HEADERS = {
    "upgrade": "the handshake always sends 'websocket'",
    "connection": "the handshake always sends 'Upgrade'",
    "sec-websocket-key": "the handshake makes a fresh key",
    "sec-websocket-version": "the handshake always sends 13",
    "sec-websocket-protocol": "pass subprotocols= instead",
    "sec-websocket-extensions": "pass compression= instead",
    "sec-websocket-accept": "it is a response header",
}
#: Headers the caller may give once in ``headers=``, replacing the default.
_REPLACEABLE = ("host", "origin", "user-agent", "authorization")
#: A header name or a subprotocol: an RFC 9110 token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Left as they are in a request target: printable ASCII except space and the
#: characters a browser escapes in a path (``"<>`{}``), and ``%`` so that escapes
#: already in the URL stay as they are. Everything else is percent-encoded as UTF-8.
_TARGET_SAFE = "!#$%&'()*+,/:;=?@[\\]^|"
#: A host name as RFC 3986's reg-name allows it, once IDNA-encoded.
_REG_NAME = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=%-]+")


@dataclass(frozen=True)
class Target:
    """Where a ``ws://`` or ``wss://`` URL points, ready for the wire.

    *host* is ASCII (IDNA-encoded if the URL's was not), *resource* is the
    request target with everything but printable ASCII percent-encoded, and
    *username* and *password* are the URL's credentials, percent-decoded
    (None if it has none).
    """

    secure: bool
    host: str
    port: int
    resource: str
    host_header: str
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The URL as sent, without credentials (for messages and logs)."""
        return f"{'wss' if self.secure else 'ws'}://{self.host_header}{self.resource}"

    def same_origin(self, other: Target) -> bool:
        """True if *other* has the same scheme, host and port (credentials may follow a redirect there)."""
        return (self.secure, self.host.lower(), self.port) == (other.secure, other.host.lower(), other.port)


def _ascii_host(host: str, url: str) -> str:
    if ":" in host:  # an IPv6 literal (urlsplit took the brackets off)
        try:
            ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            raise ValueError(f"invalid IPv6 address in WebSocket URL: {url!r}") from None
        return host
    if not host.isascii():
        # An internationalized name goes on the wire (DNS, Host, TLS) as IDNA.
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"invalid host name in WebSocket URL: {url!r}") from None
    if not _REG_NAME.fullmatch(host):
        raise ValueError(f"invalid host name in WebSocket URL: {url!r}")
    return host


def parse_url(url: str) -> Target:
    """Split a WebSocket URL (RFC 6455 section 3) into what the handshake needs.

    Non-ASCII in the host is IDNA-encoded, and the path and query are
    percent-encoded where needed (as UTF-8), as browsers and ``websockets`` do.

    Raises:
        ValueError: not a ``ws://`` or ``wss://`` URL, or no host, a bad port,
            a fragment, or a host name that cannot be encoded.
        TypeError: *url* is not a str.
    """
    if not isinstance(url, str):
        raise TypeError(f"the URL must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid WebSocket URL {url!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL (ws:// or wss://): {url!r}")
    if parts.fragment:
        raise ValueError(f"a WebSocket URL cannot have a fragment: {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in WebSocket URL: {url!r}")
    if port == 0:
        raise ValueError(f"port 0 in WebSocket URL: {url!r}")
    secure = parts.scheme == "wss"
    default_port = 443 if secure else 80
    port = port or default_port
    host = _ascii_host(parts.hostname, url)
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default_port else f"{shown}:{port}"
    resource = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe=_TARGET_SAFE)
    username = password = None
    if parts.username or parts.password:
        username = unquote(parts.username or "")
        password = unquote(parts.password or "")
    return Target(secure, host, port, resource, host_header, username, password)


def basic_auth(username: str, password: str) -> str:
    """An ``Authorization`` (or ``Proxy-Authorization``) value for Basic auth (RFC 7617, UTF-8).

    Raises ValueError if *username* contains a colon (Basic auth cannot carry it).
    """
    if ":" in username:
        raise ValueError("a Basic auth user name cannot contain ':'")
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def new_key() -> str:
    """A fresh random ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def check_header(name: str, value: str) -> None:
    """Raise ValueError unless *name* is a token and *value* can be sent as a header value."""
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(f"header names and values must be str: {name!r}: {value!r}")
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid header name: {name!r}")
    # No control characters but tab: a CR or LF would let a value inject headers.
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
        raise ValueError(f"invalid character in the value of header {name}: {value!r}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"header {name} has characters that HTTP cannot carry: {value!r}") from None


def as_subprotocols(subprotocols: str | Iterable[str]) -> list[str]:
    """The subprotocols as a list (one str is one subprotocol, not its letters).

    Raises ValueError if one is not a token (RFC 6455 section 4.1).
    """
    items = [subprotocols] if isinstance(subprotocols, str) else list(subprotocols)
    for item in items:
        if not isinstance(item, str) or not _TOKEN.fullmatch(item):
            raise ValueError(f"invalid subprotocol (must be an HTTP token): {item!r}")
    return items


def request_headers(
    target: Target,
    key: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    subprotocols: str | Sequence[str] = (),
    origin: str | None = None,
    compression: Compression | None = None,
    user_agent: str | None = None,
) -> list[tuple[str, str]]:
    """The upgrade request's headers, in order: the handshake's own, then the caller's.

    ``Host`` comes from the URL, ``Authorization`` from its credentials (Basic
    auth), ``Origin`` from *origin* and ``User-Agent`` from *user_agent*; one
    of these in *headers* replaces that default instead of repeating it.

    Raises:
        ValueError: *headers* names a header the handshake writes itself
            (``Upgrade``, ``Connection``, ``Sec-WebSocket-*``), repeats one of
            the four above or gives ``Origin`` as well as *origin*; a name or a
            value cannot be sent; a subprotocol is not a token.
    """
    extra: list[tuple[str, str]] = []
    replaced: dict[str, tuple[str, str]] = {}
    for name, value in headers:
        check_header(name, value)
        lower = name.lower()
        if lower in _OWN_HEADERS:
            raise ValueError(f"{name} cannot be given in headers: {_OWN_HEADERS[lower]}")
        if lower in _REPLACEABLE:
            if lower in replaced:
                raise ValueError(f"{name} given twice in headers")
            replaced[lower] = (name, value)
        else:
            extra.append((name, value))
    if origin is not None and "origin" in replaced:
        raise ValueError("Origin given both as origin= and in headers")
    offered = as_subprotocols(subprotocols)
    lines = [
        replaced.get("host", ("Host", target.host_header)),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", VERSION),
    ]
    if origin is not None:
        lines.append(("Origin", origin))
    elif "origin" in replaced:
        lines.append(replaced["origin"])
    if offered:
        lines.append(("Sec-WebSocket-Protocol", ", ".join(offered)))
    if compression is not None:
        lines.append(("Sec-WebSocket-Extensions", _compression.build_offer(compression)))
    if "user-agent" in replaced:
        lines.append(replaced["user-agent"])
    elif user_agent is not None:
        lines.append(("User-Agent", user_agent))
    if "authorization" in replaced:
        lines.append(replaced["authorization"])
    elif target.username is not None:
        lines.append(("Authorization", basic_auth(target.username, target.password or "")))
    for name, value in lines:
        check_header(name, value)
    return lines + extra


def format_request(resource: str, headers: Iterable[tuple[str, str]], method: str = "GET") -> bytes:
    """An HTTP/1.1 request head (no body) with *headers*, already checked by :func:`check_header`."""
    return f"{method} {resource} HTTP/1.1\r\n{_format_headers(headers)}\r\n".encode("latin-1")


def build_request(
    target: Target,
    key: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    subprotocols: str | Sequence[str] = (),
    origin: str | None = None,
    compression: Compression | None = None,
    user_agent: str | None = None,
) -> bytes:
    """The HTTP/1.1 upgrade request for *target*; see :func:`request_headers` for the headers and errors."""
    lines = request_headers(
        target, key, headers=headers, subprotocols=subprotocols, origin=origin, compression=compression,
        user_agent=user_agent,
    )
    return format_request(target.resource, lines)


def parse_head(head: bytes) -> tuple[str, int, str, http.client.HTTPMessage]:
    """Parse a response head (status line and headers, without the blank line).

    Returns ``(version, status, reason, headers)``. Raises HandshakeError if malformed.
    """
    line, _, rest = head.partition(b"\r\n")
    try:
        version, status_text, *reason = line.decode("latin-1").split(" ", 2)
        status = int(status_text)
    except ValueError:
        raise HandshakeError(f"malformed HTTP status line: {line[:100]!r}") from None
    if not version.startswith("HTTP/1.") or not 100 <= status <= 999:
        raise HandshakeError(f"malformed HTTP status line: {line[:100]!r}")
    try:
        headers = http.client.parse_headers(io.BytesIO(rest + b"\r\n\r\n"))
    except http.client.HTTPException as exc:
        raise HandshakeError(f"malformed HTTP headers: {exc}", status) from None
    return version, status, reason[0] if reason else "", headers


def header_list(headers: email.message.Message) -> list[tuple[str, str]]:
    """Headers as a list of (name, value) pairs, in order."""
    return [(name, str(value)) for name, value in headers.items()]


def check_response(
    status: int,
    headers: HeaderSource,
    key: str,
    subprotocols: Sequence[str] = (),
    compression: Compression | None = None,
) -> str | None:
    """Check the server's answer to our upgrade request (section 4.1).

    *compression* is what the client offered (None: nothing); see
    :func:`check_compression` for what the server agreed to.

    Returns the subprotocol the server chose (None if none).
    Raises HandshakeError if the server refused or answered wrongly.
    """
    if status != 101:
        raise HandshakeError(f"server refused the WebSocket upgrade with HTTP {status}", status)
    if not _has_token(headers, "Upgrade", "websocket"):
        raise HandshakeError("'websocket' token not found in response's 'Upgrade' header", status)
    if not _has_token(headers, "Connection", "upgrade"):
        raise HandshakeError("'upgrade' token not found in response's 'Connection' header", status)
    expected = generate_accept_token(key.encode("ascii")).decode("ascii")
    if _single(headers, "Sec-WebSocket-Accept") != expected:
        raise HandshakeError("wrong 'Sec-WebSocket-Accept' in the server's response", status)
    check_compression(status, headers, compression)
    chosen = _tokens(headers, "Sec-WebSocket-Protocol")
    if not chosen:
        return None
    if len(chosen) > 1 or chosen[0] not in subprotocols:
        raise HandshakeError(f"server chose a subprotocol the client did not offer: {chosen}", status)
    return chosen[0]


def check_compression(status: int, headers: HeaderSource, compression: Compression | None) -> Agreement | None:
    """The permessage-deflate agreement in the server's response, None if it declined.

    Raises HandshakeError if the response accepts an extension that was not
    offered, or answers the offer in a way RFC 7692 section 7.1 says the
    client must refuse.
    """
    return _compression.check_response(headers.get_all("Sec-WebSocket-Extensions") or [], compression, status)
