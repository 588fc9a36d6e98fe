"""Streaming one message: :class:`MessageReader` and :class:`MessageWriter`.

Get them from :meth:`threadws.Conn.next_reader` and :meth:`threadws.Conn.next_writer`.

What they must never do
-----------------------
Touch the socket or the protocol: a reader takes chunks from the connection's
inbox (:class:`ChunkSource`), a writer hands fragments to the connection
(:class:`FragmentSink`).
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from ._frames import as_bytes
from .enums import MessageType

__all__ = ["ChunkSource", "FragmentSink", "MessageReader", "MessageWriter", "StreamState"]


class StreamState:
    """Where one streamed message stands: shared by its :class:`MessageReader`
    and the inbox that feeds it (which writes it)."""

    __slots__ = ("discarded", "done")

    def __init__(self, done: bool) -> None:
        self.done = done  # the last chunk has been taken off the connection's queue
        self.discarded = False  # a later next_reader/read_message skipped the rest


class ChunkSource(Protocol):
    """What a :class:`MessageReader` reads from (the connection's inbox)."""

    def next_chunk(self, state: StreamState) -> bytes:
        """Wait for the message's next chunk; b"" if the message was discarded (or is over)."""
        ...


class MessageReader(io.RawIOBase):
    """One incoming message as a binary stream, read as its frames arrive.

    ``read(n)``, ``readinto(buffer)`` and ``readall()`` block until data
    arrives; they return ``b""`` at the end of the message. Iterating yields
    the chunks as they arrived. If the connection ends mid-message they raise
    :class:`threadws.ConnectionClosed`.
    """

    def __init__(self, source: ChunkSource, message_type: MessageType, first: list[Any], state: StreamState) -> None:
        super().__init__()
        self.message_type = message_type
        self._source = source
        self._pending = [chunk_bytes(part) for part in first if part]
        self._view = memoryview(b"")
        self._state = state

    def readable(self) -> bool:
        """True: a message is read, never written."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill *buffer* with the message's next bytes, waiting for them if need be.

        Returns how many bytes were written into *buffer*: 0 only at the end
        of the message (or when a later read discarded its rest).

        Raises:
            ConnectionClosed: the connection ended before the message did.
        """
        target = memoryview(buffer).cast("B")
        state = self._state
        if not target or state.discarded:
            return 0
        view = self._view
        while not view:
            if self._pending:
                view = memoryview(self._pending.pop(0))
            elif state.done or state.discarded:
                return 0
            else:
                view = memoryview(self._source.next_chunk(state))
        n = min(len(view), len(target))
        target[:n] = view[:n]
        self._view = view[n:]
        return n

    def __iter__(self) -> Iterator[bytes]:
        """Yield the message's data chunk by chunk, as it arrives."""
        state = self._state
        if state.discarded:
            return
        if self._view:
            yield bytes(self._view)
            self._view = memoryview(b"")
        while True:
            if state.discarded:
                return
            if self._pending:
                yield self._pending.pop(0)
            elif state.done:
                return
            else:
                chunk = self._source.next_chunk(state)
                if chunk:
                    yield chunk


def chunk_bytes(data: Any) -> bytes:
    """A received chunk as bytes."""
    # Text arrives already decoded (and validated); the stream is bytes.
    return data.encode("utf-8") if type(data) is str else bytes(data)


@dataclass(frozen=True)
class FragmentSink:
    """Where a :class:`MessageWriter` sends its fragments (the connection)."""

    send_fragment: Callable[[bool, Any, bool, float | None], None]  # (text, data, final, timeout)
    end_message: Callable[[], None]  # the message is over (sent or abandoned): other writers may go on
    abandon_message: Callable[[], None]  # close the connection with 1011: the message can't be completed


class MessageWriter:
    """One outgoing message written piece by piece; a context manager.

    What you write is buffered; each time ``buffer_size`` bytes have gathered
    they go out as a fragment, and :meth:`close` sends the last one. Until
    then other threads' messages wait, so messages never interleave. If the
    ``with`` block raises, the message can't be completed: the connection is
    closed with 1011 (cleanly, with a close frame) rather than leaving the
    peer a half message.
    """

    def __init__(self, sink: FragmentSink, message_type: MessageType, buffer_size: int, timeout: float | None) -> None:
        self.message_type = message_type
        self._sink = sink
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
            self._sink.end_message()

    def abort(self) -> None:
        """Give up on the message: close the connection with 1011 instead of sending half of it.

        Waits for the closing handshake, like :meth:`threadws.Conn.close`.
        """
        if self.closed:
            return
        self.closed = True
        self._sink.end_message()
        self._sink.abandon_message()

    def _send(self, final: bool) -> None:
        data: Any = ("" if self._text else b"").join(self._parts)
        self._parts = []
        self._buffered = 0
        self._sink.send_fragment(self._text, data, final, self._timeout)

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
