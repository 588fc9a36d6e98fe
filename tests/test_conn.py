"""Conn over socket.socketpair() against a raw wsproto peer, run for both roles."""

from __future__ import annotations

import array
import socket
import threading
import time

from typing import Any

import pytest
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage

import threadws
from threadws import CloseCode, ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, MessageType

from threadws.settings import Settings

from .conftest import ROLES, Peer

pytestmark = pytest.mark.parametrize("role", ROLES)


def close_cleanly(conn: threadws.Conn, peer: Peer) -> None:
    """Close from threadws's side with the peer answering, as a test's last step."""
    result: list[BaseException] = []
    closer = threading.Thread(target=lambda: conn.close(), name="test-closer")
    closer.start()
    event = peer.expect_close()
    peer.send(event.response())
    if peer.client:
        peer.wait_eof()  # the threadws server closes TCP first
    else:
        peer.sock.shutdown(socket.SHUT_WR)  # we are the server: close TCP first
    closer.join(5)
    assert not closer.is_alive() and not result
    assert conn.wait_closed(5)


# --- messages ----------------------------------------------------------------


def test_text_and_binary_round_trip(pair, role):
    conn, peer = pair(role)
    peer.send(TextMessage(data="héllo"))
    peer.send(BytesMessage(data=b"\x00\xff"))
    peer.send(TextMessage(data=""))
    assert conn.read_message(timeout=5) == (MessageType.TEXT, "héllo")
    assert conn.read_message(timeout=5) == (MessageType.BINARY, b"\x00\xff")
    assert conn.recv(timeout=5) == ""
    conn.send("ça va")
    conn.write_message(MessageType.BINARY, bytearray(b"\x01\x02"))
    conn.write_message(MessageType.TEXT, "bytes that are UTF-8 ✓".encode())
    first, second, third = (peer.next_event() for _ in range(3))
    assert isinstance(first, TextMessage) and first.data == "ça va"
    assert isinstance(second, BytesMessage) and second.data == b"\x01\x02"
    assert isinstance(third, TextMessage) and third.data == "bytes that are UTF-8 ✓"
    close_cleanly(conn, peer)


def test_fragmented_messages_are_reassembled(pair, role):
    conn, peer = pair(role)
    peer.send(TextMessage(data="ab", message_finished=False))
    peer.send(Ping(payload=b"between fragments"))  # a control frame may interleave (5.4)
    peer.send(TextMessage(data="cé", message_finished=False))
    peer.send(TextMessage(data="", message_finished=True))
    peer.send(BytesMessage(data=b"12", message_finished=False))
    peer.send(BytesMessage(data=b"34", message_finished=True))
    assert conn.read_message(timeout=5) == (MessageType.TEXT, "abcé")
    assert conn.read_message(timeout=5) == (MessageType.BINARY, b"1234")
    pong = peer.next_event()
    assert isinstance(pong, Pong) and pong.payload == b"between fragments"
    close_cleanly(conn, peer)


def test_read_timeout_leaves_connection_usable(pair, role):
    conn, peer = pair(role)
    with pytest.raises(TimeoutError):
        conn.read_message(timeout=0.05)
    peer.send(TextMessage(data="late"))
    assert conn.recv(timeout=5) == "late"
    close_cleanly(conn, peer)


def test_wrong_types_are_refused(pair, role):
    conn, peer = pair(role)
    with pytest.raises(TypeError):
        conn.write_message(MessageType.BINARY, "text")
    with pytest.raises(ValueError):
        conn.write_message(MessageType.TEXT, b"\xff\xfe")
    with pytest.raises(ValueError):
        conn.write_message(MessageType.PING, b"")
    with pytest.raises(ValueError):
        conn.write_control(MessageType.TEXT, b"")
    with pytest.raises(ValueError):
        conn.write_control(MessageType.PING, b"x" * 126)
    close_cleanly(conn, peer)


@pytest.mark.parametrize("bad", [123, 10**9, {"a": 1}, None, 1.5, ["x"]], ids=repr)
def test_anything_but_str_or_bytes_like_is_a_type_error_naming_the_type(pair, role, bad):
    """bytes(123) is 123 zero bytes: no message-taking call may fall for it."""
    conn, peer = pair(role)
    name = type(bad).__name__
    calls = [
        lambda: conn.send(bad),
        lambda: conn.try_send(bad),
        lambda: conn.write_message(MessageType.BINARY, bad),
        lambda: conn.write_message(MessageType.TEXT, bad),
        lambda: conn.write_control(MessageType.PING, bad),
        lambda: threadws.PreparedMessage(MessageType.BINARY, bad),
        lambda: threadws.PreparedMessage(MessageType.TEXT, bad),
        lambda: threadws.Hub().broadcast(bad),
    ]
    for call in calls:
        with pytest.raises(TypeError, match=name):
            call()
    assert conn.queued_bytes == 0
    for kind in (MessageType.BINARY, MessageType.TEXT):
        with conn.next_writer(kind) as writer:
            with pytest.raises(TypeError, match=name):
                writer.write(bad)
    # Bytes-like objects of every shape still count in bytes.
    conn.send(memoryview(array.array("i", [1, 2])))
    conn.send(bytearray(b"ab"))
    got = [peer.next_event() for _ in range(4)]
    # The two streamed messages, empty, then the two sends, counted in bytes.
    assert [bytes(e.data) if isinstance(e.data, bytes) else e.data for e in got] == [  # type: ignore[union-attr]
        b"",
        "",
        array.array("i", [1, 2]).tobytes(),
        b"ab",
    ]
    close_cleanly(conn, peer)


def finish_peer_close(peer: Peer) -> CloseConnection:
    """The peer closed: read threadws's reply, then close TCP if the peer is the server."""
    reply = peer.expect_close()
    if not peer.client:
        peer.sock.shutdown(socket.SHUT_WR)
    return reply


def test_iteration_ends_on_normal_close(pair, role):
    conn, peer = pair(role)
    peer.send(TextMessage(data="one"))
    peer.send(BytesMessage(data=b"two"))
    peer.send(CloseConnection(code=1000, reason="done"))
    assert finish_peer_close(peer).code == 1000  # answered without the application
    assert list(conn) == ["one", b"two"]  # ...and nothing that arrived before is lost
    assert conn.wait_closed(5)
    exc = conn.close_exception
    assert isinstance(exc, ConnectionClosedOK)
    assert exc.rcvd == (1000, "done") and exc.sent == (1000, "") and exc.rcvd_then_sent


def test_iteration_raises_on_error_close(pair, role):
    conn, peer = pair(role)
    peer.send(TextMessage(data="one"))
    peer.send(CloseConnection(code=4001, reason="bye"))
    assert finish_peer_close(peer).code == 4001  # the default close handler echoes the code
    received = []
    with pytest.raises(ConnectionClosedError) as info:
        for message in conn:
            received.append(message)
    assert received == ["one"]
    assert info.value.code == 4001 and info.value.reason == "bye"


# --- control frames -------------------------------------------------------------


def test_ping_is_answered_without_the_application(pair, role):
    conn, peer = pair(role)
    peer.send(Ping(payload=b"are you there"))
    pong = peer.next_event()
    assert isinstance(pong, Pong) and pong.payload == b"are you there"
    close_cleanly(conn, peer)


def test_custom_handlers(pair, role):
    conn, peer = pair(role)
    pings: list[bytes] = []
    pongs: list[bytes] = []
    got_pong = threading.Event()
    conn.set_ping_handler(pings.append)  # custom: no automatic pong
    conn.set_pong_handler(lambda payload: (pongs.append(payload), got_pong.set()))
    peer.send(Ping(payload=b"p1"))
    conn.write_control(MessageType.PING, b"mine", deadline=time.monotonic() + 5)
    ping = peer.next_event()
    assert isinstance(ping, Ping) and ping.payload == b"mine"
    peer.send(ping.response())
    assert got_pong.wait(5)
    assert pongs == [b"mine"] and pings == [b"p1"]
    conn.set_ping_handler(None)  # back to the default
    peer.send(Ping(payload=b"p2"))
    pong = peer.next_event()
    assert isinstance(pong, Pong) and pong.payload == b"p2"
    close_cleanly(conn, peer)


def test_handler_exception_fails_with_1011(pair, role):
    conn, peer = pair(role)

    def broken(payload: bytes) -> None:
        raise RuntimeError("boom")

    conn.set_ping_handler(broken)
    peer.send(Ping(payload=b""))
    assert peer.expect_close().code == CloseCode.INTERNAL_ERROR
    assert conn.wait_closed(5)
    exc = conn.close_exception
    assert isinstance(exc, ConnectionClosedError) and isinstance(exc.__cause__, RuntimeError)


def test_custom_close_handler(pair, role):
    conn, peer = pair(role)
    seen: list[tuple[int, str]] = []
    conn.set_close_handler(lambda code, reason: (seen.append((code, reason)), conn.close(4100, "my reply")))
    peer.send(CloseConnection(code=4000, reason="please"))
    reply = peer.expect_close()
    assert (reply.code, reply.reason) == (4100, "my reply")
    assert seen == [(4000, "please")]
    if role == "client":
        peer.sock.shutdown(socket.SHUT_WR)
    assert conn.wait_closed(5)


def test_control_frames_jump_ahead_of_queued_data(pair, role):
    conn, peer = pair(role, max_write_queue=1 << 30)
    conn.send(b"x" * (8 << 20))  # far more than the socket buffers hold
    # Once the peer sees its first byte, the writer has taken that message and
    # is stuck sending it; what is queued now waits for the next batch.
    first = peer.sock.recv(1)
    peer.ws.receive_data(first)
    conn.send(b"last")
    conn.write_control(MessageType.PING, b"urgent")
    order = []
    while True:
        event = peer.next_event()
        if isinstance(event, Ping):
            order.append("ping")
        elif isinstance(event, Message) and event.message_finished:
            order.append(event.data if event.data == b"last" else "big")
            if event.data == b"last":
                break
    assert order == ["big", "ping", b"last"]
    close_cleanly(conn, peer)


# --- closing ----------------------------------------------------------------------


def test_close_flushes_queued_messages_first(pair, role):
    conn, peer = pair(role)
    for i in range(100):
        conn.send(f"m{i}")
    closer = threading.Thread(target=lambda: conn.close(1000, "bye"), name="test-closer")
    closer.start()
    received = []
    while True:
        event = peer.next_event()
        if isinstance(event, CloseConnection):
            break
        received.append(event.data)
    assert received == [f"m{i}" for i in range(100)]
    assert (event.code, event.reason) == (1000, "bye")
    peer.send(event.response())
    if role == "server":
        peer.wait_eof()  # the server closes TCP first
    else:
        peer.sock.shutdown(socket.SHUT_WR)
    closer.join(5)
    assert conn.wait_closed(5)
    exc = conn.close_exception
    assert isinstance(exc, ConnectionClosedOK) and exc.sent == (1000, "bye") and exc.rcvd_then_sent is False


def test_close_is_idempotent_and_sticky(pair, role):
    conn, peer = pair(role, close_timeout=0.5)
    conn.close()  # the peer never answers: close gives up after close_timeout
    first = conn.close_exception
    assert isinstance(first, ConnectionClosedError) and first.sent == (1000, "") and first.rcvd is None
    conn.close()
    conn.close(4000)
    for call in (conn.recv, lambda: conn.send("x"), lambda: conn.write_control(MessageType.PING)):
        with pytest.raises(ConnectionClosed) as info:
            call()
        assert info.value is first


@pytest.mark.parametrize("code", [1004, 1005, 1006, 1015, 999, 2000, 5000])
def test_close_refuses_reserved_codes(pair, role, code):
    conn, peer = pair(role)
    with pytest.raises(ValueError):
        conn.close(code)
    assert not conn.closed
    close_cleanly(conn, peer)


def test_close_timeout_aborts(pair, role):
    conn, peer = pair(role, close_timeout=0.2)
    start = time.monotonic()
    conn.close()
    assert time.monotonic() - start < 3
    assert conn.closed and isinstance(conn.close_exception, ConnectionClosedError)


def test_abort_wakes_blocked_reader(pair, role):
    conn, peer = pair(role)
    errors: list[BaseException] = []
    started = threading.Event()

    def read() -> None:
        started.set()
        try:
            conn.read_message()
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read, name="test-read")
    reader.start()
    started.wait(5)
    conn.abort()
    reader.join(5)
    assert not reader.is_alive()
    assert isinstance(errors[0], ConnectionClosedError) and errors[0].code == 1006
    assert peer.next_event() is None  # TCP torn down, no close frame


def test_peer_eof_without_close_is_1006(pair, role):
    conn, peer = pair(role)
    peer.send(TextMessage(data="before"))
    peer.sock.shutdown(socket.SHUT_RDWR)
    assert conn.recv(timeout=5) == "before"  # what arrived is not lost
    with pytest.raises(ConnectionClosedError) as info:
        conn.recv(timeout=5)
    assert info.value.code == CloseCode.ABNORMAL_CLOSURE and info.value.rcvd is None


def test_context_manager_closes(pair, role):
    conn, peer = pair(role)
    def answer() -> None:
        peer.send(peer.expect_close().response())
        if not peer.client:
            peer.sock.shutdown(socket.SHUT_WR)

    closer = threading.Thread(target=answer, name="test-peer")
    closer.start()
    with conn:
        conn.send("inside")
    closer.join(5)
    assert conn.closed
    assert conn.close_exception is not None and conn.close_exception.sent == (1000, "")


# --- limits and bad input -----------------------------------------------------------


@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize("fragmented", [False, True])
def test_read_limit_exact_and_one_over(pair, role, text, fragmented):
    conn, peer = pair(role)
    limit = 1000
    conn.set_read_limit(limit)

    def send(size: int) -> None:
        payload = "é" * (size // 2) if text else b"b" * size
        if fragmented:
            half = len(payload) // 2
            cls = TextMessage if text else BytesMessage
            peer.send(cls(data=payload[:half], message_finished=False))
            peer.send(cls(data=payload[half:], message_finished=True))
        else:
            peer.send(TextMessage(data=payload) if text else BytesMessage(data=payload))

    send(limit)
    assert len(conn.recv(timeout=5)) == (limit // 2 if text else limit)
    send(limit + 2)
    close = peer.expect_close()
    assert close.code == CloseCode.MESSAGE_TOO_BIG
    with pytest.raises(ConnectionClosedError):
        conn.recv(timeout=5)


def test_oversized_frame_header_is_refused_before_the_payload(pair, role):
    conn, peer = pair(role)
    # Announce a 1 GiB frame but send only its first 100 KiB: the limit must
    # trip on what has arrived, without waiting for (or buffering) the rest.
    head = peer.frame(2, b"", fin=True)  # build a header by hand below instead
    big = 1 << 30
    mask = peer.client
    header = bytes([0x82, (0x80 if mask else 0) | 127]) + big.to_bytes(8, "big") + (b"\0\0\0\0" if mask else b"")
    assert head  # (frame() is used elsewhere; here the length is a lie on purpose)
    peer.send_raw(header + b"z" * (1 << 20) + b"z" * 100_000)
    assert peer.expect_close().code == CloseCode.MESSAGE_TOO_BIG
    assert conn.wait_closed(5)


def test_invalid_utf8_closes_with_1007(pair, role):
    conn, peer = pair(role)
    peer.send_raw(peer.frame(1, b"valid then \xff invalid"))
    assert peer.expect_close().code == CloseCode.INVALID_PAYLOAD_DATA
    with pytest.raises(ConnectionClosedError):
        conn.recv(timeout=5)
    assert conn.wait_closed(5)


def test_invalid_utf8_fails_fast_mid_message(pair, role):
    conn, peer = pair(role)
    # First fragment of a text message ending in bytes that can never be UTF-8;
    # the message is unfinished, yet the close must come now (Autobahn 6.4.*).
    peer.send_raw(peer.frame(1, "κόσμε".encode() + b"\xf4\x90\x80\x80", fin=False))
    assert peer.expect_close(timeout=5).code == CloseCode.INVALID_PAYLOAD_DATA


def test_invalid_close_reason_utf8_is_1007(pair, role):
    conn, peer = pair(role)
    peer.send_raw(peer.frame(8, b"\x03\xe8\xff"))
    assert peer.expect_close().code == CloseCode.INVALID_PAYLOAD_DATA


def test_control_frame_over_125_bytes_is_1002(pair, role):
    conn, peer = pair(role)
    peer.send_raw(peer.frame(9, b"p" * 126))
    assert peer.expect_close().code == CloseCode.PROTOCOL_ERROR
    assert conn.wait_closed(5)


def test_wrong_masking_is_1002(pair, role):
    conn, peer = pair(role)
    # A client must mask (5.1), a server must not: send the opposite.
    peer.send_raw(peer.frame(1, b"hello", mask=not peer.client))
    assert peer.expect_close().code == CloseCode.PROTOCOL_ERROR
    assert conn.wait_closed(5)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(lambda p: p.frame(3, b""), id="reserved-opcode"),
        pytest.param(lambda p: p.frame(1, b"x", rsv=4), id="rsv1-without-extension"),
        pytest.param(lambda p: p.frame(0, b"x"), id="continuation-without-start"),
        pytest.param(lambda p: p.frame(9, b"", fin=False), id="fragmented-ping"),
        pytest.param(lambda p: p.frame(8, b"\x03"), id="one-byte-close"),
        pytest.param(lambda p: p.frame(8, (999).to_bytes(2, "big")), id="close-code-999"),
    ],
)
def test_protocol_violations_are_1002(pair, role, raw):
    conn, peer = pair(role)
    peer.send_raw(raw(peer))
    assert peer.expect_close().code == CloseCode.PROTOCOL_ERROR
    assert conn.wait_closed(5)


# --- queues, deadlines, keepalive -------------------------------------------------------


def test_write_timeout_when_queue_full_leaves_connection_usable(pair, role):
    conn, peer = pair(role, max_write_queue=64 * 1024)
    chunk = b"q" * 16384
    sent = 0
    with pytest.raises(TimeoutError):
        for _ in range(10_000):  # the peer reads nothing: socket buffers, then the queue, fill
            conn.send(chunk, timeout=0.2)
            sent += 1
    assert not conn.closed
    received = 0
    while received < sent:
        event = peer.next_event()
        assert isinstance(event, BytesMessage)
        if event.message_finished:
            received += 1
    conn.send(b"after", timeout=5)
    while True:
        event = peer.next_event()
        if isinstance(event, BytesMessage) and event.data.endswith(b"after"):
            break
    close_cleanly(conn, peer)


def test_inbound_backpressure_stops_reading(pair, role):
    conn, peer = pair(role, max_read_queue=64 * 1024)
    peer.sock.settimeout(0.5)
    message = b"i" * 8192
    sent = 0
    with pytest.raises(TimeoutError):
        for _ in range(100_000):  # threadws stops reading once its queue is full
            peer.sock.sendall(peer.ws.send(BytesMessage(data=message)))
            sent += 1
    assert sent < 1000  # bounded by the queue plus the kernel's socket buffers
    # The bytes of a partially sent frame are lost to the peer's view; read what is whole.
    got = 0
    while True:
        try:
            data = conn.recv(timeout=1)
        except TimeoutError:
            break
        assert data == message
        got += 1
    assert got >= sent - 1
    conn.abort()


def test_read_deadline_fails_the_connection(pair, role):
    conn, peer = pair(role)
    conn.set_read_deadline(time.monotonic() + 0.2)
    with pytest.raises(ConnectionClosedError) as info:
        conn.read_message(timeout=10)
    assert "read deadline exceeded" in str(info.value)
    assert isinstance(info.value.__cause__, TimeoutError)


def test_read_deadline_extended_by_pong_handler(pair, role):
    conn, peer = pair(role)
    conn.set_read_deadline(time.monotonic() + 0.3)
    conn.set_pong_handler(lambda payload: conn.set_read_deadline(time.monotonic() + 0.3))
    for _ in range(5):
        peer.send(Pong(payload=b""))
        with pytest.raises(TimeoutError):
            conn.read_message(timeout=0.15)
    assert not conn.closed
    conn.set_read_deadline(None)
    close_cleanly(conn, peer)


def test_write_deadline_aborts_stuck_writer(pair, role):
    conn, peer = pair(role, max_write_queue=1 << 30)
    for _ in range(200):  # far more than the socket buffers hold; the peer reads nothing
        conn.send(b"w" * 65536)
    conn.set_write_deadline(time.monotonic() + 0.3)  # the writer is stuck by now, or soon
    assert conn.wait_closed(10)
    exc = conn.close_exception
    assert isinstance(exc, ConnectionClosedError) and "write deadline exceeded" in str(exc)
    with pytest.raises(ConnectionClosed):
        conn.send(b"more")


def test_keepalive_keeps_a_responsive_peer(pair, role):
    conn, peer = pair(role, ping_interval=0.05, ping_timeout=5)
    pings = 0
    while pings < 3:  # a quiet peer gets pinged again and again; answering keeps it open
        event = peer.next_event(timeout=10)
        assert isinstance(event, Ping)
        pings += 1
        peer.send(event.response())
    assert not conn.closed
    close_cleanly(conn, peer)


def test_keepalive_detects_silent_peer(pair, role):
    conn, peer = pair(role, ping_interval=0.1, ping_timeout=0.2)
    # The peer never answers: the connection fails with 1011 and every blocked call wakes.
    with pytest.raises(ConnectionClosedError) as info:
        conn.read_message(timeout=10)
    assert "keepalive ping timeout" in str(info.value)
    close = peer.expect_close()
    assert close.code == CloseCode.INTERNAL_ERROR


def test_no_wsproto_exception_reaches_the_user(pair, role):
    conn, peer = pair(role)
    peer.send(CloseConnection(code=1000))
    peer.expect_close()
    if role == "client":
        peer.sock.shutdown(socket.SHUT_WR)
    assert conn.wait_closed(5)
    for call in (
        lambda: conn.send("x"),
        lambda: conn.write_control(MessageType.PING, b""),
        lambda: conn.write_control(MessageType.CLOSE, b"\x03\xe8"),
        conn.recv,
    ):
        with pytest.raises(ConnectionClosedOK):
            call()


def test_write_control_close_is_bounded_by_close_timeout(pair, role):
    conn, peer = pair(role, close_timeout=0.3)
    conn.write_control(MessageType.CLOSE, (1000).to_bytes(2, "big") + b"bye", deadline=time.monotonic() + 5)
    event = peer.expect_close()
    assert (event.code, event.reason) == (1000, "bye")
    peer.send(event.response())  # ...but the peer never closes TCP
    assert conn.wait_closed(5)
    exc = conn.close_exception
    assert isinstance(exc, ConnectionClosedOK) and exc.rcvd == (1000, "bye")


@pytest.mark.parametrize(("error", "code"), [(RuntimeError, 1011), (KeyboardInterrupt, 1001)])
def test_context_manager_on_exception(pair, role, error, code):
    conn, peer = pair(role)
    answered: list[int] = []

    def answer() -> None:
        event = peer.expect_close()
        answered.append(event.code)
        peer.send(event.response())
        if not peer.client:
            peer.sock.shutdown(socket.SHUT_WR)  # the peer is the server: it closes TCP first

    helper = threading.Thread(target=answer, name="test-peer")
    helper.start()
    with pytest.raises(error):
        with conn:
            raise error()
    helper.join(5)
    assert answered == [code]


def test_protocol_error_comes_after_the_messages_before_it(pair, role):
    conn, peer = pair(role)
    # A good message and a bad frame in one packet: the application still gets
    # the message, and its reply goes out before the close frame (Autobahn 3.2).
    peer.send_raw(peer.frame(1, b"first") + peer.frame(1, b"bad", rsv=2))
    assert conn.recv(timeout=5) == "first"
    conn.send("reply")
    with pytest.raises(ConnectionClosedError) as info:
        conn.recv(timeout=5)
    assert "protocol error" in str(info.value) and info.value.sent is not None
    assert info.value.sent.code == CloseCode.PROTOCOL_ERROR
    reply = peer.next_event()
    assert isinstance(reply, TextMessage) and reply.data == "reply"
    assert peer.expect_close().code == CloseCode.PROTOCOL_ERROR


def test_protocol_error_not_read_fails_within_close_timeout(pair, role):
    conn, peer = pair(role, close_timeout=0.3)
    peer.send_raw(peer.frame(1, b"unread") + peer.frame(1, b"bad", rsv=2))
    # The application never reads: the close comes anyway, after close_timeout.
    assert peer.expect_close(timeout=5).code == CloseCode.PROTOCOL_ERROR
    assert conn.wait_closed(5)
    assert conn.recv(timeout=5) == "unread"  # what arrived before the error is still there
    with pytest.raises(ConnectionClosedError):
        conn.recv(timeout=5)


def test_greeting_goes_out_first_and_only_once_both_threads_run(role):
    a, b = socket.socketpair()
    try:
        conn = threadws.Conn(a, client=role == "client", settings=Settings(ping_interval=None), greeting=b"HELLO\r\n")
        conn.send("x")
        b.settimeout(5)
        data = b""
        while len(data) < 7 + 3:
            data += b.recv(100)
        assert data.startswith(b"HELLO\r\n")
        conn.abort()
    finally:
        b.close()


def test_a_thread_that_cannot_start_leaves_the_socket_untouched(role, monkeypatch):
    """Out of threads: the constructor raises, nothing was sent, and the socket is still usable."""
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name.endswith("-reader"):
            raise RuntimeError("can't start new thread")
        real_start(thread)

    threadws.reuse_threads(0)  # no waiting thread: the reader needs a new one
    monkeypatch.setattr(threading.Thread, "start", start)
    a, b = socket.socketpair()
    try:
        with pytest.raises(RuntimeError, match="can't start new thread"):
            threadws.Conn(a, client=role == "client", settings=Settings(ping_interval=None), greeting=b"HTTP/1.1 101 ...")
        monkeypatch.setattr(threading.Thread, "start", real_start)
        a.sendall(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")  # the caller can still refuse
        a.close()
        b.settimeout(5)
        received = b""
        while chunk := b.recv(100):
            received += chunk
        assert received == b"HTTP/1.1 503 Service Unavailable\r\n\r\n"
    finally:
        b.close()


# --- done callbacks -----------------------------------------------------------------


def test_done_callbacks_run_once_on_the_reader_thread_as_the_connection_ends(pair, role, caplog):
    conn, peer = pair(role)
    calls: list[tuple[str, threadws.Conn, str, bool, ConnectionClosed | None]] = []

    def record(name: str) -> Any:
        def callback(arg: threadws.Conn) -> None:
            calls.append((name, arg, threading.current_thread().name, arg.closed, arg.close_exception))

        return callback

    def broken(arg: threadws.Conn) -> None:
        raise RuntimeError("a callback's bug")

    first, removed, last = record("first"), record("removed"), record("last")
    conn.add_done_callback(first)
    conn.add_done_callback(broken)  # logged; the others still run
    conn.add_done_callback(removed)
    conn.add_done_callback(last)
    assert conn.remove_done_callback(removed) is True
    assert conn.remove_done_callback(removed) is False  # not there any more
    assert calls == []
    close_cleanly(conn, peer)
    assert [name for name, *_ in calls] == ["first", "last"]
    for _, arg, thread, closed, exc in calls:
        assert arg is conn and thread == f"{conn.name}-reader"
        assert closed and isinstance(exc, ConnectionClosedOK)  # the end is already visible to the callback
    assert "done callback failed" in caplog.text and "a callback's bug" in caplog.text
    assert conn.remove_done_callback(first) is False  # run and forgotten

    # Once it has ended: at once, on the caller's thread, before add_done_callback returns.
    conn.add_done_callback(record("late"))
    assert [name for name, *_ in calls] == ["first", "last", "late"]
    assert calls[-1][1] is conn and calls[-1][2] == threading.current_thread().name
