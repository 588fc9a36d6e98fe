"""A connection's writer thread: the only code that writes to the socket, and the connection's clocks.

What it owns
------------
* The outbound queues: data frames in order on a :class:`queue.SimpleQueue`
  (bounded in bytes and messages by a :class:`~threadws._budget.Budget`), and
  control frames (pings, pongs, a failing close frame) on a list that jumps
  ahead of queued data. Producers frame under the connection's lock and put
  the frame here under that same lock, so the wire order is the protocol's
  order.
* The sends: everything queued goes out in as few system calls as it can
  (``sendmsg`` with many buffers), tried first without waiting; over TLS the
  batch is encrypted by :class:`~threadws._tls.TLS` first, and what TLS says on
  its own (answers to what the reader fed it, ``close_notify``) goes out here
  too. A send blocks only while the peer doesn't read, and then wakes at least
  every second to look at the clocks.
* The socket's timeout. A socket has one timeout for both directions, so the
  writer alone sets it (the reader waits for input with ``poll`` when it finds
  one set).
* :class:`Timers`: when the keepalive ping, the ping timeout, the read
  deadline, the closing handshake's timeout and a queued protocol failure fall
  due. It computes; the connection acts (:attr:`WriterHooks.on_due`).

What it must never do
---------------------
Read from the socket, touch the protocol, or decide how a connection ends: it
reports what happened to its owner, the connection.
"""

from __future__ import annotations

import enum
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._budget import Budget
from ._frames import SplitFrame
from ._tls import TLS
from ._workers import WORKERS, Task
from .exceptions import Close

__all__ = ["CloseItem", "ControlItem", "Due", "Timers", "Writer", "WriterHooks"]

_monotonic = time.monotonic

#: Linux's IOV_MAX: the most buffers one sendmsg takes.
_IOV_MAX = 1024
#: A writer stuck on a peer that doesn't read wakes this often to keep the clocks.
STALL_TICK = 1.0
#: The most pongs waiting to go out (see Writer.put_pong).
_MAX_PONGS = 16


class Due(enum.Enum):
    """What :meth:`Timers.due` says must happen now."""

    READ_DEADLINE = "read deadline exceeded"
    IDLE = "idle timeout: no message from the peer"
    FAILURE = "a queued protocol failure was not read in time"
    CLOSE_TIMEOUT = "closing handshake timed out"
    PING_TIMEOUT = "keepalive ping timeout"
    PING = "send a keepalive ping"


class Timers:
    """A connection's clocks, all ``time.monotonic()`` values, and what is due when (no I/O).

    Each field is written by one thread and read by the writer; plain
    attribute stores are atomic under the GIL.
    """

    __slots__ = (
        "close_deadline",
        "fail_deadline",
        "idle_timeout",
        "last_data",
        "last_recv",
        "ping_interval",
        "ping_sent",
        "ping_timeout",
        "read_deadline",
        "reader_paused",
    )

    def __init__(
        self, ping_interval: float | None, ping_timeout: float | None, idle_timeout: float | None, now: float
    ) -> None:
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.idle_timeout = idle_timeout
        self.last_recv = now  # the last time anything arrived from the peer
        self.last_data = now  # the last time a message (or part of one) did (kept only with an idle timeout)
        self.ping_sent: float | None = None  # stamped just before the ping goes out
        self.read_deadline: float | None = None  # set_read_deadline: fatal when it passes
        self.close_deadline: float | None = None  # the closing handshake must be over by then
        self.fail_deadline: float | None = None  # a queued protocol failure goes out by then
        self.reader_paused = False  # the reader waits for the application: the peer isn't silent

    def due(self, now: float, stalled: bool, last_progress: float) -> tuple[Due | None, float | None]:
        """``(what is due now or None, when to look again or None)``.

        *stalled*: the writer is stuck sending to a peer that doesn't read;
        *last_progress*: when a send last made progress (then the peer's TCP
        acknowledgements are the only sign of life).
        """
        nxt: float | None = None
        for deadline, due in (
            (self.read_deadline, Due.READ_DEADLINE),
            (self.fail_deadline, Due.FAILURE),
            (self.close_deadline, Due.CLOSE_TIMEOUT),
        ):
            if deadline is not None:
                if now >= deadline:
                    return due, None
                nxt = deadline if nxt is None else min(nxt, deadline)
        if self.close_deadline is None and not self.reader_paused:
            if self.idle_timeout is not None:
                idle_until = self.last_data + self.idle_timeout
                if now >= idle_until:
                    return Due.IDLE, None
                nxt = idle_until if nxt is None else min(nxt, idle_until)
            if self.ping_interval is not None:
                action, when = self._keepalive(now, stalled, last_progress, self.ping_interval)
                if action is not None:
                    return action, None
                nxt = when if nxt is None else min(nxt, when)
        return None, nxt

    def _keepalive(self, now: float, stalled: bool, last_progress: float, interval: float) -> tuple[Due | None, float]:
        """Ping a quiet peer; time it out if it stays quiet (any frame proves it alive)."""
        timeout = self.ping_timeout
        alive = self.last_recv
        if stalled:
            # We can't even send: the peer's TCP acks are the only sign of life.
            alive = max(alive, last_progress)
        sent = self.ping_sent
        outstanding = sent is not None and alive < sent
        if timeout is not None:
            if stalled and now - alive >= interval + timeout:
                return Due.PING_TIMEOUT, now
            if outstanding and sent is not None:
                if now >= sent + timeout:
                    return Due.PING_TIMEOUT, now
                # Look again after an interval too: once the pong is in, the
                # next ping is due an interval after it, not after the timeout.
                return None, min(sent + timeout, now + interval)
        # Without a ping timeout, keep pinging once per quiet interval.
        due = (sent if outstanding and sent is not None else alive) + interval
        if now < due:
            return None, due
        return Due.PING, now


class ControlItem:
    """A ping or a pong on its way out, ahead of queued data."""

    __slots__ = ("data", "done", "is_ping")

    def __init__(self, data: bytes, is_ping: bool, done: threading.Event | None) -> None:
        self.data = data
        self.is_ping = is_ping
        self.done = done  # set once handed to the operating system


class CloseItem:
    """Our close frame on its way out, with what it says."""

    __slots__ = ("close", "data", "done", "fail")

    def __init__(self, data: bytes, close: Close, fail: bool, done: threading.Event | None) -> None:
        self.data = data
        self.close = close
        self.fail = fail  # failing the connection: drop queued data, then shut down
        self.done = done


class _Signal:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<writer signal {self.name}>"


_WAKE = _Signal("wake")  # look at the control queue and the clocks again
_STOP = _Signal("stop")  # the socket is shut down: stop
_END = _Signal("end")  # the connection ended cleanly: end TLS, shut down, stop


@dataclass(frozen=True)
class WriterHooks:
    """What the writer asks of the connection it writes for."""

    shutting_down: Callable[[], bool]  # the connection is being torn down (errors then are expected)
    on_due: Callable[[Due, float], None]  # act on what the clocks say is due now
    close_sent: Callable[[], bool]  # our close frame went out: end TLS and stop now?
    shutdown: Callable[[], None]  # tear the connection down (idempotent)
    note: Callable[[str, BaseException], None]  # why it ends (the first cause is kept)
    report_bug: Callable[[str, BaseException], None]  # log an exception that should never happen


class _WriteDeadline(Exception):
    pass


class Writer:
    """The one thread that writes one connection's socket; see the module documentation."""

    def __init__(
        self,
        sock: socket.socket,
        tls: TLS | None,
        hooks: WriterHooks,
        timers: Timers,
        max_bytes: int,
        max_messages: int,
        name: str,
        greeting: bytes = b"",
    ) -> None:
        self._sock = sock
        self._tls = tls
        self._hooks = hooks
        self._timers = timers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Lists, not deques: an empty deque is 0.7 KiB, resident for every idle
        # connection, and control frames are few.
        self._control: list[ControlItem | CloseItem] = []
        # Pongs waiting to go out, at most _MAX_PONGS: past that the oldest is
        # dropped (RFC 6455 section 5.5.3 lets an endpoint answer only the
        # most recent ping), so a ping flood from a peer that doesn't read
        # can't grow anything here, while a burst of pings from one that does
        # still gets every answer (Autobahn 2.10 checks for ten).
        self._pongs: list[ControlItem] = []
        self._pong_lock = threading.Lock()
        self.blocked = False  # a send is waiting for the peer to read
        self.budget = Budget(max_bytes, max_messages)
        self.write_deadline: float | None = None
        self.next_timer: float | None = None  # when the clocks next need a look
        self.last_progress = _monotonic()  # when a send last moved bytes
        self.sent_close: Close | None = None  # our close frame, recorded just before it goes out
        self._sock_timeout: float | None = sock.gettimeout()
        # The server's 101: sent first, once the connection's other thread exists too
        # (see start). Until then the gate holds the writer back.
        self._greeting = greeting
        self._gate: threading.Lock | None = None
        self._go = False
        self.task = Task(self._run, f"{name}-writer")

    def start_with(self, reader: Task) -> None:
        """Start the writer and the connection's *reader*; a greeting goes out only once both run.

        The greeting (a server's 101) is sent on the calling thread while the
        writer still waits at its gate, so it is with the OS when this
        returns: a teardown right after (the application's abort()) can't cut
        off a 101 already promised, and nothing waits for a thread switch.

        Raises:
            RuntimeError: a thread can't be started; what was started has
                stopped, and nothing was sent or shut down if there is a
                greeting (the caller can still refuse the upgrade with 503).
        """
        greeting = bool(self._greeting)
        if greeting:
            gate = self._gate = threading.Lock()
            gate.acquire()  # the writer waits at it for the go (see _run)
        WORKERS.run(self.task)
        try:
            WORKERS.run(reader)
        except BaseException:
            if greeting:
                self._release(go=False)
            else:
                self.stop()
            self.task.join()
            raise
        if greeting:
            try:
                self._send([self._greeting])  # the writer waits at the gate: we are the only sender
            except (OSError, _WriteDeadline) as exc:
                self._hooks.note(f"connection lost while sending the 101: {exc}", exc)
                self._hooks.shutdown()  # the writer finds the stop when it starts
            self._greeting = b""
            self._release(go=True)

    def _release(self, go: bool) -> None:
        assert self._gate is not None
        self._go = go
        self._gate.release()

    # --- producers (any thread; data and ordered closes under the connection's lock) ----

    def put_data(self, frame: bytes | SplitFrame) -> None:
        """Queue a data frame (already counted in :attr:`budget` by the caller)."""
        self._queue.put(frame)

    def put_control(self, item: ControlItem | CloseItem) -> None:
        """Queue a ping, a pong or a failing close ahead of the data."""
        self._control.append(item)
        self._queue.put(_WAKE)

    def put_pong(self, item: ControlItem) -> None:
        """Queue the answer to a ping; past _MAX_PONGS waiting, the oldest one is dropped."""
        with self._pong_lock:
            waiting = bool(self._pongs)
            if len(self._pongs) == _MAX_PONGS:
                del self._pongs[0]
            self._pongs.append(item)
        if not waiting:
            self._queue.put(_WAKE)  # (pongs already waiting have their wake-up queued)

    def put_close(self, item: CloseItem) -> None:
        """Queue our close frame behind the data already queued."""
        self._queue.put(item)

    def wake(self) -> None:
        """Make the writer look at the clocks again (one of them moved earlier)."""
        self._queue.put(_WAKE)

    def stop(self) -> None:
        """The socket is shut down: stop as soon as possible."""
        self._queue.put(_STOP)

    def end(self) -> None:
        """The connection is over: send what is queued, end TLS, shut the socket down, stop."""
        self._queue.put(_END)

    def abandoned_control(self) -> list[threading.Event]:
        """The wake-up events of control frames that never went out (the connection ended)."""
        return [item.done for item in self._control if item.done is not None]

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        q = self._queue
        get = q.get
        control = self._control
        hooks = self._hooks
        gate = self._gate
        if gate is not None:
            gate.acquire()
            if not self._go:
                return  # the connection could not start: the socket stays as it was, untouched
        try:
            timeout = self._run_timers(False)
            while True:
                if (control or self._pongs) and q.empty():
                    batch: list[Any] = []
                else:
                    try:
                        batch = [get(timeout=timeout)]
                    except queue.Empty:
                        timeout = self._run_timers(False)
                        continue
                    while not q.empty():
                        batch.append(q.get_nowait())
                if len(batch) == 1 and type(batch[0]) is bytes and not control and not self._pongs:
                    # The common case, one message: no bookkeeping beyond the send.
                    data = batch[0]
                    self._send(batch)
                    self.budget.release(len(data), 1)
                    # Data can't make a timer earlier (whatever does, wakes
                    # us), so the timers need a look only when one is due.
                    nxt = self.next_timer
                    if nxt is None:
                        timeout = None
                        continue
                    now = _monotonic()
                    if now < nxt:
                        timeout = nxt - now
                        continue
                elif not self._write_batch(batch):
                    return
                timeout = self._run_timers(False)
        except _WriteDeadline:
            hooks.note("write deadline exceeded", TimeoutError("write deadline exceeded"))
        except OSError as exc:
            if not hooks.shutting_down():
                hooks.note(f"connection lost while sending: {exc}", exc)
        except BaseException as exc:  # a bug: never leave the connection half-alive
            hooks.report_bug("writer", exc)
        finally:
            hooks.shutdown()

    def _run_timers(self, stalled: bool) -> float | None:
        """Have the connection act on what the clocks say is due; seconds until the next timer (None: none)."""
        hooks = self._hooks
        timers = self._timers
        while not hooks.shutting_down():
            now = _monotonic()
            due, nxt = timers.due(now, stalled, self.last_progress)
            if due is None:
                self.next_timer = nxt
                return None if nxt is None else max(0.0, nxt - now)
            hooks.on_due(due, now)
        self.next_timer = None
        return None

    def _write_batch(self, batch: list[Any]) -> bool:
        """Send control frames, then the batch's data, in one go. False means stop."""
        if _STOP in batch:
            return False  # the socket is shut down: nothing more can go out
        bufs: list[Any] = []
        done: list[threading.Event] = []
        close: CloseItem | None = None
        ping = False
        data_bytes = data_items = 0
        if self._pongs:
            with self._pong_lock:
                pongs = list(self._pongs)
                self._pongs.clear()
            bufs.extend(pong.data for pong in pongs)
        control = self._control
        while control:
            item = control.pop(0)
            if close is not None:
                continue  # nothing may follow a close frame
            bufs.append(item.data)
            if item.done is not None:
                done.append(item.done)
            if type(item) is CloseItem:
                close = item
            elif type(item) is ControlItem and item.is_ping:
                ping = True
        end = False
        for item in batch:
            kind = type(item)
            if kind is bytes or kind is SplitFrame:
                data_bytes += len(item)
                data_items += 1
                if close is None:
                    if kind is bytes:
                        bufs.append(item)
                    else:
                        bufs += (item.header, item.payload)
            elif item is _END:
                end = True
            elif type(item) is CloseItem and close is None:
                close = item
                bufs.append(item.data)
                if item.done is not None:
                    done.append(item.done)
        # Record what goes out *before* sending it: on a fast link the answer
        # (a pong, the peer's close) can be back before sendmsg returns.
        if ping:
            self._timers.ping_sent = _monotonic()
        if close is not None:
            self.sent_close = close.close
        if bufs:
            self._send(bufs)
        else:
            self._send_tls_output()
        if data_items:
            self.budget.release(data_bytes, data_items)
        for event in done:
            event.set()
        if close is not None:
            if close.fail:
                self._hooks.shutdown()
                return False
            end = self._hooks.close_sent() or end
        if end:
            if self._tls is not None:
                self._send_close_notify()
            self._hooks.shutdown()
            return False
        return True

    def _send(self, bufs: list[Any]) -> None:
        """Send every buffer (encrypted first, over TLS)."""
        tls = self._tls
        if tls is None:
            self._send_raw(bufs)
            return
        data: Any = bufs[0] if len(bufs) == 1 else b"".join(bufs)
        while True:
            out, data = tls.encrypt(data)
            if out:
                self._send_raw([out])
            if not data:
                return
            # TLS must hear from the peer before it can go on (TLS 1.2
            # renegotiation): the reader feeds it; keep the clocks meanwhile.
            if not tls.wait_input(STALL_TICK):
                self._stalled()

    def _send_tls_output(self) -> None:
        """Send what TLS produced on its own (answers to what the reader fed it)."""
        tls = self._tls
        if tls is not None and tls.has_output():
            self._send_raw([tls.take_output()])

    def _send_close_notify(self) -> None:
        """The connection ended cleanly: end TLS too (RFC 8446 section 6.1), best effort."""
        assert self._tls is not None
        try:
            out = self._tls.close_notify()
            if out:
                self._send_raw([out])
        except (OSError, _WriteDeadline):
            pass  # the peer is gone or stuck: it has what matters, the close frames

    def _send_raw(self, bufs: list[Any]) -> None:
        """Put every buffer on the socket, as it is. Blocks only while the peer
        isn't reading, and then wakes at least every STALL_TICK to keep the
        clocks (a close requested meanwhile, the deadlines, keepalive)."""
        sock = self._sock
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
                self.last_progress = _monotonic()
                return
            bufs = [memoryview(data)[n:]]
        try:
            self._send_all(sock, bufs, flags)
        finally:
            self.blocked = False

    def _send_all(self, sock: socket.socket, bufs: list[Any], flags: int) -> None:
        while bufs:
            try:
                n = sock.sendmsg(bufs[:_IOV_MAX], (), flags)
            except (BlockingIOError, TimeoutError):
                if flags:
                    flags = 0
                    self.blocked = True  # the peer isn't reading: a failing close can't get past us now
                    self._set_send_timeout()
                else:
                    self._stalled()
                    self._set_send_timeout()
                continue
            self.last_progress = _monotonic()
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
                self.blocked = True
                self._set_send_timeout()
        if not flags and self._sock_timeout is not None and not self._hooks.shutting_down():
            # Back to blocking mode, so the reader's recv is one system call again.
            sock.settimeout(None)
            self._sock_timeout = None

    def _set_send_timeout(self) -> None:
        """Wait no longer than the write deadline, the next timer or STALL_TICK.

        Only calls settimeout (a syscall) when the current value is too long or
        much too short.
        """
        now = _monotonic()
        want = STALL_TICK
        if self.write_deadline is not None:
            want = min(want, self.write_deadline - now)
        if self.next_timer is not None:
            want = min(want, self.next_timer - now)
        want = max(want, 0.001)
        current = self._sock_timeout
        if current is None or current > want or current < want / 2:
            self._sock.settimeout(want)
            self._sock_timeout = want

    def _stalled(self) -> None:
        """A send made no progress for a while: enforce the deadline and the clocks."""
        now = _monotonic()
        if self.write_deadline is not None and now >= self.write_deadline:
            raise _WriteDeadline
        hooks = self._hooks
        if hooks.shutting_down():
            raise ConnectionAbortedError("connection shut down")
        self._run_timers(True)
        if hooks.shutting_down():
            raise ConnectionAbortedError("connection shut down")
