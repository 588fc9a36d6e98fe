"""TLS without an ``ssl.SSLSocket``: one ``SSLObject`` over two ``MemoryBIO``\\ s.

Why
---
An ``SSLSocket`` is one OpenSSL ``SSL`` object bound to the socket, and OpenSSL
does not allow one ``SSL`` object to be used by two threads at once; yet a
connection has a reader thread and a writer thread. Worse, ``SSLSocket.shutdown``
and ``close`` drop the TLS state *before* they touch the socket, so a ``send``
racing them on another thread goes out in the clear, and a racing ``recv``
hands ciphertext on as data.

So the socket stays a plain TCP socket, and TLS is done in memory, as asyncio
does it: the reader ``recv``\\ s ciphertext and feeds it to :class:`TLS`, which
gives plaintext back; the writer has :class:`TLS` encrypt what it sends and
sends the ciphertext itself. Every call on the ``SSLObject`` and its BIOs is
made under :attr:`TLS.lock`, held only for that in-memory work, never across a
``recv``, a ``send`` or a wait. Application bytes can reach the socket only as
ciphertext, whichever thread tears the connection down, because nothing here
ever writes to the socket unencrypted.

Before a connection exists (the TLS handshake, the HTTP head, the 101),
:class:`TLSSocket` gives one thread a small blocking socket-like object over
the same :class:`TLS`, which then moves into the connection with whatever it
had already decrypted or received.

What it must never do
---------------------
Start a thread, or hold :attr:`TLS.lock` across a ``recv``, a ``send`` or a
wait. :class:`TLS` does no I/O at all; :class:`TLSSocket` does blocking I/O
for the one thread that owns it.
"""

from __future__ import annotations

import io
import socket
import ssl
import threading
import time
from typing import Any

__all__ = ["TLS", "TLSClosed", "TLSSocket"]

#: The most ciphertext one ``recv`` of the handshake phase asks for.
_RECV_SIZE = 65536


class TLSClosed(Exception):
    """The peer ended TLS: with a ``close_notify`` (*clean*) or with a bare TCP EOF."""

    def __init__(self, clean: bool) -> None:
        super().__init__("TLS closed by the peer (close_notify)" if clean else "TCP EOF without a TLS close_notify")
        self.clean = clean


class TLS:
    """One TLS session in memory: ciphertext in, plaintext out, and back.

    Thread-safe: every method takes :attr:`lock` for its in-memory work only.
    The reader thread calls :meth:`feed`, :meth:`feed_eof` and
    :meth:`read_into`; the writer thread calls :meth:`encrypt`,
    :meth:`take_output` and :meth:`close_notify`, and sends what they return.

    Errors: a TLS failure (a bad record, an alert from the peer) raises
    :class:`ssl.SSLError` from the method that met it; the end of the peer's
    TLS stream raises :class:`TLSClosed`.
    """

    __slots__ = ("_incoming", "_input_fed", "_more", "_obj", "_outgoing", "lock", "notify_sent", "peer_closed")

    def __init__(self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self.lock = threading.Lock()
        # Set whenever the reader feeds ciphertext: a write that TLS can't make
        # until the peer has spoken (TLS 1.2 renegotiation) waits for it.
        self._input_fed: threading.Condition | None = None  # made by the first wait_input (rare)
        self._more = True  # a read may find plaintext (see read_into)
        self.notify_sent = False  # our close_notify is out
        self.peer_closed = False  # the peer's close_notify came

    # --- the handshake (one thread, before the connection exists) ----------------

    def do_handshake(self) -> bool:
        """Advance the handshake; True once it is complete (then send :meth:`take_output`)."""
        with self.lock:
            try:
                self._obj.do_handshake()
            except ssl.SSLWantReadError:
                return False
            return True

    @property
    def version(self) -> str | None:
        """The negotiated protocol (``"TLSv1.3"``), None before the handshake."""
        return self._obj.version()

    def getpeercert(self) -> Any:
        """The peer's certificate, as :meth:`ssl.SSLSocket.getpeercert` gives it."""
        return self._obj.getpeercert()

    @property
    def selected_alpn_protocol(self) -> str | None:
        return self._obj.selected_alpn_protocol()

    # --- reading --------------------------------------------------------------

    def feed(self, data: Any) -> None:
        """Hand over ciphertext received from the peer."""
        with self.lock:
            self._incoming.write(data)
            self._more = True
            if self._input_fed is not None:
                self._input_fed.notify_all()

    def feed_eof(self) -> None:
        """The peer closed TCP: no more ciphertext will come."""
        with self.lock:
            self._incoming.write_eof()
            self._more = True  # the next read reports the end
            if self._input_fed is not None:
                self._input_fed.notify_all()

    def read_into(self, view: memoryview) -> int:
        """Decrypt as much as is available into *view*; return how many bytes (0: feed more).

        Raises:
            TLSClosed: the peer's TLS stream has ended (nothing more will come).
            ssl.SSLError: the peer sent something TLS refuses.
        """
        obj = self._obj
        incoming = self._incoming
        n = 0
        size = len(view)
        with self.lock:
            # One call returns at most one TLS record (16 KiB): gather several,
            # so that a large message arrives in large pieces. A call that
            # finds nothing costs as much as one that decrypts (it releases
            # the GIL, a thread switch under load), so call only while there
            # may be something: ciphertext not yet read, or a record that the
            # last call didn't finish (it filled what it was asked for).
            while n < size and (self._more or incoming.pending):
                want = size - n
                try:
                    got: int = obj.read(want, view[n:])  # type: ignore[assignment]  # with a buffer: a count
                except ssl.SSLWantReadError:
                    self._more = False
                    return n
                except ssl.SSLEOFError:
                    if n:
                        self._more = True  # deliver what came first; the next call reports the end
                        return n
                    raise TLSClosed(clean=False) from None
                if not got:  # close_notify: SSL_read reports a clean end as 0 bytes
                    self.peer_closed = True
                    if n:
                        self._more = True
                        return n
                    raise TLSClosed(clean=True)
                self._more = got == want
                n += got
        return n

    def has_output(self) -> bool:
        """True if reading made TLS produce bytes for the peer (a key update, say)."""
        return self._outgoing.pending > 0

    # --- writing --------------------------------------------------------------

    def encrypt(self, data: Any) -> tuple[bytes, memoryview]:
        """Encrypt *data*; return every byte TLS has for the peer, in order, and what is left.

        What is left is empty unless TLS can't write before the peer speaks
        (TLS 1.2 renegotiation): then send what came back, :meth:`wait_input`,
        and encrypt the rest.
        """
        view = memoryview(data).cast("B")
        obj = self._obj
        with self.lock:
            try:
                while view:
                    view = view[obj.write(view) :]
            except ssl.SSLWantReadError:
                pass
            return self._outgoing.read(), view

    def wait_input(self, timeout: float | None) -> bool:
        """Wait until the reader feeds TLS something; False if *timeout* passed first."""
        with self.lock:
            if self._input_fed is None:
                self._input_fed = threading.Condition(self.lock)
            return self._input_fed.wait(timeout)

    def take_output(self) -> bytes:
        """What TLS produced for the peer besides encrypted data (handshake, key updates)."""
        with self.lock:
            return self._outgoing.read()

    def close_notify(self) -> bytes:
        """The ``close_notify`` alert to send (RFC 8446 section 6.1), once; b"" after that."""
        with self.lock:
            if self.notify_sent:
                return b""
            self.notify_sent = True
            try:
                self._obj.unwrap()
            except ssl.SSLWantReadError:
                pass  # the peer's close_notify hasn't come: ours is written anyway
            except (ssl.SSLError, ValueError):
                pass  # TLS already failed or ended: nothing to say
            return self._outgoing.read()


class TLSSocket:
    """A blocking socket-like object over a TCP socket and a :class:`TLS`, for one thread.

    It carries the handshake phase of a connection (the TLS handshake, the HTTP
    request and response) and gives ``http.server`` handlers their ``rfile``
    and ``wfile`` (:meth:`makefile`). Then the TCP socket and the :class:`TLS`
    move into the connection, whose reader and writer use them the same way.
    """

    def __init__(self, sock: socket.socket, tls: TLS) -> None:
        self.raw = sock
        self.tls = tls

    @classmethod
    def client(
        cls, sock: socket.socket, context: ssl.SSLContext, server_hostname: str | None, deadline: float | None
    ) -> TLSSocket:
        """Run the client's TLS handshake on *sock* (connected) before *deadline*."""
        tls_sock = cls(sock, TLS(context, server_side=False, server_hostname=server_hostname))
        tls_sock.handshake(deadline)
        return tls_sock

    @classmethod
    def server(cls, sock: socket.socket, context: ssl.SSLContext, deadline: float) -> TLSSocket:
        """Run the server's TLS handshake on an accepted *sock* before *deadline*."""
        tls_sock = cls(sock, TLS(context, server_side=True))
        tls_sock.handshake(deadline)
        return tls_sock

    def handshake(self, deadline: float | None) -> None:
        """The TLS handshake, bounded by *deadline* (a ``time.monotonic()`` value; None: no bound).

        Raises:
            TimeoutError: not complete by the deadline.
            ssl.SSLError: refused (:class:`ssl.SSLCertVerificationError` for a
                certificate that doesn't verify).
            ConnectionError: the peer closed the connection first.
        """
        tls = self.tls
        while True:
            done = tls.do_handshake()
            out = tls.take_output()
            if out:
                self._sendall_raw(out, deadline)
            if done:
                return
            data = self._recv_raw(deadline)
            if not data:
                raise ConnectionResetError("connection closed during the TLS handshake")
            tls.feed(data)

    def _recv_raw(self, deadline: float | None) -> bytes:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            self.raw.settimeout(remaining)
        return self.raw.recv(_RECV_SIZE)

    def _sendall_raw(self, data: bytes, deadline: float | None) -> None:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            self.raw.settimeout(remaining)
        self.raw.sendall(data)

    # --- the socket API the handshake phase uses --------------------------------

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        """Read plaintext into *buffer* (blocking, honouring the socket's timeout); 0 at the end."""
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        if not view:
            return 0
        while True:
            try:
                n = self.tls.read_into(view)
            except TLSClosed:
                return 0
            if n:
                return n
            data = self.raw.recv(_RECV_SIZE)
            if not data:
                self.tls.feed_eof()
            else:
                self.tls.feed(data)

    def recv(self, bufsize: int) -> bytes:
        buf = bytearray(bufsize)
        n = self.recv_into(buf)
        return bytes(buf[:n])

    def sendall(self, data: Any) -> None:
        rest: Any = data
        while True:
            out, rest = self.tls.encrypt(rest)
            if out:
                self.raw.sendall(out)
            if not rest:
                return
            # TLS needs the peer's answer first (renegotiation): read it in.
            ciphertext = self.raw.recv(_RECV_SIZE)
            if not ciphertext:
                raise ConnectionResetError("connection closed while TLS renegotiated")
            self.tls.feed(ciphertext)

    def send(self, data: Any) -> int:
        self.sendall(data)
        return len(memoryview(data).cast("B"))

    def close_notify(self) -> None:
        """Send TLS's ``close_notify``, best effort (the connection is ending anyway)."""
        try:
            out = self.tls.close_notify()
            if out:
                self.raw.sendall(out)
        except OSError:
            pass

    def makefile(self, mode: str = "r", buffering: int | None = None, **_: Any) -> Any:
        """Binary file objects over the TLS stream, as ``socket.makefile`` gives (``"rb"``, ``"wb"``)."""
        raw = _TLSIO(self, mode)
        if "r" in mode:
            return io.BufferedReader(raw, buffering if buffering and buffering > 0 else io.DEFAULT_BUFFER_SIZE)
        if buffering == 0:
            return raw
        return io.BufferedWriter(raw, buffering if buffering and buffering > 0 else io.DEFAULT_BUFFER_SIZE)

    def settimeout(self, timeout: float | None) -> None:
        self.raw.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self.raw.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self.raw.setblocking(flag)

    def fileno(self) -> int:
        return self.raw.fileno()

    def getpeername(self) -> Any:
        return self.raw.getpeername()

    def getsockname(self) -> Any:
        return self.raw.getsockname()

    def getpeercert(self) -> Any:
        return self.tls.getpeercert()

    def version(self) -> str | None:
        return self.tls.version

    @property
    def family(self) -> int:
        return self.raw.family

    def setsockopt(self, *args: Any) -> None:
        self.raw.setsockopt(*args)

    def shutdown(self, how: int) -> None:
        self.raw.shutdown(how)

    def close(self) -> None:
        self.raw.close()


class _TLSIO(io.RawIOBase):
    """The raw file object under :meth:`TLSSocket.makefile` (as ``socket.SocketIO``)."""

    def __init__(self, sock: TLSSocket, mode: str) -> None:
        super().__init__()
        self._sock = sock
        self._reading = "r" in mode

    def readable(self) -> bool:
        return self._reading

    def writable(self) -> bool:
        return not self._reading

    def readinto(self, buffer: Any) -> int:
        return self._sock.recv_into(buffer)

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        return len(memoryview(data).cast("B"))

    def fileno(self) -> int:
        return self._sock.fileno()
