"""Reading an HTTP head off a socket, bounded in size and in time (slowloris)."""

from __future__ import annotations

import socket
import time
from typing import Any

from ._tls import TLSSocket
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
            the head is over *max_head* bytes, 400 if the peer closed mid-head.
    """
    buf = bytearray()
    while True:
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
