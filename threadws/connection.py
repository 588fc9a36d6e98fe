"""A WebSocket connection: :class:`Conn`, with one reader and one writer thread.

Theory of operation
-------------------
Every connection owns three things: a socket, a wsproto ``Connection`` and two
threads.

* The **reader** is the only code that calls ``recv``. It feeds wsproto and
  puts what arrives on the inbound queue: a message that arrived whole as one
  item, a longer one chunk by chunk (so ``next_reader`` can stream it); it
  answers pings and the closing handshake itself (through the handlers),
  without waiting for the application. When the inbound queue is full it stops
  reading, so TCP pushes back on the peer. A protocol error from the peer is
  queued where it occurred, so the application first reads what came before
  it (and its replies precede the close frame), bounded by close_timeout.
* The **writer** is the only code that sends. It drains everything queued into
  as few ``sendmsg`` calls as it can, trying first without waiting; control
  frames (ping, pong, a failing close) jump ahead of queued data. It also keeps
  the connection's clocks: keepalive pings, the ping timeout, the read deadline
  and the closing handshake's timeout all fire from its queue wait, and while
  a peer that doesn't read keeps it stuck in a send it still wakes every
  second to look at them.
* Whole messages are framed and queued under ``self._msg_lock`` too, which a
  ``MessageWriter`` holds for its whole message, so messages never interleave.
* ``self._lock`` owns the wsproto object. It is held only for in-memory work:
  producing a frame *and* putting it on the writer's (unbounded, non-blocking)
  queue, so the wire order is the order wsproto saw. It is never held across
  ``recv``, ``sendmsg``, a wait for queue room or a join.

Deadlines are socket timeouts. A socket has one timeout for both directions, so
the writer alone owns it (``settimeout``); the reader treats a timeout from
``recv`` as "the writer set one" and waits for input with ``poll`` instead.

The connection ends in exactly one place, :meth:`Conn._finish`, run by the
reader when it stops: it wakes and joins the writer, closes the socket, builds
the one :class:`ConnectionClosed` that every later call raises, and wakes every
waiter. Anything that wants the connection gone calls :meth:`Conn._shutdown`,
which shuts the socket down (waking a blocked ``recv`` or ``sendmsg``) and
wakes the writer.
"""

from __future__ import annotations

import codecs
import itertools
import json
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Union

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from ._budget import Budget
from ._trace import describe, describe_close
from ._frames import FIN_BINARY, FIN_TEXT, INT_XOR_MAX, MASK_BIT, as_bytes, build_frame, rotate, unmask, unmask_into
from .compression import PerMessageDeflate
from .enums import CloseCode, MessageType, check_close_code
from .exceptions import Close, ConnectionClosed, ConnectionClosedOK, closed_exception
from .prepared import PreparedMessage
from .streams import MessageReader, MessageWriter

__all__ = ["Conn", "Settings"]

_logger = logging.getLogger("threadws")

Data = Union[str, bytes]
Address = Any

_monotonic = time.monotonic
_ids = itertools.count(1)


def connection_name(client: bool) -> str:
    """A new connection name, ``threadws-client-7`` (the number is unique in the process).

    :func:`threadws.dial` takes one before the connection exists, to log its
    handshake under the same name (see ``Conn(name=...)``).
    """
    return f"threadws-{'client' if client else 'server'}-{next(_ids)}"


#: recv_into buffer: it starts small (it is resident memory for every idle
#: connection) and doubles while reads fill it, up to the largest, so that a
#: 1 MiB message takes few calls; after _RECV_SHRINK_AFTER small reads in a
#: row (the burst is over) it goes back to the first size.
_RECV_SIZE_FIRST = 4 * 1024
_RECV_SIZE = 256 * 1024
_RECV_SHRINK_AFTER = 16
#: A plain frame up to this long that a read cut short waits to be parsed whole;
#: a longer one is delivered in chunks as it arrives.
_PENDING_MAX = 4096
_utf8_decoder = codecs.getincrementaldecoder("utf-8")
#: Linux's IOV_MAX: the most buffers one sendmsg takes.
_IOV_MAX = 1024
#: A writer stuck on a peer that doesn't read wakes this often to keep the clocks.
_STALL_TICK = 1.0
#: A message count bound next to the byte bounds, so tiny messages can't pile up.
_MAX_QUEUED_MESSAGES = 4096

# Writer queue items besides data frames (which are plain ``bytes``).
_WAKE = object()  # recompute the timers
_STOP = object()  # the socket is shut down: stop
# Inbound queue item meaning "the connection has ended".
_ENDED = object()


@dataclass(frozen=True)
class Settings:
    """Per-connection limits and timers (see :func:`threadws.dial` for each one's meaning)."""

    read_limit: int = 1 << 20
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 10.0
    max_read_queue: int = 4 << 20
    max_write_queue: int = 4 << 20

    def __post_init__(self) -> None:
        if self.read_limit <= 0:
            raise ValueError("read_limit must be positive")
        for name in ("ping_interval", "ping_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None")
        if self.close_timeout < 0:
            raise ValueError("close_timeout must be >= 0")
        if self.max_read_queue <= 0 or self.max_write_queue <= 0:
            raise ValueError("queue bounds must be positive")


class _CloseFrame:
    """A close frame on its way to the writer, with what it says."""

    __slots__ = ("close", "data", "done", "fail")

    def __init__(self, data: bytes, close: Close, fail: bool, done: threading.Event | None) -> None:
        self.data = data
        self.close = close
        self.fail = fail  # failing the connection: drop queued data, then shut down
        self.done = done


class _ControlFrame:
    __slots__ = ("data", "done", "is_ping")

    def __init__(self, data: bytes, is_ping: bool, done: threading.Event | None) -> None:
        self.data = data
        self.is_ping = is_ping
        self.done = done


class _Chunk:
    """Part of a message that arrives over several frames or reads."""

    __slots__ = ("data", "fin", "message_type", "size")

    def __init__(self, message_type: MessageType, data: Any, fin: bool, size: int) -> None:
        self.message_type = message_type
        self.data = data
        self.fin = fin
        self.size = size


class _Failure:
    """A protocol error, queued for the application at the point where it occurred."""

    __slots__ = ("code", "detail", "reason")

    def __init__(self, code: int, reason: str, detail: str) -> None:
        self.code = code
        self.reason = reason
        self.detail = detail


def _default_pong_handler(payload: bytes) -> None:
    pass


class Conn:
    """A WebSocket connection, the same class for the server and the client side.

    You get one from :meth:`threadws.Upgrader.upgrade`, :func:`threadws.serve`'s
    handler or :func:`threadws.dial`; you rarely build one yourself (the
    constructor takes a socket whose opening handshake is already done).

    Concurrency: any number of threads may call the write methods at once
    (messages never interleave); reads may come from any thread, each message
    going to exactly one reader. :meth:`close`, :meth:`abort` and
    :meth:`write_control` are safe from anywhere, handlers included. Ping, pong
    and close handlers run on the connection's reader thread.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        client: bool,
        settings: Settings | None = None,
        trailing_data: bytes = b"",
        subprotocol: str | None = None,
        path: str = "/",
        request_headers: Any = None,
        response_headers: Any = None,
        extensions: Sequence[Extension] = (),
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        name: str | None = None,
    ) -> None:
        settings = settings or Settings()
        self.logger: logging.Logger | logging.LoggerAdapter[Any] = logger or _logger
        """Where this connection logs (the ``threadws`` logger unless another was given).

        At DEBUG it logs every message and control frame sent and received
        (``> TEXT 'hello' [5 bytes]``); whether DEBUG is on is read once, when
        the connection is made, so that tracing costs nothing otherwise."""
        self._debug = self.logger.isEnabledFor(logging.DEBUG)
        self._sock = sock
        self._client = client
        self._ssl = isinstance(sock, ssl.SSLSocket)
        # The extensions the handshake negotiated (permessage-deflate, built by
        # threadws.compression); wsproto runs them on every frame.
        self._ws = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER, list(extensions))
        self._deflate = next((e for e in extensions if isinstance(e, PerMessageDeflate)), None)
        # No extension: whole data frames take the fast path (threadws._frames).
        self._plain = not any(e.enabled() for e in extensions)
        self._in_mask_bit = 0 if client else MASK_BIT  # a client's frames must be masked, a server's not
        self._ws_owed = 0  # bytes of a frame begun in wsproto that it still needs
        self._ws_mid = False  # wsproto is inside a fragmented message
        self._pending = b""  # the start of a short plain frame split across reads
        self._long_left = 0  # payload bytes still to come of a long plain frame
        self._long_key: bytes | None = None  # its masking key, rotated to the next byte
        self._long_type = MessageType.BINARY
        self._long_decoder: codecs.IncrementalDecoder | None = None  # for a text frame
        self._inflated_decoder: codecs.IncrementalDecoder | None = None  # for compressed text
        if self._deflate is not None:
            self._deflate.read_limit = settings.read_limit
            self._deflate.hand_over = True  # see _receive_ws
        self._lock = threading.Lock()
        self.subprotocol: str | None = subprotocol
        """The subprotocol agreed in the handshake, or None."""
        self.path = path
        """The request target of the handshake (``"/chat?room=1"``)."""
        self.request_headers = request_headers
        """The handshake request's headers (an :class:`http.client.HTTPMessage` or similar)."""
        self.response_headers = response_headers
        """The handshake response's headers."""
        self.local_address: Address = _address(sock.getsockname)
        self.remote_address: Address = _address(sock.getpeername)
        self.name = name or connection_name(client)
        """Names the connection in log lines and its threads (``threadws-client-7``)."""

        self._read_limit = settings.read_limit
        self._ping_interval = settings.ping_interval
        self._ping_timeout = settings.ping_timeout
        self._close_timeout = settings.close_timeout

        # Inbound: reader -> application.
        self._inq: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._in_budget = Budget(settings.max_read_queue, _MAX_QUEUED_MESSAGES)
        self._msg_size = 0  # bytes of the message being received so far
        self._in_message = False  # the reader is between a message's first and last chunk
        self._msg_chunks = 0  # chunks of that message put on the inbound queue
        # Consumers take messages one at a time: whole ones (read_message) or
        # chunk by chunk (next_reader). A read_message that timed out mid-message
        # keeps what it had in _partial for the next call.
        self._read_lock = threading.Lock()
        self._partial: list[Any] = []
        self._partial_type = MessageType.BINARY
        self._current_reader: MessageReader | None = None
        # Outbound: application -> writer. Data frames on _wq, control frames on _ctrl.
        self._wq: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ctrl: deque[_ControlFrame | _CloseFrame] = deque()
        self._out_budget = Budget(settings.max_write_queue, _MAX_QUEUED_MESSAGES)
        # Held while one whole message is framed and queued, or for the life
        # of a MessageWriter, so that messages never interleave.
        self._msg_lock = threading.Lock()
        self._streaming: MessageWriter | None = None
        self._write_policy = "block"
        self._full_close_code: int = CloseCode.POLICY_VIOLATION

        self._ping_handler: Callable[[bytes], None] = self._default_ping_handler
        self._pong_handler: Callable[[bytes], None] = _default_pong_handler
        self._close_handler: Callable[[int, str], None] = self._default_close_handler

        # Clocks, all time.monotonic() values. Written by one thread, read by the
        # writer; plain attribute stores are atomic under the GIL.
        now = _monotonic()
        self._last_recv = now
        self._last_progress = now
        self._ping_sent: float | None = None
        self._read_deadline: float | None = None
        self._write_deadline: float | None = None
        self._close_deadline: float | None = None
        self._next_timer: float | None = None
        self._sock_timeout: float | None = sock.gettimeout()
        self._reader_paused = False

        # How it ended. First cause wins (see _note).
        self._rcvd: Close | None = None
        self._sent: Close | None = None
        self._rcvd_then_sent: bool | None = None
        self._detail = ""
        self._cause: BaseException | None = None
        self._discarding = False  # the reader ignores input after a close or a failure
        self._pending_failure: _Failure | None = None  # a protocol error the application hasn't reached
        self._fail_deadline = 0.0
        self._shut = False
        self._closed_exc: ConnectionClosed | None = None
        self._ended = threading.Event()
        self._on_end: list[Callable[[Conn], None]] = []

        self._trailing = trailing_data
        self._writer = threading.Thread(target=self._write_loop, name=f"{self.name}-writer", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name=f"{self.name}-reader", daemon=True)
        self._writer.start()
        self._reader.start()

    def __repr__(self) -> str:
        state = "closed" if self._ended.is_set() else "open"
        return f"<Conn {self.name} {state} remote={self.remote_address!r}>"

    # --- reading ------------------------------------------------------

    def read_message(self, timeout: float | None = None) -> tuple[MessageType, Data]:
        """Wait for the next whole message and return ``(message_type, data)``.

        Text arrives as a ``str`` (already validated as UTF-8), binary as ``bytes``.

        Args:
            timeout: seconds to wait; None waits until a message or the end.

        Raises:
            TimeoutError: nothing arrived within *timeout*; the connection is
                still usable.
            ConnectionClosed: the connection has ended and every message that
                arrived before the end has been read.
        """
        if timeout is None:
            deadline = None
            self._read_lock.acquire()
        else:
            deadline = _monotonic() + timeout
            self._acquire_reading(deadline, timeout)
        try:
            if self._current_reader is not None:
                self._discard_current_reader()
            parts = self._partial
            while True:
                item = self._next_item(deadline, timeout)
                if type(item) is tuple:
                    return item[0], item[1]
                if not parts:
                    self._partial_type = item.message_type
                parts.append(item.data)
                if item.fin:
                    self._partial = []
                    return self._partial_type, ("" if type(parts[0]) is str else b"").join(parts)
        finally:
            self._read_lock.release()

    def next_reader(self, timeout: float | None = None) -> tuple[MessageType, MessageReader]:
        """Wait for the next message and return ``(message_type, reader)`` to stream it.

        The reader is a binary file-like object (``read(n)``, ``readinto``,
        iteration over chunks as they arrive) that never holds the whole
        message; text arrives as its UTF-8 bytes, already validated (wrap it
        in ``io.TextIOWrapper(io.BufferedReader(reader), "utf-8")`` to decode as
        you go). The read limit still applies to the whole message. Calling
        ``next_reader`` or ``read_message`` again discards whatever the
        previous reader left unread (gorilla's rule). Use a reader from one
        thread at a time.

        Raises:
            TimeoutError: no message began within *timeout*.
            ConnectionClosed: the connection has ended.
        """
        deadline = None if timeout is None else _monotonic() + timeout
        self._acquire_reading(deadline, timeout)
        try:
            self._discard_current_reader()
            if self._partial:  # left by a read_message that timed out
                first: list[Any] = self._partial
                message_type, done = self._partial_type, False
                self._partial = []
            else:
                item = self._next_item(deadline, timeout)
                if type(item) is tuple:
                    message_type, first, done = item[0], [item[1]], True
                else:
                    message_type, first, done = item.message_type, [item.data], item.fin
            reader = MessageReader(self, message_type, first, done)
            self._current_reader = reader
            return message_type, reader
        finally:
            self._read_lock.release()

    def read_json(self, timeout: float | None = None) -> Any:
        """Read the next message and parse it as JSON.

        Raises:
            ValueError: (a :class:`json.JSONDecodeError`) the message is not
                JSON; it is consumed, and the connection stays usable.
            TimeoutError, ConnectionClosed: as for :meth:`read_message`.
        """
        data = self.read_message(timeout)[1]
        return json.loads(data)

    def _acquire_reading(self, deadline: float | None, timeout: float | None) -> None:
        wait = -1 if deadline is None else max(0.0, deadline - _monotonic())
        if not self._read_lock.acquire(timeout=wait):
            raise TimeoutError(f"no message within {timeout} s")

    def _next_item(self, deadline: float | None, timeout: float | None = None) -> Any:
        """The next message or chunk from the reader thread (holding the read lock)."""
        while True:
            if deadline is None:
                item = self._inq.get()
            else:
                try:
                    item = self._inq.get(timeout=max(0.0, deadline - _monotonic()))
                except queue.Empty:
                    raise TimeoutError(f"no message within {timeout} s") from None
            if item is _ENDED:
                self._inq.put(_ENDED)  # for the next reader: the end is sticky
                raise self._final_exception()
            if type(item) is _Failure:
                # The application has read everything that arrived before the
                # error (and queued its replies): now the close frame goes out.
                self._fail(item.code, item.reason, item.detail, ordered=True)
                continue
            self._in_budget.release(item[2] if type(item) is tuple else item.size)
            return item

    def _discard_current_reader(self) -> None:
        reader = self._current_reader
        if reader is None:
            return
        self._current_reader = None
        while not reader._done:
            item = self._next_item(None)
            reader._done = type(item) is tuple or item.fin
        reader._discarded = True

    def recv(self, timeout: float | None = None) -> Data:
        """Like :meth:`read_message` but return only the data: ``str`` for text, ``bytes`` for binary."""
        return self.read_message(timeout)[1]

    def __iter__(self) -> Iterator[Data]:
        """Yield each message's data until the connection closes normally.

        The loop ends quietly on :class:`ConnectionClosedOK`; any other ending
        raises :class:`ConnectionClosedError`.
        """
        while True:
            try:
                yield self.read_message()[1]
            except ConnectionClosedOK:
                return

    def set_read_limit(self, limit: int) -> None:
        """Refuse messages longer than *limit* bytes: the connection closes with 1009.

        The default is 1 MiB. A message is never truncated; the limit counts the
        whole message, across fragments.
        """
        if limit <= 0:
            raise ValueError("read limit must be positive")
        self._read_limit = limit
        if self._deflate is not None:
            self._deflate.read_limit = limit  # it bounds inflating by the same limit

    def set_read_deadline(self, deadline: float | None) -> None:
        """Fail the connection if it is still open at *deadline* (a ``time.monotonic()`` value).

        As in gorilla, a passed read deadline is fatal: the connection is torn
        down and every blocked call raises ConnectionClosed saying "read deadline
        exceeded". Extend it as the peer shows signs of life, typically from the
        pong handler. None removes it. To stop *waiting* without harming the
        connection, use ``read_message(timeout=...)`` instead.
        """
        self._read_deadline = deadline
        nxt = self._next_timer
        if deadline is not None and (nxt is None or deadline < nxt):
            self._wq.put(_WAKE)  # the writer keeps the clocks: make it look again

    # --- writing ------------------------------------------------------

    def write_message(
        self, message_type: MessageType, data: Data, timeout: float | None = None, *, compress: bool = True
    ) -> bool:
        """Queue one message for sending.

        Args:
            message_type: :attr:`MessageType.TEXT` (``str``, or UTF-8 ``bytes``)
                or :attr:`MessageType.BINARY` (bytes-like).
            data: the payload.
            timeout: under the default ``"block"`` write policy, how long to
                wait for room when the send queue is full; None waits as long
                as it takes. See :meth:`set_write_policy` for the others.
            compress: False sends this message uncompressed even when
                permessage-deflate was negotiated (e.g. for data that is
                already compressed). Messages shorter than the compression's
                ``min_size`` are never compressed. Without compression it
                has no effect.

        Returns True once the message is queued (the writer thread sends it in
        order), False if the ``"drop"`` policy dropped it.

        Raises:
            TimeoutError: the queue stayed full for *timeout*; nothing was
                queued and the connection is still usable.
            queue.Full: the queue is full and the policy is ``"raise"``.
            ConnectionClosed: the connection is closing or has ended (or the
                ``"close"`` policy just closed it).
            TypeError, ValueError: wrong type for *message_type*, invalid UTF-8.
        """
        queued = self._write(self._message(message_type, data), None, timeout, self._write_policy, compress)
        if self._debug and queued:
            self._trace(">", MessageType(message_type).name, data)
        return queued

    def send(self, data: Data, timeout: float | None = None) -> bool:
        """Send a ``str`` as a text message or bytes-like data as a binary one.

        See :meth:`write_message` for *timeout*, the result and what it raises.
        """
        kind = MessageType.TEXT if isinstance(data, str) else MessageType.BINARY
        queued = self._write(self._message(kind, data), None, timeout, self._write_policy)
        if self._debug and queued:
            self._trace(">", kind.name, data)
        return queued

    def try_send(self, message: Data | PreparedMessage) -> bool:
        """Queue a message if there is room right now; never blocks.

        *message* is a ``str`` (text), bytes-like (binary) or a
        :class:`PreparedMessage`. Returns False, leaving the connection as it
        is, when the send queue is full or another thread is streaming a
        message (:meth:`next_writer`).

        Raises:
            ConnectionClosed: the connection is closing or has ended.
        """
        if isinstance(message, PreparedMessage):
            queued = self._write(None, message, 0, "try")
            kind, data = message.message_type, message.data
        else:
            kind = MessageType.TEXT if isinstance(message, str) else MessageType.BINARY
            queued = self._write(self._message(kind, message), None, 0, "try")
            data = message
        if self._debug and queued:
            self._trace(">", kind.name, data)
        return queued

    def write_json(self, obj: Any, timeout: float | None = None) -> bool:
        """Send *obj* as a JSON text message (see :meth:`write_message`).

        Raises:
            TypeError, ValueError: *obj* can't be serialized; nothing is sent.
        """
        text = json.dumps(obj)
        queued = self._write(self._message(MessageType.TEXT, text), None, timeout, self._write_policy)
        if self._debug and queued:
            self._trace(">", "TEXT", text)
        return queued

    def write_prepared(self, message: PreparedMessage, timeout: float | None = None) -> bool:
        """Send a :class:`PreparedMessage`, framed once for every server-side connection.

        Same results and errors as :meth:`write_message`.
        """
        queued = self._write(None, message, timeout, self._write_policy)
        if self._debug and queued:
            self._trace(">", message.message_type.name, message.data)
        return queued

    def set_write_policy(self, policy: str, close_code: int = CloseCode.POLICY_VIOLATION) -> None:
        """Choose what happens when the send queue is full (``max_write_queue``
        bytes, or 4096 messages).

        * ``"block"`` (the default): wait up to the call's *timeout*, then
          raise TimeoutError.
        * ``"raise"``: raise :class:`queue.Full` at once.
        * ``"drop"``: drop the message; the call returns False.
        * ``"close"``: the peer is too slow: close the connection with
          *close_code* (1008 by default; 1013 "try again later" also fits)
          and raise ConnectionClosed.
        """
        if policy not in ("block", "raise", "drop", "close"):
            raise ValueError(f"unknown write policy {policy!r}")
        check_close_code(close_code)
        self._write_policy = policy
        self._full_close_code = close_code

    def next_writer(
        self, message_type: MessageType, *, buffer_size: int = 65536, timeout: float | None = None
    ) -> MessageWriter:
        """Start a message to be written piece by piece; use it as a context manager::

            with conn.next_writer(MessageType.BINARY) as writer:
                for chunk in source:
                    writer.write(chunk)

        Every *buffer_size* bytes go out as a fragment; closing the writer
        sends the last one. Until then other threads' messages wait their
        turn. *timeout* bounds each wait: for the turn to write, and for room
        in the send queue.

        Raises:
            TimeoutError: another thread's message didn't finish within *timeout*.
            ConnectionClosed: the connection is closing or has ended.
        """
        if message_type not in (MessageType.TEXT, MessageType.BINARY):
            raise ValueError(f"next_writer takes TEXT or BINARY, not {message_type!r}")
        if buffer_size <= 0:
            raise ValueError("buffer_size must be positive")
        if self._shut:
            raise self._closing_exception()
        if not self._msg_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"another message was still being written after {timeout} s")
        writer = MessageWriter(self, message_type, buffer_size, timeout)
        self._streaming = writer
        return writer

    def _message(self, message_type: MessageType, data: Any) -> Any:
        """Check a whole message's data; return its frame, or the event wsproto frames.

        Without extensions the frame is built here (threadws._frames), outside
        every lock: it doesn't touch wsproto's state, which only tracks
        fragmented messages.
        """
        if not self._plain:
            return _event_for(message_type, data)
        if message_type == MessageType.TEXT:
            if isinstance(data, str):
                return build_frame(FIN_TEXT, data.encode("utf-8"), self._client)
            data = as_bytes(data)
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("text message data is not valid UTF-8") from None
            return build_frame(FIN_TEXT, data, self._client)
        if message_type == MessageType.BINARY:
            return build_frame(FIN_BINARY, as_bytes(data), self._client)
        raise ValueError(f"write_message takes TEXT or BINARY, not {message_type!r}; see write_control")

    def _write(
        self, message: Any, prepared: PreparedMessage | None, timeout: float | None, policy: str, compress: bool = True
    ) -> bool:
        """Queue one whole message: its frame or wsproto event (see _message), or a prepared one."""
        if self._shut:
            raise self._closing_exception()
        if policy == "block":
            if not self._out_budget.wait_room(timeout):
                raise TimeoutError(f"send queue still full after {timeout} s")
        elif not self._out_budget.wait_room(0):
            if policy == "try" or policy == "drop":
                return False
            if policy == "raise":
                raise queue.Full("send queue full")
            self._fail(self._full_close_code, "send queue full", "send queue full: the peer reads too slowly")
            raise self._closing_exception()
        if policy == "block":
            if timeout is None:
                self._msg_lock.acquire()
            elif not self._msg_lock.acquire(timeout=timeout):
                raise TimeoutError(f"another message was still being written after {timeout} s")
        # The message lock is only ever held for long by a MessageWriter: then
        # a call that must not block reports a full queue; otherwise the wait
        # is for another thread to finish framing one message.
        elif not self._msg_lock.acquire(blocking=self._streaming is None):
            if policy == "try" or policy == "drop":
                return False
            raise queue.Full("another thread is streaming a message")
        try:
            with self._lock:
                if self._shut or self._ws.state is not ConnectionState.OPEN:
                    raise self._closing_exception()
                if not compress and self._deflate is not None:
                    self._deflate.compress_next = False  # read by this message's first frame
                if prepared is not None:
                    data = prepared._frame_for(self)
                elif type(message) is bytes:
                    data = message
                else:
                    data = self._ws.send(message)
                self._out_budget.add(len(data))
                self._wq.put(data)
        finally:
            self._msg_lock.release()
        return True

    def _write_fragment(self, text: bool, data: Any, final: bool, timeout: float | None) -> None:
        """Queue one fragment of a streamed message (the caller holds the message lock)."""
        if not self._out_budget.wait_room(timeout):
            raise TimeoutError(f"send queue still full after {timeout} s")
        event = TextMessage(data=data, message_finished=final) if text else BytesMessage(data=data, message_finished=final)
        with self._lock:
            if self._shut or self._ws.state is not ConnectionState.OPEN:
                raise self._closing_exception()
            frame = self._ws.send(event)
            self._out_budget.add(len(frame))
            self._wq.put(frame)
        if self._debug:
            self._trace(">", "TEXT" if text else "BINARY", data, part="last part" if final else "part")

    def _end_writer(self, writer: MessageWriter) -> None:
        self._streaming = None
        self._msg_lock.release()

    def write_control(self, message_type: MessageType, data: bytes = b"", deadline: float | None = None) -> None:
        """Send a control frame (RFC 6455 section 5.5); safe from any thread.

        PING and PONG jump ahead of queued messages. CLOSE takes a close
        payload (a 2-byte big-endian code then a UTF-8 reason, or empty) and is
        sent after the messages already queued, like :meth:`close` but without
        waiting for the peer.

        Args:
            message_type: PING, PONG or CLOSE.
            data: at most 125 bytes.
            deadline: a ``time.monotonic()`` value: wait until the frame has
                been handed to the operating system, and raise TimeoutError if
                that has not happened by then (the frame stays queued). None
                returns at once.

        Raises:
            ConnectionClosed: the connection is closing or has ended.
            ValueError: payload over 125 bytes, a bad close payload, a data type.
        """
        data = bytes(as_bytes(data))
        if len(data) > 125:
            raise ValueError("control frame payload must be at most 125 bytes")
        done = threading.Event() if deadline is not None else None
        if message_type == MessageType.CLOSE:
            if len(data) == 1:
                raise ValueError("close payload must be empty or a 2-byte code and a reason")
            code = int.from_bytes(data[:2], "big") if data else CloseCode.NO_STATUS_RCVD
            if data:
                check_close_code(code)
            try:
                reason = data[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("close reason is not valid UTF-8") from None
            if not self._queue_close(code, reason, fail=False, done=done):
                raise self._closing_exception()
        elif message_type in (MessageType.PING, MessageType.PONG):
            self._queue_control(Ping(payload=data) if message_type == MessageType.PING else Pong(payload=data), done)
        else:
            raise ValueError(f"write_control takes CLOSE, PING or PONG, not {message_type!r}")
        if done is not None and deadline is not None:
            if not done.wait(max(0.0, deadline - _monotonic())):
                if self._shut:
                    raise self._closing_exception()
                raise TimeoutError("control frame not sent before the deadline")

    def set_write_deadline(self, deadline: float | None) -> None:
        """Abort the connection if a send is still stuck at *deadline* (a ``time.monotonic()`` value).

        Applies to every write until changed; None removes it. A write that
        times out part-way leaves the stream corrupt, so the connection is torn
        down and every waiter wakes with ConnectionClosed ("write deadline
        exceeded"). To bound only the wait for queue room, use
        ``write_message(timeout=...)``.
        """
        self._write_deadline = deadline

    @property
    def queued_bytes(self) -> int:
        """Bytes of frames queued for the writer and not yet sent."""
        return self._out_budget.bytes

    # --- handlers ---------------------------------------------------------

    def set_ping_handler(self, handler: Callable[[bytes], None] | None) -> None:
        """Call ``handler(payload)`` on the reader thread for each ping received.

        The default answers with a pong carrying the same payload; a custom
        handler must do that itself (``conn.write_control(MessageType.PONG, payload)``)
        if it wants one sent. None restores the default.
        """
        self._ping_handler = handler or self._default_ping_handler

    def set_pong_handler(self, handler: Callable[[bytes], None] | None) -> None:
        """Call ``handler(payload)`` on the reader thread for each pong received (default: nothing)."""
        self._pong_handler = handler or _default_pong_handler

    def set_close_handler(self, handler: Callable[[int, str], None] | None) -> None:
        """Call ``handler(code, reason)`` on the reader thread when the peer's close frame arrives.

        The default echoes the code back (completing the closing handshake, RFC
        6455 section 5.5.1). A custom handler that wants the handshake completed
        must call :meth:`close` or :meth:`write_control`; otherwise the
        connection is dropped after ``close_timeout``. None restores the default.
        """
        self._close_handler = handler or self._default_close_handler

    def _default_ping_handler(self, payload: bytes) -> None:
        try:
            self._queue_control(Pong(payload=payload), None)
        except ConnectionClosed:
            pass  # closing: the pong no longer matters

    def _default_close_handler(self, code: int, reason: str) -> None:
        self._queue_close(code, "", fail=False, done=None)

    # --- closing ------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "", timeout: float | None = None) -> None:
        """Close the connection with the closing handshake (RFC 6455 section 7).

        Sends everything already queued, then the close frame, waits for the
        peer's close frame and the end of the connection, at most *timeout*
        seconds (default: the ``close_timeout`` setting), then tears it down.
        Idempotent and safe from any thread; from a handler (the reader thread)
        it queues the close and returns without waiting.

        Raises:
            ValueError: *code* is reserved (1004, 1005, 1006, 1015) or not a
                close code, or *reason* is over 123 bytes in UTF-8.
        """
        check_close_code(code)
        if len(reason.encode("utf-8")) > 123:
            raise ValueError("close reason must be at most 123 bytes in UTF-8")
        if self._ended.is_set():
            return
        self._queue_close(code, reason, fail=False, done=None)
        if threading.current_thread() in (self._reader, self._writer):
            return
        if not self.wait_closed(self._close_timeout if timeout is None else timeout):
            self._note("close timed out: no close frame or EOF from the peer")
            self.abort()

    def abort(self) -> None:
        """Tear the connection down at once, without the closing handshake.

        Every blocked call wakes with ConnectionClosed. Waits (briefly) for the
        connection's threads unless called from one of them.
        """
        if self._ended.is_set():
            return
        self._note("aborted")
        self._shutdown()
        if threading.current_thread() not in (self._reader, self._writer):
            self.wait_closed(self._close_timeout + 5.0)

    def fail(self, code: int = CloseCode.POLICY_VIOLATION, reason: str = "", *, detail: str | None = None) -> None:
        """Fail the connection (RFC 6455 section 7.1.7) without waiting for anything.

        Messages still queued are dropped, a close frame with *code* and
        *reason* goes out ahead of them if the socket takes it, and the
        connection is torn down without waiting for the peer's answer. Never
        blocks; safe from any thread. Use it to drop a peer that reads too
        slowly (as :class:`threadws.Hub` does); :meth:`close` is the polite way.
        *detail* is what :attr:`ConnectionClosed.detail` will say (by default,
        the code and reason).

        Raises:
            ValueError: as for :meth:`close`.
        """
        check_close_code(code)
        if len(reason.encode("utf-8")) > 123:
            raise ValueError("close reason must be at most 123 bytes in UTF-8")
        if self._ended.is_set():
            return
        if detail is None:
            detail = f"failed by the application with {code}" + (f" ({reason})" if reason else "")
        self._fail(code, reason, detail)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection has ended and its threads are gone; False on timeout."""
        deadline = None if timeout is None else _monotonic() + timeout
        if not self._ended.wait(timeout):
            return False
        for thread in (self._reader, self._writer):
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - _monotonic()))
                if thread.is_alive():
                    return False
        return True

    @property
    def closed(self) -> bool:
        """True once the connection has ended."""
        return self._ended.is_set()

    @property
    def close_exception(self) -> ConnectionClosed | None:
        """The ConnectionClosed every call raises once the connection has ended, else None."""
        return self._closed_exc

    def __enter__(self) -> Conn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, ConnectionClosed):
            self.close()
        elif isinstance(exc, Exception):
            self.close(CloseCode.INTERNAL_ERROR)
        else:  # KeyboardInterrupt, SystemExit: leaving, not failing
            self.close(CloseCode.GOING_AWAY)

    # --- internals shared by both threads -----------------------------------

    def _note(self, detail: str, cause: BaseException | None = None) -> None:
        """Record why the connection is ending; the first cause is the one kept."""
        if not self._detail:
            self._detail = detail
            self._cause = cause

    def _trace(self, direction: str, kind: str, data: Any, part: str = "") -> None:
        size = len(data.encode("utf-8")) if isinstance(data, str) else memoryview(data).nbytes
        self.logger.debug("%s %s %s", self.name, direction, describe(kind, data, size, part))

    def _queue_control(self, event: Ping | Pong, done: threading.Event | None) -> None:
        with self._lock:
            if self._shut:
                raise self._closing_exception()
            try:
                frame = self._ws.send(event)
            except LocalProtocolError:
                raise self._closing_exception() from None
            self._ctrl.append(_ControlFrame(frame, isinstance(event, Ping), done))
            self._wq.put(_WAKE)
        if self._debug:
            self._trace(">", "PING" if isinstance(event, Ping) else "PONG", event.payload)

    def _queue_close(
        self, code: int, reason: str, *, fail: bool, done: threading.Event | None, ordered: bool = False
    ) -> bool:
        """Produce our close frame and queue it; False if one was already sent."""
        with self._lock:
            if self._shut:
                return False
            # wsproto sends an empty close frame only for its own enum member.
            wire_code = CloseReason.NO_STATUS_RCVD if code == CloseCode.NO_STATUS_RCVD else code
            try:
                frame = self._ws.send(CloseConnection(code=wire_code, reason=reason))
            except LocalProtocolError:
                return False
            item = _CloseFrame(frame, Close(code, reason), fail, done)
            # Set before the writer can see the frame, so its next timer wait
            # includes the closing handshake's deadline.
            if self._close_deadline is None:
                self._close_deadline = _monotonic() + self._close_timeout
            if fail and not ordered:
                self._discarding = True
                self._ctrl.append(item)
                self._wq.put(_WAKE)
            else:
                self._wq.put(item)
        if self._debug:
            self.logger.debug("%s > %s", self.name, describe_close(code, reason))
        return True

    def _fail(
        self, code: int, reason: str, detail: str, cause: BaseException | None = None, *, ordered: bool = False
    ) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): send *code* and drop the connection.

        The close frame jumps ahead of queued messages, unless *ordered*.
        """
        self._note(detail, cause)
        self._discarding = True
        self._pending_failure = None
        if not self._queue_close(code, reason, fail=True, done=None, ordered=ordered):
            self._shutdown()

    def _fail_in_order(self, code: int, reason: str, detail: str) -> None:
        """Fail because of what the peer sent, at that point of the message stream.

        Like gorilla's sequential reads: the application first gets the
        messages that arrived before the error, so its replies to them go out
        before the close frame (Autobahn 3.2, 4.1.3 and the like expect that).
        If it doesn't read them within close_timeout, the connection is failed
        anyway (see _run_timers).
        """
        self._discarding = True
        # Items are consumed in order, so the queued items beyond this
        # message's own chunks are exactly the whole messages not yet read.
        if self._in_budget.items - self._msg_chunks <= 0:
            # Nothing undelivered: fail now, after the replies already queued.
            self._fail(code, reason, detail, ordered=True)
            return
        failure = _Failure(code, reason, detail)
        self._pending_failure = failure
        self._fail_deadline = _monotonic() + self._close_timeout
        self._inq.put(failure)
        self._wq.put(_WAKE)

    def _shutdown(self) -> None:
        """Start tearing down: wake a blocked recv/sendmsg and the writer. Idempotent."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already disconnected
        self._wq.put(_STOP)
        self._in_budget.close()  # a reader paused on a full inbound queue must see the end

    def _handshake_progress(self) -> None:
        # The server closes TCP first once close frames went both ways (section
        # 7.1.1); the client waits for that EOF (bounded by the close deadline).
        if self._rcvd is not None and self._sent is not None and not self._client:
            self._shutdown()

    def _closing_exception(self) -> ConnectionClosed:
        if self._closed_exc is not None:
            return self._final_exception()
        exc = closed_exception(self._rcvd, self._sent, self._rcvd_then_sent, self._detail or "closing")
        exc.__cause__ = self._cause
        return exc

    def _final_exception(self) -> ConnectionClosed:
        exc = self._closed_exc
        assert exc is not None
        # Raising the same instance again would grow its traceback each time.
        return exc.with_traceback(None)

    def add_done_callback(self, callback: Callable[[Conn], None]) -> None:
        """Call ``callback(conn)`` once the connection has ended.

        It runs on the connection's reader thread as the connection ends, or
        at once on the calling thread if it already has; it must not block.
        An exception it raises is logged and ignored.
        """
        with self._lock:
            if not self._ended.is_set():
                self._on_end.append(callback)
                return
        try:
            callback(self)
        except Exception:
            self.logger.exception("%s: done callback failed", self.name)

    def remove_done_callback(self, callback: Callable[[Conn], None]) -> bool:
        """Forget a callback given to :meth:`add_done_callback`; False if it wasn't there."""
        with self._lock:
            try:
                self._on_end.remove(callback)
            except ValueError:
                return False
            return True

    # --- the reader thread -------------------------------------------------

    def _read_loop(self) -> None:
        sock = self._sock
        buf = bytearray(_RECV_SIZE_FIRST)
        view = memoryview(buf)
        small_reads = 0
        poller: select.poll | None = None
        try:
            if self._trailing:
                self._receive(self._trailing)
                self._trailing = b""
            while True:
                try:
                    n = sock.recv_into(buf)
                except (TimeoutError, BlockingIOError, InterruptedError):
                    # The writer set a socket timeout; wait for input our own way.
                    if self._ssl and sock.pending():  # type: ignore[attr-defined]
                        continue
                    if poller is None:
                        poller = select.poll()
                        poller.register(sock, select.POLLIN | select.POLLPRI)
                    poller.poll()
                    continue
                if not n:
                    if self._rcvd is None:
                        self._note("connection lost: EOF without a close frame")
                    break
                self._last_recv = _monotonic()
                if not self._discarding:
                    self._receive(view[:n], buf)
                size = len(buf)
                if n == size:
                    small_reads = 0
                    if n < _RECV_SIZE:
                        buf = bytearray(2 * n)  # a full read: more is coming, read bigger
                        view = memoryview(buf)
                elif size > _RECV_SIZE_FIRST and n <= _RECV_SIZE_FIRST:
                    small_reads += 1
                    if small_reads == _RECV_SHRINK_AFTER:
                        small_reads = 0
                        buf = bytearray(_RECV_SIZE_FIRST)
                        view = memoryview(buf)
        except OSError as exc:
            if not self._shut:
                self._note(f"connection lost: {exc}", exc)
        except BaseException as exc:  # a bug: never leave the connection half-alive
            self.logger.exception("%s: reader failed", self.name)
            self._note(f"internal error in reader: {exc!r}", exc)
        finally:
            self._finish()

    def _receive(self, data: Any, buf: bytearray | None = None) -> None:
        """Deliver what one ``recv`` returned: plain frames ourselves, the rest through wsproto.

        See threadws._frames for why. wsproto is always handed whole frames
        (or the start of one, and then exactly its rest), so it is at a frame
        boundary whenever this code parses, and ``_ws_mid`` says whether it
        is inside a fragmented message (then every data frame goes to it).
        A plain frame split across reads waits in ``_pending`` when short, and
        is streamed chunk by chunk when long (``_long_*``), as wsproto would.
        *buf*, if given, is the writable buffer *data* views from its start:
        long payloads are unmasked there, in place.
        """
        if not self._plain:
            self._receive_ws(data)
            return
        end = len(data)
        i = 0
        if self._long_left:
            i = min(self._long_left, end)
            if not self._long_chunk(data, buf, 0, i):
                return
        elif self._ws_owed:
            i = min(self._ws_owed, end)
            self._ws_owed -= i
            if not self._receive_ws(data[:i]):
                return
        elif self._pending:
            joined = bytearray(self._pending)
            joined += data
            self._pending = b""
            data = memoryview(joined)
            buf = joined
            end = len(joined)
        mask_bit = self._in_mask_bit
        while i < end and not self._discarding:
            # The header: 2 bytes, an extended length, the masking key.
            if end - i < 2:
                self._pending = bytes(data[i:])
                return
            b0 = data[i]
            b1 = data[i + 1]
            n = b1 & 0x7F
            j = i + 2
            canonical = True
            if n >= 126:
                size = 2 if n == 126 else 8
                if end - j < size:
                    self._pending = bytes(data[i:])
                    return
                n = int.from_bytes(data[j : j + size], "big")
                j += size
                canonical = n >= 126 if size == 2 else (n >= 65536 and not n >> 63)
            masked = b1 & 0x80
            if masked:
                if end - j < 4:
                    self._pending = bytes(data[i:])
                    return
                j += 4
            stop = j + n
            if (
                (b0 == FIN_TEXT or b0 == FIN_BINARY)
                and masked == mask_bit
                and canonical
                and not self._ws_mid
                and n <= self._read_limit
            ):
                if stop > end:
                    if n <= _PENDING_MAX:
                        self._pending = bytes(data[i:])  # short: parse it whole next time
                        return
                    self._long_left = n
                    self._long_key = bytes(data[j - 4 : j]) if masked else None
                    if b0 == FIN_TEXT:
                        self._long_type = MessageType.TEXT
                        self._long_decoder = _utf8_decoder()
                    else:
                        self._long_type = MessageType.BINARY
                    self._long_chunk(data, buf, j, end)
                    return
                if not masked:
                    payload = bytes(data[j:stop])
                elif buf is not None and n > INT_XOR_MAX:
                    unmask_into(buf, j, stop, data[j - 4 : j])  # in place: one copy fewer
                    payload = bytes(data[j:stop])
                else:
                    payload = unmask(data[j:stop], data[j - 4 : j])
                if b0 == FIN_BINARY:
                    if not self._queue_whole(MessageType.BINARY, payload, n):
                        return
                    i = stop
                    continue
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError as exc:
                    # Not wsproto's to report: the frame may be unmasked in place.
                    self._invalid_utf8(exc)
                    return
                if not self._queue_whole(MessageType.TEXT, text, n):
                    return
                i = stop
                continue
            # Anything else is wsproto's: this frame, or its start and then the rest.
            if stop > end:
                self._ws_owed = stop - end
                stop = end
            if not b0 & 0x08:  # a data frame: track whether a message is open
                self._ws_mid = not b0 & 0x80
            if not self._receive_ws(data[i:stop]):
                return
            i = stop

    def _long_chunk(self, data: Any, buf: bytearray | None, start: int, stop: int) -> bool:
        """Deliver ``data[start:stop]``, the next payload bytes of the long plain frame in progress."""
        k = stop - start
        left = self._long_left = self._long_left - k
        key = self._long_key
        if key is None:
            payload = bytes(data[start:stop])
        else:
            if buf is not None:
                unmask_into(buf, start, stop, key)
                payload = bytes(data[start:stop])
            else:
                payload = unmask(data[start:stop], key)
            self._long_key = rotate(key, k)
        fin = not left
        if not k and not fin:
            return True
        chunk: Data = payload
        decoder = self._long_decoder
        if decoder is not None:
            try:
                chunk = decoder.decode(payload, fin)
            except UnicodeDecodeError as exc:
                return self._invalid_utf8(exc)
            if fin:
                self._long_decoder = None
        return self._deliver(self._long_type, chunk, fin, k)

    def _receive_ws(self, data: Any) -> bool:
        """Feed wsproto and act on its events; False once nothing more may be read."""
        deflate = self._deflate
        with self._lock:
            self._ws.receive_data(data)
            if deflate is None:
                events: list[Any] = list(self._ws.events())
            else:
                # A compressed frame's event comes without its data: pair it
                # with the inflated pieces (see PerMessageDeflate.take_inflated).
                events = []
                for event in self._ws.events():
                    pieces = None
                    if type(event) is BytesMessage or type(event) is TextMessage:
                        pieces = deflate.take_inflated()
                    events.append(event if pieces is None else (event, pieces))
            state = self._ws.state
        for event in events:
            kind = type(event)
            if kind is BytesMessage or kind is TextMessage:
                if not self._on_data(event):
                    return False
            elif kind is tuple:
                if not self._on_inflated(*event):
                    return False
            elif kind is Ping:
                if self._debug:
                    self._trace("<", "PING", event.payload)
                self._call_handler(self._ping_handler, event.payload)
            elif kind is Pong:
                if self._debug:
                    self._trace("<", "PONG", event.payload)
                self._call_handler(self._pong_handler, event.payload)
            elif kind is CloseConnection:
                if state in (ConnectionState.REMOTE_CLOSING, ConnectionState.CLOSED):
                    # REMOTE_CLOSING: the peer closed first; CLOSED: it answered ours.
                    self._on_close(event.code, event.reason or "", state is ConnectionState.REMOTE_CLOSING)
                else:
                    # wsproto reports a protocol violation as a CloseConnection
                    # without changing state: the peer sent no close frame.
                    reason, detail = event.reason or "", f"protocol error from peer: {event.reason}"
                    if self._deflate is not None and self._deflate.failure is not None:
                        reason, detail = self._deflate.failure  # wsproto only says "error in extension"
                    self._fail_in_order(event.code, reason, detail)
                return False
            if self._discarding:
                return False
        return not self._discarding

    def _on_data(self, event: TextMessage | BytesMessage) -> bool:
        data: Any = event.data
        if type(event) is TextMessage:
            n = len(data) if data.isascii() else len(data.encode("utf-8"))
            return self._deliver(MessageType.TEXT, data, event.message_finished, n)
        return self._deliver(MessageType.BINARY, data, event.message_finished, len(data))

    def _on_inflated(self, event: TextMessage | BytesMessage, pieces: list[bytes]) -> bool:
        """Deliver what a compressed frame inflated to, piece by piece; text is validated here."""
        fin = event.message_finished
        if fin and not pieces:
            pieces = [b""]
        text = type(event) is TextMessage
        kind = MessageType.TEXT if text else MessageType.BINARY
        decoder = self._inflated_decoder
        if text and decoder is None and not (fin and len(pieces) == 1):
            # A whole message in one piece (the common case) needs no incremental decoder.
            decoder = self._inflated_decoder = _utf8_decoder()
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            end = fin and i == last
            data: Data = piece
            if text:
                try:
                    data = piece.decode("utf-8") if decoder is None else decoder.decode(piece, end)
                except UnicodeDecodeError as exc:
                    return self._invalid_utf8(exc)
            if not self._deliver(kind, data, end, len(piece)):
                return False
        if fin:
            self._inflated_decoder = None
        return True

    def _invalid_utf8(self, exc: UnicodeDecodeError) -> bool:
        # Fail fast, with what wsproto would say for the same bytes.
        self._fail_in_order(CloseCode.INVALID_PAYLOAD_DATA, str(exc), f"protocol error from peer: {exc}")
        return False

    def _deliver(self, message_type: MessageType, data: Data, finished: bool, n: int) -> bool:
        """Queue *n* bytes of a message: the whole of it, or its next part."""
        if finished and not self._in_message:
            return self._queue_whole(message_type, data, n)
        # Part of a longer message: hand it over now, so a streaming
        # consumer never holds the whole message, and neither do we.
        size = self._msg_size + n
        if size > self._read_limit:
            return self._too_big()
        if self._debug:
            self._trace("<", message_type.name, data, part="last part" if finished else "part")
        self._inq.put(_Chunk(message_type, data, finished, n))
        self._in_message = not finished
        self._msg_chunks = self._msg_chunks + 1 if self._in_message else 0
        self._msg_size = 0 if finished else size
        self._account(n)
        return True

    def _queue_whole(self, message_type: MessageType, data: Data, size: int) -> bool:
        """Queue a message that arrived whole: the common case, one queue item."""
        if size > self._read_limit:
            return self._too_big()
        if self._debug:
            self._trace("<", message_type.name, data)
        self._inq.put((message_type, data, size))
        self._account(size)
        return True

    def _too_big(self) -> bool:
        self._fail_in_order(
            CloseCode.MESSAGE_TOO_BIG,
            f"message too big (limit {self._read_limit} bytes)",
            f"message over the read limit of {self._read_limit} bytes",
        )
        return False

    def _account(self, size: int) -> None:
        if self._in_budget.add(size):
            # Full: stop reading so TCP pushes back on the peer. Our own
            # keepalive must not blame the peer for the silence this causes.
            self._reader_paused = True
            self._in_budget.wait_room(None)
            self._last_recv = _monotonic()
            self._reader_paused = False

    def _on_close(self, code: int, reason: str, peer_first: bool) -> None:
        if self._debug:
            self.logger.debug("%s < %s", self.name, describe_close(code, reason))
        self._discarding = True
        self._rcvd = Close(code, reason)
        self._rcvd_then_sent = peer_first
        if self._close_deadline is None:
            self._close_deadline = _monotonic() + self._close_timeout
            self._wq.put(_WAKE)
        self._call_handler(self._close_handler, code, reason)
        self._handshake_progress()

    def _call_handler(self, handler: Callable[..., None], *args: Any) -> None:
        try:
            handler(*args)
        except ConnectionClosed:
            pass  # the handler wrote to a closing connection: nothing to add
        except Exception as exc:
            self.logger.exception("%s: handler %r raised", self.name, handler)
            self._fail(CloseCode.INTERNAL_ERROR, "internal error", f"handler raised {exc!r}", exc)

    def _finish(self) -> None:
        """End the connection; runs once, on the reader thread, as it exits."""
        self._shutdown()
        self._writer.join()
        try:
            self._sock.close()
        except OSError:
            pass
        both = self._rcvd is not None and self._sent is not None
        exc = closed_exception(self._rcvd, self._sent, self._rcvd_then_sent if both else None, self._detail)
        exc.__cause__ = self._cause
        self._closed_exc = exc
        self._inq.put(_ENDED)
        self._out_budget.close()
        # Control frames that never went out: wake anyone waiting on them.
        for item in self._ctrl:
            if item.done is not None:
                item.done.set()
        with self._lock:
            self._ended.set()
            callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                self.logger.exception("%s: end callback failed", self.name)

    # --- the writer thread -------------------------------------------------

    def _write_loop(self) -> None:
        q = self._wq
        get = q.get
        ctrl = self._ctrl
        try:
            timeout = self._run_timers()
            while True:
                if ctrl and q.empty():
                    batch: list[Any] = []
                else:
                    try:
                        batch = [get(timeout=timeout)]
                    except queue.Empty:
                        timeout = self._run_timers()
                        continue
                    while not q.empty():
                        batch.append(q.get_nowait())
                if len(batch) == 1 and type(batch[0]) is bytes and not ctrl:
                    # The common case, one message: no bookkeeping beyond the send.
                    data = batch[0]
                    self._send(batch)
                    self._out_budget.release(len(data), 1)
                    # Data can't make a timer earlier (whatever does, queues
                    # _WAKE), so the timers need a look only when one is due.
                    nxt = self._next_timer
                    if nxt is None:
                        timeout = None
                        continue
                    now = _monotonic()
                    if now < nxt:
                        timeout = nxt - now
                        continue
                elif not self._write_batch(batch):
                    return
                timeout = self._run_timers()
        except _WriteDeadline:
            self._note("write deadline exceeded", TimeoutError("write deadline exceeded"))
        except OSError as exc:
            if not self._shut:
                self._note(f"connection lost while sending: {exc}", exc)
        except BaseException as exc:
            self.logger.exception("%s: writer failed", self.name)
            self._note(f"internal error in writer: {exc!r}", exc)
        self._shutdown()

    def _write_batch(self, batch: list[Any]) -> bool:
        """Send control frames, then the batch's data, in one go. False means stop."""
        bufs: list[Any] = []
        done: list[threading.Event] = []
        close: _CloseFrame | None = None
        ping = False
        data_bytes = data_items = 0
        ctrl = self._ctrl
        while ctrl:
            item = ctrl.popleft()
            if close is not None:
                continue  # nothing may follow a close frame
            bufs.append(item.data)
            if item.done is not None:
                done.append(item.done)
            if type(item) is _CloseFrame:
                close = item
            elif isinstance(item, _ControlFrame) and item.is_ping:
                ping = True
        stop = False
        for item in batch:
            if type(item) is bytes:
                data_bytes += len(item)
                data_items += 1
                if close is None:
                    bufs.append(item)
            elif item is _STOP:
                stop = True
            elif type(item) is _CloseFrame:
                if close is None:
                    close = item
                    bufs.append(item.data)
                    if item.done is not None:
                        done.append(item.done)
        if stop:
            return False
        # Record what goes out *before* sending it: on a fast link the answer
        # (a pong, the peer's close) can be back before sendmsg returns.
        if ping:
            self._ping_sent = _monotonic()
        if close is not None:
            self._sent = close.close
        if bufs:
            self._send(bufs)
        if data_items:
            self._out_budget.release(data_bytes, data_items)
        for event in done:
            event.set()
        if close is not None:
            if close.fail:
                self._shutdown()
                return False
            self._handshake_progress()
        return True

    def _send(self, bufs: list[Any]) -> None:
        """Send every buffer. Blocks only while the peer isn't reading, and then
        wakes at least every _STALL_TICK to keep the clocks (a close requested
        meanwhile, the deadlines, keepalive)."""
        sock = self._sock
        if self._ssl:
            # SSL sockets have no sendmsg; one record stream, resumed after a timeout.
            view = memoryview(b"".join(bufs))
            while view:
                self._set_send_timeout()
                try:
                    n = sock.send(view)
                except TimeoutError:
                    self._send_stalled()
                    continue
                self._last_progress = _monotonic()
                view = view[n:]
            return
        # First try without waiting: the usual case, one system call and no
        # change to the socket's timeout (which the reader shares).
        flags: int = socket.MSG_DONTWAIT
        if len(bufs) == 1:
            data = bufs[0]
            try:
                n = sock.send(data, flags)
            except (BlockingIOError, TimeoutError):
                n = 0
            if n == len(data):
                self._last_progress = _monotonic()
                return
            bufs = [memoryview(data)[n:]]
        while bufs:
            try:
                n = sock.sendmsg(bufs[:_IOV_MAX], (), flags)
            except (BlockingIOError, TimeoutError):
                if flags:
                    flags = 0
                    self._set_send_timeout()
                else:
                    self._send_stalled()
                    self._set_send_timeout()
                continue
            self._last_progress = _monotonic()
            # Drop what went out; resume mid-buffer after a partial send.
            i = 0
            while i < len(bufs) and n >= len(bufs[i]):
                n -= len(bufs[i])
                i += 1
            bufs = bufs[i:]
            if n:
                bufs[0] = memoryview(bufs[0])[n:]
            if bufs and flags:
                flags = 0  # a partial send: the socket buffer is full, wait from now on
                self._set_send_timeout()
        if not flags and self._sock_timeout is not None and not self._shut:
            # Back to blocking mode, so the reader's recv is one system call again.
            self._sock.settimeout(None)
            self._sock_timeout = None

    def _set_send_timeout(self) -> None:
        """Wait no longer than the write deadline, the next timer or _STALL_TICK.

        Only calls settimeout (a syscall) when the current value is too long or
        much too short.
        """
        now = _monotonic()
        want = _STALL_TICK
        if self._write_deadline is not None:
            want = min(want, self._write_deadline - now)
        if self._next_timer is not None:
            want = min(want, self._next_timer - now)
        want = max(want, 0.001)
        current = self._sock_timeout
        if current is None or current > want or current < want / 2:
            self._sock.settimeout(want)
            self._sock_timeout = want

    def _send_stalled(self) -> None:
        """A send made no progress for a while: enforce the deadline and the clocks."""
        now = _monotonic()
        if self._write_deadline is not None and now >= self._write_deadline:
            raise _WriteDeadline
        if self._shut:
            raise ConnectionAbortedError("connection shut down")
        self._run_timers(stalled=True)
        if self._shut:
            raise ConnectionAbortedError("connection shut down")

    def _run_timers(self, stalled: bool = False) -> float | None:
        """Fire what is due; return seconds until the next timer (None: no timer)."""
        now = _monotonic()
        nxt: float | None = None
        deadline = self._read_deadline
        if deadline is not None:
            if now >= deadline:
                self._note("read deadline exceeded", TimeoutError("read deadline exceeded"))
                self._shutdown()
                return None
            nxt = deadline
        failure = self._pending_failure
        if failure is not None:
            if now >= self._fail_deadline:
                self._fail(failure.code, failure.reason, failure.detail)
            else:
                nxt = self._fail_deadline if nxt is None else min(nxt, self._fail_deadline)
        deadline = self._close_deadline
        if deadline is not None:
            if now >= deadline:
                self._note("closing handshake timed out")
                self._shutdown()
                return None
            nxt = deadline if nxt is None else min(nxt, deadline)
        elif self._ping_interval is not None and not self._reader_paused:
            due = self._keepalive(now, stalled)
            if due is not None:
                nxt = due if nxt is None else min(nxt, due)
        self._next_timer = nxt
        return None if nxt is None else max(0.0, nxt - now)

    def _keepalive(self, now: float, stalled: bool) -> float | None:
        """Ping a quiet peer; fail the connection if it stays quiet (any frame proves it alive)."""
        interval = self._ping_interval
        assert interval is not None
        timeout = self._ping_timeout
        alive = self._last_recv
        if stalled:
            # We can't even send: the peer's TCP acks are the only sign of life.
            alive = max(alive, self._last_progress)
        sent = self._ping_sent
        outstanding = sent is not None and alive < sent
        if timeout is not None:
            if (stalled and now - alive >= interval + timeout) or (
                outstanding and sent is not None and now >= sent + timeout
            ):
                self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout", "keepalive ping timeout")
                return None
            if outstanding and sent is not None:
                # Look again after an interval too: once the pong is in, the
                # next ping is due an interval after it, not after the timeout.
                return min(sent + timeout, now + interval)
        # Without a ping timeout, keep pinging once per quiet interval.
        due = (sent if outstanding and sent is not None else alive) + interval
        if now < due:
            return due
        try:
            self._queue_control(Ping(payload=b"threadws"), None)
        except ConnectionClosed:
            return None
        self._ping_sent = now  # stamped again just before the frame goes out
        return now + (timeout if timeout is not None else interval)


def _event_for(message_type: MessageType, data: Any) -> TextMessage | BytesMessage:
    """The wsproto event for a whole message, checking the data's type."""
    if message_type == MessageType.TEXT:
        if not isinstance(data, str):
            try:
                data = as_bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("text message data is not valid UTF-8") from None
        return TextMessage(data=data)
    if message_type == MessageType.BINARY:
        return BytesMessage(data=as_bytes(data))
    raise ValueError(f"write_message takes TEXT or BINARY, not {message_type!r}; see write_control")


class _WriteDeadline(Exception):
    pass


def _address(getter: Callable[[], Any]) -> Any:
    try:
        return getter()
    except OSError:
        return None
