"""Streaming one message: :class:`MessageReader` and :class:`MessageWriter`.

Get them from :meth:`threadws.Conn.next_reader` and :meth:`threadws.Conn.next_writer`.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._frames import as_bytes
from .enums import CloseCode, MessageType

if TYPE_CHECKING:
    from .connection import Conn

__all__ = ["MessageReader", "MessageWriter"]


class MessageReader(io.RawIOBase):
    """One incoming message as a binary stream, read as its frames arrive.

    ``read(n)``, ``readinto(buffer)`` and ``readall()`` block until data
    arrives; they return ``b""`` at the end of the message. Iterating yields
    the chunks as they arrived. If the connection ends mid-message they raise
    :class:`threadws.ConnectionClosed`.
    """

    def __init__(self, conn: Conn, message_type: MessageType, first: list[Any], done: bool) -> None:
        super().__init__()
        self.message_type = message_type
        self._conn = conn
        self._pending = [_as_bytes(part) for part in first if part]
        self._view = memoryview(b"")
        self._done = done  # the last chunk has been taken off the connection's queue
        self._discarded = False  # a later next_reader/read_message skipped the rest

    def readable(self) -> bool:
        """True: a reader can always be read (until the message ends, reads return ``b""``)."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Copy the message's next bytes into *buffer*, waiting until some arrive; return how many (0 at its end)."""
        target = memoryview(buffer).cast("B")
        if not target or self._discarded:
            return 0
        view = self._view
        while not view:
            if self._pending:
                view = memoryview(self._pending.pop(0))
            elif self._done or self._discarded:
                return 0
            else:
                view = memoryview(self._take())
        n = min(len(view), len(target))
        target[:n] = view[:n]
        self._view = view[n:]
        return n

    def __iter__(self) -> Iterator[bytes]:
        """Yield the message's data chunk by chunk, as it arrives."""
        if self._discarded:
            return
        if self._view:
            yield bytes(self._view)
            self._view = memoryview(b"")
        while True:
            if self._discarded:
                return
            if self._pending:
                yield self._pending.pop(0)
            elif self._done:
                return
            else:
                chunk = self._take()
                if chunk:
                    yield chunk

    def _take(self) -> bytes:
        conn = self._conn
        conn._acquire_reading(None, None)
        try:
            if self._discarded or conn._current_reader is not self:
                self._done = True
                return b""
            item = conn._next_item(None)
            if type(item) is tuple:  # cannot happen mid-message; be safe
                self._done = True
                return _as_bytes(item[1])
            self._done = item.fin
            if self._done:
                conn._current_reader = None
            return _as_bytes(item.data)
        finally:
            conn._read_lock.release()


def _as_bytes(data: Any) -> bytes:
    # wsproto hands text over already decoded (and validated); the stream is bytes.
    return data.encode("utf-8") if type(data) is str else bytes(data)


class MessageWriter:
    """One outgoing message written piece by piece; a context manager.

    What you write is buffered; each time ``buffer_size`` bytes have gathered
    they go out as a fragment, and :meth:`close` sends the last one. Until
    then other threads' messages wait, so messages never interleave. If the
    ``with`` block raises, the message can't be completed: the connection is
    closed with 1011 (cleanly, with a close frame) rather than leaving the
    peer a half message.
    """

    def __init__(self, conn: Conn, message_type: MessageType, buffer_size: int, timeout: float | None) -> None:
        self.message_type = message_type
        self._conn = conn
        self._buffer_size = buffer_size
        self._timeout = timeout
        self._text = message_type == MessageType.TEXT
        self._decoder = codecs.getincrementaldecoder("utf-8")() if self._text else None
        self._parts: list[Any] = []
        self._buffered = 0
        self.closed = False

    def write(self, data: Any) -> int:
        """Add *data* (bytes-like; for text also ``str``) to the message; returns its length.

        Raises:
            ValueError: bytes that can't be UTF-8 for a text message, or the writer is closed.
            TimeoutError: the send queue stayed full for the writer's timeout.
            ConnectionClosed: the connection ended.
        """
        if self.closed:
            raise ValueError("write to a closed MessageWriter")
        if self._text:
            if isinstance(data, str):
                text = data
                size = len(data.encode("utf-8")) if not data.isascii() else len(data)
            else:
                assert self._decoder is not None
                raw = as_bytes(data)
                try:
                    text = self._decoder.decode(raw, False)
                except UnicodeDecodeError:
                    raise ValueError("text message data is not valid UTF-8") from None
                size = len(raw)
            self._parts.append(text)
        else:
            chunk = as_bytes(data)
            size = len(chunk)
            self._parts.append(bytes(chunk))
        self._buffered += size
        if self._buffered >= self._buffer_size:
            self._send(final=False)
        return size

    def close(self) -> None:
        """Send the last fragment, ending the message. Idempotent."""
        if self.closed:
            return
        try:
            if self._decoder is not None:
                try:
                    self._parts.append(self._decoder.decode(b"", True))
                except UnicodeDecodeError:
                    raise ValueError("text message ends in the middle of a UTF-8 character") from None
            self._send(final=True)
        finally:
            self.closed = True
            self._conn._end_writer(self)

    def abort(self) -> None:
        """Give up on the message: close the connection with 1011 instead of sending half of it.

        Waits for the closing handshake, like :meth:`threadws.Conn.close`.
        """
        if self.closed:
            return
        self.closed = True
        self._conn._end_writer(self)
        self._conn._note("a streamed message was abandoned")
        self._conn.close(CloseCode.INTERNAL_ERROR, "message not completed")

    def _send(self, final: bool) -> None:
        data: Any = ("" if self._text else b"").join(self._parts)
        self._parts = []
        self._buffered = 0
        self._conn._write_fragment(self._text, data, final, self._timeout)

    def __enter__(self) -> MessageWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()
