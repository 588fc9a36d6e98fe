"""threadws: WebSockets for threaded Python, the way gorilla/websocket does them in Go.

A server upgrades an HTTP request (:class:`Upgrader`, or :func:`serve` for a
ready-made threaded server); a client calls :func:`dial` (or loops over
:func:`reconnecting` to stay connected). Both give a :class:`Conn`.
``python -m threadws URL`` is an interactive client, ``python -m threadws
serve`` a server to try it with.

Concurrency contract: each connection runs one reader thread and one writer
thread of its own, so any number of application threads may write at once
(messages never interleave) and read at once (each message goes to one reader);
``close``, ``abort`` and ``write_control`` are safe from anywhere. Pings and the
closing handshake are answered by the reader thread without the application's
help, and every blocking call takes a timeout.
"""

from ._version import __version__
from ._workers import reuse_threads
from .backplane import RedisBackplane
from .client import dial
from .compression import Compression
from .connection import Conn
from .enums import CloseCode, MessageType
from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeError,
    ProxyError,
    is_close_error,
    is_unexpected_close_error,
)
from .hub import Hub
from .prepared import PreparedMessage
from .reconnect import reconnecting
from .server import Server, serve
from .settings import ServerLimits, ServerStats, Settings
from .streams import MessageReader, MessageWriter
from .upgrader import Upgrader

__all__ = [
    "CloseCode",
    "Compression",
    "Conn",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "HandshakeError",
    "Hub",
    "MessageReader",
    "MessageType",
    "MessageWriter",
    "PreparedMessage",
    "ProxyError",
    "RedisBackplane",
    "Server",
    "ServerLimits",
    "ServerStats",
    "Settings",
    "Upgrader",
    "dial",
    "is_close_error",
    "is_unexpected_close_error",
    "reconnecting",
    "reuse_threads",
    "serve",
]
