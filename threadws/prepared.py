"""A message framed once and sent to many connections (gorilla's ``PreparedMessage``).

What it must never do
---------------------
Frame a message itself or look inside a connection: it asks the connection's
:class:`~threadws.protocol.Protocol` for the frame and keeps the ones that
can be shared.
"""

from __future__ import annotations

from collections.abc import Hashable

from ._frames import SplitFrame, as_bytes
from .enums import MessageType
from .protocol import Protocol

__all__ = ["PreparedMessage"]


class PreparedMessage:
    """A message to broadcast: its frame is built once and reused.

    Server-side connections share one frame (server frames are not masked),
    and with permessage-deflate one compressed frame per compression setting
    when the server compresses without context takeover. With context
    takeover each connection's compressor has its own history, so the message
    is compressed for each connection; and a client-side connection must mask
    every frame with a fresh key (RFC 6455 section 5.3), so for it the message
    is framed again each time.

    Args:
        message_type: TEXT (``str`` or UTF-8 bytes) or BINARY (bytes-like).
        data: the payload.
    """

    __slots__ = ("_frames", "data", "message_type")

    def __init__(self, message_type: MessageType, data: str | bytes) -> None:
        if message_type == MessageType.TEXT:
            if not isinstance(data, str):
                try:
                    data = as_bytes(data).decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError("text message data is not valid UTF-8") from None
        elif message_type == MessageType.BINARY:
            data = bytes(as_bytes(data))
        else:
            raise ValueError(f"a prepared message is TEXT or BINARY, not {message_type!r}")
        self.message_type = MessageType(message_type)
        self.data: str | bytes = data
        # One frame per sharing key (see Protocol.sharing_key), built on first use.
        self._frames: dict[Hashable, bytes] = {}

    def frame_for(self, protocol: Protocol) -> bytes | SplitFrame:
        """The frame for a connection with this *protocol* (call it under the connection's lock).

        Built once and reused for every server-side connection that can share
        it; framed afresh for a client (a fresh mask) or a compressor with
        context takeover (its own history).
        """
        key = protocol.sharing_key()
        if key is None:
            return protocol.frame(protocol.check(self.message_type, self.data))
        frame = self._frames.get(key)
        if frame is None:
            frame = self._frames[key] = protocol.shared_frame(self.message_type, self.data)
        return frame

    def __repr__(self) -> str:
        return f"<PreparedMessage {self.message_type.name} {len(self.data)}>"
