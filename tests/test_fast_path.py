"""The hot path's own framing (threadws._frames) against wsproto, its reference.

Whole unfragmented data frames are parsed and built by threadws itself;
everything else goes through wsproto, frame by whole frame. These tests feed
streams that mix the two, split at every possible point, and check that what
comes out is exactly what wsproto alone would deliver, in order, and that
every malformed variant of the fast-path shape still gets wsproto's verdict.
"""

from __future__ import annotations

import random
import struct

import pytest
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

import threadws
from threadws import CloseCode, MessageType
from threadws import protocol
from threadws._frames import build_frame, unmask

from .conftest import ROLES, frame


@pytest.fixture(params=ROLES)
def role(request):
    return request.param


def mixed_stream(mask: bool) -> tuple[bytes, list[tuple[MessageType, object]], int]:
    """Frames of every kind, and the messages (and ping count) they must produce."""
    rng = random.Random(6455)
    big = bytes(rng.randrange(256) for _ in range(70_000))
    mid = bytes(rng.randrange(256) for _ in range(300))
    parts = [
        (frame(1, "héllo".encode(), mask=mask), (MessageType.TEXT, "héllo")),
        (frame(2, mid, mask=mask), (MessageType.BINARY, mid)),
        (frame(9, b"ping", mask=mask), None),
        (frame(2, big, mask=mask), (MessageType.BINARY, big)),
        (frame(1, b"ab", fin=False, mask=mask), None),
        (frame(9, b"", mask=mask), None),
        (frame(0, "cd€".encode(), mask=mask), (MessageType.TEXT, "abcd€")),
        (frame(2, b"", mask=mask), (MessageType.BINARY, b"")),
        (frame(1, b"x" * 125, mask=mask), (MessageType.TEXT, "x" * 125)),
        (frame(1, b"y" * 126, mask=mask), (MessageType.TEXT, "y" * 126)),
        (frame(2, b"z" * 65535, mask=mask), (MessageType.BINARY, b"z" * 65535)),
        (frame(2, b"\x00", fin=False, mask=mask), None),
        (frame(0, b"\x01", mask=mask), (MessageType.BINARY, b"\x00\x01")),
        (frame(1, b"last", mask=mask), (MessageType.TEXT, "last")),
    ]
    stream = b"".join(raw for raw, _ in parts)
    return stream, [m for _, m in parts if m is not None], 2


def read_all(conn: threadws.Conn, count: int) -> list[tuple[MessageType, object]]:
    return [conn.read_message(timeout=5) for _ in range(count)]


def test_mixed_stream_in_random_chunks(pair, role):
    """End to end over the socket: the stream arrives in chunks of 1 to 3000 bytes."""
    conn, peer = pair(role, read_limit=1 << 20)
    stream, expected, pings = mixed_stream(mask=role == "server")
    rng = random.Random(1)
    i = 0
    while i < len(stream):
        n = rng.choice((1, 2, 3, 7, 13, 200, 3000))
        peer.send_raw(stream[i : i + n])
        i += n
    assert read_all(conn, len(expected)) == expected
    pongs = [peer.next_event() for _ in range(pings)]
    assert all(type(event) is Pong for event in pongs)
    assert not conn.closed
    conn.abort()


# Longer than a frame that waits to be parsed whole: streamed in chunks, and
# its 2- and 3-byte characters get cut between reads.
LONG_TEXT = "aé€" * 700


def collect(events: list[object]) -> tuple[list[tuple[MessageType, object]], list[bytes]]:
    """The whole messages (chunks joined) and the ping payloads in *events*, in order."""
    messages: list[tuple[MessageType, object]] = []
    pings: list[bytes] = []
    parts: list[object] = []
    for event in events:
        if isinstance(event, protocol.Message):
            assert not parts, "a whole message inside another"
            messages.append((event.kind, event.data))
        elif isinstance(event, protocol.Chunk):
            parts.append(event.data)
            if event.fin:
                messages.append((event.kind, ("" if isinstance(parts[0], str) else b"").join(parts)))  # type: ignore[arg-type]
                parts = []
        elif isinstance(event, protocol.Ping):
            pings.append(event.payload)
        else:
            raise AssertionError(f"unexpected {event!r}")
    assert not parts, "a message left unfinished"
    return messages, pings


def test_every_split_point(role):
    """Each place a read can end, in the header or the payload, of every kind of frame.

    Feeds the protocol directly, so the split is exact (a socket may merge two
    sends into one read).
    """
    short = b"".join(
        frame(op, payload, fin=fin, mask=role == "server")
        for op, payload, fin in [
            (1, b"hi", True),
            (2, b"b" * 130, True),
            (9, b"p", True),
            (2, b"s", False),
            (0, b"t", True),
            (1, b"end", True),
            (1, LONG_TEXT.encode(), True),
        ]
    )
    expected = [
        (MessageType.TEXT, "hi"),
        (MessageType.BINARY, b"b" * 130),
        (MessageType.BINARY, b"st"),
        (MessageType.TEXT, "end"),
        (MessageType.TEXT, LONG_TEXT),
    ]
    proto = protocol.Protocol(client=role == "client", read_limit=1 << 20)
    for cut in range(1, len(short)):
        events = list(proto.receive(memoryview(short[:cut]))) + list(proto.receive(memoryview(short[cut:])))
        assert collect(events) == (expected, [b"p"]), f"split at {cut}"
    # And one byte per read.
    events = []
    for byte in short:
        events += proto.receive(bytes([byte]))
    assert collect(events) == (expected, [b"p"])


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 511, 512, 513, 65535, 65536, 200_000])
@pytest.mark.parametrize("kind", [MessageType.TEXT, MessageType.BINARY])
def test_sizes_both_ways(pair, role, size, kind):
    """Every length encoding and both unmasking methods, built and parsed by threadws, checked by wsproto."""
    conn, peer = pair(role, read_limit=1 << 20)
    data = ("é" * size)[:size] if kind is MessageType.TEXT else bytes(i % 251 for i in range(size))
    conn.write_message(kind, data)
    event = peer.next_event()
    assert type(event) is (TextMessage if kind is MessageType.TEXT else BytesMessage)
    collected = event.data
    while not event.message_finished:
        event = peer.next_event()
        collected += event.data
    assert collected == data
    peer.send(TextMessage(data) if kind is MessageType.TEXT else BytesMessage(data))
    assert conn.read_message(timeout=5) == (kind, data)
    conn.abort()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(lambda m: bytes([0x82, m | 126]) + struct.pack("!H", 5), id="16-bit-length-for-5"),
        pytest.param(lambda m: bytes([0x82, m | 127]) + struct.pack("!Q", 300), id="64-bit-length-for-300"),
        pytest.param(lambda m: bytes([0x82, m | 127]) + struct.pack("!Q", 1 << 63), id="64-bit-length-msb"),
    ],
)
def test_non_minimal_lengths_are_1002(pair, role, raw):
    conn, peer = pair(role)
    mask = 0x80 if role == "server" else 0
    peer.send_raw(raw(mask) + (b"\0\0\0\0" if mask else b"") + b"x" * 300)
    assert peer.expect_close().code == CloseCode.PROTOCOL_ERROR
    assert conn.wait_closed(5)


def test_whole_frame_inside_a_fragmented_message_is_1002(pair, role):
    conn, peer = pair(role)
    peer.send_raw(peer.frame(1, b"a", fin=False) + peer.frame(1, b"b"))
    assert peer.expect_close().code == CloseCode.PROTOCOL_ERROR
    with pytest.raises(threadws.ConnectionClosed):
        conn.read_message(timeout=5)


def test_nothing_after_a_protocol_error_is_delivered(pair, role):
    """A whole, fast-path-shaped message after the error must not reach the application."""
    conn, peer = pair(role)
    peer.send_raw(peer.frame(1, b"before") + peer.frame(3, b"") + peer.frame(1, b"after"))
    assert conn.read_message(timeout=5) == (MessageType.TEXT, "before")
    with pytest.raises(threadws.ConnectionClosed):
        conn.read_message(timeout=5)
    assert peer.expect_close().code == CloseCode.PROTOCOL_ERROR


def test_nothing_after_a_close_frame_is_delivered(pair, role):
    conn, peer = pair(role, close_timeout=0.5)  # the client then waits that long for TCP's end
    close = peer.frame(8, struct.pack("!H", 1000))
    peer.send_raw(peer.frame(2, b"before") + close + peer.frame(2, b"after"))
    assert conn.read_message(timeout=5) == (MessageType.BINARY, b"before")
    with pytest.raises(threadws.ConnectionClosedOK):
        conn.read_message(timeout=5)
    assert type(peer.expect_close()) is CloseConnection


@pytest.mark.parametrize("offset", [0, 600], ids=["short", "unmasked-in-place"])
def test_invalid_utf8_in_a_whole_frame_is_1007_after_the_messages_before_it(pair, role, offset):
    conn, peer = pair(role)
    bad = b"a" * offset + b"\xff\xfe"  # over 512 bytes a server unmasks in the receive buffer
    peer.send_raw(peer.frame(1, b"ok") + peer.frame(1, bad) + peer.frame(1, b"never"))
    assert conn.read_message(timeout=5) == (MessageType.TEXT, "ok")
    with pytest.raises(threadws.ConnectionClosed):
        conn.read_message(timeout=5)
    close = peer.expect_close()
    assert close.code == CloseCode.INVALID_PAYLOAD_DATA
    assert f"can't decode byte 0xff in position {offset}" in close.reason  # what wsproto would say


def test_ping_between_whole_frames_is_answered_in_order(pair, role):
    conn, peer = pair(role)
    peer.send_raw(peer.frame(2, b"1") + peer.frame(9, b"hey") + peer.frame(2, b"2"))
    assert read_all(conn, 2) == [(MessageType.BINARY, b"1"), (MessageType.BINARY, b"2")]
    event = peer.next_event()
    assert type(event) is Pong and event.payload == b"hey"
    assert not isinstance(event, Ping)
    conn.abort()


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 511, 512, 513, 4099])
def test_unmask_matches_the_definition(size):
    rng = random.Random(size)
    data = bytes(rng.randrange(256) for _ in range(size))
    key = bytes(rng.randrange(256) for _ in range(4))
    assert unmask(data, key) == bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert unmask(memoryview(data), memoryview(key)) == unmask(data, key)


def test_client_frames_are_masked_with_a_fresh_key():
    one = build_frame(0x82, b"same payload", client=True)
    two = build_frame(0x82, b"same payload", client=True)
    assert one[1] & 0x80 and two[1] & 0x80
    assert one[2:6] != two[2:6]
    assert unmask(one[6:], one[2:6]) == b"same payload"
    assert build_frame(0x81, b"srv", client=False) == b"\x81\x03srv"


def test_receive_buffer_grows_for_a_burst_and_shrinks_after(pair, role):
    """A burst (reads fill the buffer, it grows), then small reads one at a time
    (it shrinks back), then a burst again: every byte arrives, in order."""
    conn, peer = pair(role, read_limit=1 << 20)
    big = bytes(range(256)) * 2000
    for round_ in range(2):
        peer.send_raw(b"".join(peer.frame(2, big) for _ in range(4)))
        assert read_all(conn, 4) == [(MessageType.BINARY, big)] * 4
        for i in range(40):
            peer.send_raw(peer.frame(1, f"small {round_} {i}".encode()))
            assert conn.read_message(timeout=5) == (MessageType.TEXT, f"small {round_} {i}")
    assert not conn.closed


def test_invalid_utf8_in_a_long_frame_fails_before_the_rest_arrives(pair, role):
    conn, peer = pair(role, read_limit=1 << 20)
    whole = peer.frame(1, b"a" * 5000 + b"\xc0\xaf" + b"b" * 100_000)
    peer.send_raw(whole[:6000])  # the header, the bad bytes; 99 KB never sent
    assert peer.expect_close().code == CloseCode.INVALID_PAYLOAD_DATA
    with pytest.raises(threadws.ConnectionClosed):
        conn.read_message(timeout=5)


def test_long_frame_then_messages_in_the_same_read(pair, role):
    conn, peer = pair(role, read_limit=1 << 20)
    long = bytes(range(256)) * 40
    stream = peer.frame(2, long) + peer.frame(1, b"next") + peer.frame(9, b"p") + peer.frame(2, b"last")
    peer.send_raw(stream[:3000])
    peer.send_raw(stream[3000:])
    assert read_all(conn, 3) == [(MessageType.BINARY, long), (MessageType.TEXT, "next"), (MessageType.BINARY, b"last")]
    assert type(peer.next_event()) is Pong
