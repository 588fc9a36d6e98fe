"""Received messages on their way from a connection's reader thread to the application.

What it owns
------------
The inbound queue, bounded in bytes and in messages (a high-water mark: see
:class:`threadws._budget.Budget`); the read lock that hands each message to
exactly one application reader; the part of a message a timed-out
``read_message`` had already taken; and the message being streamed by a
:class:`~threadws.MessageReader`, whose unread rest a later read discards
(gorilla's rule).

The reader thread puts :class:`~threadws.protocol.Message` and
:class:`~threadws.protocol.Chunk` events in; when :meth:`Inbox.put` says the
queue is full, it stops reading (so TCP pushes back on the peer) until
:meth:`Inbox.wait_room` returns. A protocol failure is queued where it occurred
(:meth:`Inbox.put_failure`): the application first reads what arrived before
it, and when a reader reaches it the inbox hands it to ``on_failure``, which
sends the close frame.

What it must never do
---------------------
Touch a socket or the protocol: it moves events that already happened.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Union

from ._budget import Budget
from .enums import MessageType
from .exceptions import ConnectionClosed
from .protocol import Chunk, Failure, Message
from .streams import MessageReader, StreamState, chunk_bytes

__all__ = ["Inbox"]

Data = Union[str, bytes]

_monotonic = time.monotonic


class _Ended:
    """The queue item that says the connection has ended (it stays in the queue)."""


_ENDED = _Ended()


class Inbox:
    """The bounded queue between one connection's reader thread and its application readers.

    Args:
        max_bytes, max_messages: the high-water marks.
        on_failure: called (on the application's thread) with a queued
            :class:`~threadws.protocol.Failure` when a reader reaches it.
    """

    def __init__(self, max_bytes: int, max_messages: int, on_failure: Callable[[Failure], None]) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.budget = Budget(max_bytes, max_messages)
        self._on_failure = on_failure
        self._end: ConnectionClosed | None = None
        # Producer side: chunks of the message being received that are queued.
        self._chunks = 0
        # Consumer side, under the read lock: what a timed-out read_message
        # had taken of a message, and the streamed message being read.
        self._read_lock = threading.Lock()
        self._partial: list[Any] = []
        self._partial_type = MessageType.BINARY
        self._current: StreamState | None = None

    # --- the reader thread's side ----------------------------------------------------

    def put(self, event: Message | Chunk) -> bool:
        """Queue a message or a chunk; True if the queue is now full (stop reading: :meth:`wait_room`)."""
        if type(event) is Chunk:
            self._chunks = 0 if event.fin else self._chunks + 1
        self._queue.put(event)
        return self.budget.add(event.size)

    def wait_room(self) -> None:
        """Wait until the application has read enough (or :meth:`stop_waiting`)."""
        self.budget.wait_room(None)

    def put_failure(self, failure: Failure) -> bool:
        """Queue *failure* behind what arrived before it; False if nothing unread precedes it (act now)."""
        # Items are consumed in order, so the queued items beyond this
        # message's own chunks are exactly the whole messages not yet read.
        if self.budget.items - self._chunks <= 0:
            return False
        self._queue.put(failure)
        return True

    def stop_waiting(self) -> None:
        """Wake a reader thread blocked in :meth:`wait_room` for good: the connection is ending."""
        self.budget.close()

    def end(self, closed: ConnectionClosed) -> None:
        """The connection has ended: once readers have taken what is queued, they get *closed*."""
        self._end = closed
        self._queue.put(_ENDED)

    # --- the application's side ---------------------------------------------------------

    def read_message(self, timeout: float | None) -> tuple[MessageType, Data]:
        """The next whole message (see :meth:`threadws.Conn.read_message`)."""
        if timeout is None:
            deadline = None
            self._read_lock.acquire()
        else:
            deadline = _monotonic() + timeout
            self._acquire(timeout)
        try:
            if self._current is not None:
                self._discard_current()
            parts = self._partial
            while True:
                item = self._next_item(deadline, timeout)
                if type(item) is Message:
                    return item.kind, item.data
                if not parts:
                    self._partial_type = item.kind
                parts.append(item.data)
                if item.fin:
                    self._partial = []
                    return self._partial_type, ("" if type(parts[0]) is str else b"").join(parts)
        finally:
            self._read_lock.release()

    def next_reader(self, timeout: float | None) -> tuple[MessageType, MessageReader]:
        """The next message as a stream (see :meth:`threadws.Conn.next_reader`)."""
        deadline = None if timeout is None else _monotonic() + timeout
        self._acquire(timeout)
        try:
            self._discard_current()
            if self._partial:  # left by a read_message that timed out
                first: list[Any] = self._partial
                message_type, done = self._partial_type, False
                self._partial = []
            else:
                item = self._next_item(deadline, timeout)
                if type(item) is Message:
                    message_type, first, done = item.kind, [item.data], True
                else:
                    message_type, first, done = item.kind, [item.data], item.fin
            state = StreamState(done)
            self._current = state
            return message_type, MessageReader(self, message_type, first, state)
        finally:
            self._read_lock.release()

    def next_chunk(self, state: StreamState) -> bytes:
        """The streamed message's next chunk (for its MessageReader); b"" once it was discarded."""
        self._acquire(None)
        try:
            if state.discarded or self._current is not state:
                state.done = True
                return b""
            item = self._next_item(None)
            if type(item) is Message:  # cannot happen mid-message; be safe
                state.done = True
                self._current = None
                return chunk_bytes(item.data)
            state.done = item.fin
            if item.fin:
                self._current = None
            return chunk_bytes(item.data)
        finally:
            self._read_lock.release()

    def _acquire(self, timeout: float | None) -> None:
        # Called as the deadline is set: the time left is *timeout*.
        if not self._read_lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise TimeoutError(f"no message within {timeout} s")

    def _next_item(self, deadline: float | None, timeout: float | None = None) -> Any:
        """The next message or chunk (holding the read lock)."""
        get = self._queue.get
        while True:
            if deadline is None:
                item = get()
            else:
                try:
                    item = get(timeout=max(0.0, deadline - _monotonic()))
                except queue.Empty:
                    raise TimeoutError(f"no message within {timeout} s") from None
            if item is _ENDED:
                self._queue.put(_ENDED)  # for the next reader: the end is sticky
                end = self._end
                assert end is not None
                # Raising the same instance again would grow its traceback each time.
                raise end.with_traceback(None)
            if type(item) is Failure:
                # The application has read everything that arrived before the
                # error (and queued its replies): now the close frame goes out.
                self._on_failure(item)
                continue
            self.budget.release(item.size)
            return item

    def _discard_current(self) -> None:
        state = self._current
        if state is None:
            return
        self._current = None
        state.discarded = True
        while not state.done:
            item = self._next_item(None)
            state.done = type(item) is Message or item.fin

