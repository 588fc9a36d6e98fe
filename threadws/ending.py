"""How one connection ends: a phase that only moves forward, the first cause, and the one exception.

What it owns
------------
:class:`Ending` is the single record of a connection's end, shared by the
connection's parts: its :class:`Phase` (OPEN, then INPUT_DONE when a close
frame came in or the connection is failing and input is ignored, then SHUT
when the socket is shut down, then ENDED), the peer's close frame, why it ended
(the first cause noted is the one kept, as gorilla keeps the first error), the
:class:`~threadws.ConnectionClosed` every call raises once it has ended, and
the callbacks to run then.

What it must never do
---------------------
Act: it records and answers questions; the connection tears itself down.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from typing import Any

from ._workers import Latch
from .exceptions import Close, ConnectionClosed, closed_exception

__all__ = ["Ending", "Phase"]


class Phase(enum.IntEnum):
    OPEN = 0
    INPUT_DONE = 1  # a close frame came in, or the connection is failing: input is ignored
    SHUT = 2  # the socket is shut down: the threads are stopping
    ENDED = 3


class Ending:
    """One connection's end; see the module documentation.

    Reading :attr:`phase` takes no lock (it only moves forward); changing it does.
    """

    __slots__ = ("_callbacks", "_lock", "cause", "detail", "ended", "exception", "phase", "rcvd", "rcvd_then_sent")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.phase = Phase.OPEN
        self.rcvd: Close | None = None  # the peer's close frame
        self.rcvd_then_sent: bool | None = None  # the peer closed first
        self.detail = ""
        self.cause: BaseException | None = None
        self.exception: ConnectionClosed | None = None  # once ENDED
        self.ended = Latch()
        self._callbacks: list[Callable[[Any], None]] = []

    def advance(self, phase: Phase) -> bool:
        """Move forward to *phase*; False if the connection was already there or past it."""
        with self._lock:
            if self.phase >= phase:
                return False
            self.phase = phase
            return True

    def note(self, detail: str, cause: BaseException | None = None) -> None:
        """Record why the connection is ending; the first cause is the one kept."""
        if not self.detail:
            self.detail = detail
            self.cause = cause

    def peer_closed(self, close: Close, first: bool) -> None:
        """The peer's close frame came in (*first*: before ours went out)."""
        self.rcvd = close
        self.rcvd_then_sent = first

    def closing(self, sent: Close | None) -> ConnectionClosed:
        """The exception for a call on a connection that is closing or has ended (*sent*: our close frame)."""
        if self.exception is not None:
            # Raising the same instance again would grow its traceback each time.
            return self.exception.with_traceback(None)
        exc = closed_exception(self.rcvd, sent, self.rcvd_then_sent, self.detail or "closing")
        exc.__cause__ = self.cause
        return exc

    def finish(self, sent: Close | None) -> tuple[ConnectionClosed, list[Callable[[Any], None]]]:
        """The connection has ended: build the exception every call raises from now on.

        Returns it and the callbacks to run (each once, outside any lock).
        """
        both = self.rcvd is not None and sent is not None
        exc = closed_exception(self.rcvd, sent, self.rcvd_then_sent if both else None, self.detail)
        exc.__cause__ = self.cause
        with self._lock:
            self.exception = exc
            self.phase = Phase.ENDED
            self.ended.set()
            callbacks, self._callbacks = self._callbacks, []
        return exc, callbacks

    def add_callback(self, callback: Callable[[Any], None]) -> bool:
        """Keep *callback* for the end; False if the connection has ended already (run it now)."""
        with self._lock:
            if self.phase is Phase.ENDED:
                return False
            self._callbacks.append(callback)
            return True

    def remove_callback(self, callback: Callable[[Any], None]) -> bool:
        with self._lock:
            try:
                self._callbacks.remove(callback)
            except ValueError:
                return False
            return True
