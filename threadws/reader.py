"""A connection's reader thread: the only code that calls ``recv`` on its socket.

What it owns
------------
The receive buffers, and for wss the ciphertext side of TLS: it ``recv``\\ s
ciphertext, feeds it to :class:`~threadws._tls.TLS` and takes the plaintext
out. Plaintext goes to the connection, which routes it through the
protocol; a full inbox blocks that call, so the reader stops reading and TCP
pushes back on the peer. When the writer has set a socket timeout (a socket has
one for both directions, and the writer owns it), a ``recv`` that times out
means nothing: the reader waits for input with ``poll`` instead.

It stops at the end of the peer's stream (EOF, or TLS ending) or when the
socket is shut down, and tells the connection why, which then ends the
connection on this thread.

What it must never do
---------------------
Write to the socket (over TLS, what reading makes TLS say goes out through
the writer), or interpret the bytes it reads.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._tls import TLS, TLSClosed

__all__ = ["Reader", "ReaderHooks"]

_monotonic = time.monotonic

#: The buffer sizes (see _RecvBuffer).
_RECV_SIZE_FIRST = 1024
_RECV_SIZE = 256 * 1024
_RECV_SHRINK_AFTER = 16


@dataclass(frozen=True)
class ReaderHooks:
    """What the reader asks of the connection it reads for."""

    accepting: Callable[[], bool]  # False once input is to be ignored (a close frame came, or failing)
    received: Callable[[Any, bytearray], None]  # handle data, which views the buffer from its start
    alive: Callable[[float], None]  # bytes arrived from the peer at this time
    ended: Callable[[str], None]  # the stream ended: "eof", "close_notify" or "tls-eof" (no close_notify)
    tls_output: Callable[[], None]  # reading made TLS produce bytes: have the writer send them


class _RecvBuffer:
    """A buffer to read into: it starts small (it is resident memory for every
    idle connection) and doubles while reads fill it, up to _RECV_SIZE, so that
    a 1 MiB message takes few calls; after _RECV_SHRINK_AFTER small reads in a
    row (the burst is over) it goes back to the first size."""

    __slots__ = ("data", "small", "view")

    def __init__(self) -> None:
        self.data = bytearray(_RECV_SIZE_FIRST)
        self.view = memoryview(self.data)
        self.small = 0

    def used(self, n: int) -> None:
        """*n* bytes were read into it and handled: resize for the next read."""
        size = len(self.data)
        if n == size:
            self.small = 0
            if n < _RECV_SIZE:
                self._resize(2 * n)  # a full read: more is coming, read bigger
        elif size > _RECV_SIZE_FIRST and n <= _RECV_SIZE_FIRST:
            self.small += 1
            if self.small == _RECV_SHRINK_AFTER:
                self.small = 0
                self._resize(_RECV_SIZE_FIRST)

    def _resize(self, size: int) -> None:
        self.data = bytearray(size)
        self.view = memoryview(self.data)


class Reader:
    """Reads one connection's socket until its stream ends; see the module documentation."""

    __slots__ = ("_hooks", "_poller", "_sock", "_tls")

    def __init__(self, sock: socket.socket, tls: TLS | None, hooks: ReaderHooks) -> None:
        self._sock = sock
        self._tls = tls
        self._hooks = hooks
        self._poller: select.poll | None = None

    def run(self) -> None:
        """Read until the peer's stream ends (then tell the connection) or the socket fails (raise OSError)."""
        if self._tls is None:
            self._read_plain()
        else:
            self._read_tls(self._tls)

    def _read_plain(self) -> None:
        sock = self._sock
        hooks = self._hooks
        buf = _RecvBuffer()
        while True:
            try:
                n = sock.recv_into(buf.data)
            except (TimeoutError, BlockingIOError, InterruptedError):
                self._wait_readable()
                continue
            if not n:
                hooks.ended("eof")
                return
            hooks.alive(_monotonic())
            if hooks.accepting():
                hooks.received(buf.view[:n], buf.data)
            buf.used(n)

    def _read_tls(self, tls: TLS) -> None:
        """Ciphertext from the socket into *tls*, plaintext out of it."""
        sock = self._sock
        hooks = self._hooks
        raw = _RecvBuffer()
        plain = _RecvBuffer()
        while True:
            try:
                n = tls.read_into(plain.view)
            except TLSClosed as exc:
                hooks.ended("close_notify" if exc.clean else "tls-eof")
                return
            if n:
                if hooks.accepting():
                    hooks.received(plain.view[:n], plain.data)
                plain.used(n)
                continue
            if tls.has_output():
                hooks.tls_output()
            try:
                m = sock.recv_into(raw.data)
            except (TimeoutError, BlockingIOError, InterruptedError):
                self._wait_readable()
                continue
            if not m:
                tls.feed_eof()
                continue
            hooks.alive(_monotonic())
            tls.feed(raw.view[:m])
            raw.used(m)

    def _wait_readable(self) -> None:
        """The writer set a socket timeout: wait for input our own way."""
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self._sock, select.POLLIN | select.POLLPRI)
        poller.poll()
