"""The protocol layer on its own (threadws.protocol): bytes in, events out; messages in, bytes out.

No sockets, no threads, no clocks: every test feeds a :class:`Protocol` bytes
and looks at the events, or asks it for frames and parses them, in the manner
of wsproto's own ``test_frame_protocol.py``. Every test runs for both roles
(the peer of a server masks its frames, the peer of a client does not), and
those about parsing for both parsers: the fast path (``fast=True``, the
default) and ``Protocol(fast=False)``, which sends every frame through
wsproto and is the reference. ``test_fast_path_and_wsproto_agree`` holds the
two to the same events over generated frame sequences (hypothesis).

Where the fast path is known to differ from wsproto, the case is a plain test
marked ``xfail(strict=True)`` with the reason: it fails the day it is fixed,
and the mark comes off then.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage
from wsproto.events import Ping as WsPing

from threadws import CloseCode, MessageType
from threadws.compression import Agreement, Compression, PerMessageDeflate
from threadws._frames import SplitFrame
from threadws.protocol import (
    Chunk,
    CloseFrame,
    Failure,
    Message,
    Ping,
    Pong,
    Protocol,
    ProtocolClosed,
    parse_close_payload,
)

from .fuzz_targets import Checker, assert_same_events

ROLES = ["server", "client"]
PARSERS = [pytest.param(True, id="fast"), pytest.param(False, id="wsproto")]
KEY = b"\x9e\x01\x7f\xc4"  # a fixed masking key: streams are the same on every run
# The agreement the compressed tests use: full windows, context takeover both ways.
AGREEMENT = Agreement(False, False, 15, 15)
CONFIG = Compression(server_max_window_bits=15, client_max_window_bits=15, min_size=0)


@pytest.fixture(params=ROLES)
def role(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=PARSERS)
def fast(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


# --- building frames and reading events --------------------------------------------------


def mask(payload: bytes, key: bytes = KEY) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def wire(
    opcode: int,
    payload: bytes = b"",
    *,
    masked: bool,
    fin: bool = True,
    rsv: int = 0,
    length: int | None = None,
    encoding: int | None = None,
) -> bytes:
    """One raw frame, however malformed: *rsv* is the three RSV bits (4 is RSV1),
    *length* the length to announce (default ``len(payload)``), *encoding* 7, 16
    or 64 bits for it (default: the shortest)."""
    n = len(payload) if length is None else length
    if encoding is None:
        encoding = 7 if n < 126 else 16 if n < 65536 else 64
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    bit = 0x80 if masked else 0
    if encoding == 7:
        head += bytes([bit | n])
    elif encoding == 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    return head + KEY + mask(payload)


def peer(role: str, opcode: int, payload: bytes = b"", **kwargs: Any) -> bytes:
    """A frame as the peer of *role* sends it: masked to a server, unmasked to a client."""
    kwargs.setdefault("masked", role == "server")
    return wire(opcode, payload, **kwargs)


def header_length(frame: bytes) -> int:
    n = frame[1] & 0x7F
    return 2 + (2 if n == 126 else 8 if n == 127 else 0) + (4 if frame[1] & 0x80 else 0)


def make(role: str, fast: bool = True, read_limit: int = 1 << 20, compressed: bool = False) -> Protocol:
    extensions = []
    if compressed:
        extensions.append(PerMessageDeflate(AGREEMENT, CONFIG, client=role == "client", read_limit=read_limit))
    return Protocol(client=role == "client", extensions=extensions, read_limit=read_limit, fast=fast)


def the_peer(role: str, compressed: bool = False) -> Protocol:
    """A Protocol playing the other side, to build frames and parse ours."""
    return make("client" if role == "server" else "server", compressed=compressed)


def receive(proto: Protocol, *reads: bytes) -> list[Any]:
    """Every event from *reads*, fed one after the other."""
    events: list[Any] = []
    for data in reads:
        events += proto.receive(data)
    return events


def summary(events: list[Any]) -> list[tuple[Any, ...]]:
    """Events as plain tuples, for exact comparisons."""
    out: list[tuple[Any, ...]] = []
    for e in events:
        if type(e) is Message:
            out.append(("message", e.kind, e.data, e.size))
        elif type(e) is Chunk:
            out.append(("chunk", e.kind, e.data, e.fin, e.size))
        elif type(e) is Ping or type(e) is Pong:
            out.append((type(e).__name__.lower(), e.payload))
        elif type(e) is CloseFrame:
            out.append(("close", e.code, e.reason, e.answer))
        elif type(e) is Failure:
            out.append(("failure", e.code))
        else:
            raise AssertionError(f"not an event: {e!r}")
    return out


def checked(role: str, fast: bool, read_limit: int = 1 << 20, compressed: bool = False) -> Checker:
    """A Protocol behind the invariant checks the fuzz run uses (sizes, order, the end)."""
    return Checker(make(role, fast, read_limit, compressed), read_limit, compressed, views=False)


def bytewise(proto: Protocol, data: bytes) -> Iterator[tuple[int, Any]]:
    """Feed *data* one byte per read: (index of the byte whose read yielded it, event)."""
    for i in range(len(data)):
        for event in proto.receive(data[i : i + 1]):
            yield i, event


def deflate(data: bytes, wbits: int = 15) -> bytes:
    """One message's payload as RFC 7692 section 7.2.1 builds it (the trailer stripped)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


# --- inbound: whole frames -------------------------------------------------------------------


WHOLE = [
    (1, b"", ("message", MessageType.TEXT, "", 0)),
    (1, "héllo €".encode(), ("message", MessageType.TEXT, "héllo €", 10)),
    (2, b"", ("message", MessageType.BINARY, b"", 0)),
    (2, bytes(range(125)), ("message", MessageType.BINARY, bytes(range(125)), 125)),
    (2, bytes(126), ("message", MessageType.BINARY, bytes(126), 126)),  # 16-bit length
    (1, b"x" * 65535, ("message", MessageType.TEXT, "x" * 65535, 65535)),
    (2, b"y" * 65536, ("message", MessageType.BINARY, b"y" * 65536, 65536)),  # 64-bit length
    (9, b"", ("ping", b"")),
    (9, b"p" * 125, ("ping", b"p" * 125)),
    (10, b"pong", ("pong", b"pong")),
    (8, b"", ("close", CloseCode.NO_STATUS_RCVD, "", False)),
    (8, struct.pack("!H", 1000), ("close", 1000, "", False)),
    (8, struct.pack("!H", 4999) + "bye €".encode(), ("close", 4999, "bye €", False)),
]


@pytest.mark.parametrize("opcode, payload, expected", WHOLE)
def test_a_whole_frame_is_one_event(role, fast, opcode, payload, expected):
    proto = make(role, fast)
    assert summary(receive(proto, peer(role, opcode, payload))) == [expected]


@pytest.mark.parametrize("views", [False, True], ids=["bytes", "buffer"])
def test_many_frames_in_one_read(role, fast, views):
    """As a reader's buffer holds them; with *buf* long payloads are unmasked in place."""
    big = bytes(range(256)) * 4  # over 512 bytes: unmasked in the buffer, when given one
    stream = b"".join(
        [
            peer(role, 1, b"one"),
            peer(role, 9, b"?"),
            peer(role, 2, big),
            peer(role, 1, "dos".encode()),
        ]
    )
    proto = make(role, fast)
    if views:
        buf = bytearray(stream)
        events = list(proto.receive(memoryview(buf), buf))
    else:
        events = list(proto.receive(stream))
    assert summary(events) == [
        ("message", MessageType.TEXT, "one", 3),
        ("ping", b"?"),
        ("message", MessageType.BINARY, big, 1024),
        ("message", MessageType.TEXT, "dos", 3),
    ]


# Every kind of frame: short whole ones (fast path), a fragmented message with
# control frames between its fragments (wsproto), and a text frame over 4 KiB
# whose characters straddle reads (streamed in chunks by the fast path).
LONG = "aé€😀" * 420  # 4200 bytes


def every_kind(role: str) -> tuple[bytes, list[tuple[Any, ...]]]:
    frames = [
        (peer(role, 1, b"hi"), ("message", MessageType.TEXT, "hi")),
        (peer(role, 2, b"b" * 130), ("message", MessageType.BINARY, b"b" * 130)),
        (peer(role, 1, "fr".encode(), fin=False), None),
        (peer(role, 9, b"ping"), ("ping", b"ping")),
        (peer(role, 0, "ag€".encode(), fin=False), None),
        (peer(role, 10, b""), ("pong", b"")),
        (peer(role, 0, b"ment", fin=True), ("message", MessageType.TEXT, "frag€ment")),
        (peer(role, 2, b"", fin=False), None),
        (peer(role, 0, b"\x00\xff", fin=True), ("message", MessageType.BINARY, b"\x00\xff")),
        (peer(role, 1, LONG.encode()), ("message", MessageType.TEXT, LONG)),
        (peer(role, 8, struct.pack("!H", 1001) + b"done"), ("close", 1001, "done", False)),
    ]
    return b"".join(f for f, _ in frames), [e for _, e in frames if e is not None]


def test_every_frame_cut_at_every_byte(role, fast):
    """Two reads, split at every byte: in headers, masking keys, payloads, characters."""
    stream, expected = every_kind(role)
    for cut in range(1, len(stream)):
        run = checked(role, fast)
        run.feed(stream[:cut])
        run.feed(stream[cut:])
        assert run.log == expected, f"cut at {cut}"


def test_every_frame_one_byte_at_a_time(role, fast):
    stream, expected = every_kind(role)
    run = checked(role, fast)
    for i in range(len(stream)):
        run.feed(stream[i : i + 1])
    assert run.log == expected


def test_fragments_with_control_frames_between(role, fast):
    """Each fragment is a Chunk as it comes; pings and pongs arrive between them, in order."""
    stream = b"".join(
        [
            peer(role, 1, b"ab", fin=False),
            peer(role, 9, b"1"),
            peer(role, 0, b"c\xe2\x82", fin=False),  # a character cut between fragments
            peer(role, 10, b"2"),
            peer(role, 0, b"\xac", fin=False),
            peer(role, 0, b"", fin=True),
            peer(role, 2, b"x", fin=False),
            peer(role, 9, b""),
            peer(role, 0, b"y", fin=True),
        ]
    )
    assert summary(receive(make(role, fast), stream)) == [
        ("chunk", MessageType.TEXT, "ab", False, 2),
        ("ping", b"1"),
        ("chunk", MessageType.TEXT, "c", False, 1),  # the cut character waits for its end
        ("pong", b"2"),
        ("chunk", MessageType.TEXT, "€", False, 3),
        ("chunk", MessageType.TEXT, "", True, 0),
        ("chunk", MessageType.BINARY, b"x", False, 1),
        ("ping", b""),
        ("chunk", MessageType.BINARY, b"y", True, 1),
    ]


def test_a_long_frame_comes_in_chunks_as_it_arrives(role, fast):
    """A frame over 4 KiB is not held back: each read yields what it brought."""
    payload = bytes(range(256)) * 20  # 5120 bytes
    frame = peer(role, 2, payload)
    proto = make(role, fast)
    first = receive(proto, frame[:1000])
    assert len(first) == 1 and type(first[0]) is Chunk and not first[0].fin
    rest = receive(proto, frame[1000:3000], frame[3000:])
    chunks = first + rest
    assert all(type(c) is Chunk and c.kind is MessageType.BINARY for c in chunks)
    assert [c.fin for c in chunks] == [False, False, True]
    assert b"".join(c.data for c in chunks) == payload
    assert sum(c.size for c in chunks) == len(payload)


# --- inbound: compressed messages (permessage-deflate) --------------------------------------


def test_compressed_messages(role, fast):
    """Whole and fragmented compressed messages, an uncompressed one between, context kept."""
    sender = the_peer(role, compressed=True)
    text = " ".join(f"word{i * 7919 % 1000}" for i in range(300))
    frames = [
        sender.frame(sender.check(MessageType.TEXT, text)),
        sender.frame(sender.check(MessageType.TEXT, text)),  # refers back to the first
        sender.frame(sender.check(MessageType.BINARY, b"raw" * 10), compress=False),
        sender.send_fragment(False, bytes(range(256)), False),
        sender.send_ping(b"between"),
        sender.send_fragment(False, bytes(range(256)), True),
        sender.frame(sender.check(MessageType.TEXT, "")),
    ]
    assert frames[0][0] & 0x40 and len(frames[1]) < len(frames[0]) / 4  # so the receiver must keep its window
    stream = b"".join(frames)
    for cut in (None, 1, 7, 100, len(stream) // 2):
        run = Checker(make(role, fast, compressed=True), 1 << 20, True, views=False)
        for part in [stream] if cut is None else [stream[:cut], stream[cut:]]:
            run.feed(part)
        assert run.log == [
            ("message", MessageType.TEXT, text),
            ("message", MessageType.TEXT, text),
            ("message", MessageType.BINARY, b"raw" * 10),
            ("ping", b"between"),
            ("message", MessageType.BINARY, bytes(range(256)) * 2),
            ("message", MessageType.TEXT, ""),
        ], f"cut at {cut}"


def test_a_compressed_message_cut_at_every_byte(role, fast):
    sender = the_peer(role, compressed=True)
    text = "ünïcödé " * 50
    stream = sender.frame(sender.check(MessageType.TEXT, text)) + sender.frame(
        sender.check(MessageType.BINARY, b"\x00" * 3000)
    )
    # The sender kept its window from the first message: so must every receiver.
    for cut in range(1, len(stream)):
        run = Checker(make(role, fast, compressed=True), 1 << 20, True, views=False)
        run.feed(stream[:cut])
        run.feed(stream[cut:])
        assert run.log == [("message", MessageType.TEXT, text), ("message", MessageType.BINARY, b"\x00" * 3000)]


@pytest.mark.parametrize(
    "frame, code",
    [
        pytest.param(lambda r: peer(r, 9, b"x", rsv=4), CloseCode.PROTOCOL_ERROR, id="rsv1-on-a-ping"),
        pytest.param(
            lambda r: peer(r, 1, deflate(b"ab"), rsv=4, fin=False) + peer(r, 0, deflate(b"c"), rsv=4),
            CloseCode.PROTOCOL_ERROR,
            id="rsv1-on-a-continuation",
        ),
        pytest.param(
            lambda r: peer(r, 2, b"\xff\xff\xff\xff", rsv=4), CloseCode.INVALID_PAYLOAD_DATA, id="not-deflate"
        ),
        pytest.param(lambda r: peer(r, 2, b"x", rsv=2), CloseCode.PROTOCOL_ERROR, id="rsv2"),
    ],
)
def test_compressed_frames_that_break_rfc_7692(role, fast, frame, code):
    events = receive(make(role, fast, compressed=True), frame(role) + peer(role, 1, b"never"))
    assert summary(events)[-1] == ("failure", code)
    assert all(type(e) is Chunk for e in events[:-1])


# --- inbound: invalid UTF-8 fails on the byte that shows it ---------------------------------

# (payload, index of the byte on whose arrival Python's decoder, and so the
# protocol, knows the text is invalid: the bad byte itself, or the one that
# completes an invalid sequence).
BAD_UTF8 = [
    pytest.param(b"abc\xffdef", 3, id="invalid-start-byte"),
    pytest.param(b"ab\xc0\xafcd", 2, id="overlong-lead"),
    pytest.param(b"a\xe2\x28\xa1zz", 2, id="bad-continuation"),
    pytest.param(b"a\xf4\x90\x80\x80z", 2, id="over-U+10FFFF"),
    pytest.param(b"a\xed\xa0\x80zz", 3, id="surrogate"),  # Python flags ED A0 at its third byte
    pytest.param(b"ab\xe2\x82", 3, id="truncated-at-the-end"),  # the frame's last byte
]


def utf8_streams(role: str, payload: bytes, bad: int) -> Iterator[Any]:
    """(shape, stream, index in the stream of the byte that must yield the failure, held back)

    *held back*: the fast path keeps a whole frame of up to 4 KiB until it has
    all of it (and checks the start it holds as it grows).
    """
    frame = peer(role, 1, payload)
    yield "short", frame, header_length(frame) + bad, bad < len(payload) - 1
    padded = b"p" * 300 + payload  # a 16-bit length, still held back whole
    frame = peer(role, 1, padded)
    yield "16-bit", frame, header_length(frame) + 300 + bad, bad < len(payload) - 1
    padded = b"p" * 5000 + payload  # over 4 KiB: streamed, checked as it comes
    frame = peer(role, 1, padded)
    yield "long", frame, header_length(frame) + 5000 + bad, False
    first = peer(role, 1, b"ok", fin=False) + peer(role, 9, b"")
    frame = peer(role, 0, payload)
    yield "fragment", first + frame, len(first) + header_length(frame) + bad, False
    # The bad sequence's first byte ends one fragment, its rest begins the next.
    first = peer(role, 1, payload[:bad], fin=False)
    frame = peer(role, 0, payload[bad:])
    yield "across-fragments", first + frame, len(first) + header_length(frame), False


def utf8_cases() -> Iterator[Any]:
    """The streams for each role and parser."""
    for role in ROLES:
        for fast in (True, False):
            for param in BAD_UTF8:
                payload, bad = param.values
                for shape, stream, index, _held in utf8_streams(role, payload, bad):
                    yield pytest.param(role, fast, stream, index, id=f"{role}-{'fast' if fast else 'wsproto'}-{param.id}-{shape}")


@pytest.mark.parametrize("role, fast, stream, index", list(utf8_cases()))
def test_invalid_utf8_fails_on_the_byte(role, fast, stream, index):
    """Fed one byte per read, the 1007 comes from the read that brought the decisive byte."""
    assert wsproto_fails_at(role, stream) == index  # the decisive bytes above are wsproto's too
    stream += peer(role, 1, b"after")  # never delivered
    proto = make(role, fast)
    events = list(bytewise(proto, stream))
    failures = [(i, e) for i, e in events if type(e) is Failure]
    assert failures, summary([e for _, e in events])
    (at, failure), *_ = failures
    assert failure.code == CloseCode.INVALID_PAYLOAD_DATA
    assert "utf-8" in failure.reason and failure.detail
    assert events[-1] == (at, failure), "events after the failure"
    assert at == index, f"the failure came at byte {at}, the decisive byte is {index}"


@pytest.mark.parametrize("role, fast, stream, index", list(utf8_cases()))
def test_invalid_utf8_in_one_read_is_1007(role, fast, stream, index):
    """The same streams in one read: the messages before it, then the failure, then nothing."""
    events = receive(make(role, fast), stream + peer(role, 1, b"after"))
    assert summary(events)[-1] == ("failure", CloseCode.INVALID_PAYLOAD_DATA)
    assert all(type(e) in (Chunk, Ping) for e in events[:-1])


@pytest.mark.parametrize("payload, bad", [p.values for p in BAD_UTF8], ids=[p.id for p in BAD_UTF8])
def test_invalid_utf8_compressed_fails_as_soon_as_it_inflates(role, fast, payload, bad):
    """The 1007 comes from the read whose compressed bytes first inflate past the decisive byte."""
    text = (b"words, " * 200) + payload
    bad += len(text) - len(payload)
    compressed = deflate(text)
    frame = peer(role, 1, compressed, rsv=4)
    # zlib alone, fed the same prefixes, says where the decisive byte comes out.
    for n in range(1, len(compressed) + 1):
        out = zlib.decompressobj(-15).decompress(
            compressed[:n] + (b"\x00\x00\xff\xff" if n == len(compressed) else b"")
        )
        if len(out) > bad:
            break
    if bad == len(text) - 1:
        n = len(compressed)  # a sequence cut by the message's end is known at its end
    index = header_length(frame) + n - 1
    events = list(bytewise(make(role, fast, compressed=True), frame + peer(role, 1, b"after")))
    at, failure = events[-1]
    assert type(failure) is Failure and failure.code == CloseCode.INVALID_PAYLOAD_DATA
    assert at == index
    assert all(type(e) is Chunk for _, e in events[:-1])


# --- inbound: malformed headers -----------------------------------------------------------------


# name, and for a role: (the bytes, the index of the byte on which wsproto, the
# reference, sees the error). wsproto reads a header's first two bytes
# together, then the extended length, then checks the reserved bits and the
# mask bit, then reads the key; a data frame's place in a message is checked
# with its first payload byte.
def _after(first: bytes, frame: bytes, index: int) -> tuple[bytes, int]:
    return first + frame, len(first) + index


HEADER_ERRORS = [
    ("opcode-3", lambda r: (peer(r, 3, b"abcde"), 1)),
    ("opcode-7-16-bit-length", lambda r: (peer(r, 7, b"x" * 300), 1)),
    ("opcode-11", lambda r: (peer(r, 11, b""), 1)),
    ("opcode-15", lambda r: (peer(r, 15, b"x"), 1)),
    ("rsv1-no-extension", lambda r: (peer(r, 1, b"abc", rsv=4), 1)),
    ("rsv2", lambda r: (peer(r, 2, b"abc", rsv=2), 1)),
    ("rsv3-16-bit-length", lambda r: (peer(r, 2, b"x" * 300, rsv=1), 3)),
    ("fragmented-ping", lambda r: (peer(r, 9, b"x", fin=False), 1)),
    ("fragmented-close", lambda r: (peer(r, 8, b"", fin=False), 1)),
    ("ping-over-125", lambda r: (peer(r, 9, b"p" * 126), 1)),
    ("close-64-bit-length", lambda r: (peer(r, 8, b"\x03\xe8", encoding=64), 1)),
    ("16-bit-length-for-5", lambda r: (peer(r, 2, b"x" * 5, encoding=16), 3)),
    ("16-bit-length-for-125", lambda r: (peer(r, 1, b"x" * 125, encoding=16), 3)),
    ("64-bit-length-for-300", lambda r: (peer(r, 2, b"x" * 300, encoding=64), 9)),
    ("64-bit-length-for-65535", lambda r: (peer(r, 2, b"x" * 65535, encoding=64), 9)),
    ("64-bit-length-msb", lambda r: (peer(r, 2, b"", length=1 << 63, encoding=64), 9)),
    ("wrong-mask", lambda r: (peer(r, 2, b"abcde", masked=r == "client"), 1)),
    ("wrong-mask-on-a-ping", lambda r: (peer(r, 9, b"", masked=r == "client"), 1)),
    ("continuation-of-nothing", lambda r: (peer(r, 0, b"abc"), header_length(peer(r, 0, b"abc")))),
    (
        "new-message-inside-a-fragmented-one",
        lambda r: _after(peer(r, 1, b"ab", fin=False), peer(r, 1, b"cd"), header_length(peer(r, 1, b"cd"))),
    ),
]


def header_cases() -> Iterator[Any]:
    """(role, stream, index of the decisive byte, index of the bad frame's last header byte)."""
    for role in ROLES:
        for name, build in HEADER_ERRORS:
            stream, index = build(role)
            start = len(peer(role, 1, b"ab", fin=False)) if name.startswith("new-message") else 0
            header_end = start + header_length(stream[start:]) - 1
            yield pytest.param(role, stream, index, header_end, id=f"{role}-{name}")


def wsproto_fails_at(role: str, stream: bytes) -> int | None:
    """Where wsproto alone (a Connection of *role*), fed one byte per read, reports the error."""
    ws = Connection(ConnectionType.CLIENT if role == "client" else ConnectionType.SERVER)
    for i in range(len(stream)):
        ws.receive_data(stream[i : i + 1])
        if any(type(e) is CloseConnection for e in ws.events()):
            return i
    return None


@pytest.mark.parametrize("role, stream, index, header_end", list(header_cases()))
def test_header_errors_fail_by_the_end_of_the_header(role, fast, stream, index, header_end):
    """Fed one byte per read, a malformed header is 1002 once its bytes show it, at the latest
    when the header is whole; never before wsproto alone (the reference) sees it."""
    assert wsproto_fails_at(role, stream) == index  # the decisive bytes above are wsproto's
    events = list(bytewise(make(role, fast), stream + peer(role, 1, b"after")))
    (at, failure) = events[-1]
    assert type(failure) is Failure and failure.code == CloseCode.PROTOCOL_ERROR, summary([e for _, e in events])
    assert all(type(e) is Chunk for _, e in events[:-1])
    assert index <= at <= max(index, header_end), (at, index, header_end)


@pytest.mark.parametrize("role, stream, index, header_end", list(header_cases()))
def test_header_errors_fail_on_the_byte(role, fast, stream, index, header_end):
    """Fed one byte per read, a malformed header is 1002 from the read that brought the
    decisive byte, as with wsproto alone: a frame that can't be the fast path's goes to
    wsproto as soon as its first bytes show it."""
    events = list(bytewise(make(role, fast), stream + peer(role, 1, b"after")))
    at, failure = events[-1]
    assert type(failure) is Failure and failure.code == CloseCode.PROTOCOL_ERROR
    assert at == index, f"the failure came at byte {at}, the decisive byte is {index}"


@pytest.mark.parametrize("name, build", HEADER_ERRORS, ids=[n for n, _ in HEADER_ERRORS])
def test_header_errors_are_1002(role, fast, name, build):
    """In one read, after whole messages: those, then the failure, then nothing."""
    stream, _ = build(role)
    events = receive(make(role, fast), peer(role, 1, b"before") + stream + peer(role, 2, b"after"))
    got = summary(events)
    assert got[0] == ("message", MessageType.TEXT, "before", 6)
    assert got[-1] == ("failure", CloseCode.PROTOCOL_ERROR)
    assert all(e[0] == "chunk" for e in got[1:-1])
    assert events[-1].reason and events[-1].detail.startswith("protocol error from peer")


def test_masking_rules(role, fast):
    """RFC 6455 section 5.1: a server refuses unmasked frames, a client masked ones (1002)."""
    for opcode, payload in [(1, b"text"), (2, b"\x00" * 600), (9, b"ping"), (8, b"\x03\xe8")]:
        wrong = wire(opcode, payload, masked=role == "client")
        (failure,) = receive(make(role, fast), wrong)
        assert type(failure) is Failure and failure.code == CloseCode.PROTOCOL_ERROR
        assert ("masked" if role == "client" else "unmasked") in failure.reason
        right = wire(opcode, payload, masked=role == "server")
        (event,) = receive(make(role, fast), right)
        assert type(event) is not Failure


# --- inbound: close frames --------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"\x03", CloseCode.PROTOCOL_ERROR),  # one byte
        (struct.pack("!H", 999), CloseCode.PROTOCOL_ERROR),
        (struct.pack("!H", 1004), CloseCode.PROTOCOL_ERROR),
        (struct.pack("!H", 1005), CloseCode.PROTOCOL_ERROR),  # never sent on the wire
        (struct.pack("!H", 1006), CloseCode.PROTOCOL_ERROR),
        (struct.pack("!H", 1015), CloseCode.PROTOCOL_ERROR),
        (struct.pack("!H", 2000), CloseCode.PROTOCOL_ERROR),
        (struct.pack("!H", 5000), CloseCode.PROTOCOL_ERROR),
        (struct.pack("!H", 1000) + b"\xff", CloseCode.INVALID_PAYLOAD_DATA),
        (struct.pack("!H", 1000) + b"\xe2\x82", CloseCode.INVALID_PAYLOAD_DATA),
    ],
)
def test_bad_close_frames(role, fast, payload, code):
    events = receive(make(role, fast), peer(role, 8, payload) + peer(role, 1, b"after"))
    assert summary(events) == [("failure", code)]


@pytest.mark.parametrize(
    "code",
    [
        *(1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013),
        pytest.param(
            1014,
            marks=pytest.mark.xfail(
                strict=True,
                reason="1014 (Bad Gateway, in IANA's registry and in threadws.CloseCode, which "
                "send_close sends) is refused on receipt: wsproto's close parsing knows 1000-1013 "
                "and calls any other code under 3000 'unknown reserved' (1002)",
            ),
        ),
        *(3000, 3999, 4000, 4999),
    ],
)
def test_close_codes_a_peer_may_send(role, fast, code):
    proto = make(role, fast)
    assert summary(receive(proto, peer(role, 8, struct.pack("!H", code) + b"why"))) == [("close", code, "why", False)]
    assert not proto.can_send_data
    answer = proto.send_close(code, "")  # the echo RFC 6455 section 5.5.1 asks for
    assert answer is not None and parse_frame(answer) == (0x88, role == "client", struct.pack("!H", code))


def test_parse_close_payload():
    assert parse_close_payload(b"") == (CloseCode.NO_STATUS_RCVD, "")
    assert parse_close_payload(b"\x03\xe8ok") == (1000, "ok")
    for bad in (b"\x03", b"\x03\xee", b"\x03\xe8\xff", struct.pack("!H", 2999)):
        with pytest.raises(ValueError):
            parse_close_payload(bad)


# --- inbound: the read limit ------------------------------------------------------------------

LIMIT = 5000


def limit_streams(role: str, size: int) -> Iterator[tuple[str, bytes, bool]]:
    """(shape, stream, compressed) carrying one binary message of *size* bytes."""
    data = bytes(i % 251 for i in range(size))
    yield "whole", peer(role, 2, data), False
    yield "fragmented", peer(role, 2, data[:3000], fin=False) + peer(role, 9, b"") + peer(role, 0, data[3000:]), False
    text = ("é" * (size // 2) + "x" * (size % 2)).encode()  # counted in bytes, not characters
    yield "text", peer(role, 1, text), False
    yield "compressed", peer(role, 2, deflate(data), rsv=4), True
    zipped = deflate(data)
    half = len(zipped) // 2
    yield "compressed-fragmented", peer(role, 2, zipped[:half], rsv=4, fin=False) + peer(role, 0, zipped[half:]), True
    # Small on the wire, big once inflated.
    yield "compressed-zeros", peer(role, 2, deflate(bytes(size)), rsv=4), True


@pytest.mark.parametrize("reads", ["one-read", "bytewise"])
def test_a_message_at_the_read_limit_is_delivered(role, fast, reads):
    for shape, stream, compressed in limit_streams(role, LIMIT):
        run = checked(role, fast, read_limit=LIMIT, compressed=compressed)
        if reads == "one-read":
            run.feed(stream)
        else:
            for i in range(len(stream)):
                run.feed(stream[i : i + 1])
        assert len(run.log) in (1, 2), shape  # the ping between the fragments
        kind, data = run.log[-1][1:]
        assert len(data if isinstance(data, bytes) else data.encode()) == LIMIT, shape
        assert not run.ended, shape


@pytest.mark.parametrize("reads", ["one-read", "bytewise"])
def test_a_message_one_byte_over_the_read_limit_is_1009(role, fast, reads):
    for shape, stream, compressed in limit_streams(role, LIMIT + 1):
        run = checked(role, fast, read_limit=LIMIT, compressed=compressed)
        events = []
        for part in [stream] if reads == "one-read" else [stream[i : i + 1] for i in range(len(stream))]:
            events += run.feed(part)
        failure = events[-1]
        assert type(failure) is Failure and failure.code == CloseCode.MESSAGE_TOO_BIG, shape
        assert failure.reason == f"message too big (limit {LIMIT} bytes)", shape
        assert "read limit of 5000 bytes" in failure.detail
        # What came before: at most LIMIT bytes of the message, never all of it.
        assert all(type(e) in (Chunk, Ping) for e in events[:-1]), shape
        assert sum(e.size for e in events if type(e) is Chunk) <= LIMIT


def test_the_read_limit_can_change_between_messages(role, fast):
    proto = make(role, fast, read_limit=10)
    assert summary(receive(proto, peer(role, 2, b"x" * 10))) == [("message", MessageType.BINARY, b"x" * 10, 10)]
    proto.read_limit = 20
    assert proto.read_limit == 20
    assert summary(receive(proto, peer(role, 2, b"x" * 20))) == [("message", MessageType.BINARY, b"x" * 20, 20)]
    for bad in (0, -1):
        with pytest.raises(ValueError):
            proto.read_limit = bad
    assert summary(receive(proto, peer(role, 2, b"x" * 21))) == [("failure", CloseCode.MESSAGE_TOO_BIG)]


# --- inbound: nothing after the end ----------------------------------------------------------

AFTER = [
    (1, b"whole"),
    (2, bytes(5000)),  # a long frame, streamed on the fast path
    (9, b"ping"),
    (8, b""),
]


@pytest.mark.parametrize(
    "end, read_limit",
    [
        pytest.param(lambda r: peer(r, 8, b"\x03\xe8"), 1 << 20, id="close-frame"),
        pytest.param(lambda r: peer(r, 3, b""), 1 << 20, id="protocol-error"),
        pytest.param(lambda r: peer(r, 1, b"\xff"), 1 << 20, id="invalid-utf8"),
        pytest.param(lambda r: peer(r, 2, b"x" * 101), 100, id="too-big"),
        pytest.param(lambda r: peer(r, 1, b"a" * 5000 + b"\xff" + b"b" * 100), 1 << 20, id="invalid-utf8-long-frame"),
    ],
)
def test_nothing_comes_after_a_close_frame_or_a_failure(role, fast, end, read_limit):
    after = b"".join(peer(role, op, data) for op, data in AFTER)
    proto = make(role, fast, read_limit=read_limit)
    events = receive(proto, end(role) + after)
    assert type(events[-1]) in (CloseFrame, Failure)
    assert all(type(e) is Chunk for e in events[:-1])
    # Later reads: ignored, whatever they hold.
    for data in (after, after[:3], b"\x88\x00", b"\xff" * 100):
        assert receive(proto, data) == []


# --- outbound -----------------------------------------------------------------------------------


def parse_frame(frame: bytes) -> tuple[int, bool, bytes]:
    """(first byte, masked?, unmasked payload) of one whole frame; asserts the length is minimal."""
    n = frame[1] & 0x7F
    i = 2
    if n == 126:
        (n,) = struct.unpack("!H", frame[2:4])
        assert n >= 126
        i = 4
    elif n == 127:
        (n,) = struct.unpack("!Q", frame[2:10])
        assert n >= 65536
        i = 10
    masked = bool(frame[1] & 0x80)
    if masked:
        key, i = frame[i : i + 4], i + 4
        payload = mask(frame[i:], key)
    else:
        payload = frame[i:]
    assert len(payload) == n
    return frame[0], masked, payload


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
@pytest.mark.parametrize("kind", [MessageType.TEXT, MessageType.BINARY])
def test_check_builds_a_whole_frame_masked_per_role(role, kind, size):
    proto = make(role)
    data: Any = "é" * (size // 2) + "x" * (size % 2) if kind is MessageType.TEXT else bytes(size)
    frame = proto.check(kind, data)
    # A server keeps a long payload apart from its header (no copy into a new frame).
    assert type(frame) is (SplitFrame if role == "server" and size >= 65536 else bytes)
    assert proto.frame(frame) is frame  # already framed: nothing to do under the lock
    if type(frame) is SplitFrame:
        assert frame.payload is (data if kind is MessageType.BINARY else frame.payload)
        frame = bytes(frame)
    first, masked, payload = parse_frame(frame)
    assert first == 0x80 | kind
    assert masked is (role == "client")  # RFC 6455 section 5.3: a client masks, a server doesn't
    assert payload == (data.encode() if kind is MessageType.TEXT else data)
    for parser in (True, False):
        (event,) = receive(make("server" if role == "client" else "client", parser), frame)
        assert summary([event]) == [("message", kind, data, size)]


def test_a_long_bytearray_is_copied_into_its_frame_not_kept():
    # The writer sends later, from its own thread: a payload the caller may
    # still change must be copied when the message is queued.
    data = bytearray(70_000)
    frame = make("server").check(MessageType.BINARY, data)
    assert type(frame) is bytes
    data[:3] = b"abc"
    assert parse_frame(frame)[2] == bytes(70_000)
    kept = make("server").check(MessageType.BINARY, bytes(70_000))
    assert type(kept) is SplitFrame and len(kept) == 70_000 + 10


def test_check_accepts_bytes_like_and_utf8_bytes_for_text(role):
    proto = make(role)
    assert parse_frame(proto.check(MessageType.TEXT, "é".encode()))[2] == "é".encode()
    assert parse_frame(proto.check(MessageType.BINARY, bytearray(b"ab")))[2] == b"ab"
    assert parse_frame(proto.check(MessageType.BINARY, memoryview(b"abc")[1:]))[2] == b"bc"
    assert parse_frame(proto.check(MessageType.TEXT, memoryview("ü".encode())))[2] == "ü".encode()


@pytest.mark.parametrize("compressed", [False, True])
def test_check_refuses_what_cannot_be_sent(role, compressed):
    proto = make(role, compressed=compressed)
    with pytest.raises(ValueError, match="not valid UTF-8"):
        proto.check(MessageType.TEXT, b"\xff")
    with pytest.raises(TypeError, match="not str"):
        proto.check(MessageType.BINARY, "text")
    with pytest.raises(TypeError, match="int"):
        proto.check(MessageType.BINARY, 123)
    with pytest.raises(TypeError):
        proto.check(MessageType.TEXT, 4.5)
    for kind in (MessageType.PING, MessageType.PONG, MessageType.CLOSE):
        with pytest.raises(ValueError, match="write_control"):
            proto.check(kind, b"")


def test_with_compression_frame_compresses_unless_told_not_to(role):
    proto = make(role, compressed=True)
    text = "compress me " * 100
    message = proto.check(MessageType.TEXT, text)
    assert type(message) is TextMessage  # framed later, under the caller's lock
    compressed = proto.frame(message)
    plain = proto.frame(proto.check(MessageType.TEXT, text), compress=False)
    again = proto.frame(proto.check(MessageType.BINARY, text.encode()))  # compress= resets
    assert compressed[0] == 0x80 | 0x40 | 1 and len(compressed) < 100
    assert plain[0] == 0x81 and parse_frame(plain)[2] == text.encode()
    assert again[0] == 0x80 | 0x40 | 2
    receiver = the_peer(role, compressed=True)
    assert summary(receive(receiver, compressed, plain, again)) == [
        ("message", MessageType.TEXT, text, len(text)),
        ("message", MessageType.TEXT, text, len(text)),
        ("message", MessageType.BINARY, text.encode(), len(text)),
    ]


@pytest.mark.parametrize("compressed", [False, True])
def test_send_fragment(role, compressed):
    proto = make(role, compressed=compressed)
    frames = [
        proto.send_fragment(True, "frag", False),
        proto.send_ping(b"p"),
        proto.send_fragment(True, "mént", False),
        proto.send_fragment(True, "", True),
        proto.send_fragment(False, b"\x00\x01", True),
    ]
    rsv1 = 0x40 if compressed else 0
    assert [f[0] for f in frames] == [0x01 | rsv1, 0x89, 0x00, 0x80, 0x82 | rsv1]
    assert all(bool(f[1] & 0x80) is (role == "client") for f in frames)
    run = Checker(the_peer(role, compressed=compressed), 1 << 20, compressed, views=False)
    run.feed(b"".join(frames))
    assert run.log == [
        ("ping", b"p"),
        ("message", MessageType.TEXT, "fragmént"),
        ("message", MessageType.BINARY, b"\x00\x01"),
    ]


def test_control_frames(role):
    proto = make(role)
    assert parse_frame(proto.send_ping(b"hi")) == (0x89, role == "client", b"hi")
    assert parse_frame(proto.send_pong(b"p" * 125)) == (0x8A, role == "client", b"p" * 125)
    with pytest.raises(ValueError):
        proto.send_ping(b"p" * 126)  # RFC 6455 section 5.5: at most 125 bytes
    close = proto.send_close(1001, "é" * 100)  # 200 bytes of reason: cut to fit
    assert close is not None
    first, _, payload = parse_frame(close)
    assert first == 0x88 and len(payload) <= 125
    assert parse_close_payload(payload) == (1001, "é" * 61)  # whole characters only


def test_a_close_without_a_code(role):
    proto = make(role)
    close = proto.send_close(CloseCode.NO_STATUS_RCVD, "")
    assert close is not None and parse_frame(close) == (0x88, role == "client", b"")


def test_after_our_close_nothing_else_goes_out(role):
    proto = make(role)
    assert proto.can_send_data
    assert proto.send_close(1000, "bye") is not None
    assert not proto.can_send_data
    assert proto.send_close(1000, "again") is None
    for send in (
        lambda: proto.send_ping(b""),
        lambda: proto.send_pong(b""),
        lambda: proto.send_fragment(True, "x", True),
    ):
        with pytest.raises(ProtocolClosed):
            send()
    # The peer's answer still comes in, marked as the answer.
    events = receive(proto, peer(role, 2, b"late") + peer(role, 8, b"\x03\xe8"))
    assert summary(events) == [("message", MessageType.BINARY, b"late", 4), ("close", 1000, "", True)]


def test_after_the_peers_close_we_answer_once(role, fast):
    proto = make(role, fast)
    (close,) = receive(proto, peer(role, 8, struct.pack("!H", 4000) + b"go"))
    assert summary([close]) == [("close", 4000, "go", False)]
    assert not proto.can_send_data
    with pytest.raises(ProtocolClosed):
        proto.send_pong(b"")
    answer = proto.send_close(close.code, "")
    assert answer is not None and parse_frame(answer) == (0x88, role == "client", struct.pack("!H", 4000))
    assert proto.send_close(1000, "") is None


def test_a_compressed_message_after_close_is_refused(role):
    proto = make(role, compressed=True)
    message = proto.check(MessageType.TEXT, "late")
    proto.send_close(1000, "")
    with pytest.raises(ProtocolClosed):
        proto.frame(message)


def test_a_plain_message_after_close_is_refused(role):
    proto = make(role)
    message = proto.check(MessageType.TEXT, "late")
    proto.send_close(1000, "")
    with pytest.raises(ProtocolClosed):
        proto.frame(message)


def test_frames_are_what_wsproto_reads(role):
    """Everything the protocol sends, read by a plain wsproto Connection of the other side."""
    proto = make(role)
    other = Connection(ConnectionType.SERVER if role == "client" else ConnectionType.CLIENT)
    other.receive_data(
        proto.frame(proto.check(MessageType.TEXT, "tëxt"))
        + bytes(proto.frame(proto.check(MessageType.BINARY, bytes(70_000))))  # (a server's: a SplitFrame)
        + proto.send_fragment(False, b"a", False)
        + proto.send_ping(b"p")
        + proto.send_fragment(False, b"b", True)
        + (proto.send_close(1000, "done") or b"")
    )
    events = list(other.events())
    assert [type(e) for e in events] == [TextMessage, BytesMessage, BytesMessage, WsPing, BytesMessage, CloseConnection]
    assert events[0].data == "tëxt" and events[1].data == bytes(70_000)
    assert (events[5].code, events[5].reason) == (1000, "done")


# --- one frame for many connections (PreparedMessage) -----------------------------------------


def test_sharing_key():
    assert make("client").sharing_key() is None  # a fresh masking key per frame
    assert make("server").sharing_key() == "plain"
    assert make("server", compressed=True).sharing_key() is None  # context takeover: history matters

    def with_agreement(agreement: Agreement, config: Compression) -> Protocol:
        ext = PerMessageDeflate(agreement, config, client=False, read_limit=1 << 20)
        return Protocol(client=False, extensions=[ext])

    nct = Agreement(True, False, 12, 12)
    one, two = with_agreement(nct, Compression()), with_agreement(nct, Compression())
    assert one.sharing_key() is not None and one.sharing_key() == two.sharing_key()
    assert one.sharing_key() != with_agreement(Agreement(True, False, 10, 12), Compression()).sharing_key()
    assert one.sharing_key() != with_agreement(nct, Compression(level=1)).sharing_key()


@pytest.mark.parametrize("kind, data", [(MessageType.TEXT, "shared " * 50), (MessageType.BINARY, b"\x01" * 300)])
def test_shared_frame_is_the_frame_each_connection_would_build(kind, data):
    plain = make("server")
    assert plain.shared_frame(kind, data) == plain.frame(plain.check(kind, data))
    ext = PerMessageDeflate(Agreement(True, False, 12, 12), Compression(), client=False, read_limit=1 << 20)
    proto = Protocol(client=False, extensions=[ext])
    proto.frame(proto.check(MessageType.TEXT, "history that must not matter " * 10))
    shared = proto.shared_frame(kind, data)
    assert shared == proto.frame(proto.check(kind, data))
    assert shared[0] == 0x80 | 0x40 | kind
    client_ext = PerMessageDeflate(Agreement(True, False, 12, 12), Compression(), client=True, read_limit=1 << 20)
    receiver = Protocol(client=True, extensions=[client_ext])
    size = len(data.encode()) if isinstance(data, str) else len(data)
    assert summary(receive(receiver, shared, shared)) == [("message", kind, data, size)] * 2


# --- the fast path against wsproto (hypothesis) ---------------------------------------------------


@st.composite
def payloads(draw: st.DrawFn, text: bool, read_limit: int) -> bytes:
    """A payload whose length lands in every length encoding and on either side of the read
    limit; text valid UTF-8 or broken at a point."""
    size = draw(
        st.one_of(
            st.integers(0, 140),
            st.integers(4080, 4110),  # either side of what the fast path holds back whole
            st.sampled_from([65535, 65536, 70_000]),  # the 16/64-bit boundary
            st.sampled_from([read_limit - 1, read_limit, read_limit + 1] if read_limit < 1 << 17 else [0]),
        )
    )
    if text:
        seed = draw(st.text(min_size=1, max_size=8)).encode()
        data = (seed * (size // len(seed) + 1))[:size]
        data = data[: len(data.decode("utf-8", "ignore").encode())]  # whole characters
        if data and draw(st.integers(0, 4)) == 0:
            at = draw(st.integers(0, len(data) - 1))
            bad = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xe2\x28", b"\xed\xa0\x80", b"\xf4\x90", b"\xe2"]))
            data = data[:at] + bad + data[at:]
        return data
    seed = draw(st.binary(min_size=1, max_size=8))
    return (seed * (size // len(seed) + 1))[:size]


@st.composite
def frames(draw: st.DrawFn, role: str, read_limit: int) -> bytes:
    """One frame: mostly well-formed, sometimes broken in one way."""
    opcode = draw(st.sampled_from([1, 2, 1, 2, 1, 2, 9, 10, 8, 0]))
    fin = draw(st.integers(0, 5)) > 0 if opcode < 8 else True  # a message left open, now and then
    if opcode in (9, 10):
        payload = draw(st.binary(max_size=125))
    elif opcode == 8:
        payload = draw(
            st.one_of(
                st.just(b""),
                st.builds(
                    lambda c, r: struct.pack("!H", c) + r,
                    st.sampled_from([1000, 1001, 1005, 1011, 2999, 3000, 4999, 999, 5000]),
                    st.sampled_from([b"", b"bye", "é".encode(), b"\xff"]),
                ),
            )
        )
    else:
        payload = draw(payloads(opcode == 1, read_limit))
    masked = role == "server"
    rsv, encoding = 0, None
    flaw = draw(st.integers(0, 31))  # one frame in five has a flaw
    if flaw == 0:
        masked = not masked
    elif flaw == 1:
        rsv = draw(st.integers(1, 7))
    elif flaw == 2:
        opcode = draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]))
    elif flaw == 3 and len(payload) < 65536:
        encoding = 64 if len(payload) >= 126 or draw(st.booleans()) else 16  # non-minimal
    elif flaw == 4:
        fin = not fin  # a fragmented control frame, or a message left open
    elif flaw == 5 and opcode in (9, 10, 8):
        payload = b"c" * draw(st.integers(126, 200))
    return wire(opcode, payload, masked=masked, fin=fin, rsv=rsv, encoding=encoding)


@st.composite
def streams(draw: st.DrawFn, role: str, read_limit: int) -> bytes:
    """Frames as a peer sends them: whole messages, fragmented ones with control frames between."""
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            parts.append(draw(frames(role, read_limit)))
            continue
        # A fragmented message, as a well-behaved peer sends it, with control frames between.
        kind = draw(st.sampled_from([1, 2]))
        data = draw(payloads(kind == 1, read_limit))
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        masked = role == "server"
        for i, piece in enumerate(pieces):
            parts.append(wire(kind if i == 0 else 0, piece, masked=masked, fin=i == len(pieces) - 1))
            if i < len(pieces) - 1 and draw(st.booleans()):
                parts.append(wire(draw(st.sampled_from([9, 10])), draw(st.binary(max_size=10)), masked=masked))
    stream = b"".join(parts)
    if len(stream) > 1 and draw(st.integers(0, 7)) == 0:
        stream = stream[: draw(st.integers(len(stream) // 2, len(stream) - 1))]  # the input ends mid-frame
    return stream


@settings(
    max_examples=500,
    derandomize=True,  # the same examples on every run: CI is deterministic
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(data=st.data())
def test_fast_path_and_wsproto_agree(data):
    """Generated frame sequences, cut at generated points: both parsers give the same events.

    Normalised by :func:`tests.fuzz_targets.assert_same_events`: chunks joined,
    failures compared by code, close codes and reasons exactly.
    """
    role = data.draw(st.sampled_from(ROLES), label="role")
    read_limit = data.draw(st.sampled_from([64, 4096, 5000, 70_000, 1 << 20, 1 << 20]), label="read_limit")
    stream = data.draw(streams(role, read_limit), label="stream")
    if len(stream) <= 600 and data.draw(st.booleans(), label="bytewise"):
        points = list(range(1, len(stream)))
    else:
        points = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=8), label="cuts")))
    views = data.draw(st.booleans(), label="views")
    reads = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    fast = Checker(make(role, True, read_limit), read_limit, False, views)
    slow = Checker(make(role, False, read_limit), read_limit, False, views)
    for read in reads:
        fast.feed(read)
        slow.feed(read)
    # What the examples reached (pytest --hypothesis-show-statistics).
    note(f"last event: {slow.log[-1][:2] if slow.log else None}")
    note(f"reads: {'bytewise' if len(reads) > 9 else len(reads)}")
    assert_same_events(fast, slow)
