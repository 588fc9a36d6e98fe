"""Broadcast to many connections without letting a slow one stall the rest.

A :class:`Hub` queues a message on every connection registered with it,
framed once (:class:`~threadws.PreparedMessage`), with ``try_send``; a peer
whose queue is full is dropped (``Conn.fail``). With a backplane
(:mod:`threadws.backplane`) the same message also reaches the hubs of that
name on other processes.

What it must never do
---------------------
Block on a connection (a slow peer costs the others nothing), or touch a
connection's internals: it uses only the public API.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from .backplane import Backplane
from .connection import Conn
from .enums import CloseCode, MessageType
from .exceptions import ConnectionClosed
from .prepared import PreparedMessage

__all__ = ["Hub"]

logger = logging.getLogger("threadws")


class Hub:
    """A set of connections to broadcast to: gorilla's chat hub, with slow peers handled.

    :meth:`broadcast` frames a message once and queues it on every
    connection without ever waiting: a connection whose send queue is full
    (its peer has stopped reading, or reads too slowly) is dropped with
    *close_code* and reported, so it can hold up no one and grow no memory.
    Connections leave the hub by themselves when they close. Broadcasts are
    queued one at a time, so all the hub's connections get them in one order.

    With a *backplane* (:class:`threadws.RedisBackplane`) the hub spans
    processes and hosts: a broadcast on any process reaches the connections
    registered with the hub of the same *name* on every process, once each.
    :attr:`connections` and ``len(hub)`` still count this process's
    connections; :meth:`count_processes` asks Redis how many processes
    there are. Close the hub (:meth:`close`, or a ``with`` block) to leave
    the backplane.

    Args:
        name: the hub's name: the Redis channel it shares with hubs of the
            same name elsewhere. Needed with a backplane.
        backplane: carries broadcasts to and from other processes; None
            (the default) keeps the hub in this process.
        close_code: sent to a peer that is dropped for being too slow (1008
            by default; 1013 "try again later" also fits).
        on_drop: called with each dropped connection, from the thread that
            broadcast (or the backplane's thread, for a broadcast from
            elsewhere); it must not block.
        on_unpublished: with a backplane, called with each broadcast (a
            :class:`PreparedMessage`) that reached this process's connections
            but not the backplane (Redis unreachable or too slow), from the
            broadcasting thread or the backplane's; it must not block.

    Raises:
        ValueError: a backplane without a name, or a second open hub of that
            name on the backplane.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        backplane: Backplane | None = None,
        close_code: int = CloseCode.POLICY_VIOLATION,
        on_drop: Callable[[Conn], None] | None = None,
        on_unpublished: Callable[[PreparedMessage], None] | None = None,
    ) -> None:
        self.name = name
        self.close_code = close_code
        self.on_drop = on_drop
        self.on_unpublished = on_unpublished
        self._lock = threading.Lock()
        # Held while a message is queued on every connection (and put in the
        # backplane's outbox): broadcasts from several threads, and from other
        # processes, reach every connection here in one order. Nothing under it
        # blocks.
        self._send_lock = threading.Lock()
        self._conns: set[Conn] = set()
        self._backplane: Backplane | None = None
        if backplane is not None:
            if not name:
                raise ValueError("a hub on a backplane needs a name: Hub('chat', backplane=...)")
            backplane.attach(name, self._deliver, self._unpublished)
            self._backplane = backplane

    def __repr__(self) -> str:
        where = f" on {self._backplane!r}" if self._backplane is not None else ""
        return f"<Hub {self.name!r} {len(self)} connections{where}>"

    def register(self, conn: Conn) -> None:
        """Add *conn*; it is unregistered automatically when it closes."""
        with self._lock:
            self._conns.add(conn)
        conn.add_done_callback(self.unregister)

    def unregister(self, conn: Conn) -> None:
        """Remove *conn* (nothing happens if it isn't registered)."""
        with self._lock:
            self._conns.discard(conn)
        conn.remove_done_callback(self.unregister)

    @property
    def connections(self) -> list[Conn]:
        """The connections registered on this process."""
        with self._lock:
            return list(self._conns)

    def __len__(self) -> int:
        with self._lock:
            return len(self._conns)

    def broadcast(self, message: str | bytes | PreparedMessage) -> list[Conn]:
        """Queue *message* on every registered connection; never blocks.

        *message* is a ``str`` (text), bytes (binary) or a PreparedMessage.
        With a backplane it is also handed to the backplane for the other
        processes (without waiting for Redis: a message that can't be
        published goes to *on_unpublished*).
        Returns the connections here dropped because their send queue was full.
        """
        if not isinstance(message, PreparedMessage):
            kind = MessageType.TEXT if isinstance(message, str) else MessageType.BINARY
            message = PreparedMessage(kind, message)
        with self._send_lock:
            backplane = self._backplane
            published = backplane is None or backplane.publish(self.name or "", message)
            dropped = self._queue_on_all(message)
        if not published:
            self._unpublished(message)
        self._report_dropped(dropped)
        return dropped

    def count_processes(self) -> int:
        """How many processes have this hub open, this one included.

        With a backplane this asks Redis (``PUBSUB NUMSUB``): it counts
        processes, not connections, and blocks for one round trip (bounded by
        the backplane's timeout). Without one it is 1. For this process's
        connections use ``len(hub)``.

        Raises:
            ConnectionError: the backplane could not reach Redis.
        """
        backplane = self._backplane
        if backplane is None:
            return 1
        return backplane.count_processes(self.name or "")

    def close(self) -> None:
        """Leave the backplane; idempotent.

        Broadcasts from then on reach only this process's connections, and
        the connections stay registered and open (close them yourself). The
        backplane's threads end with its last hub: this blocks until they
        have (a few times the backplane's timeout at most, when Redis is
        unreachable).
        """
        with self._send_lock:
            backplane, self._backplane = self._backplane, None
        if backplane is not None:
            backplane.detach(self.name or "")

    def __enter__(self) -> Hub:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _deliver(self, message: PreparedMessage) -> None:
        """A broadcast from another process (on the backplane's thread)."""
        with self._send_lock:
            dropped = self._queue_on_all(message)
        self._report_dropped(dropped)

    def _unpublished(self, message: PreparedMessage) -> None:
        if self.on_unpublished is not None:
            self.on_unpublished(message)

    def _queue_on_all(self, message: PreparedMessage) -> list[Conn]:
        """try_send to everyone (the caller holds the send lock); the slow ones are failed."""
        dropped = []
        for conn in self.connections:
            try:
                if conn.try_send(message):
                    continue
            except ConnectionClosed:
                self.unregister(conn)
                continue
            self.unregister(conn)
            dropped.append(conn)
            logger.info("%s: dropped from the hub: its send queue is full", conn.name)
            conn.fail(self.close_code, "too slow", detail="dropped by the hub: the peer reads too slowly")
        return dropped

    def _report_dropped(self, dropped: list[Conn]) -> None:
        if self.on_drop is not None:
            for conn in dropped:
                self.on_drop(conn)
