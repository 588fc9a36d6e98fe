"""The sending side of a connection, on the application's threads: from a message to a queued frame.

What it owns
------------
* Framing under the connection's lock: every frame is produced by the
  protocol *and* queued for the writer under that one lock, so the wire order
  is the order the protocol saw (a close frame can't overtake the message
  before it, nor a message follow a close frame).
* The message lock, held while one whole message is framed and queued, or for
  the life of a :class:`~threadws.MessageWriter`, so messages never interleave.
* What happens when the send queue is full (the write policy), and the closing
  handshake's deadline, set when our close frame is queued.

What it must never do
---------------------
Send (the writer does), or hold the connection's lock across a wait for queue
room or for the message lock.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from ._frames import SplitFrame
from .ending import Ending, Phase
from .enums import CloseCode
from .exceptions import Close, ConnectionClosed
from .prepared import PreparedMessage
from .protocol import Outgoing, Protocol, ProtocolClosed
from .writer import CloseItem, ControlItem, Timers, Writer

__all__ = ["Outbox"]

_monotonic = time.monotonic
#: Seconds between two looks for a stream while waiting for the message lock without blocking.
_FRAMING_STEP = 0.001

WRITE_POLICIES = ("block", "raise", "drop", "close")


class Outbox:
    """One connection's sending side; see the module documentation.

    Args:
        protocol, lock: the connection's protocol and the lock that owns it.
        writer: the writer thread that sends what is queued here.
        ending: the connection's end, to refuse writes once it is closing.
        timers: where the closing handshake's deadline is set.
        close_timeout: how long the closing handshake may take.
    """

    __slots__ = (
        "_close_timeout",
        "_ending",
        "_lock",
        "_msg_lock",
        "_protocol",
        "_streaming",
        "_timers",
        "_writer",
        "full_close_code",
        "policy",
    )

    def __init__(
        self,
        protocol: Protocol,
        lock: threading.Lock,
        writer: Writer,
        ending: Ending,
        timers: Timers,
        close_timeout: float,
    ) -> None:
        self._protocol = protocol
        self._lock = lock
        self._writer = writer
        self._ending = ending
        self._timers = timers
        self._close_timeout = close_timeout
        self._msg_lock = threading.Lock()
        self._streaming = False  # a MessageWriter holds the message lock
        self.policy = "block"
        self.full_close_code: int = CloseCode.POLICY_VIOLATION

    def closed(self) -> ConnectionClosed:
        """The exception for a write on a connection that is closing or has ended."""
        return self._ending.closing(self._writer.sent_close)

    # --- data ------------------------------------------------------------------------

    def write(
        self, message: Outgoing | None, prepared: PreparedMessage | None, timeout: float | None, policy: str,
        compress: bool = True,
    ) -> bool | None:
        """Queue one whole message: checked by the protocol (:meth:`Protocol.check`), or a prepared one.

        Returns True once queued, False if *policy* (``"try"``, ``"drop"``)
        gave up on a full queue, None if the ``"close"`` policy says the
        connection must be failed.

        Raises:
            TimeoutError, queue.Full, ConnectionClosed: see :meth:`threadws.Conn.write_message`.
        """
        if self._ending.phase >= Phase.SHUT:
            raise self.closed()
        budget = self._writer.budget
        if policy == "block":
            # One deadline for the room and the message lock together.
            deadline = None if timeout is None else _monotonic() + timeout
            if not budget.wait_room(timeout):
                raise TimeoutError(f"send queue still full after {timeout} s")
        elif not budget.wait_room(0):
            if policy == "try" or policy == "drop":
                return False
            if policy == "raise":
                raise queue.Full("send queue full")
            return None
        msg_lock = self._msg_lock
        if policy == "block":
            if deadline is None:
                msg_lock.acquire()
            elif not msg_lock.acquire(timeout=max(0.0, deadline - _monotonic())):
                raise TimeoutError(f"another message was still being written after {timeout} s")
        elif not self._lock_unless_streaming():
            if policy == "try" or policy == "drop":
                return False
            raise queue.Full("another thread is streaming a message")
        try:
            with self._lock:
                protocol = self._protocol
                if self._ending.phase >= Phase.SHUT or not protocol.can_send_data:
                    raise self.closed()
                if prepared is not None:
                    frame = prepared.frame_for(protocol)
                elif type(message) is bytes or type(message) is SplitFrame:
                    frame = message
                else:
                    assert message is not None
                    frame = protocol.frame(message, compress)
                budget.add(len(frame))
                self._writer.put_data(frame)
        finally:
            msg_lock.release()
        return True

    def _lock_unless_streaming(self) -> bool:
        """Take the message lock, or give up (False) once a MessageWriter is seen to hold it.

        Another whole message holds it only while it is framed; a stream may
        take it at any moment and keep it for long, so the wait is in short
        steps, looking for a stream after each (a call that must not block
        never waits behind a whole streamed message).
        """
        msg_lock = self._msg_lock
        while not msg_lock.acquire(timeout=0 if self._streaming else _FRAMING_STEP):
            if self._streaming:
                return False
        return True

    def start_stream(self, timeout: float | None) -> None:
        """Take the message lock for a MessageWriter (until :meth:`end_stream`)."""
        if self._ending.phase >= Phase.SHUT:
            raise self.closed()
        if not self._msg_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"another message was still being written after {timeout} s")
        self._streaming = True

    def fragment(self, text: bool, data: Any, final: bool, timeout: float | None) -> None:
        """Queue one fragment of a streamed message (the caller holds the message lock)."""
        budget = self._writer.budget
        if not budget.wait_room(timeout):
            raise TimeoutError(f"send queue still full after {timeout} s")
        with self._lock:
            if self._ending.phase >= Phase.SHUT or not self._protocol.can_send_data:
                raise self.closed()
            frame = self._protocol.send_fragment(text, data, final)
            budget.add(len(frame))
            self._writer.put_data(frame)

    def end_stream(self) -> None:
        self._streaming = False
        self._msg_lock.release()

    # --- control frames ----------------------------------------------------------------

    def control(self, is_ping: bool, payload: bytes, done: threading.Event | None) -> None:
        """Queue a ping or a pong ahead of the data.

        Raises:
            ConnectionClosed: the connection is closing or has ended.
        """
        with self._lock:
            if self._ending.phase >= Phase.SHUT:
                raise self.closed()
            try:
                frame = self._protocol.send_ping(payload) if is_ping else self._protocol.send_pong(payload)
            except ProtocolClosed:
                raise self.closed() from None
            item = ControlItem(frame, is_ping, done)
            if is_ping or done is not None:
                self._writer.put_control(item)
            else:
                self._writer.put_pong(item)  # bounded: past 16 waiting, the oldest is dropped

    def close(self, code: int, reason: str, *, fail: bool, done: threading.Event | None, ordered: bool) -> bool:
        """Produce our close frame and queue it; False if one was already sent.

        A failing close (*fail*) jumps ahead of the queued data, which is then
        dropped, unless *ordered*; either way input is ignored from now on.
        """
        with self._lock:
            if self._ending.phase >= Phase.SHUT:
                return False
            frame = self._protocol.send_close(code, reason)
            if frame is None:
                return False
            item = CloseItem(frame, Close(code, reason), fail, done)
            # Set before the writer can see the frame, so its next timer wait
            # includes the closing handshake's deadline.
            if self._timers.close_deadline is None:
                self._timers.close_deadline = _monotonic() + self._close_timeout
            if fail and not ordered:
                self._ending.advance(Phase.INPUT_DONE)
                self._writer.put_control(item)
            else:
                self._writer.put_close(item)
        return True
