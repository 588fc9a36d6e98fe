"""Interop with the ``websockets`` library (v13+), in both directions.

* websockets' sync client  -> threadws server
* threadws client          -> websockets' sync server
* websockets' asyncio client and server (each on its own event loop, in its own
  thread) for text + binary + close round trips.

Every close path is checked from both ends: the code and reason each side
received and sent, and the exception class each side raises.

Every test runs twice, over ``ws://`` and over ``wss://`` (the ``transport``
fixture; a trustme certificate). Over TLS a clean close must also end promptly
on both sides: asyncio's TLS transport sends close_notify and waits for the
peer's (or its EOF) before it closes TCP, and neither end may be left to wait
out its close timeout (``assert_closed_promptly``).

Conventions: servers listen on port 0 and run in threads; everything is shut
down in ``finally``; every wait (queue get, join, event) has a timeout; nothing
sleeps to wait for a condition. threadws connections run with
``ping_interval=None`` and websockets' with ``ping_interval=None`` so that
keepalive pings never interleave with what a test checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import queue
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect as async_connect
from websockets.asyncio.server import serve as async_serve
from websockets.exceptions import ConnectionClosed as WsClosed
from websockets.exceptions import ConnectionClosedError as WsClosedError
from websockets.exceptions import ConnectionClosedOK as WsClosedOK
from websockets.sync.client import connect as sync_connect
from websockets.sync.server import serve as sync_serve

import threadws
from threadws import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, MessageType

from .polling import poll
from .tls_tools import Certificates

pytestmark = pytest.mark.interop

#: Seconds any single wait may take; the happy paths finish in milliseconds.
T = 2.0
MIB = 1 << 20
#: websockets' max_size where 1 MiB messages (plus framing) must get through.
BIG = 4 * MIB

# Exactly 1 MiB each: threadws's default read limit is 1 MiB and a message of
# exactly the limit must pass.
BIG_BINARY = random.Random(6455).randbytes(MIB)
BIG_TEXT = "abc✓" * (MIB // 6) + "x" * (MIB % 6)  # "abc✓" is 6 bytes of UTF-8
assert len(BIG_TEXT.encode("utf-8")) == MIB

SMALL_MESSAGES: list[str | bytes] = ["héllo wörld ✓", b"\x00\x01\xfe\xff", "", b""]

WEBSOCKETS_MAJOR = int(websockets.__version__.split(".")[0])
#: Why websockets' sync side is left out over wss before version 17 (16 is the newest on Python 3.10).
OLD_SYNC_OVER_TLS = (
    "websockets < 17's sync connection gives its ssl.SSLSocket a timeout from the thread that closes while "
    "its reading thread is in recv; CPython then fails that read at once ('The read operation timed out', "
    "PySSL_select in _ssl.c), so websockets drops the connection without reading the peer's close frame"
)


# --- generic helpers ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def threads_back_to_baseline() -> Iterator[None]:
    """Every thread a test starts (ours, threadws's, websockets') must be gone at its end."""
    before = threading.active_count()
    yield
    threadws.reuse_threads(0)  # finished connection threads wait to be reused: end them first
    threadws.reuse_threads()
    deadline = time.monotonic() + 5.0
    step = threading.Event()  # never set: its wait() is a bounded poll step
    while threading.active_count() > before:
        if time.monotonic() > deadline:
            names = sorted(t.name for t in threading.enumerate())
            pytest.fail(f"{threading.active_count()} threads running, {before} before the test: {names}")
        step.wait(0.01)


def get(q: queue.Queue[Any], what: str = "an item", timeout: float = T) -> Any:
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


def join(thread: threading.Thread, timeout: float = T) -> None:
    thread.join(timeout)
    assert not thread.is_alive(), f"thread {thread.name} still running after {timeout} s"


def ws_wait_closed(ws: Any, timeout: float = T) -> bool:
    """Wait, from any thread, until a websockets connection has ended; False on timeout.

    A sync connection's ``wait_closed`` (17+), or the same by its protocol state
    (websockets 16 on Python 3.10, and asyncio connections, whose
    ``wait_closed`` is a coroutine for their own event loop).
    """
    wait_closed = getattr(ws, "wait_closed", None)
    if wait_closed is not None and not inspect.iscoroutinefunction(wait_closed):
        return bool(wait_closed(timeout))
    from websockets.protocol import State

    return bool(poll(lambda: ws.protocol.state is State.CLOSED, timeout))


def ws_close(close: Any) -> tuple[int, str] | None:
    """A websockets ``Close`` (or None) as a plain ``(code, reason)`` tuple."""
    return None if close is None else (int(close.code), close.reason)


def tw_close(close: Any) -> tuple[int, str] | None:
    """A threadws ``Close`` (or None) as a plain ``(code, reason)`` tuple."""
    return None if close is None else (int(close.code), close.reason)


def assert_closed_promptly(tw_exc: ConnectionClosed | None, ws: Any) -> None:
    """Neither end waited out its close timeout and tore the connection down instead.

    After a clean closing handshake over TLS, asyncio's TLS transport sends
    close_notify and waits for the peer's (or its TCP EOF) before it closes
    TCP: a threadws client that waited for the server's EOF instead would
    leave websockets to give up at its close timeout (it then records a
    TimeoutError, and its asyncio handlers see the close only then), and
    threadws would time out too.
    """
    if tw_exc is not None:
        assert "timed out" not in str(tw_exc), f"threadws waited out its close timeout: {tw_exc}"
    if ws is not None:
        # A websockets connection, sync or asyncio (the error is its connection_exc in 17+,
        # its recv_exc before), or the ConnectionClosed it raised.
        if isinstance(ws, BaseException):
            cause = ws.__cause__
        else:
            cause = getattr(ws, "connection_exc", None) or getattr(ws, "recv_exc", None)
        assert not isinstance(cause, TimeoutError), f"websockets waited out its close timeout: {cause!r}"


def drain(conn: threadws.Conn) -> ConnectionClosed:
    """Read (and drop) messages until the connection ends; return how it ended."""
    while True:
        try:
            conn.read_message(timeout=T)
        except ConnectionClosed as exc:
            return exc


def ws_drain(ws: Any) -> WsClosed:
    """The same for a websockets sync connection."""
    while True:
        try:
            ws.recv(timeout=T)
        except WsClosed as exc:
            return exc


def kind(data: str | bytes) -> MessageType:
    return MessageType.TEXT if isinstance(data, str) else MessageType.BINARY


# --- servers and clients, over ws:// or wss:// ----------------------------------------------


class Transport:
    """``ws://``, or ``wss://`` with a trustme certificate that every client here trusts.

    Every test runs over both (the ``transport`` fixture): the servers and
    clients below are the only code that differs, so a test reads the same
    either way. Over TLS, websockets uses ``ssl.SSLSocket`` (sync) and
    asyncio's TLS transport; threadws its own TLS in memory.

    websockets' sync client speaks TLS 1.2 here, everything else TLS 1.3. That
    client starts its reading thread before it sends the HTTP request, so two
    threads use its one ``SSLSocket`` at once (what threadws avoids, see
    threadws._tls). Under TLS 1.3 the server's session tickets arrive just
    after the handshake; when the reading thread takes them in while the other
    thread writes the request, OpenSSL can lose the request, and the
    handshake times out (about one connection in 30 on this machine against
    threadws's server: the request never reaches the wire; never with tickets
    off, nor with TLS 1.2, whose tickets come inside the handshake).
    """

    def __init__(self, certs: Certificates | None) -> None:
        self.certs = certs
        self.scheme = "ws" if certs is None else "wss"
        #: ``ssl=`` for websockets' servers and clients (nothing for ws://).
        self.server_ssl: dict[str, Any] = {} if certs is None else {"ssl": certs.server}
        self.client_ssl: dict[str, Any] = {} if certs is None else {"ssl": certs.client}
        self.sync_client_ssl: dict[str, Any] = {}
        if certs is not None:
            tls12 = ssl.create_default_context(cafile=certs.ca_pem)
            tls12.maximum_version = ssl.TLSVersion.TLSv1_2
            self.sync_client_ssl = {"ssl": tls12}

    def url(self, port: int, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{port}/"

    def serve_threadws(self, handler: Callable[[threadws.Conn], Any], **settings: Any) -> threadws.Server:
        """A threadws server on a free port (not yet serving)."""
        settings.setdefault("ping_interval", None)
        settings.setdefault("close_timeout", T)
        context = None if self.certs is None else self.certs.server
        return threadws.serve(handler, "127.0.0.1", 0, upgrader=threadws.Upgrader(**settings), ssl_context=context)

    @contextlib.contextmanager
    def threadws_server(self, handler: Callable[[threadws.Conn], Any], **settings: Any) -> Iterator[str]:
        """A threadws server on a free port, serving in a thread; yields its URL."""
        server = self.serve_threadws(handler, **settings)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="test-threadws-serve", daemon=True
        )
        thread.start()
        try:
            yield self.url(server.server_address[1])
        finally:
            server.shutdown(timeout=T)
            join(thread)

    @contextlib.contextmanager
    def sync_server(self, handler: Callable[[Any], Any], **kwargs: Any) -> Iterator[str]:
        """A websockets sync server on a free port, serving in a thread; yields its URL."""
        if self.certs is not None and WEBSOCKETS_MAJOR < 17:
            pytest.skip(OLD_SYNC_OVER_TLS)
        kwargs.setdefault("ping_interval", None)
        kwargs.setdefault("close_timeout", T)
        kwargs.setdefault("max_size", BIG)
        server = sync_serve(handler, "127.0.0.1", 0, **self.server_ssl, **kwargs)
        thread = threading.Thread(target=server.serve_forever, name="test-websockets-serve", daemon=True)
        thread.start()
        try:
            yield self.url(server.socket.getsockname()[1])
        finally:
            # websockets' shutdown() has no timeout of its own: bound it from outside.
            stopper = threading.Thread(target=server.shutdown, name="test-websockets-shutdown", daemon=True)
            stopper.start()
            join(stopper, 2 * T)
            join(thread)

    def sync_client(self, url: str, **kwargs: Any) -> Any:
        if self.certs is not None and WEBSOCKETS_MAJOR < 17:
            pytest.skip(OLD_SYNC_OVER_TLS)
        kwargs.setdefault("ping_interval", None)
        kwargs.setdefault("close_timeout", T)
        kwargs.setdefault("open_timeout", T)
        kwargs.setdefault("max_size", BIG)
        return sync_connect(url, **self.sync_client_ssl, **kwargs)

    @contextlib.contextmanager
    def threadws_client(self, url: str, **kwargs: Any) -> Iterator[threadws.Conn]:
        kwargs.setdefault("ping_interval", None)
        kwargs.setdefault("close_timeout", T)
        kwargs.setdefault("timeout", T)
        if self.certs is not None:
            kwargs.setdefault("ssl_context", self.certs.client)
        conn = threadws.dial(url, **kwargs)
        try:
            yield conn
        finally:
            conn.abort()  # a no-op once the connection has ended
            assert conn.wait_closed(T)

    def async_connect(self, url: str, **kwargs: Any) -> Any:
        """websockets' asyncio ``connect`` (use it in ``async with``)."""
        return async_connect(url, **self.client_ssl, **kwargs)

    @contextlib.contextmanager
    def asyncio_server(self, handler: Callable[[Any], Any], **kwargs: Any) -> Iterator[str]:
        """A websockets asyncio server on its own event loop in its own thread; yields its URL."""
        kwargs.setdefault("ping_interval", None)
        kwargs.setdefault("close_timeout", T)
        kwargs.setdefault("max_size", BIG)
        ready: queue.Queue[Any] = queue.Queue()
        control: dict[str, Any] = {}

        async def main() -> None:
            control["loop"] = asyncio.get_running_loop()
            control["stop"] = stop = asyncio.Event()
            try:
                async with async_serve(handler, "127.0.0.1", 0, **self.server_ssl, **kwargs) as server:
                    ready.put(server.sockets[0].getsockname()[1])
                    await stop.wait()
            except BaseException as exc:
                ready.put(exc)
                raise

        thread = threading.Thread(target=asyncio.run, args=(main(),), name="test-asyncio-server", daemon=True)
        thread.start()
        try:
            port = get(ready, "the asyncio server to listen")
            if isinstance(port, BaseException):
                raise port
            yield self.url(port)
        finally:
            loop = control.get("loop")
            if loop is not None and "stop" in control:
                loop.call_soon_threadsafe(control["stop"].set)
            join(thread, 2 * T)


@pytest.fixture(params=["ws", "wss"])
def transport(request: pytest.FixtureRequest) -> Transport:
    return Transport(request.getfixturevalue("tls_certs") if request.param == "wss" else None)


def run_asyncio(coro_fn: Callable[[], Any], timeout: float = 2 * T) -> Any:
    """Run ``coro_fn()`` on a fresh event loop in its own thread; return its result or raise its error."""
    result: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def target() -> None:
        try:
            result.put((True, asyncio.run(coro_fn())))
        except BaseException as exc:
            result.put((False, exc))

    thread = threading.Thread(target=target, name="test-asyncio-client", daemon=True)
    thread.start()
    ok, value = get(result, "the asyncio client", timeout)
    join(thread)
    if not ok:
        raise value
    return value


async def arecv(ws: Any) -> Any:
    return await asyncio.wait_for(ws.recv(), T)


# ======================================================================================
# websockets sync client -> threadws server
# ======================================================================================


def recording_echo(record: queue.Queue[Any]) -> Callable[[threadws.Conn], None]:
    """A threadws handler that reports every message (type, data) and how the connection ended, and echoes."""

    def handler(conn: threadws.Conn) -> None:
        while True:
            try:
                message_type, data = conn.read_message(timeout=T)
            except ConnectionClosed as exc:
                record.put(("end", exc))
                return
            record.put((message_type, data))
            conn.write_message(message_type, data)

    return handler


def test_sync_client_text_binary_empty_round_trip(transport):
    record: queue.Queue[Any] = queue.Queue()
    with transport.threadws_server(recording_echo(record)) as url:
        with transport.sync_client(url) as ws:
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None  # threadws negotiates none
            for message in SMALL_MESSAGES:
                ws.send(message)
                echoed = ws.recv(timeout=T)
                assert type(echoed) is type(message) and echoed == message
                message_type, data = get(record, f"threadws to read {message!r}")
                assert message_type == kind(message)
                assert type(data) is type(message) and data == message
            ws.send(bytearray(b"bytearray"))
            assert get(record) == (MessageType.BINARY, b"bytearray")
            assert ws.recv(timeout=T) == b"bytearray"
            ws.send("text as UTF-8 bytes ✓".encode(), text=True)
            assert get(record) == (MessageType.TEXT, "text as UTF-8 bytes ✓")
            assert ws.recv(timeout=T) == "text as UTF-8 bytes ✓"
        end = get(record, "threadws to see the close")
        assert isinstance(end[1], ConnectionClosedOK)


def test_sync_client_one_mib_messages_both_ways(transport):
    record: queue.Queue[Any] = queue.Queue()
    with transport.threadws_server(recording_echo(record)) as url:
        with transport.sync_client(url, max_size=BIG) as ws:
            for message in (BIG_BINARY, BIG_TEXT):
                ws.send(message)
                message_type, data = get(record, "threadws to read 1 MiB")
                assert message_type == kind(message) and type(data) is type(message)
                assert data == message
                echoed = ws.recv(timeout=T)
                assert type(echoed) is type(message) and echoed == message


@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "fragmented"])
def test_sync_client_message_over_threadws_read_limit_closes_1009(transport, fragmented):
    record: queue.Queue[Any] = queue.Queue()
    with transport.threadws_server(recording_echo(record)) as url:
        with transport.sync_client(url) as ws:
            too_big = BIG_BINARY + b"!"
            if fragmented:  # the limit counts the whole message, across fragments
                ws.send([too_big[i : i + 65536] for i in range(0, len(too_big), 65536)])
            else:
                ws.send(too_big)
            exc = ws_drain(ws)
            assert isinstance(exc, WsClosedError)
            assert exc.rcvd is not None and exc.rcvd.code == 1009
            assert "too big" in exc.rcvd.reason
        kind_, tw_exc = get(record, "threadws to end the connection")
        assert kind_ == "end" and isinstance(tw_exc, ConnectionClosedError)
        assert tw_exc.sent is not None and tw_exc.sent.code == 1009


def test_sync_client_fragmented_messages_are_reassembled(transport):
    record: queue.Queue[Any] = queue.Queue()
    with transport.threadws_server(recording_echo(record)) as url:
        with transport.sync_client(url) as ws:
            pongs: list[threading.Event] = []

            def with_ping_in_the_middle() -> Iterator[bytes]:
                yield b"12"
                pongs.append(ws.ping(b"mid-message"))  # a control frame between fragments (RFC 6455 5.4)
                yield b"34"

            cases: list[tuple[Any, dict[str, Any], MessageType, str | bytes]] = [
                ([b"ab", b"cd", b"ef"], {}, MessageType.BINARY, b"abcdef"),
                (["fr", "ag", "é"], {}, MessageType.TEXT, "fragé"),
                ([b"caf\xc3", b"\xa9!"], {"text": True}, MessageType.TEXT, "café!"),  # UTF-8 split mid-character
                ([b"", b"x", b""], {}, MessageType.BINARY, b"x"),
                (with_ping_in_the_middle(), {}, MessageType.BINARY, b"1234"),
                ([BIG_BINARY[i : i + 65536] for i in range(0, MIB, 65536)], {}, MessageType.BINARY, BIG_BINARY),
            ]
            for fragments, options, want_type, want in cases:
                ws.send(fragments, **options)
                message_type, data = get(record, f"threadws to reassemble {want[:20]!r}")
                assert message_type == want_type and type(data) is type(want)
                assert data == want
                assert ws.recv(timeout=T) == want
            assert len(pongs) == 1 and pongs[0].wait(T), "threadws did not answer the ping between fragments"


def test_sync_client_pings_threadws_server(transport):
    record: queue.Queue[Any] = queue.Queue()
    with transport.threadws_server(recording_echo(record)) as url:
        with transport.sync_client(url) as ws:
            assert ws.ping(b"x").wait(T), "no pong for b'x'"
            assert ws.ping(b"").wait(T), "no pong for an empty ping"
            assert ws.ping(bytes(range(125))).wait(T), "no pong for a 125-byte ping"
            ws.send("still open")
            assert ws.recv(timeout=T) == "still open"


def test_threadws_server_pings_sync_client(transport):
    pongs: queue.Queue[bytes] = queue.Queue()
    record: queue.Queue[Any] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        conn.set_pong_handler(pongs.put)
        conn.write_control(MessageType.PING, b"abc")
        record.put(drain(conn))

    with transport.threadws_server(handler) as url:
        with transport.sync_client(url):
            assert get(pongs, "threadws's pong handler") == b"abc"
        assert isinstance(get(record), ConnectionClosedOK)


@pytest.mark.parametrize(("code", "reason"), [(1000, "done"), (4000, "custom")])
def test_threadws_server_closes_sync_client(transport, code, reason):
    record: queue.Queue[Any] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        conn.close(code, reason)
        record.put(conn.close_exception)

    ok = code == 1000
    with transport.threadws_server(handler) as url:
        with transport.sync_client(url) as ws:
            exc = ws_drain(ws)
            assert isinstance(exc, WsClosedOK if ok else WsClosedError)
            assert ws_close(exc.rcvd) == (code, reason)
            assert ws_close(exc.sent) == (code, reason)  # websockets echoes the code and reason
            assert exc.rcvd_then_sent is True
        tw_exc = get(record, "threadws's close to finish")
        assert isinstance(tw_exc, ConnectionClosedOK if ok else ConnectionClosedError)
        assert tw_close(tw_exc.sent) == (code, reason)
        assert tw_close(tw_exc.rcvd) == (code, reason)
        assert_closed_promptly(tw_exc, ws)
        # tw_exc.rcvd_then_sent is checked in test_threadws_close_order_when_echo_beats_writer:
        # here it depends on thread scheduling.


@pytest.mark.parametrize(("code", "reason"), [(1001, ""), (4001, "bye")])
def test_sync_client_closes_threadws_server(transport, code, reason):
    record: queue.Queue[Any] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        record.put(drain(conn))

    ok = code == 1001
    with transport.threadws_server(handler) as url:
        with transport.sync_client(url) as ws:
            ws.close(code, reason)
            assert ws_wait_closed(ws)
            assert ws_close(ws.protocol.close_sent) == (code, reason)
            assert ws_close(ws.protocol.close_rcvd) == (code, "")  # threadws echoes the code only
            assert ws.protocol.close_rcvd_then_sent is False
            with pytest.raises(WsClosedOK if ok else WsClosedError):
                ws.recv(timeout=T)
        tw_exc = get(record, "threadws to see the close")
        assert isinstance(tw_exc, ConnectionClosedOK if ok else ConnectionClosedError)
        assert tw_close(tw_exc.rcvd) == (code, reason)
        assert tw_close(tw_exc.sent) == (code, "")
        assert tw_exc.code == code and tw_exc.reason == reason
        assert tw_exc.rcvd_then_sent is True and tw_exc.clean
        assert_closed_promptly(tw_exc, ws)


def test_sync_client_closes_without_status_code(transport):
    """An empty close frame means 1005 (no status) on both ends, and is a normal closure."""
    record: queue.Queue[Any] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        record.put(drain(conn))

    with transport.threadws_server(handler) as url:
        with transport.sync_client(url) as ws:
            ws.close(code=None)  # type: ignore[arg-type]  # websockets sends an empty close frame
            assert ws_wait_closed(ws)
            assert ws_close(ws.protocol.close_sent) == (1005, "")
            assert ws_close(ws.protocol.close_rcvd) == (1005, "")
        tw_exc = get(record, "threadws to see the close")
        assert isinstance(tw_exc, ConnectionClosedOK)
        assert tw_close(tw_exc.rcvd) == (1005, "") and tw_close(tw_exc.sent) == (1005, "")
        assert_closed_promptly(tw_exc, ws)


def test_threadws_server_write_control_empty_close(transport):
    """write_control(CLOSE, b"") is documented to send an empty close payload (1005, no status)."""
    record: queue.Queue[Any] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        conn.write_control(MessageType.CLOSE, b"")
        record.put(drain(conn))

    with transport.threadws_server(handler) as url:
        with transport.sync_client(url) as ws:
            exc = ws_drain(ws)
        tw_exc = get(record, "threadws to finish closing")
        # What threadws says it sent must be what went on the wire.
        assert tw_close(tw_exc.sent) == ws_close(exc.rcvd)
        assert ws_close(exc.rcvd) == (1005, ""), "expected an empty close frame on the wire"
        assert isinstance(exc, WsClosedOK) and isinstance(tw_exc, ConnectionClosedOK)


@pytest.mark.parametrize("role", ["server", "client"])
def test_threadws_close_order_when_it_closes_first(transport, role):
    """threadws closed first, so the exception must say "sent ...; then received ...".

    On loopback the peer's echo often reaches threadws's reader before its
    writer returns from sending the close frame; repeat to catch an order
    recorded by timing instead of by the protocol's state.
    """
    for _ in range(20):
        record: queue.Queue[Any] = queue.Queue()

        def close_first(conn: threadws.Conn) -> None:
            conn.close(1000, "done")
            record.put(conn.close_exception)

        if role == "server":
            with transport.threadws_server(close_first) as url:
                with transport.sync_client(url) as ws:
                    exc = ws_drain(ws)
            tw_exc = get(record, "threadws's close to finish")
        else:
            peer: queue.Queue[Any] = queue.Queue()
            with transport.sync_server(sync_recording_echo(peer)) as url:
                with transport.threadws_client(url) as conn:
                    close_first(conn)
                exc = get(peer, "websockets to see the close")[1]
            tw_exc = get(record)
        assert exc.rcvd_then_sent is True  # websockets: received threadws's close, then echoed it
        assert isinstance(tw_exc, ConnectionClosedOK)
        assert tw_close(tw_exc.sent) == (1000, "done") and tw_close(tw_exc.rcvd) == (1000, "done")
        assert tw_exc.rcvd_then_sent is False, f"threadws closed first, but reports: {tw_exc}"
        assert str(tw_exc).startswith("sent 1000")
        assert_closed_promptly(tw_exc, exc)


def test_threadws_handler_return_closes_1000(transport):
    conns: queue.Queue[threadws.Conn] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        conns.put(conn)

    with transport.threadws_server(handler) as url:
        with transport.sync_client(url) as ws:
            exc = ws_drain(ws)
            assert isinstance(exc, WsClosedOK)
            assert ws_close(exc.rcvd) == (1000, "") and ws_close(exc.sent) == (1000, "")
        conn = get(conns)
        assert conn.wait_closed(T)
        tw_exc = conn.close_exception
        assert isinstance(tw_exc, ConnectionClosedOK)
        assert tw_close(tw_exc.sent) == (1000, "") and tw_close(tw_exc.rcvd) == (1000, "")
        assert_closed_promptly(tw_exc, ws)


def test_threadws_handler_raise_closes_1011(transport, caplog):
    conns: queue.Queue[threadws.Conn] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        conns.put(conn)
        raise RuntimeError("handler failed on purpose")

    with caplog.at_level(logging.ERROR, logger="threadws"):
        with transport.threadws_server(handler) as url:
            with transport.sync_client(url) as ws:
                exc = ws_drain(ws)
                assert isinstance(exc, WsClosedError)
                assert ws_close(exc.rcvd) == (1011, "internal error")
                assert ws_close(exc.sent) == (1011, "internal error")
            conn = get(conns)
            assert conn.wait_closed(T)
    tw_exc = conn.close_exception
    assert isinstance(tw_exc, ConnectionClosedError)
    assert tw_close(tw_exc.sent) == (1011, "internal error")
    assert tw_close(tw_exc.rcvd) == (1011, "internal error")
    assert "handler failed on purpose" in caplog.text


def test_sync_client_drops_tcp_threadws_server_sees_1006(transport):
    record: queue.Queue[Any] = queue.Queue()
    started = threading.Event()

    def handler(conn: threadws.Conn) -> None:
        started.set()
        record.put(drain(conn))

    with transport.threadws_server(handler) as url:
        with transport.sync_client(url) as ws:
            assert started.wait(T)
            ws.socket.shutdown(socket.SHUT_RDWR)  # TCP FIN, no close frame
            assert ws_wait_closed(ws)
            assert ws.close_code == 1006
        tw_exc = get(record, "threadws to notice the drop")
        assert isinstance(tw_exc, ConnectionClosedError)
        assert tw_exc.code == 1006 and tw_exc.reason == ""
        assert tw_exc.rcvd is None and tw_exc.sent is None and not tw_exc.clean


def test_threadws_server_abort_sync_client_sees_1006(transport):
    conns: queue.Queue[threadws.Conn] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        conn.abort()
        conns.put(conn)

    with transport.threadws_server(handler) as url:
        with transport.sync_client(url) as ws:
            exc = ws_drain(ws)
            assert isinstance(exc, WsClosedError)
            assert exc.rcvd is None and exc.sent is None
            assert ws.close_code == 1006
        conn = get(conns)
        assert conn.closed
        tw_exc = conn.close_exception
        assert isinstance(tw_exc, ConnectionClosedError)
        assert tw_exc.code == 1006 and tw_exc.rcvd is None and tw_exc.sent is None
        assert "aborted" in str(tw_exc)


def test_threadws_server_shutdown_closes_sync_client_1001(transport):
    record: queue.Queue[Any] = queue.Queue()
    started = threading.Event()

    def handler(conn: threadws.Conn) -> None:
        started.set()
        record.put(drain(conn))

    server = transport.serve_threadws(handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="test-threadws-serve", daemon=True)
    thread.start()
    try:
        with transport.sync_client(transport.url(server.server_address[1])) as ws:
            assert started.wait(T)
            server.shutdown(timeout=T)
            exc = ws_drain(ws)
            assert isinstance(exc, WsClosedOK)
            assert ws_close(exc.rcvd) == (1001, "server shutting down")
            assert ws_close(exc.sent) == (1001, "server shutting down")
        tw_exc = get(record, "the threadws handler to end")
        assert isinstance(tw_exc, ConnectionClosedOK)
        assert tw_close(tw_exc.sent) == (1001, "server shutting down")
        assert tw_close(tw_exc.rcvd) == (1001, "server shutting down")
    finally:
        server.shutdown(timeout=T)
        join(thread)


# ======================================================================================
# threadws client -> websockets sync server
# ======================================================================================


def sync_recording_echo(record: queue.Queue[Any]) -> Callable[[Any], None]:
    """A websockets handler that reports each message and how the connection ended, and echoes."""

    def handler(ws: Any) -> None:
        while True:
            try:
                message = ws.recv(timeout=T)
            except WsClosed as exc:
                record.put(("end", exc))
                return
            record.put(message)
            ws.send(message)

    return handler


def test_threadws_client_text_binary_empty_round_trip(transport):
    record: queue.Queue[Any] = queue.Queue()
    with transport.sync_server(sync_recording_echo(record)) as url:
        with transport.threadws_client(url) as conn:
            assert conn.response_headers.get("Sec-WebSocket-Extensions") is None
            for message in SMALL_MESSAGES:
                conn.send(message)
                got = get(record, f"websockets to read {message!r}")
                assert type(got) is type(message) and got == message
                message_type, data = conn.read_message(timeout=T)
                assert message_type == kind(message)
                assert type(data) is type(message) and data == message
            conn.write_message(MessageType.BINARY, bytearray(b"bytearray"))
            assert get(record) == b"bytearray"
            assert conn.read_message(timeout=T) == (MessageType.BINARY, b"bytearray")
            conn.write_message(MessageType.TEXT, "UTF-8 bytes ✓".encode())
            assert get(record) == "UTF-8 bytes ✓"
            assert conn.read_message(timeout=T) == (MessageType.TEXT, "UTF-8 bytes ✓")
            conn.close()
        assert isinstance(get(record)[1], WsClosedOK)


def test_threadws_client_one_mib_messages_both_ways(transport):
    record: queue.Queue[Any] = queue.Queue()
    with transport.sync_server(sync_recording_echo(record), max_size=BIG) as url:
        with transport.threadws_client(url) as conn:
            for message in (BIG_BINARY, BIG_TEXT):
                conn.send(message)
                got = get(record, "websockets to read 1 MiB")
                assert type(got) is type(message) and got == message
                message_type, data = conn.read_message(timeout=T)
                assert message_type == kind(message) and type(data) is type(message)
                assert data == message
            conn.close()


def test_threadws_client_message_over_websockets_max_size_closes_1009(transport):
    record: queue.Queue[Any] = queue.Queue()
    with transport.sync_server(sync_recording_echo(record), max_size=MIB) as url:
        with transport.threadws_client(url) as conn:
            conn.send(BIG_BINARY + b"!")
            tw_exc = drain(conn)
            assert isinstance(tw_exc, ConnectionClosedError)
            assert tw_exc.rcvd is not None and tw_exc.rcvd.code == 1009
        kind_, exc = get(record, "websockets to end the connection")
        assert kind_ == "end" and isinstance(exc, WsClosedError)
        assert exc.sent is not None and exc.sent.code == 1009


def test_sync_server_fragmented_messages_to_threadws_client(transport):
    done: queue.Queue[Any] = queue.Queue()

    def handler(ws: Any) -> None:
        pong = None

        def with_ping_in_the_middle() -> Iterator[str]:
            nonlocal pong
            yield "un"
            pong = ws.ping(b"mid-message")
            yield "deux"

        ws.send([b"ab", b"cd", b"ef"])
        ws.send(["fr", "ag", "é"])
        ws.send([b"caf\xc3", b"\xa9!"], text=True)
        ws.send(with_ping_in_the_middle())
        ws.send([BIG_TEXT[i : i + 50000] for i in range(0, len(BIG_TEXT), 50000)])
        done.put(pong is not None and pong.wait(T))
        done.put(ws_drain(ws))

    with transport.sync_server(handler) as url:
        with transport.threadws_client(url) as conn:
            assert conn.read_message(timeout=T) == (MessageType.BINARY, b"abcdef")
            assert conn.read_message(timeout=T) == (MessageType.TEXT, "fragé")
            assert conn.read_message(timeout=T) == (MessageType.TEXT, "café!")
            assert conn.read_message(timeout=T) == (MessageType.TEXT, "undeux")
            message_type, data = conn.read_message(timeout=T)
            assert message_type == MessageType.TEXT and type(data) is str and data == BIG_TEXT
            assert get(done, "websockets' pong") is True
            conn.close()
        assert isinstance(get(done), WsClosedOK)


def test_sync_server_pings_threadws_client(transport):
    done: queue.Queue[Any] = queue.Queue()
    seen: queue.Queue[bytes] = queue.Queue()
    custom_installed = threading.Event()
    default_restored = threading.Event()

    def handler(ws: Any) -> None:
        custom_installed.wait(T)
        done.put(ws.ping(b"x").wait(T))
        default_restored.wait(T)
        done.put(ws.ping(b"y").wait(T))
        done.put(ws_drain(ws))

    with transport.sync_server(handler) as url:
        with transport.threadws_client(url) as conn:

            def ping_handler(payload: bytes) -> None:
                seen.put(payload)
                conn.write_control(MessageType.PONG, payload)  # a custom handler answers itself

            conn.set_ping_handler(ping_handler)
            custom_installed.set()
            assert get(seen, "threadws's ping handler") == b"x"
            assert get(done, "websockets' pong for b'x'") is True
            conn.set_ping_handler(None)  # the default handler answers from now on
            default_restored.set()
            assert get(done, "websockets' pong for b'y'") is True
            assert seen.empty()
            conn.close()
        assert isinstance(get(done), WsClosedOK)


def test_threadws_client_pings_sync_server(transport):
    record: queue.Queue[Any] = queue.Queue()
    pongs: queue.Queue[bytes] = queue.Queue()
    with transport.sync_server(sync_recording_echo(record)) as url:
        with transport.threadws_client(url) as conn:
            conn.set_pong_handler(pongs.put)
            conn.write_control(MessageType.PING, b"abc", deadline=time.monotonic() + T)
            assert get(pongs, "threadws's pong handler") == b"abc"
            conn.write_control(MessageType.PING, b"")
            assert get(pongs) == b""
            conn.close()
        assert isinstance(get(record)[1], WsClosedOK)


@pytest.mark.parametrize(("code", "reason"), [(1000, "done"), (4000, "custom")])
def test_threadws_client_closes_sync_server(transport, code, reason):
    record: queue.Queue[Any] = queue.Queue()
    ok = code == 1000
    with transport.sync_server(sync_recording_echo(record)) as url:
        with transport.threadws_client(url) as conn:
            conn.close(code, reason)
            assert conn.closed
            tw_exc = conn.close_exception
            assert isinstance(tw_exc, ConnectionClosedOK if ok else ConnectionClosedError)
            assert tw_close(tw_exc.sent) == (code, reason)
            assert tw_close(tw_exc.rcvd) == (code, reason)  # websockets echoes code and reason
            assert "close timed out" not in str(tw_exc)
            # rcvd_then_sent: see test_threadws_close_order_when_echo_beats_writer.
            with pytest.raises(ConnectionClosedOK if ok else ConnectionClosedError):
                conn.read_message(timeout=T)
        kind_, exc = get(record, "websockets to see the close")
        assert kind_ == "end" and isinstance(exc, WsClosedOK if ok else WsClosedError)
        assert ws_close(exc.rcvd) == (code, reason) and ws_close(exc.sent) == (code, reason)
        assert exc.rcvd_then_sent is True
        assert_closed_promptly(tw_exc, exc)


@pytest.mark.parametrize(("code", "reason"), [(1001, ""), (4001, "bye")])
def test_sync_server_closes_threadws_client(transport, code, reason):
    record: queue.Queue[Any] = queue.Queue()

    def handler(ws: Any) -> None:
        ws.close(code, reason)
        record.put((ws_close(ws.protocol.close_sent), ws_close(ws.protocol.close_rcvd), ws.protocol.close_exc, ws))

    ok = code == 1001
    with transport.sync_server(handler) as url:
        with transport.threadws_client(url) as conn:
            tw_exc = drain(conn)
            assert isinstance(tw_exc, ConnectionClosedOK if ok else ConnectionClosedError)
            assert tw_close(tw_exc.rcvd) == (code, reason)
            assert tw_close(tw_exc.sent) == (code, "")
            assert tw_exc.rcvd_then_sent is True and tw_exc.clean
            assert conn.wait_closed(T)
        sent, rcvd, exc, ws = get(record, "websockets' close to finish")
        assert sent == (code, reason) and rcvd == (code, "")
        assert isinstance(exc, WsClosedOK if ok else WsClosedError)
        assert_closed_promptly(tw_exc, ws)


def test_sync_server_handler_return_closes_1000(transport):
    conns: queue.Queue[Any] = queue.Queue()

    def handler(ws: Any) -> None:
        conns.put(ws)

    with transport.sync_server(handler) as url:
        with transport.threadws_client(url) as conn:
            tw_exc = drain(conn)
            assert isinstance(tw_exc, ConnectionClosedOK)
            assert tw_close(tw_exc.rcvd) == (1000, "") and tw_close(tw_exc.sent) == (1000, "")
        ws = get(conns)
        assert ws_wait_closed(ws)
        assert ws_close(ws.protocol.close_sent) == (1000, "") and ws_close(ws.protocol.close_rcvd) == (1000, "")
        assert_closed_promptly(tw_exc, ws)


def test_sync_server_handler_raise_closes_1011(transport, caplog):
    conns: queue.Queue[Any] = queue.Queue()

    def handler(ws: Any) -> None:
        conns.put(ws)
        raise RuntimeError("websockets handler failed on purpose")

    with caplog.at_level(logging.CRITICAL, logger="websockets"):  # the traceback is expected
        with transport.sync_server(handler) as url:
            with transport.threadws_client(url) as conn:
                tw_exc = drain(conn)
                assert isinstance(tw_exc, ConnectionClosedError)
                assert tw_close(tw_exc.rcvd) == (1011, "") and tw_close(tw_exc.sent) == (1011, "")
            ws = get(conns)
            assert ws_wait_closed(ws)
            assert ws_close(ws.protocol.close_sent) == (1011, "")
            assert ws_close(ws.protocol.close_rcvd) == (1011, "")


def test_sync_server_drops_tcp_threadws_client_sees_1006(transport):
    conns: queue.Queue[Any] = queue.Queue()

    def handler(ws: Any) -> None:
        ws.socket.shutdown(socket.SHUT_RDWR)  # TCP FIN, no close frame
        conns.put(ws)

    with transport.sync_server(handler) as url:
        with transport.threadws_client(url) as conn:
            tw_exc = drain(conn)
            assert isinstance(tw_exc, ConnectionClosedError)
            assert tw_exc.code == 1006 and tw_exc.rcvd is None and tw_exc.sent is None
            assert not tw_exc.clean
        ws = get(conns)
        assert ws_wait_closed(ws)
        assert ws.close_code == 1006


def test_threadws_client_abort_sync_server_sees_1006(transport):
    record: queue.Queue[Any] = queue.Queue()
    with transport.sync_server(sync_recording_echo(record)) as url:
        with transport.threadws_client(url) as conn:
            conn.send("hello")
            assert get(record) == "hello"  # the server is in its read loop
            conn.abort()
            assert conn.closed
            tw_exc = conn.close_exception
            assert isinstance(tw_exc, ConnectionClosedError)
            assert tw_exc.code == 1006 and tw_exc.rcvd is None and tw_exc.sent is None
            assert "aborted" in str(tw_exc)
            with pytest.raises(ConnectionClosedError):
                conn.send("after abort")
        kind_, exc = get(record, "websockets to notice the abort")
        assert kind_ == "end" and isinstance(exc, WsClosedError)
        assert exc.rcvd is None and exc.sent is None


@pytest.mark.skipif(
    WEBSOCKETS_MAJOR < 17,
    reason="websockets 16 (the newest for Python 3.10) leaves open connections open on Server.shutdown()",
)
def test_sync_server_shutdown_closes_threadws_client_1001(transport):
    started = threading.Event()

    def handler(ws: Any) -> None:
        started.set()
        ws_drain(ws)

    server = sync_serve(handler, "127.0.0.1", 0, ping_interval=None, close_timeout=T, **transport.server_ssl)
    thread = threading.Thread(target=server.serve_forever, name="test-websockets-serve", daemon=True)
    thread.start()
    stopper = threading.Thread(target=server.shutdown, name="test-websockets-shutdown", daemon=True)
    try:
        with transport.threadws_client(transport.url(server.socket.getsockname()[1])) as conn:
            assert started.wait(T)
            stopper.start()
            tw_exc = drain(conn)
            assert isinstance(tw_exc, ConnectionClosedOK)
            assert tw_close(tw_exc.rcvd) == (1001, "") and tw_close(tw_exc.sent) == (1001, "")
            join(stopper, 2 * T)
    finally:
        if not stopper.is_alive() and stopper.ident is None:
            stopper.start()
        join(stopper, 2 * T)
        join(thread)


# ======================================================================================
# websockets asyncio client and server
# ======================================================================================


def test_asyncio_client_round_trip_threadws_server(transport):
    record: queue.Queue[Any] = queue.Queue()

    async def client(url: str) -> dict[str, Any]:
        async with transport.async_connect(url, ping_interval=None, close_timeout=T, max_size=BIG) as ws:
            got: list[Any] = []
            for message in ("héllo ✓", b"\x00\xff", BIG_BINARY):
                await ws.send(message)
                got.append(await arecv(ws))

            async def fragments() -> Any:
                yield "async "
                yield "frag"

            await ws.send(fragments())
            got.append(await arecv(ws))
            latency = await asyncio.wait_for(await ws.ping(b"x"), T)
            await ws.close(1000, "done")
            end: Any = None
            try:
                await arecv(ws)
            except WsClosed as exc:
                end = exc
            return {
                "got": got,
                "latency": latency,
                "end": end,
                "sent": ws_close(ws.protocol.close_sent),
                "rcvd": ws_close(ws.protocol.close_rcvd),
                "ws": ws,  # ended: close() waited for that
            }

    with transport.threadws_server(recording_echo(record)) as url:
        result = run_asyncio(lambda: client(url))
        assert result["got"] == ["héllo ✓", b"\x00\xff", BIG_BINARY, "async frag"]
        assert [type(x) for x in result["got"]] == [str, bytes, bytes, str]
        assert result["latency"] >= 0
        assert isinstance(result["end"], WsClosedOK)
        assert result["sent"] == (1000, "done") and result["rcvd"] == (1000, "")
        seen = [get(record) for _ in range(4)]
        assert seen == [
            (MessageType.TEXT, "héllo ✓"),
            (MessageType.BINARY, b"\x00\xff"),
            (MessageType.BINARY, BIG_BINARY),
            (MessageType.TEXT, "async frag"),
        ]
        kind_, tw_exc = get(record, "threadws to see the close")
        assert kind_ == "end" and isinstance(tw_exc, ConnectionClosedOK)
        assert tw_close(tw_exc.rcvd) == (1000, "done") and tw_close(tw_exc.sent) == (1000, "")
        assert_closed_promptly(tw_exc, result["ws"])


def test_threadws_server_closes_asyncio_client_4000(transport):
    record: queue.Queue[Any] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        conn.send(conn.recv(timeout=T))
        conn.close(4000, "custom")
        record.put(conn.close_exception)

    async def client(url: str) -> tuple[Any, Any, Any]:
        end: Any = None
        async with transport.async_connect(url, ping_interval=None, close_timeout=T) as ws:
            await ws.send(b"bin")
            echoed = await arecv(ws)
            try:
                await arecv(ws)
            except WsClosed as exc:
                end = exc
        return echoed, end, ws  # leaving "async with" waited for the connection to end

    with transport.threadws_server(handler) as url:
        echoed, exc, ws = run_asyncio(lambda: client(url))
        assert echoed == b"bin"
        assert isinstance(exc, WsClosedError)
        assert ws_close(exc.rcvd) == (4000, "custom") and ws_close(exc.sent) == (4000, "custom")
        tw_exc = get(record, "threadws's close to finish")
        assert isinstance(tw_exc, ConnectionClosedError)
        assert tw_close(tw_exc.sent) == (4000, "custom") and tw_close(tw_exc.rcvd) == (4000, "custom")
        assert_closed_promptly(tw_exc, ws)


def test_asyncio_client_abort_threadws_server_sees_1006(transport):
    record: queue.Queue[Any] = queue.Queue()

    async def client(url: str) -> int | None:
        async with transport.async_connect(url, ping_interval=None, close_timeout=T) as ws:
            await ws.send("hi")
            assert await arecv(ws) == "hi"
            ws.transport.abort()  # drop TCP without a close frame
            await asyncio.wait_for(ws.wait_closed(), T)
            return ws.close_code

    with transport.threadws_server(recording_echo(record)) as url:
        assert run_asyncio(lambda: client(url)) == 1006
        assert get(record) == (MessageType.TEXT, "hi")
        kind_, tw_exc = get(record, "threadws to notice the drop")
        assert kind_ == "end" and isinstance(tw_exc, ConnectionClosedError)
        assert tw_exc.code == 1006 and tw_exc.rcvd is None and tw_exc.sent is None


def test_threadws_client_round_trip_asyncio_server(transport):
    record: queue.Queue[Any] = queue.Queue()

    async def handler(ws: Any) -> None:
        try:
            while True:
                message = await arecv(ws)
                record.put(message)
                await ws.send(message)
        except WsClosed as exc:
            record.put(("end", exc, ws))

    with transport.asyncio_server(handler) as url:
        with transport.threadws_client(url) as conn:
            for message in ("héllo ✓", b"\x00\xff", "", BIG_TEXT):
                conn.send(message)
                got = get(record, "the asyncio server to read")
                assert type(got) is type(message) and got == message
                message_type, data = conn.read_message(timeout=T)
                assert message_type == kind(message) and type(data) is type(message) and data == message
            conn.close(1000, "done")
            tw_exc = conn.close_exception
            assert isinstance(tw_exc, ConnectionClosedOK)
            assert tw_close(tw_exc.sent) == (1000, "done") and tw_close(tw_exc.rcvd) == (1000, "done")
        kind_, exc, ws = get(record, "the asyncio server to see the close")
        assert kind_ == "end" and isinstance(exc, WsClosedOK)
        assert ws_close(exc.rcvd) == (1000, "done") and ws_close(exc.sent) == (1000, "done")
        assert ws_wait_closed(ws)  # over TLS, asyncio waits for threadws's close_notify
        assert_closed_promptly(tw_exc, ws)


def test_asyncio_server_closes_threadws_client_4001(transport):
    record: queue.Queue[Any] = queue.Queue()

    async def handler(ws: Any) -> None:
        await ws.send(await arecv(ws))
        await ws.close(4001, "bye")  # returns once the connection has ended
        record.put((ws_close(ws.protocol.close_sent), ws_close(ws.protocol.close_rcvd), ws))

    with transport.asyncio_server(handler) as url:
        with transport.threadws_client(url) as conn:
            conn.send(b"ping-pong")
            assert conn.read_message(timeout=T) == (MessageType.BINARY, b"ping-pong")
            tw_exc = drain(conn)
            assert isinstance(tw_exc, ConnectionClosedError)
            assert tw_close(tw_exc.rcvd) == (4001, "bye") and tw_close(tw_exc.sent) == (4001, "")
            assert tw_exc.clean
        sent, rcvd, ws = get(record, "the asyncio server's close")
        assert (sent, rcvd) == ((4001, "bye"), (4001, ""))
        assert_closed_promptly(tw_exc, ws)


def test_asyncio_server_pings_and_fragments_to_threadws_client(transport):
    record: queue.Queue[Any] = queue.Queue()

    async def handler(ws: Any) -> None:
        latency = await asyncio.wait_for(await ws.ping(b"x"), T)
        await ws.send([b"frag", b"ment"])
        record.put(latency)
        try:
            await arecv(ws)
        except WsClosed as exc:
            record.put(exc)

    with transport.asyncio_server(handler) as url:
        with transport.threadws_client(url) as conn:
            assert conn.read_message(timeout=T) == (MessageType.BINARY, b"fragment")
            assert get(record, "the asyncio server's pong") >= 0
            pongs: queue.Queue[bytes] = queue.Queue()
            conn.set_pong_handler(pongs.put)
            conn.write_control(MessageType.PING, b"abc")
            assert get(pongs) == b"abc"
            conn.abort()
        exc = get(record, "the asyncio server to notice the abort")
        assert isinstance(exc, WsClosedError) and exc.rcvd is None and exc.sent is None


# ======================================================================================
# permessage-deflate, both directions
# ======================================================================================

from websockets.extensions.permessage_deflate import (  # noqa: E402
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)

JSON_MESSAGES = [
    '{"id": %d, "user": "someone", "text": "hello again", "tags": ["a", "b", "c"]}' % i for i in range(20)
]
DEFLATE_MESSAGES: list[str | bytes] = [*JSON_MESSAGES, BIG_TEXT, BIG_BINARY, "x", b"", "é" * 1000]

#: websockets' own settings on its side of the connection (None: its defaults).
WEBSOCKETS_DEFLATE = [
    pytest.param({}, id="defaults"),
    pytest.param(
        {"server_no_context_takeover": True, "client_no_context_takeover": True}, id="no-context-takeover"
    ),
    pytest.param({"server_max_window_bits": 10, "client_max_window_bits": 9}, id="small-windows"),
]


@pytest.mark.parametrize("params", WEBSOCKETS_DEFLATE)
def test_compressed_websockets_client_to_threadws_server(transport, params):
    record: queue.Queue[Any] = queue.Queue()
    factory = ClientPerMessageDeflateFactory(**params)
    with transport.threadws_server(recording_echo(record), compression=True) as url:
        with transport.sync_client(url, extensions=[factory], compression=None) as ws:
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            assert ws.protocol.extensions, "websockets did not enable permessage-deflate"
            for message in DEFLATE_MESSAGES:
                ws.send(message)
                assert get(record, "threadws to read")[1] == message
                assert ws.recv(timeout=T) == message
        assert isinstance(get(record)[1], ConnectionClosedOK)


@pytest.mark.parametrize("params", WEBSOCKETS_DEFLATE)
def test_compressed_threadws_client_to_websockets_server(transport, params):
    record: queue.Queue[Any] = queue.Queue()
    factory = ServerPerMessageDeflateFactory(**params) if params else ServerPerMessageDeflateFactory()
    if "client_max_window_bits" in params:
        factory = ServerPerMessageDeflateFactory(require_client_max_window_bits=True, **params)
    with transport.sync_server(sync_recording_echo(record), extensions=[factory], compression=None) as url:
        with transport.threadws_client(url, compression=True) as conn:
            assert "permessage-deflate" in conn.response_headers["Sec-WebSocket-Extensions"]
            for message in DEFLATE_MESSAGES:
                conn.send(message)
                assert get(record, "websockets to read") == message
                assert conn.recv(timeout=T) == message
            conn.close()
        assert isinstance(get(record)[1], WsClosedOK)


def test_threadws_read_limit_applies_to_what_websockets_compressed(transport):
    # 2 MiB of zeros is a few KB on the wire; threadws refuses it by its decompressed size.
    with transport.sync_server(lambda ws: ws.send(bytes(2 * MIB)) or ws.recv(timeout=T)) as url:
        with transport.threadws_client(url, compression=True) as conn:
            with pytest.raises(ConnectionClosedError) as info:
                conn.recv(timeout=T)
            assert info.value.sent is not None and info.value.sent.code == 1009
