"""The WebSocket protocol (RFC 6455, RFC 7692) as pure computation: bytes in, events out; messages in, bytes out.

What it owns
------------
One :class:`Protocol` per connection holds everything that turns bytes into
events and messages into bytes:

* **wsproto**, the protocol engine: every control frame, every fragment, every
  frame with reserved bits or an extension, every error, and the closing
  handshake's state.
* **the fast path** for the one frame shape that makes up nearly all traffic, a
  whole unfragmented text or binary frame on a connection without extensions:
  wsproto's general machinery (generators, event objects, a buffer that
  copies) costs several times the rest of an echo, so such frames are parsed
  and built here (with :mod:`threadws._frames`). wsproto is always handed whole
  frames, or the start of one and then exactly its rest, so its state stays
  exact: it is at a frame boundary whenever the fast path parses, and the fast
  path knows whether it is inside a fragmented message (then every data frame
  goes to wsproto). The two parsers give the same events, close codes
  included; ``tests/test_protocol.py`` holds them to it.
* **permessage-deflate**, through :class:`threadws.compression.PerMessageDeflate`,
  which wsproto drives frame by frame. Inflated data skips wsproto (which would
  copy it twice) and comes out here in bounded pieces that are never joined,
  so a decompression bomb costs at most the read limit plus one step.

What it must never do
---------------------
No threads, locks, queues, sockets, clocks, callbacks or logging. It returns
what happened; the connection (:mod:`threadws.connection`) decides what to do
about it. It is not thread-safe: the connection serialises every call on one
lock, and :meth:`Protocol.receive` is a generator that must be advanced under
that lock too (it touches wsproto), one event at a time, so that a reader that
blocks on a full queue between two events holds no lock.

Events
------
:class:`Message` (a whole message), :class:`Chunk` (the next part of a message
that arrives over several frames or reads; text is delivered as ``str``,
already validated as UTF-8), :class:`Ping`, :class:`Pong`, :class:`CloseFrame`
(the peer's close frame) and :class:`Failure` (the peer broke the protocol or a
limit: the connection must be failed with its code). After a
:class:`CloseFrame` or a :class:`Failure`, input is ignored.
"""

from __future__ import annotations

import codecs
from collections.abc import Hashable, Iterator, Sequence
from typing import Any, Union

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping as WsPing, Pong as WsPong, TextMessage
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameProtocol
from wsproto.utilities import LocalProtocolError

from ._frames import (
    FIN_BINARY, FIN_TEXT, INT_XOR_MAX, MASK_BIT, SplitFrame, as_bytes, build_frame, rotate, unmask, unmask_into,
)
from .compression import PerMessageDeflate
from .enums import CloseCode, MessageType, check_close_code

__all__ = [
    "Chunk",
    "CloseFrame",
    "Event",
    "Failure",
    "Message",
    "Outgoing",
    "Ping",
    "Pong",
    "Protocol",
    "ProtocolClosed",
    "parse_close_payload",
]

#: A plain frame up to this long that a read cut short waits to be parsed whole;
#: a longer one is delivered in chunks as it arrives.
_PENDING_MAX = 4096
#: The longest frame header: 2 bytes, an 8-byte length, a 4-byte masking key.
_MAX_HEADER = 14


def _frame_length(head: bytes) -> int | None:
    """The whole length of the frame *head* begins (header and payload); None until the length is in it."""
    n = head[1] & 0x7F
    size = 2 if n == 126 else 8 if n == 127 else 0
    if len(head) < 2 + size:
        return None
    if size:
        n = int.from_bytes(head[2 : 2 + size], "big")
    return 2 + size + (4 if head[1] & 0x80 else 0) + n
_utf8_decoder = codecs.getincrementaldecoder("utf-8")

Data = Union[str, bytes]


class Message:
    """A whole message: *data* is ``str`` for text, ``bytes`` for binary; *size* its length in bytes."""

    __slots__ = ("data", "kind", "size")

    def __init__(self, kind: MessageType, data: Data, size: int) -> None:
        self.kind = kind
        self.data = data
        self.size = size


class Chunk:
    """The next part of a message that arrives over several frames or reads; *fin* on its last."""

    __slots__ = ("data", "fin", "kind", "size")

    def __init__(self, kind: MessageType, data: Data, fin: bool, size: int) -> None:
        self.kind = kind
        self.data = data
        self.fin = fin
        self.size = size


class Ping:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Pong:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class CloseFrame:
    """The peer's close frame; *answer* is False when it answers ours (we closed first)."""

    __slots__ = ("answer", "code", "reason")

    def __init__(self, code: int, reason: str, answer: bool) -> None:
        self.code = code
        self.reason = reason
        self.answer = answer


class Failure:
    """The peer broke the protocol or a limit: fail the connection with *code* and *reason*.

    *detail* says what happened, for the :class:`~threadws.ConnectionClosed` that follows.
    """

    __slots__ = ("code", "detail", "reason")

    def __init__(self, code: int, reason: str, detail: str) -> None:
        self.code = code
        self.reason = reason
        self.detail = detail


Event = Union[Message, Chunk, Ping, Pong, CloseFrame, Failure]

#: A message checked by :meth:`Protocol.check`: its frame already, or what the
#: protocol still has to frame under the caller's lock (:meth:`Protocol.frame`).
Outgoing = Union[bytes, SplitFrame, TextMessage, BytesMessage]


def parse_close_payload(data: bytes) -> tuple[int, str]:
    """A close frame's payload (RFC 6455 section 5.5.1) as ``(code, reason)``; empty is 1005.

    Raises:
        ValueError: one byte, a code that may not be sent, or a reason that isn't UTF-8.
    """
    if len(data) == 1:
        raise ValueError("close payload must be empty or a 2-byte code and a reason")
    if not data:
        return CloseCode.NO_STATUS_RCVD, ""
    code = int.from_bytes(data[:2], "big")
    check_close_code(code)
    try:
        return code, data[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("close reason is not valid UTF-8") from None


class ProtocolClosed(Exception):
    """The frame can't be sent any more: a close frame went out (or came in) already."""


class Protocol:
    """One connection's protocol state; see the module documentation.

    Args:
        client: which side this is (a client masks its frames and expects
            unmasked ones; a server the reverse).
        extensions: what the handshake negotiated (permessage-deflate, built
            by :mod:`threadws.compression`).
        read_limit: the longest message accepted, in bytes, decompressed.
        max_fragments: the most frames one message may arrive in (past it, a
            Failure with 1008).
        fast: False sends every frame through wsproto, fast-path shapes
            included (for checking the fast path against wsproto).
    """

    def __init__(
        self,
        *,
        client: bool,
        extensions: Sequence[Extension] = (),
        read_limit: int = 1 << 20,
        max_fragments: int = 4096,
        fast: bool = True,
    ) -> None:
        self.client = client
        self._ws = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER, list(extensions))
        self._deflate = next((e for e in extensions if isinstance(e, PerMessageDeflate)), None)
        if self._deflate is not None:
            self._deflate.hand_over = True  # inflated pieces come to us, not through wsproto
        # No extension: whole data frames take the fast path.
        self._plain = not any(e.enabled() for e in extensions)
        self._fast = fast and self._plain
        self._read_limit = 0
        self.read_limit = read_limit
        self.max_fragments = max_fragments
        self._fragments = 0  # frames of the message wsproto is receiving
        self._in_mask_bit = 0 if client else MASK_BIT  # a client's frames must be masked, a server's not
        self._done = False  # a close frame or a failure came: input is ignored
        # The fast path's parsing state.
        self._ws_owed = 0  # bytes of a frame begun in wsproto that it still needs
        self._ws_head = b""  # a header begun in wsproto whose length we don't know yet
        self._ws_mid = False  # wsproto is inside a fragmented message
        self._pending = b""  # the start of a short plain frame split across reads
        self._long_left = 0  # payload bytes still to come of a long plain frame
        self._long_key: bytes | None = None  # its masking key, rotated to the next byte
        self._long_type = MessageType.BINARY
        self._long_decoder: codecs.IncrementalDecoder | None = None  # for a text frame
        # A message that arrives in chunks: its size so far, the read limit when
        # it began, and a decoder for compressed text.
        self._msg_size = 0
        self._msg_limit = read_limit
        self._in_message = False
        self._inflated_decoder: codecs.IncrementalDecoder | None = None

    @property
    def read_limit(self) -> int:
        """The longest message accepted, in bytes (decompressed); past it a Failure with 1009.

        A change applies from the next message on.
        """
        return self._read_limit

    @read_limit.setter
    def read_limit(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("read limit must be positive")
        self._read_limit = limit
        if self._deflate is not None:
            self._deflate.read_limit = limit  # it bounds inflating by the same limit

    @property
    def can_send_data(self) -> bool:
        """False once a close frame went out or came in."""
        return self._ws.state is ConnectionState.OPEN

    # --- inbound ------------------------------------------------------------------

    def receive(self, data: Any, buf: bytearray | None = None) -> Iterator[Event]:
        """The events in *data*, the next bytes from the peer, one at a time.

        Exhaust the generator before the next call. *buf*, if given, is the
        writable buffer *data* views from its start: long payloads are unmasked
        there, in place (so it must not be reused until the generator is done).
        """
        if self._done:
            return
        end = len(data)
        i = 0
        if self._long_left:
            i = min(self._long_left, end)
            event = self._long_chunk(data, buf, 0, i)
            if event is not None:
                yield event
                if self._done:
                    return
        elif self._ws_head:
            # wsproto has the start of a frame's header: feed it the rest of that frame.
            head = self._ws_head + bytes(data[:_MAX_HEADER])
            total = _frame_length(head)
            if total is None:  # still not the whole length: all of it is wsproto's
                self._ws_head = head[: len(self._ws_head) + end]
                yield from self._feed_ws(data)
                return
            owed = total - len(self._ws_head)
            self._ws_head = b""
            i = min(owed, end)
            self._ws_owed = owed - i
            yield from self._feed_ws(data[:i])
        elif self._ws_owed:
            i = min(self._ws_owed, end)
            self._ws_owed -= i
            yield from self._feed_ws(data[:i])
        elif self._pending:
            joined = bytearray(self._pending)
            joined += data
            self._pending = b""
            data = memoryview(joined)
            buf = joined
            end = len(joined)
        mask_bit = self._in_mask_bit
        fast = self._fast
        while i < end and not self._done:
            # The header: 2 bytes, an extended length, the masking key.
            if end - i < 2:
                self._pending = bytes(data[i:])
                return
            b0 = data[i]
            b1 = data[i + 1]
            masked = b1 & 0x80
            n = b1 & 0x7F
            j = i + 2
            # A whole data frame, masked as this side expects, outside a wsproto message: ours if
            # its length is canonical and within the read limit.
            ours = fast and (b0 == FIN_TEXT or b0 == FIN_BINARY) and masked == mask_bit and not self._ws_mid
            if n >= 126:
                size = 2 if n == 126 else 8
                if end - j < size:
                    if ours:
                        self._pending = bytes(data[i:])  # may be ours: wait for the length
                        return
                    break  # wsproto's: hand it over now, so a bad header fails on its first byte
                n = int.from_bytes(data[j : j + size], "big")
                j += size
                canonical = n >= 126 if size == 2 else (n >= 65536 and not n >> 63)
            else:
                canonical = True
            stop = j + (4 if masked else 0) + n
            if ours and canonical and n <= self._read_limit:
                if masked:
                    if end - j < 4:
                        self._pending = bytes(data[i:])
                        return
                    j += 4
                if stop > end:
                    if n <= _PENDING_MAX:
                        if b0 == FIN_TEXT and end > j:
                            failure = self._check_text_start(data[j:end], data[j - 4 : j] if masked else None)
                            if failure is not None:
                                yield failure
                                return
                        self._pending = bytes(data[i:])  # short: parse it whole next time
                        return
                    self._long_left = n
                    self._long_key = bytes(data[j - 4 : j]) if masked else None
                    if b0 == FIN_TEXT:
                        self._long_type = MessageType.TEXT
                        self._long_decoder = _utf8_decoder()
                    else:
                        self._long_type = MessageType.BINARY
                    event = self._long_chunk(data, buf, j, end)
                    if event is not None:
                        yield event
                    return
                if not masked:
                    payload = bytes(data[j:stop])
                elif buf is not None and n > INT_XOR_MAX:
                    unmask_into(buf, j, stop, data[j - 4 : j])  # in place: one copy fewer
                    payload = bytes(data[j:stop])
                else:
                    payload = unmask(data[j:stop], data[j - 4 : j])
                i = stop
                if b0 == FIN_BINARY:
                    yield Message(MessageType.BINARY, payload, n)
                    continue
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError as exc:
                    # Not wsproto's to report: the frame may be unmasked in place.
                    yield self._invalid_utf8(exc)
                    return
                yield Message(MessageType.TEXT, text, n)
                continue
            # Anything else is wsproto's: this frame, or its start and then the rest.
            failure = self._count_frame(b0)
            if failure is not None:
                yield failure
                return
            if stop > end:
                self._ws_owed = stop - end
                stop = end
            yield from self._feed_ws(data[i:stop])
            i = stop
        else:
            return
        # A frame that can't be the fast path's, its extended length cut short:
        # wsproto gets what there is now, and the rest of the frame later.
        failure = self._count_frame(b0)
        if failure is not None:
            yield failure
            return
        self._ws_head = bytes(data[i:])
        yield from self._feed_ws(data[i:])

    def _count_frame(self, b0: int) -> Failure | None:
        """A frame with first byte *b0* goes to wsproto: track the open message and its frames."""
        if b0 & 0x08:
            return None  # a control frame
        self._ws_mid = not b0 & 0x80
        self._fragments = 1 if b0 & 0x0F else self._fragments + 1
        if self._fragments > self.max_fragments:
            limit = self.max_fragments
            return self._failure(
                CloseCode.POLICY_VIOLATION, f"too many fragments (limit {limit})", f"a message in more than {limit} frames"
            )
        return None

    def _check_text_start(self, part: Any, key: Any) -> Failure | None:
        """The start of a short text frame held until it is whole: fail now if it can't be UTF-8."""
        raw = bytes(part) if key is None else unmask(part, key)
        try:
            _utf8_decoder().decode(raw, False)
        except UnicodeDecodeError as exc:
            return self._invalid_utf8(exc)
        return None

    def _long_chunk(self, data: Any, buf: bytearray | None, start: int, stop: int) -> Event | None:
        """``data[start:stop]``, the next payload bytes of the long plain frame in progress."""
        k = stop - start
        left = self._long_left = self._long_left - k
        if not k and left:
            return None  # nothing arrived of it yet
        key = self._long_key
        if key is None:
            payload = bytes(data[start:stop])
        else:
            if buf is not None:
                unmask_into(buf, start, stop, key)
                payload = bytes(data[start:stop])
            else:
                payload = unmask(data[start:stop], key)
            self._long_key = rotate(key, k)
        fin = not left
        chunk: Data = payload
        decoder = self._long_decoder
        if decoder is not None:
            try:
                chunk = decoder.decode(payload, fin)
            except UnicodeDecodeError as exc:
                return self._invalid_utf8(exc)
            if fin:
                self._long_decoder = None
        return self._part(self._long_type, chunk, fin, k)

    def _feed_ws(self, data: Any) -> Iterator[Event]:
        """Feed wsproto and translate its events."""
        ws = self._ws
        deflate = self._deflate
        ws.receive_data(data)
        events: Iterator[Any] = ws.events()
        for event in events:
            kind = type(event)
            if kind is BytesMessage or kind is TextMessage:
                pieces = deflate.take_inflated() if deflate is not None else None
                if pieces is None:
                    yield self._on_data(event)
                else:
                    yield from self._on_inflated(event, pieces)
            elif kind is WsPing:
                yield Ping(event.payload)
            elif kind is WsPong:
                yield Pong(event.payload)
            elif kind is CloseConnection:
                self._done = True
                state = ws.state
                if state is ConnectionState.REMOTE_CLOSING or state is ConnectionState.CLOSED:
                    # REMOTE_CLOSING: the peer closed first; CLOSED: it answered ours.
                    yield CloseFrame(event.code, event.reason or "", state is ConnectionState.CLOSED)
                else:
                    # wsproto reports a protocol violation as a CloseConnection
                    # without changing state: the peer sent no close frame.
                    reason, detail = event.reason or "", f"protocol error from peer: {event.reason}"
                    if deflate is not None and deflate.failure is not None:
                        reason, detail = deflate.failure  # wsproto only says "error in extension"
                    yield Failure(event.code, reason, detail)
                return
            if self._done:
                return

    def _on_data(self, event: TextMessage | BytesMessage) -> Event:
        data: Any = event.data
        if type(event) is TextMessage:
            n = len(data) if data.isascii() else len(data.encode("utf-8"))
            return self._part(MessageType.TEXT, data, event.message_finished, n)
        return self._part(MessageType.BINARY, data, event.message_finished, len(data))

    def _on_inflated(self, event: TextMessage | BytesMessage, pieces: list[bytes]) -> Iterator[Event]:
        """What a compressed frame inflated to, piece by piece; text is validated here."""
        fin = event.message_finished
        if fin and not pieces:
            pieces = [b""]
        text = type(event) is TextMessage
        kind = MessageType.TEXT if text else MessageType.BINARY
        decoder = self._inflated_decoder
        if text and decoder is None and not (fin and len(pieces) == 1):
            # A whole message in one piece (the common case) needs no incremental decoder.
            decoder = self._inflated_decoder = _utf8_decoder()
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            end = fin and i == last
            data: Data = piece
            if text:
                try:
                    data = piece.decode("utf-8") if decoder is None else decoder.decode(piece, end)
                except UnicodeDecodeError as exc:
                    yield self._invalid_utf8(exc)
                    return
            yield self._part(kind, data, end, len(piece))
            if self._done:
                return
        if fin:
            self._inflated_decoder = None

    def _invalid_utf8(self, exc: UnicodeDecodeError) -> Failure:
        # Fail fast, with what wsproto would say for the same bytes.
        return self._failure(CloseCode.INVALID_PAYLOAD_DATA, str(exc), f"protocol error from peer: {exc}")

    def _part(self, kind: MessageType, data: Data, finished: bool, n: int) -> Event:
        """*n* more bytes of a message: the whole of it, or its next part."""
        if not self._in_message:
            if finished:
                if n > self._read_limit:
                    return self._too_big(self._read_limit)
                return Message(kind, data, n)
            self._msg_limit = self._read_limit  # a change of limit applies from the next message
        size = self._msg_size + n
        if size > self._msg_limit:
            return self._too_big(self._msg_limit)
        self._in_message = not finished
        self._msg_size = 0 if finished else size
        return Chunk(kind, data, finished, n)

    def _too_big(self, limit: int) -> Failure:
        return self._failure(
            CloseCode.MESSAGE_TOO_BIG,
            f"message too big (limit {limit} bytes)",
            f"message over the read limit of {limit} bytes",
        )

    def _failure(self, code: int, reason: str, detail: str) -> Failure:
        self._done = True
        return Failure(code, reason, detail)

    # --- outbound -------------------------------------------------------------------

    def check(self, kind: MessageType, data: Any) -> Outgoing:
        """Check a whole message's data; return its frame, or what :meth:`frame` still has to frame.

        Without extensions the frame is built here: it doesn't touch the
        protocol's state (wsproto only tracks fragmented messages), so it may
        be called from any thread without the caller's lock.

        Raises:
            TypeError: *data* is not ``str`` or bytes-like (or ``str`` for binary).
            ValueError: text that isn't UTF-8, or *kind* is not TEXT or BINARY.
        """
        if kind == MessageType.TEXT:
            if isinstance(data, str):
                if self._plain:
                    return build_frame(FIN_TEXT, data.encode("utf-8"), self.client)
                return TextMessage(data=data)
            raw = as_bytes(data)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("text message data is not valid UTF-8") from None
            if self._plain:
                return build_frame(FIN_TEXT, raw, self.client)
            return TextMessage(data=text)
        if kind == MessageType.BINARY:
            if self._plain:
                return build_frame(FIN_BINARY, as_bytes(data), self.client)
            return BytesMessage(data=as_bytes(data))
        raise ValueError(f"write_message takes TEXT or BINARY, not {kind!r}; see write_control")

    def frame(self, message: Outgoing, compress: bool = True) -> bytes | SplitFrame:
        """The frame for a message :meth:`check` returned (under the caller's lock).

        *compress* False sends it uncompressed even when permessage-deflate
        was negotiated.

        Raises:
            ProtocolClosed: a close frame went out or came in already.
        """
        if type(message) is bytes or type(message) is SplitFrame:
            if not self.can_send_data:
                raise ProtocolClosed("a close frame went out or came in already")
            return message
        if not compress and self._deflate is not None:
            self._deflate.compress_next = False  # read by this message's first frame
        return self._send(message)

    def send_fragment(self, text: bool, data: Data, fin: bool) -> bytes:
        """One fragment of a message sent in parts (``"hi"`` for text, bytes for binary)."""
        event: Any = TextMessage if text else BytesMessage
        return self._send(event(data=data, message_finished=fin))

    def send_ping(self, payload: bytes) -> bytes:
        return self._send(WsPing(payload=payload))

    def send_pong(self, payload: bytes) -> bytes:
        return self._send(WsPong(payload=payload))

    def send_close(self, code: int, reason: str) -> bytes | None:
        """Our close frame; None if one was already sent (or the closing handshake is over).

        ``CloseCode.NO_STATUS_RCVD`` (1005) sends a close frame without a code.
        """
        # wsproto sends an empty close frame only for its own enum member.
        wire_code = CloseReason.NO_STATUS_RCVD if code == CloseCode.NO_STATUS_RCVD else code
        try:
            return self._ws.send(CloseConnection(code=wire_code, reason=reason))
        except LocalProtocolError:
            return None

    def _send(self, event: Any) -> bytes:
        try:
            return self._ws.send(event)
        except LocalProtocolError:
            raise ProtocolClosed("a close frame went out or came in already") from None

    # --- one message for many connections (threadws.PreparedMessage) -------------------

    def sharing_key(self) -> Hashable | None:
        """What a frame built for this side depends on, if it may be shared with others.

        A server's frames are not masked, so one frame serves every server
        connection with the same compression setting; a sender without
        context takeover compresses every message from scratch. None when the
        frame must be built for this connection alone: a client masks every
        frame with a fresh key (RFC 6455 section 5.3), and with context
        takeover the output depends on the connection's history.
        """
        if self.client:
            return None
        if self._deflate is None:
            return "plain"
        return self._deflate.shared_key()

    def shared_frame(self, kind: MessageType, data: Data) -> bytes:
        """A frame for every server connection with this one's :meth:`sharing_key`."""
        extensions: list[Extension] = [] if self._deflate is None else [self._deflate.fresh_sender()]
        return bytes(FrameProtocol(client=False, extensions=extensions).send_data(data, fin=True))
