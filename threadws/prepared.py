"""A message framed once and sent to many connections (gorilla's ``PreparedMessage``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wsproto.frame_protocol import FrameProtocol

from ._frames import as_bytes
from .enums import MessageType

if TYPE_CHECKING:
    from .connection import Conn

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

    __slots__ = ("_compressed", "_server_frame", "data", "message_type")

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
        # wsproto frames it, exactly as a server-side Conn would.
        self._server_frame = bytes(FrameProtocol(client=False, extensions=[]).send_data(data, fin=True))
        self._compressed: dict[Any, bytes] = {}

    def _frame_for(self, conn: Conn) -> Any:
        """The frame for *conn* (the caller holds its wsproto lock)."""
        deflate = conn._deflate
        if conn._client:
            return conn._ws.send(_event(self))  # a fresh mask for every frame
        if deflate is None:
            return self._server_frame
        key = deflate.shared_key()
        if key is None:
            # With context takeover the output depends on the connection's
            # history: compress for this connection alone.
            return conn._ws.send(_event(self))
        frame = self._compressed.get(key)
        if frame is None:
            proto = FrameProtocol(client=False, extensions=[deflate.fresh_sender()])
            frame = self._compressed[key] = bytes(proto.send_data(self.data, fin=True))
        return frame

    def __repr__(self) -> str:
        return f"<PreparedMessage {self.message_type.name} {len(self.data)}>"


def _event(message: PreparedMessage) -> Any:
    from wsproto.events import BytesMessage, TextMessage

    if isinstance(message.data, str):
        return TextMessage(data=message.data)
    return BytesMessage(data=message.data)
