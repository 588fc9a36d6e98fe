"""A high-water mark in bytes and messages, shared by a queue's two sides.

The queues themselves are :class:`queue.SimpleQueue` (fast, unbounded, never
blocks on put); this adds the bound. A producer waits with :meth:`wait_room`
*before* it takes the connection lock, so a full queue never blocks anyone
holding that lock. The bound is a high-water mark: a single message larger
than it is still admitted when the queue is below the mark.

Counting takes no lock: each side keeps its own running totals, which only
that side writes (the callers serialise each side: producers add under the
connection's lock or on the one reader thread, consumers release on the one
writer thread or under the read lock), and the level is their difference.
Under the GIL a reader of the two totals sees each one whole. The condition
is used only when someone actually waits for room, which is the rare case;
a message that passes through an uncongested queue costs no lock here.

What it must never do
---------------------
Hold or refuse an item: it counts what its callers queue and lets a producer
wait for room (for at most its timeout); what a full queue means is theirs to
decide.
"""

from __future__ import annotations

import threading


class Budget:
    __slots__ = (
        "_cond",
        "_lock",
        "_waiting",
        "added_bytes",
        "added_items",
        "closed",
        "max_bytes",
        "max_items",
        "released_bytes",
        "released_items",
    )

    def __init__(self, max_bytes: int, max_items: int) -> None:
        self._lock = threading.Lock()
        self._cond: threading.Condition | None = None  # made by the first wait: most queues never fill
        self._waiting = 0
        self.added_bytes = self.added_items = 0  # written by the producing side only
        self.released_bytes = self.released_items = 0  # written by the consuming side only
        self.closed = False
        self.max_bytes = max_bytes
        self.max_items = max_items

    @property
    def bytes(self) -> int:
        """Bytes queued now."""
        return self.added_bytes - self.released_bytes

    @property
    def items(self) -> int:
        """Items queued now."""
        return self.added_items - self.released_items

    def _full(self) -> bool:
        return (
            self.added_bytes - self.released_bytes >= self.max_bytes
            or self.added_items - self.released_items >= self.max_items
        )

    def add(self, nbytes: int, nitems: int = 1) -> bool:
        """Count what was queued; return True if the queue is now at the mark."""
        self.added_bytes += nbytes
        self.added_items += nitems
        return (
            self.added_bytes - self.released_bytes >= self.max_bytes
            or self.added_items - self.released_items >= self.max_items
        )

    def release(self, nbytes: int, nitems: int = 1) -> None:
        """Count what was taken off the queue, waking producers if there is room again."""
        self.released_bytes += nbytes
        self.released_items += nitems
        # A waiter registers (under the lock) before it looks at the level, so
        # either it sees this release or it is counted here and gets notified.
        if self._waiting:
            with self._lock:
                if not self._full() and self._cond is not None:
                    self._cond.notify_all()

    def wait_room(self, timeout: float | None) -> bool:
        """Wait until below the mark or closed; False if *timeout* passed first."""
        if (
            self.added_bytes - self.released_bytes < self.max_bytes
            and self.added_items - self.released_items < self.max_items
        ):
            return True
        with self._lock:
            cond = self._cond
            if cond is None:
                cond = self._cond = threading.Condition(self._lock)
            self._waiting += 1
            try:
                return cond.wait_for(lambda: self.closed or not self._full(), timeout)
            finally:
                self._waiting -= 1

    def close(self) -> None:
        """Wake every waiter for good: the connection has ended."""
        with self._lock:
            self.closed = True
            if self._cond is not None:
                self._cond.notify_all()
