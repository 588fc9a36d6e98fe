"""A WebSocket connection: :class:`Conn`, the public API over a protocol, an inbox and a writer.

Theory of operation
-------------------
A connection is four parts, each in its own module, every arrow pointing down:

* :class:`~threadws.protocol.Protocol` (sans-I/O) turns bytes into events and
  messages into frames. ``self._lock`` owns it: every call on it is made under
  that lock, held only for that in-memory work, never across ``recv``, a send,
  a wait for queue room or a join.
* :class:`~threadws.inbox.Inbox` holds what arrived until the application
  reads it, bounded; a full inbox makes the reader stop reading, so TCP pushes
  back on the peer.
* :class:`~threadws.outbox.Outbox` frames what the application sends under
  ``self._lock`` and queues it for :class:`~threadws.writer.Writer`, the writer
  thread, the only code that sends. The writer also keeps the clocks and asks
  this module to act when one falls due.
* :class:`~threadws.reader.Reader` is the reader thread, the only code that
  calls ``recv``; it hands what arrives (decrypted, for wss) to this module,
  which feeds the protocol and routes its events: messages to the inbox, pings
  and close frames to the handlers (the defaults answer them at once, without
  the application), a protocol failure to the inbox at the point where it
  occurred, so the application first reads what came before it and its
  replies precede the close frame (bounded by ``close_timeout``).

How a connection ends is recorded in one place, :class:`~threadws.ending.Ending`
(a phase that only moves forward, the first cause), and it ends in exactly one
place, :meth:`Conn._finish`, run by the reader as it stops: it has the writer
finish (ending TLS after a clean close), joins it, closes the socket, builds
the one :class:`ConnectionClosed` that every later call raises, and wakes
every waiter.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Union

from wsproto.extensions import Extension

from ._frames import as_bytes
from ._tls import TLS
from ._trace import connection_name, describe, describe_close
from .enums import CloseCode, MessageType, check_close, check_close_code
from .ending import Ending, Phase
from .exceptions import Close, ConnectionClosed, ConnectionClosedOK
from .inbox import Inbox
from .outbox import WRITE_POLICIES, Outbox
from .prepared import PreparedMessage
from .protocol import Chunk, CloseFrame, Failure, Message, Outgoing, Ping, Pong, Protocol, parse_close_payload
from .reader import Reader, ReaderHooks
from .settings import Settings
from .streams import FragmentSink, MessageReader, MessageWriter
from ._workers import Task
from .writer import Due, Timers, Writer, WriterHooks

__all__ = ["Conn", "Settings"]

_logger = logging.getLogger("threadws")

Data = Union[str, bytes]
Address = Any

_monotonic = time.monotonic


def _default_pong_handler(payload: bytes) -> None:
    pass


class Conn:
    """A WebSocket connection, the same class for the server and the client side.

    You get one from :meth:`threadws.Upgrader.upgrade`, :func:`threadws.serve`'s
    handler or :func:`threadws.dial`; you rarely build one yourself (the
    constructor takes a plain TCP socket whose opening handshake is already
    done, and for wss the TLS session that carried it).

    Concurrency: any number of threads may call the write methods at once
    (messages never interleave); reads may come from any thread, each message
    going to exactly one reader. :meth:`close`, :meth:`abort`, :meth:`fail` and
    :meth:`write_control` are safe from anywhere, handlers included. Ping, pong
    and close handlers run on the connection's reader thread.

    Args:
        sock: the connected TCP socket (never an ``ssl.SSLSocket``: see *tls*).
        client: which side this is.
        settings: limits and timers (:class:`threadws.settings.Settings`).
        trailing_data: bytes already read past the handshake, fed first.
        subprotocol, path, request_headers, response_headers: what the
            handshake agreed, kept as attributes.
        extensions: what the handshake negotiated (permessage-deflate).
        logger: where to log (see :attr:`logger`).
        tls: for wss, the TLS session that carried the handshake
            (``threadws._tls``); the socket then carries its ciphertext.
        name: the connection's name in logs and thread names.
        greeting: bytes sent before anything else (a server's
            101), once both threads run: if one can't be started, the
            constructor raises RuntimeError having sent nothing; otherwise it
            returns once the greeting has been handed to the operating system.
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
        tls: TLS | None = None,
        name: str | None = None,
        greeting: bytes = b"",
    ) -> None:
        settings = settings or Settings()
        if isinstance(sock, ssl.SSLSocket):
            # Two threads can't share one SSLSocket safely (see threadws._tls).
            raise ValueError("Conn takes the plain TCP socket; TLS goes through threadws's own TLS layer (tls=)")
        self.logger: logging.Logger | logging.LoggerAdapter[Any] = logger or _logger
        """Where this connection logs (the ``threadws`` logger unless another was given).

        At DEBUG it logs every message and control frame sent and received
        (``> TEXT 'hello' [5 bytes]``); whether DEBUG is on is read once, when
        the connection is made, so that tracing costs nothing otherwise."""
        self._debug = self.logger.isEnabledFor(logging.DEBUG)
        self._sock = sock
        self._tls = tls  # wss: ciphertext on the socket, this TLS session in between
        self._client = client
        self._protocol = Protocol(
            client=client, extensions=extensions, read_limit=settings.read_limit, max_fragments=settings.max_fragments
        )
        self._lock = threading.Lock()  # owns the protocol (and the phase's transitions)
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
        self._close_timeout = settings.close_timeout

        self._end = Ending()
        self._inbox = Inbox(settings.max_read_queue, settings.max_queued_messages, self._on_failure_reached)
        self._timers = Timers(settings.ping_interval, settings.ping_timeout, settings.idle_timeout, _monotonic())
        self._idle_close_code = settings.idle_close_code
        self._idle = settings.idle_timeout is not None  # stamp each message's arrival
        hooks = WriterHooks(
            self._shutting_down, self._on_due, self._our_turn_to_close_tcp, self._shutdown, self._note,
            self._report_bug,
        )
        self._writer = Writer(
            sock, tls, hooks, self._timers, settings.max_write_queue, settings.max_queued_messages, self.name, greeting
        )
        self._outbox = Outbox(self._protocol, self._lock, self._writer, self._end, self._timers, self._close_timeout)

        self._ping_handler: Callable[[bytes], None] = self._default_ping_handler
        self._pong_handler: Callable[[bytes], None] = _default_pong_handler
        self._close_handler: Callable[[int, str], None] = self._default_close_handler

        self._pending_failure: Failure | None = None  # a protocol error the application hasn't reached

        self._trailing = trailing_data
        self._reader = Task(self._read_loop, f"{self.name}-reader")
        self._writer.start_with(self._reader)  # RuntimeError: out of threads (nothing was sent)

    def __repr__(self) -> str:
        state = "closed" if self._end.ended.is_set() else "open"
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
        return self._inbox.read_message(timeout)

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
        return self._inbox.next_reader(timeout)

    def read_json(self, timeout: float | None = None) -> Any:
        """Read the next message and parse it as JSON.

        Raises:
            ValueError: (a :class:`json.JSONDecodeError`) the message is not
                JSON; it is consumed, and the connection stays usable.
            TimeoutError, ConnectionClosed: as for :meth:`read_message`.
        """
        data = self.read_message(timeout)[1]
        return json.loads(data)

    def recv(self, timeout: float | None = None) -> Data:
        """Like :meth:`read_message` but return only the data: ``str`` for text, ``bytes`` for binary."""
        return self._inbox.read_message(timeout)[1]

    def __iter__(self) -> Iterator[Data]:
        """Yield each message's data until the connection closes normally.

        The loop ends quietly on :class:`ConnectionClosedOK`; any other ending
        raises :class:`ConnectionClosedError`.
        """
        read = self._inbox.read_message
        while True:
            try:
                yield read(None)[1]
            except ConnectionClosedOK:
                return

    def set_read_limit(self, limit: int) -> None:
        """Refuse messages longer than *limit* bytes: the connection closes with 1009.

        The default is 1 MiB; a message is never truncated. It applies to messages
        that start arriving after the call; from the first byte, pass ``read_limit=``
        to :func:`threadws.dial`, :class:`threadws.Upgrader` or :func:`threadws.serve`.
        """
        if limit <= 0:
            raise ValueError("read limit must be positive")
        with self._lock:
            self._protocol.read_limit = limit

    def set_read_deadline(self, deadline: float | None) -> None:
        """Fail the connection if it is still open at *deadline* (a ``time.monotonic()`` value).

        As in gorilla, a passed read deadline is fatal: the connection is torn
        down and every blocked call raises ConnectionClosed saying "read deadline
        exceeded". Extend it as the peer shows signs of life, typically from the
        pong handler. None removes it. To stop *waiting* without harming the
        connection, use ``read_message(timeout=...)`` instead.
        """
        self._timers.read_deadline = deadline
        nxt = self._writer.next_timer
        if deadline is not None and (nxt is None or deadline < nxt):
            self._writer.wake()  # the writer keeps the clocks: make it look again

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
            TypeError, ValueError: wrong type for *message_type* or *data*, invalid UTF-8.
        """
        message = self._protocol.check(message_type, data)
        return self._write(message, None, timeout, self._outbox.policy, message_type, data, compress)

    def send(self, data: Data, timeout: float | None = None) -> bool:
        """Send a ``str`` as a text message or bytes-like data as a binary one.

        See :meth:`write_message` for *timeout*, the result and what it raises.
        """
        kind = MessageType.TEXT if isinstance(data, str) else MessageType.BINARY
        return self._write(self._protocol.check(kind, data), None, timeout, self._outbox.policy, kind, data)

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
            return self._write(None, message, 0, "try", message.message_type, message.data)
        kind = MessageType.TEXT if isinstance(message, str) else MessageType.BINARY
        return self._write(self._protocol.check(kind, message), None, 0, "try", kind, message)

    def write_json(self, obj: Any, timeout: float | None = None) -> bool:
        """Send *obj* as a JSON text message (see :meth:`write_message`).

        Raises:
            TypeError, ValueError: *obj* can't be serialized; nothing is sent.
        """
        text = json.dumps(obj)
        message = self._protocol.check(MessageType.TEXT, text)
        return self._write(message, None, timeout, self._outbox.policy, MessageType.TEXT, text)

    def write_prepared(self, message: PreparedMessage, timeout: float | None = None) -> bool:
        """Send a :class:`PreparedMessage`, framed once for every server-side connection.

        Same results and errors as :meth:`write_message`.
        """
        return self._write(None, message, timeout, self._outbox.policy, message.message_type, message.data)

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
        if policy not in WRITE_POLICIES:
            raise ValueError(f"unknown write policy {policy!r}")
        check_close_code(close_code)
        self._outbox.policy = policy
        self._outbox.full_close_code = close_code

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
        self._outbox.start_stream(timeout)
        sink = FragmentSink(self._send_fragment, self._outbox.end_stream, self._abandon_message)
        return MessageWriter(sink, message_type, buffer_size, timeout)

    def _write(
        self,
        message: Outgoing | None,
        prepared: PreparedMessage | None,
        timeout: float | None,
        policy: str,
        kind: MessageType | int,
        data: Any,
        compress: bool = True,
    ) -> bool:
        """Queue one whole message (see Outbox.write); fail the connection if the "close" policy says so."""
        queued = self._outbox.write(message, prepared, timeout, policy, compress)
        if queued is None:
            self._fail(self._outbox.full_close_code, "send queue full", "send queue full: the peer reads too slowly")
            raise self._outbox.closed()
        if self._debug and queued:
            self._trace(">", MessageType(kind).name, data)
        return queued

    def _send_fragment(self, text: bool, data: Any, final: bool, timeout: float | None) -> None:
        self._outbox.fragment(text, data, final, timeout)
        if self._debug:
            self._trace(">", "TEXT" if text else "BINARY", data, part="last part" if final else "part")

    def _abandon_message(self) -> None:
        self._note("a streamed message was abandoned")
        self.close(CloseCode.INTERNAL_ERROR, "message not completed")

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
            code, reason = parse_close_payload(data)
            if not self._queue_close(code, reason, fail=False, done=done):
                raise self._outbox.closed()
        elif message_type in (MessageType.PING, MessageType.PONG):
            self._queue_control(message_type == MessageType.PING, data, done)
        else:
            raise ValueError(f"write_control takes CLOSE, PING or PONG, not {message_type!r}")
        if done is not None and deadline is not None:
            if not done.wait(max(0.0, deadline - _monotonic())):
                if self._end.phase >= Phase.SHUT:
                    raise self._outbox.closed()
                raise TimeoutError("control frame not sent before the deadline")

    def set_write_deadline(self, deadline: float | None) -> None:
        """Abort the connection if a send is still stuck at *deadline* (a ``time.monotonic()`` value).

        Applies to every write until changed; None removes it. A write that
        times out part-way leaves the stream corrupt, so the connection is torn
        down and every waiter wakes with ConnectionClosed ("write deadline
        exceeded"). To bound only the wait for queue room, use
        ``write_message(timeout=...)``.
        """
        self._writer.write_deadline = deadline

    @property
    def queued_bytes(self) -> int:
        """Bytes of frames queued for the writer and not yet sent."""
        return self._writer.budget.bytes

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
            self._queue_control(False, payload, None)
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
        check_close(code, reason)
        if self._end.ended.is_set():
            return
        self._queue_close(code, reason, fail=False, done=None)
        if self._on_own_thread():
            return
        if not self.wait_closed(self._close_timeout if timeout is None else timeout):
            self._note("close timed out: no close frame or EOF from the peer")
            self.abort()

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
        check_close(code, reason)
        if self._end.ended.is_set():
            return
        if detail is None:
            detail = f"failed by the application with {code}" + (f" ({reason})" if reason else "")
        self._fail(code, reason, detail)

    def abort(self) -> None:
        """Tear the connection down at once, without the closing handshake.

        Every blocked call wakes with ConnectionClosed. Waits (briefly) for the
        connection's threads unless called from one of them.
        """
        if self._end.ended.is_set():
            return
        self._note("aborted")
        self._shutdown()
        if not self._on_own_thread():
            self.wait_closed(self._close_timeout + 5.0)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection has ended and its threads are gone; False on timeout."""
        deadline = None if timeout is None else _monotonic() + timeout
        if not self._end.ended.wait(timeout):
            return False
        for task in (self._reader, self._writer.task):
            if not task.is_current():
                if not task.join(None if deadline is None else max(0.0, deadline - _monotonic())):
                    return False
        return True

    @property
    def closed(self) -> bool:
        """True once the connection has ended."""
        return self._end.ended.is_set()

    @property
    def close_exception(self) -> ConnectionClosed | None:
        """The ConnectionClosed every call raises once the connection has ended, else None."""
        return self._end.exception

    def add_done_callback(self, callback: Callable[[Conn], None]) -> None:
        """Call ``callback(conn)`` once the connection has ended.

        It runs on the connection's reader thread as the connection ends, or
        at once on the calling thread if it already has; it must not block.
        An exception it raises is logged and ignored.
        """
        if not self._end.add_callback(callback):
            self._run_callback(callback)

    def remove_done_callback(self, callback: Callable[[Conn], None]) -> bool:
        """Forget a callback given to :meth:`add_done_callback`; False if it wasn't there."""
        return self._end.remove_callback(callback)

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

    # --- the closing handshake and the end ----------------------------------------------

    def _on_own_thread(self) -> bool:
        return self._reader.is_current() or self._writer.task.is_current()

    def _run_callback(self, callback: Callable[[Conn], None]) -> None:
        try:
            callback(self)
        except Exception:
            self.logger.exception("%s: done callback failed", self.name)

    def _note(self, detail: str, cause: BaseException | None = None) -> None:
        self._end.note(detail, cause)

    def _trace(self, direction: str, kind: str, data: Any, part: str = "") -> None:
        size = len(data.encode("utf-8")) if isinstance(data, str) else memoryview(data).nbytes
        self.logger.debug("%s %s %s", self.name, direction, describe(kind, data, size, part))

    def _queue_control(self, is_ping: bool, payload: bytes, done: threading.Event | None) -> None:
        self._outbox.control(is_ping, payload, done)
        if self._debug:
            self._trace(">", "PING" if is_ping else "PONG", payload)

    def _queue_close(
        self, code: int, reason: str, *, fail: bool, done: threading.Event | None, ordered: bool = False
    ) -> bool:
        """Produce our close frame and queue it; False if one was already sent."""
        if not self._outbox.close(code, reason, fail=fail, done=done, ordered=ordered):
            return False
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
        self._end.advance(Phase.INPUT_DONE)
        self._pending_failure = None
        self._timers.fail_deadline = None
        if not self._queue_close(code, reason, fail=True, done=None, ordered=ordered) or self._writer.blocked:
            # No close frame to send, or it can't get past a send stuck on a
            # peer that doesn't read: abort now rather than after close_timeout.
            self._shutdown()

    def _fail_in_order(self, failure: Failure) -> None:
        """Fail because of what the peer sent, at that point of the message stream.

        Like gorilla's sequential reads: the application first gets the
        messages that arrived before the error, so its replies to them go out
        before the close frame (Autobahn 3.2, 4.1.3 and the like expect that).
        If it doesn't read them within close_timeout, the connection is failed
        anyway (see _run_timers).
        """
        self._end.advance(Phase.INPUT_DONE)
        if not self._inbox.put_failure(failure):
            # Nothing undelivered: fail now, after the replies already queued.
            self._fail(failure.code, failure.reason, failure.detail, ordered=True)
            return
        self._pending_failure = failure
        self._timers.fail_deadline = _monotonic() + self._close_timeout
        self._writer.wake()

    def _on_failure_reached(self, failure: Failure) -> None:
        # The application has read everything that arrived before the error
        # (and queued its replies): now the close frame goes out.
        self._fail(failure.code, failure.reason, failure.detail, ordered=True)

    def _shutting_down(self) -> bool:
        return self._end.phase >= Phase.SHUT

    def _shutdown(self) -> None:
        """Start tearing down: wake a blocked recv/send and the writer. Idempotent."""
        if not self._end.advance(Phase.SHUT):
            return
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already disconnected
        self._writer.stop()
        self._inbox.stop_waiting()  # a reader paused on a full inbound queue must see the end

    def _handshake_complete(self) -> bool:
        """Close frames went both ways."""
        return self._end.rcvd is not None and self._writer.sent_close is not None

    def _our_turn_to_close_tcp(self) -> bool:
        """The server closes TCP first once close frames went both ways (RFC 6455
        section 7.1.1); the client waits for that EOF, bounded by the close deadline."""
        return not self._client and self._handshake_complete()

    def _finish(self) -> None:
        """End the connection; runs once, on the reader thread, as it exits."""
        tls = self._tls
        if tls is not None and self._end.phase < Phase.SHUT and (tls.peer_closed or self._handshake_complete()):
            # A clean end, or the peer ended TLS: the writer answers with our
            # close_notify (RFC 8446 section 6.1), then shuts the socket down.
            self._writer.end()
        else:
            self._shutdown()
        self._writer.task.join()
        self._shutdown()  # (if the writer had stopped before it could)
        try:
            self._sock.close()
        except OSError:
            pass
        exc, callbacks = self._end.finish(self._writer.sent_close)
        self._inbox.end(exc)
        self._writer.budget.close()
        for done in self._writer.abandoned_control():
            done.set()  # control frames that never went out: wake anyone waiting on them
        for callback in callbacks:
            self._run_callback(callback)

    # --- the clocks (run on the writer thread) ------------------------------------------

    def _on_due(self, due: Due, now: float) -> None:
        """What the clocks say is due now (called by the writer)."""
        if due is Due.READ_DEADLINE:
            self._note(due.value, TimeoutError(due.value))
            self._shutdown()
        elif due is Due.CLOSE_TIMEOUT:
            self._note(due.value)
            self._shutdown()
        elif due is Due.FAILURE:
            failure = self._pending_failure
            self._timers.fail_deadline = None
            if failure is not None:
                self._fail(failure.code, failure.reason, failure.detail)
        elif due is Due.PING_TIMEOUT:
            self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout", "keepalive ping timeout")
        elif due is Due.IDLE:
            self._note(f"{due.value} for {self._timers.idle_timeout} s")
            self._queue_close(self._idle_close_code, "idle timeout", fail=False, done=None)
        else:
            try:
                self._queue_control(True, b"threadws", None)
            except ConnectionClosed:
                self._shutdown()  # only when closing anyway
                return
            self._timers.ping_sent = now  # stamped again just before the frame goes out

    # --- the reader thread -------------------------------------------------

    def _read_loop(self) -> None:
        try:
            if self._trailing:
                self._route(self._trailing)
                self._trailing = b""
            hooks = ReaderHooks(self._accepting, self._route, self._alive, self._stream_ended, self._writer.wake)
            Reader(self._sock, self._tls, hooks).run()
        except ssl.SSLError as exc:
            if self._end.phase < Phase.SHUT:
                self._note(f"TLS error: {exc}", exc)
        except OSError as exc:
            if self._end.phase < Phase.SHUT:
                self._note(f"connection lost: {exc}", exc)
        except BaseException as exc:  # a bug: never leave the connection half-alive
            self._report_bug("reader", exc)
        finally:
            self._finish()

    def _accepting(self) -> bool:
        return self._end.phase == Phase.OPEN

    def _alive(self, now: float) -> None:
        self._timers.last_recv = now

    def _stream_ended(self, how: str) -> None:
        # After the peer's close frame a bare TCP EOF is common and harmless.
        if self._end.rcvd is None:
            what = {"eof": "EOF", "tls-eof": "EOF", "close_notify": "a TLS close_notify"}[how]
            self._note(f"connection lost: {what} without a close frame")

    def _route(self, data: Any, buf: bytearray | None = None) -> None:
        """Feed what arrived to the protocol and act on each event it finds.

        The protocol lock is held while the protocol works (it may touch
        wsproto) and while messages go to the inbox, and let go for anything
        that may block or take it: a full inbox, a handler.
        """
        events = self._protocol.receive(data, buf)
        lock = self._lock
        inbox = self._inbox
        end = self._end
        lock.acquire()
        try:
            for event in events:
                kind = type(event)
                if kind is Message or kind is Chunk:
                    if self._debug:
                        self._trace_received(event)  # type: ignore[arg-type]
                    if self._idle:
                        self._timers.last_data = self._timers.last_recv  # stamped for this read
                    if inbox.put(event):  # type: ignore[arg-type]
                        lock.release()
                        try:
                            self._wait_for_room()
                        finally:
                            lock.acquire()
                else:
                    lock.release()
                    try:
                        self._on_event(event)
                    finally:
                        lock.acquire()
                    if kind is CloseFrame or kind is Failure:
                        return
                if end.phase != Phase.OPEN:
                    return  # a handler (or another thread) failed or closed the connection
        finally:
            lock.release()

    def _on_event(self, event: Any) -> None:
        """A ping, a pong, the peer's close frame or a failure (without the protocol lock)."""
        kind = type(event)
        if kind is Ping:
            if self._debug:
                self._trace("<", "PING", event.payload)
            self._call_handler(self._ping_handler, event.payload)
        elif kind is Pong:
            if self._debug:
                self._trace("<", "PONG", event.payload)
            self._call_handler(self._pong_handler, event.payload)
        elif kind is CloseFrame:
            self._on_close_frame(event)
        else:
            self._fail_in_order(event)

    def _trace_received(self, event: Message | Chunk) -> None:
        if type(event) is Chunk:
            self._trace("<", event.kind.name, event.data, part="last part" if event.fin else "part")
        else:
            self._trace("<", event.kind.name, event.data)

    def _wait_for_room(self) -> None:
        # The inbox is full: stop reading so TCP pushes back on the peer. Our
        # own keepalive must not blame the peer for the silence this causes.
        timers = self._timers
        timers.reader_paused = True
        self._inbox.wait_room()
        timers.last_recv = timers.last_data = _monotonic()
        timers.reader_paused = False

    def _on_close_frame(self, event: CloseFrame) -> None:
        if self._debug:
            self.logger.debug("%s < %s", self.name, describe_close(event.code, event.reason))
        self._end.advance(Phase.INPUT_DONE)
        self._end.peer_closed(Close(event.code, event.reason), not event.answer)
        if self._timers.close_deadline is None:
            self._timers.close_deadline = _monotonic() + self._close_timeout
            self._writer.wake()
        self._call_handler(self._close_handler, event.code, event.reason)
        if self._our_turn_to_close_tcp():
            self._writer.end()  # after what is queued (TLS: close_notify), the socket is shut down

    def _call_handler(self, handler: Callable[..., None], *args: Any) -> None:
        try:
            handler(*args)
        except ConnectionClosed:
            pass  # the handler wrote to a closing connection: nothing to add
        except Exception as exc:
            self.logger.exception("%s: handler %r raised", self.name, handler)
            self._fail(CloseCode.INTERNAL_ERROR, "internal error", f"handler raised {exc!r}", exc)

    def _report_bug(self, where: str, exc: BaseException) -> None:
        self.logger.error("%s: %s failed", self.name, where, exc_info=exc)
        self._note(f"internal error in {where}: {exc!r}", exc)


def _address(getter: Callable[[], Any]) -> Any:
    try:
        return getter()
    except OSError:
        return None
