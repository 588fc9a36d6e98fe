"""How a frame or a message is described in the DEBUG log, for people watching the wire.

A frame reads ``> TEXT 'hello' [5 bytes]`` (``>`` sent, ``<`` received); binary
payloads show their first bytes in hex, long payloads are cut short, and a
message that moves in parts says which part a line is. An opening handshake
reads as its HTTP heads, one line per header (``> GET /chat HTTP/1.1``,
``> Host: example.com``, ``< HTTP/1.1 101 Switching Protocols``, ...).

What it must never do
---------------------
Log by itself or cost anything when DEBUG is off: the connection calls it
only when its logger was at DEBUG when the connection was made.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from .exceptions import Close

_ids = itertools.count(1)

#: How much of a payload a log line shows.
_TEXT_SHOWN = 60
_BYTES_SHOWN = 16


def connection_name(client: bool) -> str:
    """A new connection name, ``threadws-client-7`` (the number is unique in the process).

    It names the connection's log lines and threads. :func:`threadws.dial`
    takes one before the connection exists, to log its handshake under the
    same name (see ``Conn(name=...)``).
    """
    return f"threadws-{'client' if client else 'server'}-{next(_ids)}"


def describe(kind: str, data: Any, size: int, part: str = "") -> str:
    """``TEXT 'hello' [5 bytes]``: *kind* is the opcode's name, *size* the payload's length in bytes."""
    if isinstance(data, str):
        shown = repr(data[:_TEXT_SHOWN]) + ("..." if len(data) > _TEXT_SHOWN else "")
    else:
        raw = bytes(memoryview(data)[:_BYTES_SHOWN])
        shown = raw.hex(" ") + (" ..." if size > _BYTES_SHOWN else "")
    extra = f", {part}" if part else ""
    unit = "byte" if size == 1 else "bytes"
    return f"{kind} {shown} [{size} {unit}{extra}]".replace("  ", " ")


def describe_close(code: int, reason: str) -> str:
    """``CLOSE 1000 (NORMAL_CLOSURE) bye``."""
    return f"CLOSE {Close(code, reason)}"


#: Headers whose values are credentials: a trace shows at most their scheme.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def describe_head(start_line: str, headers: Iterable[tuple[str, str]]) -> list[str]:
    """The lines that trace an HTTP head: *start_line*, then ``Name: value`` for each header.

    Credentials are hidden (``Authorization: Basic [hidden]``) so that a DEBUG
    log can be shared.
    """
    lines = [start_line]
    for name, value in headers:
        if name.lower() in _SECRET_HEADERS:
            scheme, space, _ = value.partition(" ")
            shown = "[hidden]"
            if space and name.lower().endswith("authorization"):
                shown = f"{scheme} [hidden]"
            value = shown
        lines.append(f"{name}: {value}")
    return lines
