"""permessage-deflate (RFC 7692): the settings, the negotiation and the codec.

Three parts, each usable on its own:

* :class:`Compression`, the public settings an :class:`~threadws.Upgrader` or
  :func:`~threadws.dial` takes.
* The negotiation as pure functions over header values (no sockets):
  :func:`accept_offer` on the server, :func:`build_offer` and
  :func:`check_response` on the client. They produce an :class:`Agreement`.
* :class:`PerMessageDeflate`, a wsproto ``Extension`` that compresses outgoing
  messages and inflates incoming ones. wsproto's own extension inflates a frame
  with no bound, so a few kilobytes on the wire can become gigabytes in memory.
  This one never produces more than the read limit allows: it inflates with
  ``max_length`` set to what is left of the current message's budget, drains
  ``unconsumed_tail`` in bounded steps, and fails the message (1009) the moment
  the decompressed size passes the limit. The pieces bypass wsproto (which
  would copy them twice) and are never joined, so peak memory stays near the
  limit.

Memory per connection
---------------------
zlib documents its needs: a compressor takes ``(1 << (window_bits + 2)) +
(1 << (mem_level + 9))`` bytes plus about 6 KiB of state, an inflater
``1 << window_bits`` plus about 7 KiB. With the defaults (12 window bits both
ways, memory level 5) that is 38 KiB to compress and 11 KiB to inflate, about
49 KiB per connection while context takeover keeps them alive (measured with
tracemalloc: the same); 15 bits and memory level 8 (zlib's defaults) would take
262 KiB + 39 KiB. A direction without context takeover releases its zlib object
after every message, so an idle connection holds nothing for it. Both are
created lazily, on the first compressed message in their direction.

What it must never do
---------------------
Inflate past what is left of the read limit, join the inflated pieces, or
touch a socket. Nor fail a handshake over an offer the server can't accept: it
declines it (RFC 7692 section 7), and the connection goes on uncompressed.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from .exceptions import HandshakeError

__all__ = [
    "Agreement",
    "Compression",
    "PerMessageDeflate",
    "accept_offer",
    "build_offer",
    "check_response",
    "parse_extensions",
]

NAME = "permessage-deflate"

#: The trailer RFC 7692 section 7.2.1 strips from every compressed message
#: (an empty stored block, what Z_SYNC_FLUSH ends with) and 7.2.2 appends back.
_TAIL = b"\x00\x00\xff\xff"
#: The most one inflate call produces. Bounds the extra memory over the
#: read limit while a bomb is being refused.
_INFLATE_STEP = 256 * 1024


@dataclass(frozen=True)
class Compression:
    """permessage-deflate settings (RFC 7692). Pass ``compression=Compression(...)``,
    or ``compression=True`` for these defaults, to :class:`~threadws.Upgrader` or
    :func:`~threadws.dial`.

    The defaults suit thousands of connections: a 4 KiB window and memory level
    5 cost about 49 KiB per connection (see :meth:`memory`), and messages shorter
    than *min_size* go out uncompressed. Whether a given message is compressed
    can also be chosen per call: ``write_message(..., compress=False)``.

    Attributes:
        server_no_context_takeover: the server compresses each message on its
            own (it keeps no window between messages, and frees its compressor).
            On a server this is always granted; on a client it is requested.
        client_no_context_takeover: the same for the client's messages. A
            server requests it from the client; a client promises it.
        server_max_window_bits: the largest LZ77 window (2**bits bytes, 9 to
            15) the server compresses with. A server uses at most this; a
            client asks the server for it when below 15.
        client_max_window_bits: the same for the client's messages. A client
            compresses with at most this and offers it; a server asks for it
            when the client allows (browsers do).
        level: zlib compression level, 0 (store) to 9 (smallest); 6 is zlib's default.
        mem_level: zlib memory level, 1 to 9; memory for compressing grows as
            ``2 ** (mem_level + 9)``.
        min_size: messages shorter than this many bytes are sent uncompressed.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 12
    client_max_window_bits: int = 12
    level: int = 6
    mem_level: int = 5
    min_size: int = 128

    def __post_init__(self) -> None:
        for name in ("server_max_window_bits", "client_max_window_bits"):
            bits = getattr(self, name)
            # RFC 7692 allows 8, but zlib cannot compress with a 256-byte window.
            if not 9 <= bits <= 15:
                raise ValueError(f"{name} must be between 9 and 15, not {bits!r}")
        if not 0 <= self.level <= 9:
            raise ValueError(f"level must be between 0 and 9, not {self.level!r}")
        if not 1 <= self.mem_level <= 9:
            raise ValueError(f"mem_level must be between 1 and 9, not {self.mem_level!r}")
        if self.min_size < 0:
            raise ValueError("min_size must be >= 0")

    def memory(self, client: bool) -> int:
        """Bytes of zlib state one connection holds, by zlib's formulas, at most.

        Counts the compressor (if its direction keeps context) and the inflater
        (if its direction keeps context and the window could be negotiated to
        these bits); a direction without context takeover holds memory only
        while a message is being processed.
        """
        send_bits = self.client_max_window_bits if client else self.server_max_window_bits
        recv_bits = self.server_max_window_bits if client else self.client_max_window_bits
        send_nct = self.client_no_context_takeover if client else self.server_no_context_takeover
        recv_nct = self.server_no_context_takeover if client else self.client_no_context_takeover
        total = 0
        if not send_nct:
            total += (1 << (send_bits + 2)) + (1 << (self.mem_level + 9)) + 6 * 1024
        if not recv_nct:
            total += (1 << recv_bits) + 7 * 1024
        return total


def resolve(compression: Compression | bool | None) -> Compression | None:
    """``True`` means the defaults; ``False`` and None mean off."""
    if compression is True:
        return Compression()
    if compression is None or compression is False:
        return None
    if not isinstance(compression, Compression):
        raise TypeError(f"compression must be a Compression, True, False or None, not {compression!r}")
    return compression


# --- the negotiation (RFC 7692 section 5 and 7.1) ---------------------------------


@dataclass(frozen=True)
class Agreement:
    """What both sides agreed on for one connection (RFC 7692 section 7.1).

    Window bits are the most each side may use; 15 when nothing was said.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15

    def header(self, client_max_window_bits_offered: bool = True) -> str:
        """The ``Sec-WebSocket-Extensions`` value a server answers with."""
        params = [NAME]
        if self.server_no_context_takeover:
            params.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            params.append("client_no_context_takeover")
        if self.server_max_window_bits < 15:
            params.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits < 15 and client_max_window_bits_offered:
            params.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(params)


# RFC 7230 token and quoted-string, as RFC 6455 section 9.1 uses them.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\\r\n]|\\.)*"'
_PARAM = re.compile(rf"\s*({_TOKEN})\s*(?:=\s*({_TOKEN}|{_QUOTED}))?\s*")
_NAME = re.compile(rf"\s*({_TOKEN})\s*")
_WINDOW_BITS = re.compile(r"[89]|1[0-5]")  # 8 to 15, no leading zero (RFC 7692 7.1.2)

Params = list[tuple[str, "str | None"]]


def parse_extensions(values: Iterable[str]) -> list[tuple[str, Params]]:
    """Parse ``Sec-WebSocket-Extensions`` header values (RFC 6455 section 9.1).

    Returns ``[(name, [(param, value or None), ...]), ...]`` in order, names
    and parameters lower-cased, quoted values unquoted.

    Raises:
        ValueError: the header does not follow the grammar.
    """
    result: list[tuple[str, Params]] = []
    for value in values:
        pos = 0
        while pos < len(value):
            match = _NAME.match(value, pos)
            if match is None:
                raise ValueError(f"malformed extension in {value!r}")
            name, params = match.group(1).lower(), []
            pos = match.end()
            while pos < len(value) and value[pos] == ";":
                match = _PARAM.match(value, pos + 1)
                if match is None:
                    raise ValueError(f"malformed extension parameter in {value!r}")
                raw = match.group(2)
                if raw is not None and raw.startswith('"'):
                    raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                    # Unquoted, the value must still be a token (section 9.1).
                    if not re.fullmatch(_TOKEN, raw):
                        raise ValueError(f"malformed extension parameter value in {value!r}")
                params.append((match.group(1).lower(), raw))
                pos = match.end()
            if pos < len(value):
                if value[pos] != ",":
                    raise ValueError(f"malformed extension list {value!r}")
                pos += 1
                if not value[pos:].strip():
                    raise ValueError(f"empty extension at the end of {value!r}")
            result.append((name, params))
    return result


def _window_bits(value: str | None) -> int:
    if value is None or not _WINDOW_BITS.fullmatch(value):
        raise ValueError(f"invalid window bits {value!r}")
    return int(value)


def _read_params(params: Params, allowed: set[str]) -> dict[str, str | None]:
    """Check parameter names, uniqueness and the no-value ones (RFC 7692 section 7)."""
    seen: dict[str, str | None] = {}
    for name, value in params:
        if name not in allowed:
            raise ValueError(f"unknown parameter {name!r}")
        if name in seen:
            raise ValueError(f"repeated parameter {name!r}")
        if name.endswith("no_context_takeover") and value is not None:
            raise ValueError(f"{name} takes no value")
        seen[name] = value
    return seen


_OFFER_PARAMS = {
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
}


def accept_offer(values: Iterable[str], config: Compression) -> tuple[str, Agreement] | None:
    """Server side: pick the first acceptable permessage-deflate offer (RFC 7692 sections 5 and 7.1).

    Args:
        values: the request's ``Sec-WebSocket-Extensions`` header values.
        config: the server's settings.

    Returns:
        ``(response header value, agreement)``, or None to decline: no offer,
        a malformed header, or no offer the server can accept (an unknown or
        repeated parameter, an invalid value). Declining just means no
        compression; the handshake itself goes on.
    """
    try:
        offers = parse_extensions(values)
    except ValueError:
        return None
    for name, params in offers:
        if name != NAME:
            continue
        try:
            seen = _read_params(params, _OFFER_PARAMS)
            server_bits = config.server_max_window_bits
            if "server_max_window_bits" in seen:
                # The client caps our window; a server may always use less.
                server_bits = min(server_bits, _window_bits(seen["server_max_window_bits"]))
            client_bits = 15
            client_bits_offered = "client_max_window_bits" in seen
            if client_bits_offered:
                hint = seen["client_max_window_bits"]
                client_bits = min(config.client_max_window_bits, 15 if hint is None else _window_bits(hint))
        except ValueError:
            continue  # decline this offer, try the next (RFC 7692 section 7)
        agreement = Agreement(
            server_no_context_takeover=config.server_no_context_takeover or "server_no_context_takeover" in seen,
            # The client's hint that it won't keep context costs nothing to
            # confirm, and lets us free our inflater between messages.
            client_no_context_takeover=config.client_no_context_takeover or "client_no_context_takeover" in seen,
            server_max_window_bits=server_bits,
            client_max_window_bits=client_bits,
        )
        return agreement.header(client_bits_offered), agreement
    return None


def build_offer(config: Compression) -> str:
    """Client side: the ``Sec-WebSocket-Extensions`` value offering *config*."""
    params = [NAME]
    if config.server_no_context_takeover:
        params.append("server_no_context_takeover")
    if config.client_no_context_takeover:
        params.append("client_no_context_takeover")
    if config.server_max_window_bits < 15:
        params.append(f"server_max_window_bits={config.server_max_window_bits}")
    # Always say we accept client_max_window_bits in the response: servers
    # (browsers' peers included) may then ask for a smaller window.
    if config.client_max_window_bits < 15:
        params.append(f"client_max_window_bits={config.client_max_window_bits}")
    else:
        params.append("client_max_window_bits")
    return "; ".join(params)


def check_response(values: Iterable[str], config: Compression | None, status: int = 101) -> Agreement | None:
    """Client side: check the extensions the server accepted (RFC 7692 sections 5 and 7.1).

    Args:
        values: the response's ``Sec-WebSocket-Extensions`` header values.
        config: what the client offered (None: it offered nothing).

    Returns:
        the agreement, or None if the server declined compression.

    Raises:
        HandshakeError: the response names an extension we did not offer,
            accepts permessage-deflate twice, or with parameters the client
            must refuse (section 7.1: unknown, repeated, invalid, or a window
            larger than the one offered); the client fails the connection.
    """
    values = list(values)
    if not values:
        return None
    try:
        accepted = parse_extensions(values)
    except ValueError as exc:
        raise HandshakeError(f"malformed 'Sec-WebSocket-Extensions' in the server's response: {exc}", status) from None
    if config is None or any(name != NAME for name, _ in accepted):
        raise HandshakeError("server accepted an extension the client did not offer", status)
    if len(accepted) > 1:
        raise HandshakeError("server accepted permessage-deflate more than once", status)
    try:
        seen = _read_params(accepted[0][1], _OFFER_PARAMS)
        server_bits = 15
        if "server_max_window_bits" in seen:
            server_bits = _window_bits(seen["server_max_window_bits"])
            if server_bits > config.server_max_window_bits:
                raise ValueError(
                    f"server_max_window_bits={server_bits} is over the {config.server_max_window_bits} offered"
                )
        client_bits = 15
        if "client_max_window_bits" in seen:
            client_bits = _window_bits(seen["client_max_window_bits"])
    except ValueError as exc:
        raise HandshakeError(f"server answered permessage-deflate wrongly: {exc}", status) from None
    return Agreement(
        server_no_context_takeover="server_no_context_takeover" in seen,
        client_no_context_takeover=config.client_no_context_takeover or "client_no_context_takeover" in seen,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )


# --- the codec -----------------------------------------------------------------


class PerMessageDeflate(Extension):
    """A wsproto extension implementing permessage-deflate with a bounded inflater.

    One per connection, driven by wsproto under the connection's lock (the
    inbound half by the reader, the outbound half by whoever sends).

    Attributes:
        read_limit: the most a message may inflate to, in bytes; past it the
            message fails with 1009. The connection keeps it equal to its
            read limit; a change applies from the next message on.
        compress_next: whether the next message that starts goes out
            compressed; set by the connection just before each ``send``
            (``write_message(compress=...)``). It is consumed by the message's
            first frame, and reset to True.
        failure: ``(close reason, detail)`` of the last inbound failure, for
            the close frame and the ConnectionClosed.
        hand_over: False (the default) makes this an ordinary wsproto
            extension, whose events carry the inflated data. threadws's
            connection sets it: then the inflated data skips wsproto, which
            would copy it twice more, and comes from :meth:`take_inflated`
            in pieces that are never joined, so a bomb costs at most the read
            limit plus one step, whatever its ratio.
    """

    name = NAME

    def __init__(self, agreement: Agreement, config: Compression, *, client: bool, read_limit: int) -> None:
        self.agreement = agreement
        self.config = config
        self.read_limit = read_limit
        self.compress_next = True
        self.failure: tuple[str, str] | None = None
        self.hand_over = False
        a = agreement
        if client:
            send_bits, self._send_reset = a.client_max_window_bits, a.client_no_context_takeover
            self._recv_bits, self._recv_reset = a.server_max_window_bits, a.server_no_context_takeover
            own_bits = config.client_max_window_bits
        else:
            send_bits, self._send_reset = a.server_max_window_bits, a.server_no_context_takeover
            self._recv_bits, self._recv_reset = a.client_max_window_bits, a.client_no_context_takeover
            own_bits = config.server_max_window_bits
        # A sender may always use a smaller window than agreed; zlib can't use 8.
        self._send_bits = min(send_bits, own_bits)
        self._can_compress = self._send_bits >= 9
        self._level = config.level
        self._mem_level = config.mem_level
        self._min_size = config.min_size
        self._deflater: zlib._Compress | None = None
        self._inflater: zlib._Decompress | None = None
        # Inbound: is the current message compressed, its size so far, and is
        # the frame being read a control frame (one may arrive mid-message).
        self._in_compressed = False
        self._in_size = 0
        self._in_limit = read_limit
        self._in_control = False
        self._pieces: list[bytes] | None = None  # the current data frame's inflated bytes
        # Outbound: is the message being sent compressed.
        self._out_compressed = False

    def shared_key(self) -> tuple[int, int, int, int] | None:
        """For a sender without context takeover, the settings its output depends on.

        Such a sender compresses every message from scratch, so one message
        compresses to the same bytes on every connection with the same key
        (see :class:`threadws.PreparedMessage`). None when history matters.
        """
        if not self._send_reset:
            return None
        return (self._send_bits if self._can_compress else 0, self._level, self._mem_level, self._min_size)

    def fresh_sender(self) -> PerMessageDeflate:
        """A new extension that compresses exactly as this one does (for a server)."""
        return PerMessageDeflate(self.agreement, self.config, client=False, read_limit=self.read_limit)

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool | str:
        return False  # the handshake is threadws's own (see build_offer)

    def __repr__(self) -> str:
        return f"<PerMessageDeflate {self.agreement.header()}>"

    # --- inbound -----------------------------------------------------------

    def frame_inbound_header(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        self._in_control = opcode.iscontrol()
        if rsv.rsv1 and (self._in_control or opcode is Opcode.CONTINUATION):
            # RSV1 marks the first frame of a compressed message, nothing else (RFC 7692 section 6).
            self.failure = ("RSV1 set on a control or continuation frame", "protocol error from peer: RSV1 misused")
            return CloseReason.PROTOCOL_ERROR
        if opcode in (Opcode.TEXT, Opcode.BINARY):
            self._in_compressed = rsv.rsv1
            self._in_size = 0
            self._in_limit = self.read_limit
            if rsv.rsv1 and self._inflater is None:
                self._inflater = zlib.decompressobj(-self._recv_bits)
        if not self._in_control:
            self._pieces = [] if self._in_compressed else None
        return RsvBits(True, False, False)

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol, data: bytes) -> bytes | CloseReason:
        if self._in_control or not self._in_compressed:
            return data
        # With hand_over the inflated bytes go to take_inflated(), not back to
        # wsproto, which would copy them twice more (a bytearray, then bytes).
        failure = self._inflate(data)
        if failure is not None:
            return failure
        return b"" if self.hand_over else self._joined()

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol, fin: bool) -> bytes | CloseReason | None:
        if self._in_control or not self._in_compressed or not fin:
            return None
        failure = self._inflate(_TAIL)
        if failure is not None:
            return failure
        self._in_compressed = False
        inflater = self._inflater
        # A sender may end a message with a final block (7.2.3.4): what follows
        # is a new stream, so start a new inflater.
        if self._recv_reset or (inflater is not None and inflater.eof):
            self._inflater = None
        return None if self.hand_over else self._joined()

    def _joined(self) -> bytes:
        pieces = self._pieces
        assert pieces is not None
        self._pieces = []
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def take_inflated(self) -> list[bytes] | None:
        """What the data frame (or part of one) wsproto just reported inflated to.

        With :attr:`hand_over` set, wsproto's event for a compressed frame
        carries no data: its payload is here, in pieces of at most 256 KiB
        (none while zlib still buffers), text still to be decoded. None when
        the frame was not compressed (the event carries the payload as usual).
        """
        pieces = self._pieces
        if pieces is not None:
            self._pieces = []
        return pieces

    def _inflate(self, data: bytes) -> CloseReason | None:
        """Inflate *data* onto the pieces, never producing more than the message's remaining budget (plus one byte)."""
        inflater = self._inflater
        pieces = self._pieces
        assert inflater is not None and pieces is not None
        limit = self._in_limit
        budget = limit - self._in_size
        try:
            while True:
                # Ask for at most one byte over the budget: enough to know it was
                # passed. (Never 0, which would mean "no limit".)
                want = max(1, min(budget + 1, _INFLATE_STEP))
                piece = inflater.decompress(data, want)
                if len(piece) > budget:
                    self.failure = (
                        f"message too big (limit {limit} bytes)",
                        f"message over the read limit of {limit} bytes (decompressed)",
                    )
                    self._inflater = self._pieces = None  # drop the window and what it produced
                    return CloseReason.MESSAGE_TOO_BIG
                budget -= len(piece)
                if piece:
                    pieces.append(piece)
                data = inflater.unconsumed_tail
                # A full piece may leave output pending even with no input left.
                if inflater.eof or (not data and len(piece) < want):
                    break
        except zlib.error as exc:
            self.failure = ("invalid compressed data", f"message failed to inflate: {exc}")
            self._inflater = self._pieces = None
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._in_size = limit - budget
        return None

    # --- outbound -----------------------------------------------------------

    def frame_outbound(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, data: bytes, fin: bool
    ) -> tuple[RsvBits, bytes]:
        if opcode.iscontrol():
            return rsv, data  # only data messages are compressed (RFC 7692 section 6)
        if opcode is not Opcode.CONTINUATION:
            # The first frame decides for the whole message.
            wanted, self.compress_next = self.compress_next, True
            small = fin and len(data) < self._min_size
            self._out_compressed = wanted and self._can_compress and not small
            if self._out_compressed:
                rsv = RsvBits(True, rsv.rsv2, rsv.rsv3)
        if not self._out_compressed:
            return rsv, data
        deflater = self._deflater
        if deflater is None:
            deflater = self._deflater = zlib.compressobj(self._level, zlib.DEFLATED, -self._send_bits, self._mem_level)
        out = deflater.compress(data)
        if fin:
            out += deflater.flush(zlib.Z_SYNC_FLUSH)
            assert out.endswith(_TAIL)
            out = out[:-4]  # section 7.2.1: strip the empty stored block's trailer
            self._out_compressed = False
            if self._send_reset:
                self._deflater = None  # no context takeover: free the window now
        return rsv, out
