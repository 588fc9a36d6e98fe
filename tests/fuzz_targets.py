"""Fuzz targets: the frame path (:meth:`threadws.protocol.Protocol.receive`) and the handshake path.

Each target takes one input, any bytes, and raises (an AssertionError for a
broken invariant, or whatever escaped threadws) on a defect. tests/test_fuzz.py
runs them under atheris (coverage-guided, libFuzzer) in a subprocess with a
fixed budget, and under hypothesis in-process; its docstring has the commands
for a longer run (``python -m tests.fuzz_targets TARGET [libFuzzer options]
[corpus]``, from the repository's root).

Input layouts
-------------
``protocol``: byte 0 holds flags (bit 0: the client role; bit 1:
permessage-deflate; bit 2: hand ``receive`` a memoryview over a bytearray, as
the connection's reader does, instead of bytes; bits 3-4: the deflate
agreement), byte 1 seeds where the stream is cut into reads (0: one read),
bytes 2-3 are the read limit (big-endian; 0 means 1 MiB: the fuzzer can
steer it to any message's size, and one byte either side), and the rest is
the stream from the peer.

``server``: byte 0 holds flags (the Upgrader's settings and the head limits),
the rest is what a client sends: it goes through a socketpair into
``read_head``, the request line and headers are parsed as the server does
(``http.server``), then ``check_request`` and the response builders run.

``client``: byte 0 holds flags (method, offered subprotocols and compression,
body limit), the rest is what a server answers: it goes through a socketpair
into ``read_response``, and a 101 is checked with ``check_response`` as
``dial`` does.
"""

from __future__ import annotations

import http.client
import http.server
import io
import random
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

if __name__ == "__main__":
    import atheris

    # Coverage for libFuzzer: instrument the code under test as it is imported.
    with atheris.instrument_imports(include=["threadws", "wsproto", "h11"]):
        from threadws import handshake, protocol
        from threadws._http import read_head
        from threadws._net import Deadline, read_response
        from threadws.compression import Agreement, Compression, PerMessageDeflate
        from threadws.enums import CloseCode, MessageType
        from threadws.exceptions import HandshakeError
else:
    from threadws import handshake, protocol
    from threadws._http import read_head
    from threadws._net import Deadline, read_response
    from threadws.compression import Agreement, Compression, PerMessageDeflate
    from threadws.enums import CloseCode, MessageType
    from threadws.exceptions import HandshakeError

# --- the frame path ---------------------------------------------------------------

AGREEMENTS = (
    (Agreement(False, False, 12, 12), Compression()),
    (Agreement(False, False, 15, 15), Compression(server_max_window_bits=15, client_max_window_bits=15)),
    (Agreement(True, True, 15, 15), Compression(server_max_window_bits=15, client_max_window_bits=15)),
    (Agreement(False, True, 9, 9), Compression(server_max_window_bits=9, client_max_window_bits=9)),
)
#: The codes a Failure may carry: a protocol error, bad data (UTF-8 or deflate),
#: a policy (too many fragments), too big.
FAILURE_CODES = {
    CloseCode.PROTOCOL_ERROR,
    CloseCode.INVALID_PAYLOAD_DATA,
    CloseCode.POLICY_VIOLATION,
    CloseCode.MESSAGE_TOO_BIG,
}
#: The most one inflate step produces (threadws.compression's _INFLATE_STEP).
INFLATE_STEP = 256 * 1024


def cuts(stream: bytes, seed: int) -> list[bytes]:
    """*stream* cut into reads of 1 to 4096 bytes, decided by *seed* (0: one read)."""
    if seed == 0:
        return [stream]
    rng = random.Random(seed)
    sizes = (1, 1, 2, 3, 5, 8, 13, 100, 4096)
    out = []
    i = 0
    while i < len(stream):
        n = rng.choice(sizes)
        out.append(stream[i : i + n])
        i += n
    return out


def make_protocol(client: bool, deflate: int | None, read_limit: int, fast: bool = True) -> protocol.Protocol:
    """A Protocol for one side; *deflate* picks an agreement from AGREEMENTS (None: no extension)."""
    extensions = []
    if deflate is not None:
        agreement, config = AGREEMENTS[deflate]
        extensions.append(PerMessageDeflate(agreement, config, client=client, read_limit=read_limit))
    return protocol.Protocol(client=client, extensions=extensions, read_limit=read_limit, fast=fast)


class Checker:
    """Feeds one Protocol read by read and checks every event against the invariants.

    ``log`` collects the normalised events: whole messages (chunks joined),
    pings, pongs, the close frame and the failure, for comparing two runs.
    """

    def __init__(self, proto: protocol.Protocol, read_limit: int, compressed: bool, views: bool) -> None:
        self.proto = proto
        self.read_limit = read_limit
        self.compressed = compressed
        self.views = views
        self.log: list[tuple[Any, ...]] = []
        self.ended = False
        self.parts: list[Any] = []  # the data of the message arriving in chunks
        self.kind: MessageType | None = None
        self.size = 0  # its size so far, in bytes as counted by the events

    @property
    def partial(self) -> bytes:
        """The bytes of the message still arriving (or cut short by the end)."""
        return b"".join(p.encode() if isinstance(p, str) else p for p in self.parts)

    def feed(self, chunk: bytes) -> list[protocol.Event]:
        if self.views:
            buf = bytearray(chunk)
            events = list(self.proto.receive(memoryview(buf), buf))
        else:
            events = list(self.proto.receive(chunk))
        # Bounded work: an event needs at least one new byte (a frame ends at
        # one, a read that ends mid-frame yields at most one chunk); inflating
        # may yield a few more pieces per read; a failure ends it all.
        bound = len(chunk) + 1 + (self.read_limit // INFLATE_STEP + 1 if self.compressed else 0)
        assert len(events) <= bound, (len(events), len(chunk))
        for event in events:
            self.check(event)
        return events

    def check(self, event: protocol.Event) -> None:
        assert not self.ended, f"{event!r} after the close frame or the failure"
        kind = type(event)
        limit = self.read_limit
        if kind is protocol.Message:
            assert self.kind is None, "a whole message inside a message arriving in chunks"
            self.check_data(event.kind, event.data, event.size)
            assert event.size <= limit
            if event.kind is MessageType.TEXT:
                assert len(event.data.encode()) == event.size
            self.log.append(("message", event.kind, event.data))
        elif kind is protocol.Chunk:
            if self.kind is None:
                self.kind = event.kind
            assert event.kind is self.kind, "a message changed its type"
            self.check_data(event.kind, event.data, event.size)
            self.size += event.size
            assert self.size <= limit, f"{self.size} bytes of one message delivered, limit {limit}"
            self.parts.append(event.data)
            if event.fin:
                data = "".join(self.parts) if self.kind is MessageType.TEXT else b"".join(self.parts)
                if self.kind is MessageType.TEXT:
                    assert len(data.encode()) == self.size
                self.log.append(("message", self.kind, data))
                self.parts, self.kind, self.size = [], None, 0
        elif kind is protocol.Ping or kind is protocol.Pong:
            assert type(event.payload) is bytes and len(event.payload) <= 125
            self.log.append((kind.__name__.lower(), event.payload))
        elif kind is protocol.CloseFrame:
            self.ended = True
            assert event.code == CloseCode.NO_STATUS_RCVD or 1000 <= event.code <= 4999, event.code
            assert isinstance(event.reason, str) and isinstance(event.answer, bool)
            assert not self.proto.can_send_data
            answer = self.proto.send_close(event.code, "")  # what the connection does next
            assert answer is None or (type(answer) is bytes and len(answer) <= 8)
            self.log.append(("close", event.code, event.reason, event.answer))
        elif kind is protocol.Failure:
            self.ended = True
            assert event.code in FAILURE_CODES, event.code
            assert isinstance(event.reason, str) and isinstance(event.detail, str)
            frame = self.proto.send_close(event.code, event.reason)  # the connection fails with it
            assert type(frame) is bytes and len(frame) <= 2 + 4 + 125
            self.log.append(("failure", int(event.code)))
        else:
            raise AssertionError(f"unknown event {event!r}")

    def check_data(self, kind: MessageType, data: Any, size: int) -> None:
        assert kind in (MessageType.TEXT, MessageType.BINARY)
        assert 0 <= size <= self.read_limit
        if kind is MessageType.TEXT:
            assert type(data) is str
            # A compressed text piece may hold back the start of a character for the next.
            assert len(data.encode()) <= size + 3
        else:
            assert type(data) is bytes and len(data) == size


def protocol_target(data: bytes) -> None:
    """The frame path: any stream, cut anywhere, for either role, with and without compression."""
    if len(data) < 4:
        return
    flags, seed, stream = data[0], data[1], data[4:]
    client = bool(flags & 1)
    compressed = bool(flags & 2)
    views = bool(flags & 4)
    deflate = (flags >> 3) % len(AGREEMENTS) if compressed else None
    read_limit = int.from_bytes(data[2:4], "big") or 1 << 20
    reads = cuts(stream, seed)
    runs = [Checker(make_protocol(client, deflate, read_limit), read_limit, compressed, views)]
    if not compressed:
        # The same reads through Protocol(fast=False), every frame through wsproto: the same events.
        runs.append(Checker(make_protocol(client, None, read_limit, fast=False), read_limit, False, views))
    for chunk in reads:
        for run in runs:
            run.feed(chunk)
    for run in runs:
        if run.ended:
            assert not list(run.proto.receive(b"\x81\x00\x82\x00")), "input after the end was not ignored"
    if len(runs) == 2:
        assert_same_events(*runs)



def assert_same_events(fast: Checker, slow: Checker) -> None:
    """The fast path's run and wsproto's, over the same reads, gave the same events.

    Compared after normalisation: a message's chunks joined (when they come
    differs by design: a short frame cut by a read waits to be parsed whole),
    failures by code (a 1007's reason quotes Python's decoder on what each
    side decoded at once, so positions differ).
    """
    assert fast.log == slow.log, (fast.log, slow.log)
    # A message cut short by a failure or the end: each side delivered some of its start.
    a, b = fast.partial, slow.partial
    assert a.startswith(b) or b.startswith(a), (a, b)


# --- the handshake path -----------------------------------------------------------------

SUBPROTOCOLS = (["chat", "superchat"], [])


class _Head(http.server.BaseHTTPRequestHandler):
    """http.server's request parsing, as the server runs it, on a head already read."""

    def __init__(self, head: bytes) -> None:  # no socket: only parse_request is used
        line, _, fields = head.partition(b"\r\n")
        self.raw_requestline = line + b"\r\n"
        self.rfile = io.BytesIO(fields + b"\r\n\r\n" if fields else b"\r\n")
        self.wfile = io.BytesIO()
        self.client_address = ("127.0.0.1", 0)
        self.request_version = self.default_request_version
        self.command = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _origin_check(origin: str, headers: Any) -> bool:
    return origin.endswith(".example")


def server_target(data: bytes) -> None:
    """What a client sends, through read_head, http.server's parser and check_request.

    Only HandshakeError may come out (the peer's bytes end with EOF, so a
    TimeoutError would mean a wait past the end: a hang).
    """
    if not data:
        return
    flags, raw = data[0], data[1:]
    max_line, max_head = ((64, 256), (8192, 16384))[flags & 1]
    a, b = socket.socketpair()
    try:
        b.sendall(raw)
        b.shutdown(socket.SHUT_WR)
        try:
            # Past libFuzzer's -timeout, so that a wait past EOF shows up as a hang.
            head, rest = read_head(a, time.monotonic() + 30, max_line=max_line, max_head=max_head)
        except HandshakeError as exc:
            handshake.build_error_response(exc)
            return
    finally:
        a.close()
        b.close()
    # The head, its blank line, then what followed it as far as it was read: nothing lost.
    assert raw.startswith(head + b"\r\n\r\n" + rest)
    line = head.partition(b"\r\n")[0]
    if len(line.split()) != 3:
        return  # the server refuses it before http.server sees it
    parsed = _Head(head)
    try:
        if not parsed.parse_request():
            return  # http.server answered 400 itself
    except http.client.HTTPException:
        return  # so does the server (too many or too long headers)
    check_origin: Any = (None, ["https://ok.example"], _origin_check, None)[(flags >> 1) & 3]
    try:
        accepted = handshake.check_request(
            parsed.command,
            parsed.request_version,
            parsed.headers,
            check_origin=check_origin,
            subprotocols=SUBPROTOCOLS[(flags >> 3) & 1],
            compression=(None, Compression())[(flags >> 4) & 1],
        )
    except HandshakeError as exc:
        handshake.build_error_response(exc)
        return
    response = handshake.build_response(accepted)
    assert response.startswith(b"HTTP/1.1 101 ") and response.endswith(b"\r\n\r\n")


CLIENT_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3's example; its accept is s3pPL...


def client_target(data: bytes) -> None:
    """What a server answers, through read_response and, for a 101, check_response.

    Only HandshakeError may come out (the bytes end with EOF: see server_target).
    """
    if not data:
        return
    flags, raw = data[0], data[1:]
    method = ("GET", "CONNECT")[flags & 1]
    compression = (None, Compression())[(flags >> 1) & 1]
    subprotocols = SUBPROTOCOLS[(flags >> 2) & 1]
    max_head, max_body = ((128, 16), (65536, 65536))[(flags >> 3) & 1]
    headers = [("Host", "example.com"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]
    a, b = socket.socketpair()
    try:
        b.sendall(raw)
        b.shutdown(socket.SHUT_WR)
        try:
            response = read_response(
                a, Deadline(30, "fuzz"), method, "/", headers, max_head=max_head, max_body=max_body
            )
        except HandshakeError:
            return
    finally:
        a.close()
        b.close()
    assert len(response.body) <= max_body
    assert response.trailing in raw  # the start of the WebSocket stream, as received
    # What an error message quotes of a refusal.
    assert response.status_line.startswith("HTTP/") and "\n" not in response.excerpt()
    if response.status != 101:
        return
    message = http.client.HTTPMessage()
    for name, value in response.headers:
        message[name] = value  # as dial does: repeated headers stay repeated
    try:
        handshake.check_response(101, message, CLIENT_KEY, subprotocols, compression)
        handshake.check_compression(101, message, compression)
    except HandshakeError:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "protocol": protocol_target,
    "server": server_target,
    "client": client_target,
}


# --- seeds: one valid input of each kind, for the fuzzer to start from -------------------


#: The masking key seeds use instead of a fresh random one: the same seeds, the same run.
SEED_KEY = b"\x5a\xc3\x0f\x96"


def _fixed_key(frame: bytes) -> bytes:
    """One whole frame, masked with SEED_KEY if it was masked at all."""
    if not frame[1] & 0x80:
        return frame
    n = frame[1] & 0x7F
    i = 2 + (2 if n == 126 else 8 if n == 127 else 0)
    key = frame[i : i + 4]
    return frame[:i] + SEED_KEY + bytes(b ^ key[j % 4] ^ SEED_KEY[j % 4] for j, b in enumerate(frame[i + 4 :]))


def _peer_frames(client: bool, deflate: int | None) -> bytes:
    """Frames the other side sends (every kind), built by threadws itself."""
    peer = make_protocol(not client, deflate, 1 << 20)
    out = [
        peer.frame(peer.check(MessageType.TEXT, "héllo wörld " * 3)),
        peer.frame(peer.check(MessageType.TEXT, "x" * 130)),  # a 16-bit length
        peer.send_ping(b"ping"),
        peer.send_fragment(True, "frag", False),
        peer.send_pong(b""),
        peer.send_fragment(True, "ment€", True),
        peer.frame(peer.check(MessageType.BINARY, bytes(range(200)))),
    ]
    closing = peer.send_close(1000, "bye")
    assert closing is not None
    out.append(closing)
    return b"".join(_fixed_key(frame) for frame in out)


def seeds() -> Iterator[tuple[str, bytes]]:
    """(target, input) pairs: valid streams and heads that reach deep into each target."""
    for client in (0, 1):
        for deflate in (None, *range(len(AGREEMENTS))):
            stream = _peer_frames(bool(client), deflate)
            for views in (0, 1):
                # 1 MiB; the 130-byte message exactly at the limit; one byte over it.
                for limit in (0, 130, 129):
                    flags = client | (deflate is not None) << 1 | views << 2 | (deflate or 0) << 3
                    for seed in (0, 77):
                        yield "protocol", bytes([flags, seed]) + limit.to_bytes(2, "big") + stream
    for client in (0, 1):
        # The start of a frame over 4 KiB (the fast path streams it): text, then binary.
        peer = make_protocol(not client, None, 1 << 20)
        text = _fixed_key(peer.frame(peer.check(MessageType.TEXT, "ab€" * 1100)))[:700]
        binary = _fixed_key(peer.frame(peer.check(MessageType.BINARY, bytes(range(256)) * 20)))[:700]
        for views in (0, 1):
            for seed in (0, 77):
                flags = client | views << 2
                yield "protocol", bytes([flags, seed, 0, 0]) + text
                yield "protocol", bytes([flags, seed, 0, 0]) + binary
    request = (
        b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Origin: https://ok.example\r\nSec-WebSocket-Protocol: chat, other\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n\x81\x80abcd"
    )
    same_origin = request.replace(b"https://ok.example", b"http://example.com")
    # Flags: big limits (1), each origin check (2, 4, 6), subprotocols (8), compression (16).
    for flags in (0, 1, 3, 5, 7, 9, 11, 19, 21, 27, 29):
        yield "server", bytes([flags]) + request
        yield "server", bytes([flags]) + same_origin
    switching = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n\r\n\x81\x02hi"
    )
    refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nforbidden"
    chunked = b"HTTP/1.1 302 Found\r\nLocation: /x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nmoved\r\n0\r\n\r\n"
    tunnel = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Connection established\r\n\r\n\x16\x03"
    for flags in (0, 2, 4, 6, 8, 14):
        for answer in (switching, refusal, chunked):
            yield "client", bytes([flags]) + answer
    yield "client", bytes([1]) + tunnel


def main(argv: list[str]) -> None:
    """``python -m tests.fuzz_targets TARGET [libFuzzer options] [corpus dirs]``; ``seeds DIR`` writes the seeds."""
    name = argv[1]
    if name == "seeds":
        import pathlib

        root = pathlib.Path(argv[2])
        for i, (target, data) in enumerate(seeds()):
            folder = root / target
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"seed-{i}").write_bytes(data)
        return
    target = TARGETS[name]
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
