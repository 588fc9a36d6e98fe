"""A high-water mark in bytes and messages, shared by a queue's two sides.

The queues themselves are :class:`queue.SimpleQueue` (fast, unbounded, never
blocks on put); this adds the bound. A producer waits with :meth:`wait_room`
*before* it takes the connection lock, so a full queue never blocks anyone
holding that lock. The bound is a high-water mark: a single message larger
than it is still admitted when the queue is below the mark.
"""

from __future__ import annotations

import threading


class Budget:
    __slots__ = ("_cond", "_waiting", "bytes", "closed", "items", "max_bytes", "max_items")

    def __init__(self, max_bytes: int, max_items: int) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0
        self.bytes = 0
        self.items = 0
        self.closed = False
        self.max_bytes = max_bytes
        self.max_items = max_items

    def _full(self) -> bool:
        return self.bytes >= self.max_bytes or self.items >= self.max_items

    def add(self, nbytes: int, nitems: int = 1) -> bool:
        """Count what was queued; return True if the queue is now at the mark."""
        with self._cond:
            self.bytes += nbytes
            self.items += nitems
            return self._full()

    def release(self, nbytes: int, nitems: int = 1) -> None:
        """Count what was taken off the queue, waking producers if there is room again."""
        with self._cond:
            self.bytes -= nbytes
            self.items -= nitems
            # Only wake someone when someone waits: the common case costs no wake-up.
            if self._waiting and not self._full():
                self._cond.notify_all()

    def wait_room(self, timeout: float | None) -> bool:
        """Wait until below the mark or closed; False if *timeout* passed first."""
        # Unlocked look first: the mark is a heuristic, and the common case
        # (room to spare) then costs no lock at all.
        if self.bytes < self.max_bytes and self.items < self.max_items:
            return True
        with self._cond:
            if self.closed or not self._full():
                return True
            self._waiting += 1
            try:
                return self._cond.wait_for(lambda: self.closed or not self._full(), timeout)
            finally:
                self._waiting -= 1

    def close(self) -> None:
        """Wake every waiter for good: the connection has ended."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
