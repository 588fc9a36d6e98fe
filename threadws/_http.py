"""Reading an HTTP request head off a socket, bounded in size and in time (slowloris), and parsing its fields.

Bytes that can't begin an HTTP request are refused as soon as they arrive
(:func:`check_request_start`), not after the whole handshake timeout: a TLS
ClientHello sent to the plain port is the common case.

What it must never do
---------------------
Decide on the WebSocket handshake (:mod:`threadws.handshake` does), read past
the deadline it is given or beyond the size bounds, or lose a byte that
follows the head.
"""

from __future__ import annotations

import http.client
import re
import socket
import time
from typing import Any

from ._tls import TLS, TLSSocket
from .exceptions import HandshakeError


def read_head(
    sock: socket.socket | TLSSocket,
    deadline: float,
    *,
    max_line: int,
    max_head: int,
) -> tuple[bytes, bytes]:
    """Read up to the blank line that ends an HTTP head.

    Returns ``(head, rest)``: the head without its final blank line, and any
    bytes received after it (the start of what follows, which must not be lost).

    Raises:
        TimeoutError: the head was not complete by *deadline* (a monotonic time).
        HandshakeError: 414 if the first line is over *max_line* bytes, 431 if
            the head is over *max_head* bytes, 400 if the peer closed mid-head
            or sent what can't begin an HTTP request (as soon as it arrives).
    """
    buf = bytearray()
    line_checked = False
    while True:
        if not line_checked:
            # Until the request line is whole, check what came of it so far.
            line_checked = check_request_start(buf)
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            first = buf.find(b"\r\n")
            if first > max_line:
                raise HandshakeError("request line too long", 414)
            if end > max_head:
                raise HandshakeError("request header fields too large", 431)
            return bytes(buf[:end]), bytes(buf[end + 4 :])
        if buf.find(b"\r\n") < 0 and len(buf) > max_line:
            raise HandshakeError("request line too long", 414)
        if len(buf) > max_head:
            raise HandshakeError("request header fields too large", 431)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("HTTP head not received in time")
        # One total deadline, not a per-recv timeout: a peer trickling a byte
        # at a time must not keep the connection forever.
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(max(4096, min(65536, max_head + 4 - len(buf))))
        except TimeoutError:
            raise TimeoutError("HTTP head not received in time") from None
        if not chunk:
            raise HandshakeError("connection closed before the end of the HTTP head", 400)
        buf += chunk


def refuse_now(sock: socket.socket, response: bytes, tls: TLS | None = None) -> None:
    """Send a short refusal (an HTTP error response) without waiting, then close *sock*.

    For a server at one of its limits or out of threads: nothing here may
    block. A fresh connection's send buffer takes a few hundred bytes at once,
    so one non-blocking send suffices (a client that stopped reading loses the
    answer). What the client already sent is then read, without waiting, so
    that closing doesn't answer unread bytes with a TCP reset, which can
    destroy the response before the client has read it. *tls*: the session
    that carried the request (the answer is encrypted, then TLS is closed).
    """
    try:
        sock.setblocking(False)
        data = response
        if tls is not None:
            data = tls.encrypt(response)[0] + tls.close_notify()
        sock.send(data)
        for _ in range(4):  # bounded: a client flooding us can't keep this loop going
            if not sock.recv(65536):
                break
    except OSError:  # ssl.SSLError included
        pass  # nothing more to read (BlockingIOError), or the client is gone
    finally:
        sock.close()


def take_buffered(rfile: Any, sock: Any) -> bytes:
    """Return what an HTTP parser's buffered *rfile* read past the request head, without blocking.

    ``read1`` returns the buffered bytes if there are any; otherwise it makes
    one read on the (then non-blocking) socket. Anything still in the kernel is
    read later by the connection's reader.
    """
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        data = rfile.read1(1 << 20) or b""
    except OSError:
        data = b""
    finally:
        sock.settimeout(timeout)
    return bytes(data)


#: RFC 9110 section 5.6.2: the characters of a token (a method, a field name).
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
#: What follows the request target: "HTTP/" DIGIT "." DIGIT CRLF (RFC 9112 section 2.3).
_VERSION = (b"H", b"T", b"T", b"P", b"/", b"0123456789", b".", b"0123456789", b"\r", b"\n")


def check_request_start(data: bytes | bytearray) -> bool:
    """Check that *data* (the first bytes from a client) can begin an HTTP/1.x request line.

    The request line is ``method SP request-target SP HTTP/x.y CRLF`` (RFC 9112
    section 3): the method a token, the target visible characters. Each byte
    is checked as it arrives, so a peer speaking something else is answered
    at once instead of holding a thread until the handshake times out.

    Returns:
        True once the whole request line has arrived, well formed; False
        while what arrived is a well-formed beginning (more may come).

    Raises:
        HandshakeError: 400, saying what was sent if it can tell (a TLS
            ClientHello: a ``wss://`` client on a ``ws://`` port).
    """
    n = len(data)
    i = 0
    while i < n and data[i] in _TCHAR:
        i += 1
    if i < n and (i == 0 or data[i] != 0x20):
        raise _not_http(data)
    i += 1
    start = i
    while i < n and 0x20 < data[i] != 0x7F:  # visible ASCII, or obs-text (parse_request decodes it)
        i += 1
    if i < n and (i == start or data[i] != 0x20):
        raise _not_http(data)
    i += 1
    for expected in _VERSION:
        if i >= n:
            return False
        if data[i] not in expected:
            raise _not_http(data)
        i += 1
    return True


def _not_http(data: bytes | bytearray) -> HandshakeError:
    if data[:2] == b"\x16\x03":
        # A TLS record (content type 22, handshake; version 3.x). The answer
        # still goes out: the client's TLS library then reports a "wrong
        # version number" or "record layer failure", the well-known sign of
        # wss:// sent to a plain port, where a bare close would only say EOF.
        return HandshakeError("this port speaks plain HTTP (ws://), and the client sent a TLS handshake (wss://)", 400)
    return HandshakeError("not an HTTP/1.1 request", 400)


#: A header field line (RFC 9112 section 5, RFC 9110 section 5.5): a token,
#: then at once the colon (whitespace there is refused, section 5.1), then
#: visible characters, spaces and tabs. No line folding (obs-fold).
_FIELD_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):([\t\x20-\x7e\x80-\xff]*)")


def parse_fields(fields: bytes, *, max_fields: int) -> http.client.HTTPMessage:
    """Parse the header field lines of a request head (CRLF-separated, without the final blank line).

    Values are decoded as ISO-8859-1, as :mod:`http.client` does; a field
    given twice appears twice (``get_all``).

    Raises:
        HandshakeError: 431 for more than *max_fields* fields, 400 for a line
            that isn't a well-formed field (whitespace before the colon, an
            obsolete folded line, a control character).
    """
    headers = http.client.HTTPMessage()
    if not fields:
        return headers
    lines = fields.split(b"\r\n")
    if len(lines) > max_fields:
        raise HandshakeError(f"more than {max_fields} header fields", 431)
    for line in lines:
        match = _FIELD_LINE.fullmatch(line)
        if match is None:
            raise HandshakeError(f"malformed header field line: {line[:60]!r}", 400)
        headers[match[1].decode("ascii")] = match[2].strip(b" \t").decode("iso-8859-1")
    return headers
