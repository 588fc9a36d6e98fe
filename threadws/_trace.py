"""How a frame or a message is described in the DEBUG log, for people watching the wire.

A line reads ``> TEXT 'hello' [5 bytes]`` (``>`` sent, ``<`` received); binary
payloads show their first bytes in hex, long payloads are cut short, and a
message that moves in parts says which part a line is.
"""

from __future__ import annotations

from typing import Any

from .exceptions import Close

#: How much of a payload a log line shows.
_TEXT_SHOWN = 60
_BYTES_SHOWN = 16


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
