"""Framing for the hot path: whole, unfragmented data frames, and masking.

wsproto is the protocol engine: it sees every control frame, every fragment,
every frame with reserved bits or an extension, and every error. But for the
one frame shape that makes up nearly all traffic (a complete text or binary
message in one frame, no extension), its general machinery (generators, event
objects, a byte buffer that copies) costs several times the rest of an echo.
:class:`threadws.protocol.Protocol` parses and builds that shape itself with
the constants and helpers here, and hands wsproto everything else.

Masking (RFC 6455 section 5.3) is the one tight byte loop here: every byte a
client sends must be unmasked. It runs in C (``threadws._speedups``, built
from ``_speedups.c`` by ``pip install`` where a compiler works) when that
extension is importable, else in the pure-Python ``py_*`` functions below,
which give the same bytes; ``THREADWS_NO_SPEEDUPS`` set to anything but ""
or "0" forces the pure-Python path. :data:`SPEEDUPS` says which is in use.

What it must never do
---------------------
Decide anything about the protocol or keep a connection's state: these are
functions over bytes, and which frames take the fast path is
:mod:`threadws.protocol`'s call. The C and the pure-Python masking must give
the same bytes (``tests/test_speedups.py`` holds them to it).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

Buffer = bytes | bytearray | memoryview

FIN_TEXT = 0x81  # FIN, no RSV bits, opcode 1
FIN_BINARY = 0x82  # FIN, no RSV bits, opcode 2
MASK_BIT = 0x80

_SHORT = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_SHORT_MASKED = struct.Struct("!BBH4s")
_LONG_MASKED = struct.Struct("!BBQ4s")

#: In pure Python, below this size XOR through one big integer is the quickest
#: unmasking; above it, four strided ``bytes.translate`` passes over a bytearray,
#: in place, are (1.3 ms per MiB on the benchmark machine, against 1.9 for
#: wsproto's masker; C takes 0.02 ms).
INT_XOR_MAX = 512
_tables: list[bytes] = []


def as_bytes(data: object) -> bytes | bytearray:
    """A bytes-like message payload as ``bytes`` (or the bytearray itself), counted in bytes.

    Raises TypeError naming the type for anything else: ``bytes(123)`` would
    be 123 zero bytes and ``bytes({"a": 1})`` a puzzle, so neither is tried.
    """
    if type(data) is bytes or type(data) is bytearray:
        return data
    if isinstance(data, str):
        raise TypeError("binary message data must be bytes-like, not str")
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"message data must be str or bytes-like, not {type(data).__name__}") from None
    with view:
        return view.tobytes()  # every byte of the buffer, whatever its item size


def py_unmask(data: Buffer, key: Buffer) -> bytes:
    """XOR *data* with the 4-byte masking *key* (RFC 6455 section 5.3), in pure Python.

    Raises ValueError if *key* isn't 4 bytes long.
    """
    if len(key) != 4:
        raise ValueError(f"a masking key is 4 bytes, not {len(key)}")
    n = len(data)
    if n <= INT_XOR_MAX:
        keys = (bytes(key) * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")).to_bytes(n, "little")
    out = bytearray(data)
    py_unmask_into(out, 0, n, key)
    return bytes(out)


def py_unmask_into(buf: bytearray, start: int, stop: int, key: Buffer) -> None:
    """XOR ``buf[start:stop]`` in place with *key*, whose first byte applies at *start*, in pure Python.

    Raises TypeError if *buf* isn't a bytearray, ValueError unless
    ``0 <= start <= stop <= len(buf)`` and *key* is 4 bytes long.
    """
    if type(buf) is not bytearray:
        raise TypeError(f"unmask_into needs a bytearray, not {type(buf).__name__}")
    if not 0 <= start <= stop <= len(buf):
        raise ValueError(f"range {start}:{stop} is not within a buffer of {len(buf)} bytes")
    if len(key) != 4:
        raise ValueError(f"a masking key is 4 bytes, not {len(key)}")
    if not _tables:
        _tables.extend(bytes(a ^ b for a in range(256)) for b in range(256))
    for i in range(min(4, stop - start)):
        # (An empty extended-slice assignment counts as a resize, which a
        # bytearray with a memoryview on it refuses: hence the range.)
        buf[start + i : stop : 4] = buf[start + i : stop : 4].translate(_tables[key[i]])


def py_mask_after(head: Buffer, data: Buffer, key: Buffer) -> bytes:
    """``bytes(head) + py_unmask(data, key)``: a frame's header and its masked payload."""
    return bytes(head) + py_unmask(data, key)


def _speedups_wanted() -> bool:
    return os.environ.get("THREADWS_NO_SPEEDUPS", "") in ("", "0")


#: The masking functions threadws uses: C when available, else the ``py_*`` ones.
#: unmask(data, key) -> bytes: *data* XORed with the 4-byte *key*.
unmask: Callable[[Buffer, Buffer], bytes] = py_unmask
#: unmask_into(buf, start, stop, key): XOR ``buf[start:stop]`` in place (a bytearray;
#: the C one takes any writable buffer), the key's first byte applying at *start*.
unmask_into: Callable[[bytearray, int, int, Buffer], None] = py_unmask_into
#: mask_after(head, data, key) -> bytes: *head* then *data* masked, in one allocation in C.
mask_after: Callable[[Buffer, Buffer, Buffer], bytes] = py_mask_after
#: True when the C extension does the masking, False on the pure-Python fallback.
SPEEDUPS = False

if _speedups_wanted():
    try:
        from ._speedups import mask as unmask, mask_after, mask_into as unmask_into
    except ImportError:  # not built (no compiler at install time): the fallback above stays
        pass
    else:
        SPEEDUPS = True


def rotate(key: bytes, n: int) -> bytes:
    """The key for the byte *n* bytes further on."""
    r = n & 3
    return key[r:] + key[:r]


class SplitFrame:
    """An unmasked frame of 64 KiB or more, kept as its header and its payload.

    The writer sends the two together (one ``sendmsg``), so a server doesn't
    copy a long payload into a new frame first. Only an immutable ``bytes``
    payload is kept this way: a ``bytearray`` could change before it is sent.
    """

    __slots__ = ("header", "payload")

    def __init__(self, header: bytes, payload: bytes) -> None:
        self.header = header
        self.payload = payload

    def __len__(self) -> int:
        return len(self.header) + len(self.payload)

    def __bytes__(self) -> bytes:
        return self.header + self.payload


def build_frame(first: int, payload: bytes | bytearray, client: bool) -> bytes | SplitFrame:
    """One whole frame: *first* is the FIN/opcode byte; a client masks (section 5.3)."""
    n = len(payload)
    if not client:
        if n < 126:
            return bytes((first, n)) + payload
        if n < 65536:
            return _SHORT.pack(first, 126, n) + payload
        if type(payload) is bytes:
            return SplitFrame(_LONG.pack(first, 127, n), payload)
        return _LONG.pack(first, 127, n) + payload
    key = os.urandom(4)
    if n < 126:
        head = bytes((first, MASK_BIT | n)) + key
    elif n < 65536:
        head = _SHORT_MASKED.pack(first, MASK_BIT | 126, n, key)
    else:
        head = _LONG_MASKED.pack(first, MASK_BIT | 127, n, key)
    return mask_after(head, payload, key)
