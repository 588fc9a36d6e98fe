"""A connection's limits and timers, and a server's, with their defaults written once.

:func:`threadws.dial`, :class:`threadws.Upgrader` (and so :func:`threadws.serve`)
take the same settings as keyword arguments whose defaults are read from here,
and build one :class:`Settings` per connection factory. :func:`threadws.serve`
also takes the server's own limits, kept in a :class:`ServerLimits`, and counts
what it admits against them in a :class:`ServerStats`.

What it must never do
---------------------
Anything but hold values and check them: no I/O, no environment variables, no
state. A value out of range is a :class:`ValueError` when the object is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from .enums import check_close_code

__all__ = ["ServerLimits", "ServerStats", "Settings"]


@dataclass(frozen=True)
class Settings:
    """Per-connection limits and timers.

    Attributes:
        read_limit: the longest message accepted, in bytes (decompressed);
            a longer one closes the connection with 1009.
        ping_interval: send a keepalive ping after this many seconds without
            hearing from the peer; None turns keepalive off.
        ping_timeout: drop the connection (1011) if nothing arrives this many
            seconds after a keepalive ping; None: never.
        close_timeout: how long the closing handshake may take.
        max_read_queue: bytes of received messages held for the application
            before the reader stops reading (TCP then pushes back on the peer).
        max_write_queue: bytes of frames queued for sending before a write
            waits (or the write policy acts).
        max_queued_messages: the same bound in messages, for each queue, so
            that tiny messages can't pile up.
        max_fragments: the most frames one message may arrive in; past it the
            connection closes with 1008 (a peer can't keep a message open
            forever with empty continuation frames). Raise it with
            *read_limit* to receive very large streamed messages: 1 GiB in
            64 KiB fragments is 16,384 frames.
        idle_timeout: close the connection if the peer sends no message for
            this many seconds (pings and pongs don't count, and the clock
            starts over when the application catches up on a full queue);
            None: never.
        idle_close_code: the close code sent on an idle timeout.
    """

    read_limit: int = 1 << 20
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 10.0
    max_read_queue: int = 4 << 20
    max_write_queue: int = 4 << 20
    max_queued_messages: int = 4096
    max_fragments: int = 4096
    idle_timeout: float | None = None
    idle_close_code: int = 1001

    def __post_init__(self) -> None:
        if self.read_limit <= 0:
            raise ValueError("read_limit must be positive")
        for name in ("ping_interval", "ping_timeout", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None")
        if self.close_timeout < 0:
            raise ValueError("close_timeout must be >= 0")
        if min(self.max_read_queue, self.max_write_queue, self.max_queued_messages, self.max_fragments) <= 0:
            raise ValueError("queue and fragment bounds must be positive")
        check_close_code(self.idle_close_code)


@dataclass(frozen=True)
class ServerLimits:
    """What one :func:`threadws.serve` server admits; the per-connection limits are :class:`Settings`.

    Attributes:
        max_connections: WebSocket connections served at once (None: no
            limit); one more is refused with 503 before its upgrade. Each
            takes three threads and a file descriptor: 4,096 is half of what
            one process holds under Linux's default ``vm.max_map_count``
            (about 8,000, bench/README.md).
        max_handshakes: TCP connections accepted but not yet upgraded
            (reading their request head, or being sent a static file; None:
            no limit). While that many are, the accept loop stops accepting:
            the next connections wait in the kernel's listen backlog
            (``SOMAXCONN``) and are accepted as slots free, so a burst of
            reconnects is served in turn, not refused, while peers that
            connect and stay silent pin at most 128 threads for
            *handshake_timeout*.
        handshake_timeout: seconds a client has to send its whole request
            head: one deadline, not a per-read timeout (slowloris).
        max_request_line: the longest request line (else 414).
        max_header_bytes: the largest request head, request line and header
            fields together (else 431).
        max_header_fields: the most header fields in a request head (else
            431); http.client's own cap.
    """

    max_connections: int | None = 4096
    max_handshakes: int | None = 128
    handshake_timeout: float = 10.0
    max_request_line: int = 8192
    max_header_bytes: int = 16384
    max_header_fields: int = 100

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_handshakes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None: no limit)")
        if not self.handshake_timeout > 0:
            raise ValueError("handshake_timeout must be positive")
        for name in ("max_request_line", "max_header_bytes", "max_header_fields"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass(frozen=True)
class ServerStats:
    """What :meth:`threadws.Server.stats` counts: the slots in use now, and the refusals since the start."""

    #: WebSocket connections being served (from their upgrade until their
    #: handler returns): what ``max_connections`` bounds.
    connections: int
    #: TCP connections accepted and not yet upgraded (reading their request
    #: head, or being sent a static file): what ``max_handshakes`` bounds.
    handshakes: int
    #: Upgrades refused with 503 because ``max_connections`` were being served.
    refused_connections: int
    #: Times the accept loop stopped accepting because ``max_handshakes``
    #: were in their handshake (the next connections waited in the listen backlog).
    handshake_waits: int
    #: Connections refused with 503 because a thread couldn't be started (the
    #: request's, or the connection's reader or writer).
    refused_threads: int
    #: Times ``accept`` failed for want of file descriptors or memory (the
    #: client waits in the listen backlog while the accept loop backs off).
    accept_failures: int
