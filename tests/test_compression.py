"""permessage-deflate (RFC 7692): negotiation as pure functions, then Conn over socketpair()
against a raw peer that crafts compressed frames with zlib, then loopback."""

from __future__ import annotations

import email.message
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage
from wsproto.extensions import PerMessageDeflate as WsprotoDeflate

import threadws
from threadws import CloseCode, Compression, ConnectionClosedError, HandshakeError, MessageType, handshake
from threadws.compression import (
    Agreement,
    PerMessageDeflate,
    accept_offer,
    build_offer,
    check_response,
    parse_extensions,
)
from threadws.connection import Settings

from .conftest import ROLES, Peer, start_server, stop_server, url_of

DEFAULT = Compression()


# --- negotiation: no sockets ------------------------------------------------------


def test_parse_extensions_grammar():
    assert parse_extensions(['permessage-deflate; client_max_window_bits, x-foo; a="b" ;C', "bar"]) == [
        ("permessage-deflate", [("client_max_window_bits", None)]),
        ("x-foo", [("a", "b"), ("c", None)]),
        ("bar", []),
    ]
    assert parse_extensions(['permessage-deflate; client_max_window_bits="10"']) == [
        ("permessage-deflate", [("client_max_window_bits", "10")])
    ]
    for bad in ["permessage-deflate;", "; x", "a b", "a,", 'a; b="c d"', "a; b=", "a;;b"]:
        with pytest.raises(ValueError):
            parse_extensions([bad])


def test_server_accepts_a_browser_offer():
    # What Chromium and Node's ws send.
    header, agreement = accept_offer(["permessage-deflate; client_max_window_bits"], DEFAULT)
    assert header == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    assert agreement == Agreement(False, False, 12, 12)


def test_server_never_names_client_window_bits_the_client_did_not_offer():
    header, agreement = accept_offer(["permessage-deflate"], DEFAULT)
    assert header == "permessage-deflate; server_max_window_bits=12"
    assert agreement.client_max_window_bits == 15  # the client may use the full window: inflate with it


def test_server_honours_the_offer_parameters():
    offer = (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        'server_max_window_bits=9; client_max_window_bits="10"'
    )
    header, agreement = accept_offer([offer], DEFAULT)
    assert agreement == Agreement(True, True, 9, 10)
    assert header == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=9; client_max_window_bits=10"
    )
    # Full windows when the server allows them; 15 is the default and goes unsaid.
    wide = Compression(server_max_window_bits=15, client_max_window_bits=15)
    assert accept_offer(["permessage-deflate; client_max_window_bits"], wide)[0] == "permessage-deflate"
    # The server's own wishes for context takeover are always granted.
    header, agreement = accept_offer(
        ["permessage-deflate"], Compression(server_no_context_takeover=True, client_no_context_takeover=True)
    )
    assert agreement.server_no_context_takeover and agreement.client_no_context_takeover


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; unknown_param",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=09",
        "permessage-deflate; client_max_window_bits=abc",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=1 0",  # malformed header: declined, not refused
    ],
)
def test_server_declines_an_unacceptable_offer(offer):
    assert accept_offer([offer], DEFAULT) is None


def test_server_takes_the_first_acceptable_offer():
    offers = ["permessage-deflate; bogus, permessage-deflate; server_max_window_bits=10", "permessage-deflate"]
    header, agreement = accept_offer(offers, DEFAULT)
    assert agreement.server_max_window_bits == 10


def test_a_window_of_8_is_agreed_but_never_used_to_compress():
    # zlib can't compress with a 256-byte window: agree (RFC 7692 allows 8) and send uncompressed.
    header, agreement = accept_offer(["permessage-deflate; server_max_window_bits=8"], DEFAULT)
    assert agreement.server_max_window_bits == 8
    ext = PerMessageDeflate(agreement, DEFAULT, client=False, read_limit=1 << 20)
    conn = Connection(ConnectionType.SERVER, [ext])
    assert conn.send(TextMessage(data="a" * 1000))[0] & 0x40 == 0


def headers(*values: str) -> email.message.Message:
    message = email.message.Message()
    for value in values:
        message["Sec-WebSocket-Extensions"] = value
    return message


def test_client_offer_and_response():
    assert build_offer(DEFAULT) == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    assert build_offer(
        Compression(server_max_window_bits=15, client_max_window_bits=15, client_no_context_takeover=True)
    ) == ("permessage-deflate; client_no_context_takeover; client_max_window_bits")
    assert handshake.check_compression(101, headers(), DEFAULT) is None  # declined
    agreement = handshake.check_compression(
        101,
        headers("permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9"),
        DEFAULT,
    )
    assert agreement == Agreement(True, False, 10, 9)
    # A window larger than the client offered for itself is harmless: it compresses with its own.
    assert handshake.check_compression(101, headers("permessage-deflate; client_max_window_bits=15"), DEFAULT)


@pytest.mark.parametrize(
    "response",
    [
        "x-foo",
        "permessage-deflate, permessage-deflate",
        "permessage-deflate; foo",
        "permessage-deflate; server_max_window_bits=13",  # over the 12 offered
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; client_max_window_bits",  # a response must give the value
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate;",
    ],
)
def test_client_refuses_a_bad_response(response):
    with pytest.raises(HandshakeError):
        handshake.check_compression(101, headers(response), DEFAULT)


def test_client_refuses_compression_it_did_not_offer():
    with pytest.raises(HandshakeError, match="did not offer"):
        check_response(["permessage-deflate"], None)


def test_check_request_negotiates_only_when_enabled():
    request = email.message.Message()
    for name, value in [
        ("Host", "example.com"),
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
    ]:
        request[name] = value
    off = handshake.check_request("GET", "HTTP/1.1", request)
    assert off.extensions is None and b"Extensions" not in handshake.build_response(off)
    on = handshake.check_request("GET", "HTTP/1.1", request, compression=DEFAULT)
    assert on.compression == Agreement(False, False, 12, 12)
    assert b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12" in handshake.build_response(on)


def test_compression_settings_are_checked():
    for bad in [
        dict(server_max_window_bits=8),
        dict(client_max_window_bits=16),
        dict(level=10),
        dict(mem_level=0),
        dict(min_size=-1),
    ]:
        with pytest.raises(ValueError):
            Compression(**bad)
    with pytest.raises(TypeError):
        threadws.Upgrader(compression="yes")


def test_memory_per_connection_follows_zlib():
    # Compressor (1 << (bits + 2)) + (1 << (mem_level + 9)) + ~6 KiB; inflater (1 << bits) + ~7 KiB.
    assert DEFAULT.memory(client=False) == (1 << 14) + (1 << 14) + 6 * 1024 + (1 << 12) + 7 * 1024
    assert Compression(server_no_context_takeover=True, client_no_context_takeover=True).memory(client=False) == 0


@pytest.mark.parametrize(
    "config",
    [
        DEFAULT,
        Compression(server_max_window_bits=15, client_max_window_bits=15, mem_level=8),
        Compression(server_no_context_takeover=True, client_no_context_takeover=True),
    ],
    ids=["defaults", "zlib-defaults", "no-context-takeover"],
)
def test_memory_per_connection_measured(config):
    """What one connection's zlib objects hold after a message each way, as tracemalloc sees it."""
    import gc
    import tracemalloc

    agreement = accept_offer([build_offer(config)], config)[1]
    server_ext = PerMessageDeflate(agreement, config, client=False, read_limit=1 << 20)
    client_ext = PerMessageDeflate(agreement, config, client=True, read_limit=1 << 20)
    server = Connection(ConnectionType.SERVER, [server_ext])
    client = Connection(ConnectionType.CLIENT, [client_ext])
    message = json.dumps([{"id": i, "name": f"n{i}"} for i in range(300)])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        server.receive_data(client.send(TextMessage(data=message)))
        client.receive_data(server.send(TextMessage(data=message)))
        for side in (server, client):
            (event,) = side.events()
            assert event.data == message
        del event
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    expected = config.memory(client=False) + config.memory(client=True)  # both ends live in this process
    assert expected * 0.9 - 8192 <= held <= expected * 1.1 + 8192, (held, expected)


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_as_a_plain_wsproto_extension_events_carry_whole_frames(kind):
    """Without hand_over (threadws's Conn sets it), a frame inflating to many steps is one event."""
    config = Compression(server_max_window_bits=15, client_max_window_bits=15)
    agreement = accept_offer([build_offer(config)], config)[1]
    server = Connection(ConnectionType.SERVER, [PerMessageDeflate(agreement, config, client=False, read_limit=1 << 20)])
    client = Connection(ConnectionType.CLIENT, [PerMessageDeflate(agreement, config, client=True, read_limit=1 << 20)])
    data = "aé" * 300_000 if kind == "text" else bytes(range(256)) * 3000  # 900 KB and 768 KB: several steps
    client_event = TextMessage(data=data) if kind == "text" else BytesMessage(data=data)
    server.receive_data(client.send(client_event))
    (event,) = server.events()
    assert type(event) is type(client_event) and event.data == data and event.message_finished


# --- Conn over socketpair against a raw peer -----------------------------------------


def deflate(data: bytes, wbits: int = 15, compressor: Any = None) -> bytes:
    """One message's payload as RFC 7692 section 7.2.1 builds it."""
    c = compressor or zlib.compressobj(9, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def read_frame(sock: socket.socket, timeout: float = 5.0) -> tuple[int, bytes]:
    """One raw frame from threadws: (first header byte, unmasked payload)."""
    sock.settimeout(timeout)

    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            assert chunk, "EOF inside a frame"
            buf += chunk
        return buf

    b0, b1 = exactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", exactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", exactly(8))
    key = exactly(4) if b1 & 0x80 else None
    payload = exactly(n)
    if key:
        payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
    return b0, payload


def inflate(payload: bytes, wbits: int = 15, inflater: Any = None) -> bytes:
    d = inflater or zlib.decompressobj(-wbits)
    return d.decompress(payload + b"\x00\x00\xff\xff")


@pytest.fixture
def dpair() -> Iterator[Callable[..., tuple[threadws.Conn, Peer]]]:
    """(conn, peer) over a socketpair with permessage-deflate agreed; the peer uses wsproto's extension."""
    made: list[tuple[threadws.Conn, Peer]] = []

    def make(role: str, config: Compression = DEFAULT, agreement: Agreement | None = None, **settings: Any):
        settings.setdefault("ping_interval", None)
        settings.setdefault("close_timeout", 2.0)
        settings = Settings(**settings)
        client = role == "client"
        if agreement is None:
            agreement = Agreement(
                config.server_no_context_takeover,
                config.client_no_context_takeover,
                config.server_max_window_bits,
                config.client_max_window_bits,
            )
        ext = PerMessageDeflate(agreement, config, client=client, read_limit=settings.read_limit)
        a, b = socket.socketpair()
        conn = threadws.Conn(a, client=client, settings=settings, extensions=[ext])
        peer = Peer(b, client=not client)
        theirs = WsprotoDeflate()
        theirs.finalize(agreement.header())
        peer.ws = Connection(ConnectionType.CLIENT if peer.client else ConnectionType.SERVER, [theirs])
        made.append((conn, peer))
        return conn, peer

    yield make
    for conn, peer in made:
        conn.abort()
        peer.sock.close()


def expect_failure(conn: threadws.Conn, peer: Peer, code: int) -> str:
    event = peer.expect_close()
    assert event.code == code, event
    assert conn.wait_closed(5)
    with pytest.raises(ConnectionClosedError) as info:
        while True:
            conn.read_message(timeout=5)
    assert info.value.sent is not None and info.value.sent.code == code
    return event.reason


@pytest.mark.parametrize("role", ROLES)
def test_compressed_round_trip(dpair, role):
    conn, peer = dpair(role)
    text = json.dumps({"items": [{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(100)]})
    peer.send(TextMessage(data=text))
    peer.send(BytesMessage(data=os.urandom(3000)))
    peer.send(TextMessage(data="héllo " * 50))
    assert conn.recv(timeout=5) == text
    assert len(conn.recv(timeout=5)) == 3000
    assert conn.recv(timeout=5) == "héllo " * 50
    conn.send(text)
    conn.send(b"\x00" * 5000)
    first, second = peer.next_event(), peer.next_event()
    assert isinstance(first, TextMessage) and first.data == text
    assert isinstance(second, BytesMessage) and second.data == b"\x00" * 5000
    conn.close()


@pytest.mark.parametrize("role", ROLES)
def test_rsv1_marks_compressed_messages_only(dpair, role):
    conn, peer = dpair(role, Compression(min_size=100))
    conn.send("x" * 1000)
    conn.write_message(MessageType.TEXT, "y" * 1000, compress=False)
    conn.send("z" * 99)  # under min_size
    conn.write_message(MessageType.BINARY, b"w" * 100)
    b0, payload = read_frame(peer.sock)
    assert b0 == 0x80 | 0x40 | 1 and len(payload) < 100 and inflate(payload, 12) == b"x" * 1000
    assert read_frame(peer.sock) == (0x81, b"y" * 1000)
    assert read_frame(peer.sock) == (0x81, b"z" * 99)
    b0, payload = read_frame(peer.sock)
    assert b0 == 0xC2 and len(payload) < 100


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("takeover", [True, False])
def test_outbound_context_takeover(dpair, role, takeover):
    nct = not takeover
    config = Compression(server_no_context_takeover=nct, client_no_context_takeover=nct)
    conn, peer = dpair(role, config)
    message = json.dumps([{"user": "someone", "text": "the same words again", "n": i} for i in range(20)])
    conn.send(message)
    conn.send(message)
    inflater = zlib.decompressobj(-12)
    first, second = read_frame(peer.sock)[1], read_frame(peer.sock)[1]
    assert inflate(first, inflater=inflater if takeover else None) == message.encode()
    assert inflate(second, inflater=inflater if takeover else None) == message.encode()
    if takeover:
        assert len(second) < len(first) / 4  # the second refers back to the first
    else:
        assert second == first  # each message stands alone


@pytest.mark.parametrize("role", ROLES)
def test_inbound_context_takeover_and_fragments(dpair, role):
    conn, peer = dpair(role, Compression(server_max_window_bits=15, client_max_window_bits=15))
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    for i in range(3):
        data = f"message {i} ".encode() * 200
        payload = deflate(data, compressor=compressor)
        third = len(payload) // 3
        # RSV1 on the first frame only; a ping may come between the fragments.
        peer.send_raw(peer.frame(1, payload[:third], fin=False, rsv=4))
        peer.send_raw(peer.frame(9, b"mid"))
        peer.send_raw(peer.frame(0, payload[third : 2 * third], fin=False))
        peer.send_raw(peer.frame(0, payload[2 * third :]))
        assert conn.recv(timeout=5) == data.decode()
    # An uncompressed message on the same connection.
    peer.send_raw(peer.frame(2, b"plain"))
    assert conn.recv(timeout=5) == b"plain"


LIMIT = 4096


def limit_frames(peer: Peer, data: bytes, opcode: int, fragmented: bool) -> list[bytes]:
    payload = deflate(data)
    if not fragmented:
        return [peer.frame(opcode, payload, rsv=4)]
    cut = [0, len(payload) // 3, 2 * len(payload) // 3, len(payload)]
    frames = [peer.frame(opcode, payload[cut[0] : cut[1]], fin=False, rsv=4)]
    frames.append(peer.frame(0, payload[cut[1] : cut[2]], fin=False))
    frames.append(peer.frame(0, payload[cut[2] :]))
    return frames


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", ["text", "binary"])
@pytest.mark.parametrize("fragmented", [False, True], ids=["single", "fragmented"])
def test_read_limit_counts_decompressed_bytes_exactly(dpair, role, kind, fragmented):
    conn, peer = dpair(role, read_limit=LIMIT)
    opcode = 1 if kind == "text" else 2
    # Exactly the limit, with a multi-byte character for text: accepted.
    exact = ("é" * 10 + "a" * (LIMIT - 20)).encode() if kind == "text" else b"b" * LIMIT
    assert len(exact) == LIMIT
    for raw in limit_frames(peer, exact, opcode, fragmented):
        peer.send_raw(raw)
    got = conn.recv(timeout=5)
    assert (got.encode() if kind == "text" else got) == exact
    # One byte more: refused with 1009.
    for raw in limit_frames(peer, exact + b"c", opcode, fragmented):
        peer.send_raw(raw)
    reason = expect_failure(conn, peer, CloseCode.MESSAGE_TOO_BIG)
    assert reason == f"message too big (limit {LIMIT} bytes)"


@pytest.mark.parametrize("role", ROLES)
def test_set_read_limit_applies_to_inflating(dpair, role):
    conn, peer = dpair(role, read_limit=1 << 20)
    conn.set_read_limit(1000)
    peer.send_raw(peer.frame(2, deflate(b"\x00" * 1001), rsv=4))
    expect_failure(conn, peer, CloseCode.MESSAGE_TOO_BIG)


@pytest.mark.parametrize("role", ROLES)
def test_small_frame_inflating_past_the_limit_is_1009(dpair, role):
    conn, peer = dpair(role, read_limit=1 << 20)
    payload = deflate(b"\x00" * (10 << 20))  # ~10 KB on the wire, 10 MiB inflated
    assert len(payload) < 11_000
    peer.send_raw(peer.frame(2, payload, rsv=4))
    expect_failure(conn, peer, CloseCode.MESSAGE_TOO_BIG)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xff\xff\xff\xff", id="invalid-block-type"),
        pytest.param(deflate(b"x" * 5000)[:-20] + b"\xff" * 30, id="corrupt-tail"),
    ],
)
def test_garbage_deflate_data_is_1007(dpair, role, payload):
    conn, peer = dpair(role)
    peer.send_raw(peer.frame(1, payload, rsv=4))
    assert expect_failure(conn, peer, CloseCode.INVALID_PAYLOAD_DATA) == "invalid compressed data"


@pytest.mark.parametrize("role", ROLES)
def test_window_larger_than_agreed_is_1007(dpair, role):
    # Agreed: the peer compresses with at most 512 bytes of window; it uses 32 KiB.
    conn, peer = dpair(role, Compression(server_max_window_bits=9, client_max_window_bits=9))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = os.urandom(2000)
    peer.send_raw(peer.frame(2, deflate(data, compressor=compressor), rsv=4))
    assert conn.recv(timeout=5) == data
    # The same bytes again: the peer refers 2000 bytes back, past the window we keep.
    peer.send_raw(peer.frame(2, deflate(data, compressor=compressor), rsv=4))
    expect_failure(conn, peer, CloseCode.INVALID_PAYLOAD_DATA)


@pytest.mark.parametrize("role", ROLES)
def test_compressed_invalid_utf8_is_1007(dpair, role):
    conn, peer = dpair(role)
    peer.send_raw(peer.frame(1, deflate(b"ok \xff\xfe"), rsv=4))
    expect_failure(conn, peer, CloseCode.INVALID_PAYLOAD_DATA)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("fragmented", [False, True], ids=["single", "fragmented"])
def test_large_compressed_text_spans_inflate_steps(dpair, role, fragmented):
    # 3-byte units: the 256 KiB inflate steps cut characters in two, which must not matter.
    data = ("aé" * 300_000).encode()
    conn, peer = dpair(role, read_limit=len(data))
    for raw in limit_frames(peer, data, 1, fragmented):
        peer.send_raw(raw)
    assert conn.recv(timeout=5) == data.decode()
    # Streamed, it arrives in pieces of a step (plus the few bytes of a character
    # a step cut in two), never as one block.
    for raw in limit_frames(peer, data, 1, fragmented):
        peer.send_raw(raw)
    kind, reader = conn.next_reader(timeout=5)
    assert kind == MessageType.TEXT
    chunks = list(reader)
    assert b"".join(chunks) == data
    assert len(chunks) >= 3 and max(map(len, chunks)) <= 256 * 1024 + 3


@pytest.mark.parametrize("role", ROLES)
def test_compressed_invalid_utf8_fails_before_the_message_ends(dpair, role):
    conn, peer = dpair(role)
    # The first fragment inflates to bytes that can never become UTF-8; the rest never comes.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(b"fine so far \xc3\x28") + compressor.flush(zlib.Z_SYNC_FLUSH)
    peer.send_raw(peer.frame(1, first, fin=False, rsv=4))
    expect_failure(conn, peer, CloseCode.INVALID_PAYLOAD_DATA)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(lambda p: [p.frame(9, b"ping", rsv=4)], id="rsv1-on-ping"),
        pytest.param(
            lambda p: [p.frame(1, deflate(b"ab")[:1], fin=False, rsv=4), p.frame(0, deflate(b"ab")[1:], rsv=4)],
            id="rsv1-on-continuation",
        ),
    ],
)
def test_rsv1_misuse_is_1002(dpair, role, frames):
    conn, peer = dpair(role)
    for raw in frames(peer):
        peer.send_raw(raw)
    expect_failure(conn, peer, CloseCode.PROTOCOL_ERROR)


BOMB_SCRIPT = textwrap.dedent(
    """
    import socket, sys, threading, time, zlib
    sys.path.insert(0, {root!r})
    import threadws
    from threadws.compression import Agreement, Compression, PerMessageDeflate
    from threadws.connection import Settings
    from tests.conftest import frame

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    limit = {limit}
    # 1 GiB of zeros: deflate's best ratio is about 1030:1, so ~1 MB on the wire.
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    parts = [c.compress(zeros) for _ in range(1024)]
    parts.append(c.flush(zlib.Z_SYNC_FLUSH))
    payload = b"".join(parts)[:-4]
    del parts, zeros
    raw = frame(2, payload, rsv=4, mask={mask})
    a, b = socket.socketpair()
    config = Compression(server_max_window_bits=15, client_max_window_bits=15)
    ext = PerMessageDeflate(Agreement(), config, client={client}, read_limit=limit)
    conn = threadws.Conn(a, client={client}, settings=Settings(read_limit=limit, ping_interval=None), extensions=[ext])
    sender = threading.Thread(target=b.sendall, args=(raw,))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    before = status("VmRSS")
    sender.start()
    try:
        conn.read_message(timeout=60)
        print("NO ERROR")
    except threadws.ConnectionClosed as exc:
        print("CODE", int(exc.sent.code) if exc.sent else None)
    print("WIRE", len(raw))
    print("GROWTH", status("VmHWM") - before)
    b.close()
    sender.join(10)
    """
)


@pytest.mark.parametrize("role", ROLES)
def test_bomb_is_refused_with_bounded_memory(role):
    """A 1 GiB bomb (about 1 MB on the wire) against a 16 MiB read limit: 1009, and the
    process's peak resident memory grows by less than the limit plus a few MiB."""
    limit = 16 << 20
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = BOMB_SCRIPT.format(root=root, limit=limit, client=role == "client", mask=role == "server")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert out["CODE"] == "1009", proc.stdout
    growth = int(out["GROWTH"])
    print(f"bomb of {out['WIRE']} bytes on the wire: peak grew by {growth / (1 << 20):.1f} MiB (limit 16 MiB)")
    assert growth < limit + (4 << 20), f"peak grew by {growth} bytes"


# --- loopback ---------------------------------------------------------------------


def echo(conn: threadws.Conn) -> None:
    for message in conn:
        conn.send(message)


@pytest.mark.parametrize(
    ("server_side", "client_side", "agreed"),
    [
        (True, True, True),
        (None, True, False),
        (True, None, False),
        (Compression(server_no_context_takeover=True, client_no_context_takeover=True), True, True),
    ],
)
def test_loopback(server_side, client_side, agreed):
    server = start_server(echo, upgrader=threadws.Upgrader(ping_interval=None, compression=server_side))
    try:
        with threadws.dial(url_of(server), compression=client_side) as conn:
            header = conn.response_headers.get("Sec-WebSocket-Extensions")
            assert (header is not None) == agreed
            for message in ["short", json.dumps({"k": list(range(1000))}), b"\x01" * 70000, ""]:
                conn.send(message)
                assert conn.recv(timeout=5) == message
    finally:
        stop_server(server)


@pytest.mark.parametrize("takeover", [False, True])
def test_prepared_message_compressed_once_without_context_takeover(dpair, takeover):
    config = Compression(server_no_context_takeover=not takeover)
    text = json.dumps({"items": list(range(300))})
    prepared = threadws.PreparedMessage(threadws.MessageType.TEXT, text)
    frames = []
    for _ in range(2):
        conn, peer = dpair("server", config)
        conn.write_prepared(prepared)
        conn.write_prepared(prepared)
        first, second = read_frame(peer.sock), read_frame(peer.sock)
        assert first[0] & 0x40 and second[0] & 0x40  # RSV1: compressed
        inflater = zlib.decompressobj(-config.server_max_window_bits)
        assert inflate(first[1], inflater=inflater).decode() == text
        assert inflate(second[1], inflater=inflater).decode() == text
        frames.append((first, second))
    if takeover:
        # Each connection's compressor remembers the first copy: the second is tiny.
        assert len(frames[0][1][1]) < len(frames[0][0][1]) // 4
    else:
        # Compressed once: the same bytes for every message on every connection.
        assert frames[0][0] == frames[0][1] == frames[1][0] == frames[1][1]
