"""A Hub that spans processes and hosts: broadcasts carried between them by Redis pub/sub.

Theory of operation
-------------------
A :class:`RedisBackplane` is shared by every :class:`threadws.Hub` of a
process (one per room, each a Redis channel named after the hub). For as long
as at least one hub is open on it, it runs two threads:

* the **publisher** takes broadcasts from a bounded outbox, in the order they
  were put there, and sends them to Redis as ``PUBLISH`` commands, many per
  write, on a connection of its own;
* the **subscriber** holds one ``SUBSCRIBE`` connection for all of the
  process's hubs, frames each message that arrives once (a
  :class:`~threadws.PreparedMessage`) and hands it to the hub, which queues it
  on every local connection with ``try_send`` and never waits for one.

``Hub.broadcast()`` queues the message on the hub's local connections at once
and puts it in the outbox; it never waits for Redis. Every message carries a
header naming the process (a random id per backplane and per process) that
published it, and a process skips its own messages when Redis sends them
back: they reached its connections already.

The rules, and why they hold
----------------------------
* **Never twice.** A process delivers its own broadcast once, locally, and
  drops the copy Redis returns. Redis delivers a ``PUBLISH`` once to each
  subscribed connection, and a backplane subscribes once per channel (a
  second open hub with the same name on one backplane is refused). The
  publisher never sends a ``PUBLISH`` again once it may have reached Redis:
  a message whose write or reply failed is reported as unpublished, not
  retried. After a reconnect Redis replays nothing.
* **In order, per publisher.** A hub's broadcasts are serialised (one lock
  around the local queueing and the outbox), the publisher sends the outbox
  in order on one connection, Redis forwards each connection's messages in
  order, and the subscriber hands them on one by one. So every connection,
  on every process, sees the broadcasts of any one process in the order that
  process made them, and all connections of one process see the hub's
  messages in one order. Broadcasts of *different* processes may interleave
  differently on different processes (each sees its own first).
* **At most once; nothing is buffered for a process that is away.** Redis
  pub/sub keeps nothing: while a process can't reach Redis, broadcasts made
  there reach only its own connections (the outbox is emptied and each
  message reported to the hub's ``on_unpublished``) and broadcasts made
  elsewhere don't reach it. Both threads reconnect with backoff (0.1 s
  doubling up to 2 s), the outage is logged once when it starts and once
  when it ends, and delivery resumes with the next message.
* **Bounded.** The outbox holds at most *max_pending* bytes; when it is full
  a broadcast is not published (and reported). Every Redis call has a
  timeout (*timeout*); a subscription silent for 5 s is checked with a
  ``PING`` and dropped if Redis doesn't answer within *timeout*.

The wire format (one Redis message per broadcast): one byte of format
version (1), one byte of message type (1 text, 2 binary, as the opcodes),
eight bytes of publisher id, then the payload (UTF-8 for text). Anything
else on a hub's channel, and anything over *max_message_size*, is logged and
ignored.

redis-py is imported only when a RedisBackplane is made (``pip install
'threadws[redis]'``). Connections use RESP2 with redis-py's own retries off:
this module decides what is retried.

What it must never do
---------------------
Make :meth:`~RedisBackplane.publish` (and so ``Hub.broadcast()``) wait for
Redis, send a message again once it may have reached Redis, or touch a
connection: what arrives goes to the hub's ``deliver`` callback.
"""

from __future__ import annotations

import abc
import encodings.idna  # noqa: F401  (see below)
import logging
import os
import random
import threading
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .enums import MessageType
from .prepared import PreparedMessage

__all__ = ["Backplane", "RedisBackplane"]

logger = logging.getLogger("threadws")

Deliver = Callable[[PreparedMessage], object]

VERSION = 1
HEADER = 10  # version, type, 8-byte publisher id
PING_INTERVAL = 5.0  # seconds of silence before the subscriber checks its connection
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0
BATCH = 512  # PUBLISH commands per write


class Backplane(abc.ABC):
    """What a :class:`threadws.Hub` needs from a backplane (:class:`RedisBackplane` is one).

    A hub calls :meth:`attach` when it opens, :meth:`publish` on every
    broadcast and :meth:`detach` when it closes. None of them may block for
    long: they run on the application's threads.
    """

    @abc.abstractmethod
    def attach(self, name: str, deliver: Deliver, unpublished: Deliver) -> None:
        """Start carrying the hub called *name*: call ``deliver(message)`` with each
        message other processes publish for it, and ``unpublished(message)`` with
        each of this process's messages that did not reach them. Raises ValueError
        if a hub of that name is attached already."""

    @abc.abstractmethod
    def detach(self, name: str) -> None:
        """Stop carrying the hub called *name* (nothing happens if it isn't attached)."""

    @abc.abstractmethod
    def publish(self, name: str, message: PreparedMessage) -> bool:
        """Send *message* to the hubs called *name* on the other processes; never
        blocks. False if it can't be sent at all (then the caller reports it)."""

    @abc.abstractmethod
    def count_processes(self, name: str) -> int:
        """How many processes have the hub called *name* attached, this one included."""


def _import_redis() -> Any:
    try:
        import redis
        import redis.backoff
        import redis.retry
    except ImportError:
        raise ImportError(
            "RedisBackplane needs redis-py: pip install 'threadws[redis]' (or pip install redis)"
        ) from None
    return redis


class _Backoff:
    """Waits between reconnection attempts: 0.1 s doubling up to 2 s, with jitter
    so that many processes don't all knock at once when Redis comes back."""

    def __init__(self) -> None:
        self._next = BACKOFF_FIRST

    def reset(self) -> None:
        self._next = BACKOFF_FIRST

    def next(self) -> float:
        delay = self._next
        self._next = min(BACKOFF_MAX, delay * 2)
        return delay * random.uniform(0.5, 1.0)


class _Health:
    """Logs an outage once when it starts (the first part to fail) and once when it ends."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._lock = threading.Lock()
        self._down: set[str] = set()
        self._since = 0.0
        self._lost = 0
        self._overflowing = False

    def down(self, part: str, exc: BaseException) -> None:
        with self._lock:
            first = not self._down
            self._down.add(part)
            if first:
                self._since = time.monotonic()
                self._lost = 0
        if first:
            logger.warning(
                "Redis at %s unreachable (%s: %s): broadcasts reach only this process's connections "
                "until it is back; reconnecting", self._where, type(exc).__name__, exc,
            )

    def up(self, part: str) -> None:
        with self._lock:
            if part not in self._down:
                return
            self._down.discard(part)
            if self._down:
                return
            seconds, lost = time.monotonic() - self._since, self._lost
        logger.warning(
            "Redis at %s reachable again after %.1f s; %d broadcasts of this process were not published meanwhile",
            self._where, seconds, lost,
        )

    def unpublished(self, count: int, *, overflow: bool = False) -> None:
        with self._lock:
            self._lost += count
            outage = bool(self._down)
            warn = overflow and not outage and not self._overflowing
            if overflow:
                self._overflowing = True
        if warn:
            logger.warning("Redis at %s: the backplane's outbox is full (Redis too slow?): broadcasts "
                           "are reaching only this process's connections", self._where)

    def drained(self) -> None:
        with self._lock:
            self._overflowing = False


class _Broken(Exception):
    """The publisher's connection failed; *unsent* are the messages not known to be published."""

    def __init__(self, cause: BaseException, unsent: list[_Outgoing]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.unsent = unsent


@dataclass
class _Route:
    """A hub attached to the backplane: its channel and where its messages go."""

    name: str
    deliver: Deliver
    unpublished: Deliver


@dataclass
class _Outgoing:
    channel: bytes
    payload: bytes
    message: PreparedMessage


class _Link:
    """One run of the two threads (from the first hub attached to the last detached,
    or from a fork): their shared state and the process id they speak for."""

    def __init__(self, prefix: bytes) -> None:
        self.node = os.urandom(8)
        self.control = prefix + b"node:" + self.node.hex().encode()
        self.cond = threading.Condition(threading.Lock())
        self.outbox: deque[_Outgoing] = deque()
        self.pending = 0  # bytes in the outbox
        self.wake = False  # the subscriber should look at the routes again
        self.stopping = False
        self.stop = threading.Event()  # the subscriber's
        self.routes_changed = True
        self.threads: list[threading.Thread] = []


# The backplane's threads connect (getaddrinfo encodes the host name with the idna
# codec) while other threads may be importing, above all in a process just forked by
# gunicorn --preload. A codec looked up then can fail with "unknown encoding: idna",
# and the encodings package remembers the failure for good: the codec is imported with
# this module instead.

_live: weakref.WeakSet[RedisBackplane] = weakref.WeakSet()


class RedisBackplane(Backplane):
    """Carries :class:`threadws.Hub` broadcasts between processes and hosts over Redis pub/sub.

    Make one per process and give it to every hub, each with its own name::

        backplane = threadws.RedisBackplane("redis://localhost:6379/0")
        chat = threadws.Hub("chat", backplane=backplane)
        news = threadws.Hub("news", backplane=backplane)

    A broadcast on a hub reaches every connection registered with a hub of
    the same name on every process whose backplane uses the same Redis (and
    *prefix*), exactly once, in the order each process made its broadcasts;
    see the module docstring for the rules and what an outage loses. The
    backplane runs two threads (``threadws-backplane-pub`` and ``-sub``)
    while at least one hub is open on it; they end when the last one is
    closed (:meth:`threadws.Hub.close`). In a process forked from one with
    hubs open (gunicorn ``--preload``), they start again on their own.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
            for TLS or ``unix:///path/to/socket``, as redis-py takes it.
        prefix: put before each hub's name to make its Redis channel
            (``threadws:hub:chat``), so that apps can share a Redis.
        timeout: seconds for connecting to Redis and for each reply.
        max_pending: bytes of broadcasts waiting to be published, at most;
            past it broadcasts are not published (and reported).
        max_message_size: largest payload published or accepted, in bytes.

    Raises:
        ImportError: redis-py is not installed.
        ValueError: *url* is not a Redis URL.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "threadws:",
        timeout: float = 2.0,
        max_pending: int = 16 << 20,
        max_message_size: int = 4 << 20,
    ) -> None:
        redis = _import_redis()
        self._errors = (redis.RedisError, OSError)
        self._response_error = redis.ResponseError
        if timeout <= 0 or max_pending <= 0 or max_message_size <= 0:
            raise ValueError("timeout, max_pending and max_message_size must be positive")
        # The pool only parses the URL; the connections are made here, with these settings
        # whatever the URL's query says: RESP2, so that pub/sub messages come back as plain
        # replies (bytes) on every redis-py version, and no retries inside redis-py (a
        # resent PUBLISH could arrive twice).
        forced = dict(
            socket_timeout=timeout, socket_connect_timeout=timeout, protocol=2, decode_responses=False,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        )
        scheme, netloc, path, query, fragment = urllib.parse.urlsplit(url)
        query = urllib.parse.urlencode(
            [(k, v) for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k not in forced]
        )
        pool = redis.ConnectionPool.from_url(urllib.parse.urlunsplit((scheme, netloc, path, query, fragment)), **forced)
        self._connection_class = pool.connection_class
        self._connection_kwargs = pool.connection_kwargs
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_message_size = max_message_size
        self._prefix = prefix.encode()
        self._where = _describe(self._connection_kwargs)
        self._health = _Health(self._where)
        self._lock = threading.Lock()
        self._routes: dict[bytes, _Route] = {}
        self._link: _Link | None = None
        _live.add(self)

    def __repr__(self) -> str:
        return f"<RedisBackplane {self._where} {len(self._routes)} hubs>"

    def channel(self, name: str) -> bytes:
        """The Redis channel that carries the hub called *name*."""
        return self._prefix + b"hub:" + name.encode()

    # --- what a Hub calls --------------------------------------------------

    def attach(self, name: str, deliver: Deliver, unpublished: Deliver) -> None:
        """See :meth:`Backplane.attach`; starts the threads with the first hub."""
        if not isinstance(name, str) or not name:
            raise ValueError("a hub on a backplane needs a name (a non-empty str): it names the Redis channel")
        key = self.channel(name)
        with self._lock:
            if key in self._routes:
                raise ValueError(f"a hub named {name!r} is already open on this backplane")
            self._routes[key] = _Route(name, deliver, unpublished)
            link = self._link
            if link is None:
                self._link = link = self._start()
        self._resubscribe(link)

    def detach(self, name: str) -> None:
        """See :meth:`Backplane.detach`; with the last hub, ends the threads and waits for
        them (at most ``3 * timeout + 1`` seconds)."""
        with self._lock:
            if self._routes.pop(self.channel(name), None) is None:
                return
            link, last = self._link, not self._routes
            if last:
                self._link = None  # the last hub: the threads end
        if link is None:
            return
        if not last:
            self._resubscribe(link)
            return
        link.stop.set()  # before the wake-up message below, which the subscriber may see at once
        with link.cond:
            link.stopping = True
            link.wake = True  # the subscriber may be waiting for Redis: a message wakes it
            link.cond.notify()
        for thread in link.threads:
            if thread is not threading.current_thread():
                thread.join(3 * self.timeout + 1)
                if thread.is_alive():
                    logger.warning("%s did not end within %.0f s", thread.name, 3 * self.timeout + 1)

    def publish(self, name: str, message: PreparedMessage) -> bool:
        """See :meth:`Backplane.publish`: puts *message* in the outbox; False when it is
        over *max_message_size*, the outbox is full or no hub is attached."""
        data = message.data.encode() if isinstance(message.data, str) else message.data
        if len(data) > self.max_message_size:
            logger.warning("%s: a %d-byte broadcast is over max_message_size (%d): not published",
                           self, len(data), self.max_message_size)
            self._health.unpublished(1)
            return False
        link = self._link
        if link is None:
            return False
        payload = b"".join((bytes((VERSION, message.message_type)), link.node, data))
        with link.cond:
            if link.stopping or link.pending + len(payload) > self.max_pending:
                full = not link.stopping
            else:
                link.outbox.append(_Outgoing(self.channel(name), payload, message))
                link.pending += len(payload)
                link.cond.notify()
                return True
        self._health.unpublished(1, overflow=full)
        return False

    def count_processes(self, name: str) -> int:
        """How many processes are subscribed to the hub called *name*, this one included.

        It is Redis's ``PUBSUB NUMSUB``: one per backplane, however many
        connections each process has (``len(hub)`` counts this process's).
        Blocks for one round trip to Redis, at most about ``2 * timeout``.

        Raises:
            ConnectionError: Redis could not be reached or did not answer.
        """
        conn = self._connection()
        try:
            conn.connect()
            conn.send_command("PUBSUB", "NUMSUB", self.channel(name))
            reply = conn.read_response()
        except self._errors as exc:
            raise ConnectionError(f"Redis at {self._where}: {type(exc).__name__}: {exc}") from exc
        finally:
            conn.disconnect()
        return int(reply[1])

    # --- threads -----------------------------------------------------------

    def _connection(self) -> Any:
        """A new redis-py connection, not yet connected."""
        return self._connection_class(**self._connection_kwargs)

    def _start(self) -> _Link:
        """A new link and its threads (the caller holds the lock)."""
        link = _Link(self._prefix)
        link.threads = [
            threading.Thread(target=self._publisher, args=(link,), name="threadws-backplane-pub", daemon=True),
            threading.Thread(target=self._subscriber, args=(link,), name="threadws-backplane-sub", daemon=True),
        ]
        for thread in link.threads:
            thread.start()
        return link

    def _resubscribe(self, link: _Link) -> None:
        """Tell the subscriber that the routes changed; a message on its own channel wakes it."""
        with link.cond:
            link.routes_changed = True
            link.wake = True
            link.cond.notify()

    def _after_fork_in_child(self) -> None:
        # The parent's threads don't exist here and its locks may be held by
        # them: start over with new locks, a new process id and new connections.
        # The inherited sockets are only dropped (closing the file descriptors
        # does not disturb the parent's connections).
        self._lock = threading.Lock()
        self._health = _Health(self._where)
        self._link = None
        if self._routes:
            self._link = self._start()

    def _report(self, batch: list[_Outgoing] | deque[_Outgoing]) -> None:
        """Hand messages that did not reach Redis back to their hubs."""
        if not batch:
            return
        self._health.unpublished(len(batch))
        for item in batch:
            route = self._routes.get(item.channel)
            if route is None:
                continue
            try:
                route.unpublished(item.message)
            except Exception:
                logger.exception("%s: on_unpublished failed", route.name)

    def _publisher(self, link: _Link) -> None:
        conn: Any = None
        retry_at = 0.0  # while Redis is away: no new connection before then
        backoff = _Backoff()
        while True:
            with link.cond:
                while not (link.outbox or link.wake or link.stopping):
                    link.cond.wait()
                wake, link.wake = link.wake, False
                batch: list[_Outgoing] = []
                while link.outbox and len(batch) < BATCH:
                    item = link.outbox.popleft()
                    link.pending -= len(item.payload)
                    batch.append(item)
                stopping, empty = link.stopping, not link.outbox
            if empty:
                self._health.drained()
            if not batch and not wake:
                break  # stopping, and everything is sent
            if conn is not None and not self._still_open(conn):
                conn = None  # closed while idle (Redis restarted?): nothing was sent on it, so nothing is lost
            if conn is None:
                if (stopping and retry_at) or time.monotonic() < retry_at:
                    self._report(batch)  # Redis is away: local delivery only
                    continue
                try:
                    conn = self._connection()
                    conn.connect()
                except Exception as exc:
                    if conn is not None:
                        conn.disconnect()
                    conn = None
                    self._failed("publisher", exc)
                    retry_at = time.monotonic() + backoff.next()
                    self._report(batch)
                    continue
            commands: list[tuple[Any, ...]] = [("PUBLISH", link.control, b"")] if wake else []
            commands.extend(("PUBLISH", item.channel, item.payload) for item in batch)
            try:
                self._send(conn, commands, batch)
            except _Broken as broken:
                # What was written may have been published: it is never sent again.
                conn.disconnect()
                conn = None
                self._failed("publisher", broken.cause)
                retry_at = time.monotonic() + backoff.next()
                self._report(broken.unsent)
                continue
            self._health.up("publisher")
            backoff.reset()
            retry_at = 0.0
        if conn is not None:
            conn.disconnect()

    def _still_open(self, conn: Any) -> bool:
        """False (and *conn* closed) if Redis has closed it: between batches a healthy
        connection has nothing to read. (Costs a non-blocking recv per batch.)"""
        try:
            if not conn.can_read(timeout=0):
                return True
        except self._errors:
            pass
        conn.disconnect()
        return False

    def _send(self, conn: Any, commands: list[tuple[Any, ...]], batch: list[_Outgoing]) -> None:
        """Write *commands* at once (any wake-up first, then one PUBLISH per item of
        *batch*) and read their replies. Raises _Broken with the items not known
        to be published if the connection fails."""
        first = len(commands) - len(batch)  # the reply to batch[0]
        read = 0
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            for read in range(len(commands)):
                try:
                    conn.read_response()
                except self._response_error as exc:  # Redis refused that PUBLISH
                    if read >= first:
                        logger.warning("%s: Redis refused a PUBLISH: %s", self._where, exc)
                        self._report(batch[read - first : read - first + 1])
            read = len(commands)
        except Exception as exc:
            raise _Broken(exc, batch[max(0, read - first) :]) from exc

    def _failed(self, part: str, exc: BaseException) -> None:
        if not isinstance(exc, self._errors):  # not Redis or the network: a bug, say where
            logger.error("%s: the backplane's %s failed", self._where, part, exc_info=exc)
        self._health.down(part, exc)

    def _subscriber(self, link: _Link) -> None:
        backoff = _Backoff()
        while not link.stop.is_set():
            conn = None
            try:
                conn = self._connection()
                conn.connect()
                self._listen(link, conn, backoff)
            except Exception as exc:  # whatever it is, the subscriber carries on
                self._failed("subscriber", exc)
            finally:
                if conn is not None:
                    conn.disconnect()  # Redis forgets the subscriptions with the connection
            if link.stop.wait(backoff.next()):
                break
            # A fresh connection subscribes to every channel there is then.
            with link.cond:
                link.routes_changed = True

    def _listen(self, link: _Link, conn: Any, backoff: _Backoff) -> None:
        """Subscribe and hand messages to the hubs until told to stop; raises on a broken connection."""
        subscribed: set[bytes] = set()
        conn.send_command("SUBSCRIBE", link.control)
        healthy = False
        heard = time.monotonic()
        ping_sent: float | None = None
        while not link.stop.is_set():
            with link.cond:
                changed, link.routes_changed = link.routes_changed, False
            if changed:
                with self._lock:
                    wanted = set(self._routes)
                if wanted - subscribed:
                    conn.send_command("SUBSCRIBE", *sorted(wanted - subscribed))
                if subscribed - wanted:
                    conn.send_command("UNSUBSCRIBE", *sorted(subscribed - wanted))
                subscribed = wanted
            now = time.monotonic()
            deadline = heard + PING_INTERVAL if ping_sent is None else ping_sent + self.timeout
            if now >= deadline:
                if ping_sent is not None:
                    raise TimeoutError(f"no answer to a PING within {self.timeout} s")
                conn.send_command("PING")
                ping_sent = now
                continue
            # A hub closing wakes this wait with a message; should Redis be silent, the
            # wait is cut short anyway so that close() is over within a few timeouts.
            if not conn.can_read(timeout=min(self.timeout, deadline - now)):
                continue
            reply = conn.read_response()
            heard, ping_sent = time.monotonic(), None
            if not healthy:
                healthy = True
                self._health.up("subscriber")
                backoff.reset()
            if reply[0] == b"message" and reply[1] != link.control:
                self._dispatch(link, reply[1], reply[2])

    def _dispatch(self, link: _Link, channel: bytes, data: bytes) -> None:
        """One message from Redis: to its hub, unless it is this process's own or malformed."""
        route = self._routes.get(channel)
        if route is None:
            return  # a hub that just closed
        if len(data) < HEADER or data[0] != VERSION or data[1] not in (MessageType.TEXT, MessageType.BINARY):
            logger.warning("%s: ignored a message on %r that threadws did not publish", route.name, channel)
            return
        if data[2:HEADER] == link.node:
            return  # ours: delivered locally when it was broadcast
        if len(data) - HEADER > self.max_message_size:
            logger.warning("%s: ignored a %d-byte message (over max_message_size)", route.name, len(data) - HEADER)
            return
        try:
            message = PreparedMessage(MessageType(data[1]), data[HEADER:])
        except ValueError:
            logger.warning("%s: ignored a text message that is not valid UTF-8", route.name)
            return
        try:
            route.deliver(message)
        except Exception:
            logger.exception("%s: delivering a message from Redis failed", route.name)


def _describe(kwargs: dict[str, Any]) -> str:
    """Where Redis is, for log lines (never the password)."""
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def _after_fork_in_child() -> None:
    for backplane in list(_live):
        backplane._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
