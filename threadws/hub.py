"""Broadcast to many connections without letting a slow one stall the rest."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

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
    Connections leave the hub by themselves when they close.

    Args:
        close_code: sent to a peer that is dropped for being too slow (1008
            by default; 1013 "try again later" also fits).
        on_drop: called with each dropped connection (from the thread that
            broadcast).
    """

    def __init__(
        self,
        *,
        close_code: int = CloseCode.POLICY_VIOLATION,
        on_drop: Callable[[Conn], None] | None = None,
    ) -> None:
        self.close_code = close_code
        self.on_drop = on_drop
        self._lock = threading.Lock()
        self._conns: set[Conn] = set()

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
        """The registered connections."""
        with self._lock:
            return list(self._conns)

    def __len__(self) -> int:
        with self._lock:
            return len(self._conns)

    def broadcast(self, message: str | bytes | PreparedMessage) -> list[Conn]:
        """Queue *message* on every registered connection; never blocks.

        *message* is a ``str`` (text), bytes (binary) or a PreparedMessage.
        Returns the connections dropped because their send queue was full.
        """
        if not isinstance(message, PreparedMessage):
            kind = MessageType.TEXT if isinstance(message, str) else MessageType.BINARY
            message = PreparedMessage(kind, message)
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
            if self.on_drop is not None:
                self.on_drop(conn)
        return dropped
