"""The exceptions threadws raises.

::

    Exception
    ├── ConnectionClosed            the connection has ended; every call raises it from then on
    │   ├── ConnectionClosedOK      both sides exchanged close frames with 1000, 1001 or 1005
    │   └── ConnectionClosedError   anything else: an error code, a lost connection, a timeout
    └── HandshakeError              the opening handshake failed (an HTTP status says why)
        └── ProxyError              the proxy would not open a tunnel to the server

Timeouts that leave the connection usable (``read_message(timeout=...)``, a full
send queue) raise the builtin :class:`TimeoutError`. Misuse raises
:class:`ValueError` or :class:`TypeError`.

What it must never do
---------------------
Import anything of threadws's but :mod:`threadws.enums`: every module may
import it.
"""

from __future__ import annotations

from typing import NamedTuple

from .enums import CloseCode

__all__ = [
    "Close",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "HandshakeError",
    "ProxyError",
    "is_close_error",
    "is_unexpected_close_error",
]

_OK_CODES = frozenset({CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD})


class Close(NamedTuple):
    """A close frame's code and reason."""

    code: int
    reason: str

    def __str__(self) -> str:
        try:
            name = CloseCode(self.code).name
        except ValueError:
            name = "application code" if self.code >= 3000 else "unknown code"
        text = f"{self.code} ({name})"
        return f"{text} {self.reason}" if self.reason else text


class ConnectionClosed(Exception):
    """The WebSocket connection has ended (or is ending).

    Attributes:
        rcvd: the close frame received from the peer, or None if none arrived.
        sent: the close frame this side sent, or None if none was sent.
        rcvd_then_sent: True if the peer closed first, False if we did, None if
            either frame is missing.
    """

    def __init__(
        self,
        rcvd: Close | None,
        sent: Close | None,
        rcvd_then_sent: bool | None = None,
        detail: str = "",
    ) -> None:
        self.rcvd = rcvd
        self.sent = sent
        self.rcvd_then_sent = rcvd_then_sent
        self.detail = detail
        super().__init__(self._describe())

    @property
    def code(self) -> int:
        """The code received from the peer, or 1006 (abnormal closure) if none was."""
        return self.rcvd.code if self.rcvd is not None else CloseCode.ABNORMAL_CLOSURE

    @property
    def reason(self) -> str:
        """The reason received from the peer, or ``""``."""
        return self.rcvd.reason if self.rcvd is not None else ""

    @property
    def clean(self) -> bool:
        """True if close frames went both ways (the closing handshake completed)."""
        return self.rcvd is not None and self.sent is not None

    def _describe(self) -> str:
        if self.rcvd is None and self.sent is None:
            text = "no close frame received or sent"
        elif self.rcvd is None:
            text = f"sent {self.sent}; no close frame received"
        elif self.sent is None:
            text = f"received {self.rcvd}; no close frame sent"
        elif self.rcvd_then_sent:
            text = f"received {self.rcvd}; then sent {self.sent}"
        else:
            text = f"sent {self.sent}; then received {self.rcvd}"
        return f"{text} ({self.detail})" if self.detail else text


class ConnectionClosedOK(ConnectionClosed):
    """The connection ended with a normal closing handshake (1000, 1001 or no status)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection ended with an error code, or without a complete closing handshake."""


def closed_exception(
    rcvd: Close | None,
    sent: Close | None,
    rcvd_then_sent: bool | None,
    detail: str = "",
) -> ConnectionClosed:
    """Build the right ConnectionClosed subclass for what was exchanged."""
    ok = rcvd is not None and sent is not None and rcvd.code in _OK_CODES and sent.code in _OK_CODES
    cls = ConnectionClosedOK if ok else ConnectionClosedError
    return cls(rcvd, sent, rcvd_then_sent, detail)


class HandshakeError(Exception):
    """The opening handshake failed.

    On the server the Upgrader has already answered the request with *status*;
    on the client these are the server's status, headers and (bounded) body.
    For a failure that happened before any HTTP response (a malformed response,
    a bad ``Sec-WebSocket-Accept``), *status* is the status received, or 0.
    """

    def __init__(
        self,
        message: str,
        status: int = 0,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers: list[tuple[str, str]] = headers or []
        self.body = body


class ProxyError(HandshakeError):
    """The proxy refused to open a tunnel to the server, so no handshake took place.

    For an HTTP proxy, *status*, *headers* and *body* are its answer to
    ``CONNECT`` (407: the proxy wants credentials); for a SOCKS proxy
    *status* is 0 and the message says what the proxy replied.
    """


def is_close_error(exc: BaseException | None, *codes: int) -> bool:
    """True if *exc* is a ConnectionClosed whose :attr:`~ConnectionClosed.code` is in *codes*.

    Like gorilla's ``IsCloseError``: a connection lost without a close frame has code 1006.
    """
    return isinstance(exc, ConnectionClosed) and exc.code in codes


def is_unexpected_close_error(exc: BaseException | None, *expected_codes: int) -> bool:
    """True if *exc* is a ConnectionClosed whose code is *not* in *expected_codes*.

    Like gorilla's ``IsUnexpectedCloseError``; typical use::

        except ConnectionClosed as exc:
            if is_unexpected_close_error(exc, CloseCode.GOING_AWAY, CloseCode.NORMAL_CLOSURE):
                log.warning("connection lost: %s", exc)
    """
    return isinstance(exc, ConnectionClosed) and exc.code not in expected_codes
