"""Streaming readers and writers, JSON, prepared messages and the send-queue policies."""

from __future__ import annotations

import io
import json
import queue
import socket
import threading
import time

import pytest
from wsproto.events import BytesMessage, CloseConnection, Message, TextMessage

import threadws
from threadws import CloseCode, ConnectionClosed, ConnectionClosedError, MessageType, PreparedMessage

from .conftest import ROLES, Peer

pytestmark = pytest.mark.parametrize("role", ROLES)


def whole_messages(peer: Peer, count: int) -> list[Message]:
    """The next *count* messages from threadws, reassembled, as (type-name, data, frames)."""
    out: list[tuple[str, object, int]] = []
    parts: list[object] = []
    while len(out) < count:
        event = peer.next_event()
        assert isinstance(event, Message), event
        parts.append(event.data)
        if event.message_finished:
            kind = "text" if isinstance(event, TextMessage) else "binary"
            out.append((kind, ("" if kind == "text" else b"").join(parts), len(parts)))
            parts = []
    return out


def answer_close(peer: Peer) -> CloseConnection:
    event = peer.expect_close()
    peer.send(event.response())
    if not peer.client:
        peer.sock.shutdown(socket.SHUT_WR)
    return event


# --- next_reader ---------------------------------------------------------------------


def test_reader_yields_data_before_the_message_is_complete(pair, role):
    conn, peer = pair(role)
    peer.send(BytesMessage(data=b"first part ", message_finished=False))
    kind, reader = conn.next_reader(timeout=5)
    assert kind == MessageType.BINARY
    # The rest hasn't even been sent: the reader streams what has arrived.
    assert reader.read(5) == b"first"
    assert reader.read(100) == b" part "
    peer.send(BytesMessage(data=b"second ", message_finished=False))
    peer.send(BytesMessage(data=b"last", message_finished=True))
    assert reader.read() == b"second last"
    assert reader.read(10) == b""  # end of message
    peer.send(TextMessage(data="next"))
    assert conn.recv(timeout=5) == "next"
    conn.abort()


def test_reader_for_text_decodes_incrementally(pair, role):
    conn, peer = pair(role)
    text = "ünïcödé ✓\nsecond line\n"
    encoded = text.encode()
    peer.send_raw(peer.frame(1, encoded[:2], fin=False))  # splits "ü" across frames
    peer.send_raw(peer.frame(0, encoded[2:], fin=True))
    kind, reader = conn.next_reader(timeout=5)
    assert kind == MessageType.TEXT
    lines = list(io.TextIOWrapper(io.BufferedReader(reader), encoding="utf-8"))
    assert lines == ["ünïcödé ✓\n", "second line\n"]
    conn.abort()


def test_next_reader_discards_the_unread_rest(pair, role):
    conn, peer = pair(role)
    peer.send(BytesMessage(data=b"a" * 100, message_finished=False))
    peer.send(BytesMessage(data=b"b" * 100, message_finished=True))
    peer.send(TextMessage(data="second"))
    _, reader = conn.next_reader(timeout=5)
    assert reader.read(10) == b"a" * 10
    kind, second = conn.next_reader(timeout=5)
    assert (kind, second.read()) == (MessageType.TEXT, b"second")
    assert reader.read() == b""  # the first reader was discarded
    peer.send(TextMessage(data="third"))
    _, third = conn.next_reader(timeout=5)
    assert list(third) == [b"third"]
    conn.abort()


def test_read_limit_applies_while_streaming(pair, role):
    conn, peer = pair(role)
    conn.set_read_limit(1000)
    peer.send(BytesMessage(data=b"x" * 600, message_finished=False))
    _, reader = conn.next_reader(timeout=5)
    assert len(reader.read(600)) == 600
    peer.send(BytesMessage(data=b"x" * 600, message_finished=True))
    with pytest.raises(ConnectionClosedError):
        reader.read()
    assert peer.expect_close().code == CloseCode.MESSAGE_TOO_BIG


def test_invalid_utf8_while_streaming_is_1007(pair, role):
    conn, peer = pair(role)
    peer.send_raw(peer.frame(1, b"fine so far", fin=False))
    _, reader = conn.next_reader(timeout=5)
    assert reader.read(4) == b"fine"
    peer.send_raw(peer.frame(0, b"\xff\xfe", fin=False))
    with pytest.raises(ConnectionClosedError):
        reader.read()
    assert peer.expect_close().code == CloseCode.INVALID_PAYLOAD_DATA


def test_read_message_timeout_mid_message_keeps_the_part(pair, role):
    conn, peer = pair(role)
    peer.send(TextMessage(data="hel", message_finished=False))
    with pytest.raises(TimeoutError):
        conn.read_message(timeout=0.1)
    peer.send(TextMessage(data="lo", message_finished=True))
    assert conn.read_message(timeout=5) == (MessageType.TEXT, "hello")
    conn.abort()


# --- next_writer -----------------------------------------------------------------------


def test_writer_sends_fragments_and_holds_other_messages(pair, role):
    conn, peer = pair(role)
    others_done = threading.Event()
    writer = conn.next_writer(MessageType.BINARY, buffer_size=4)
    writer.write(b"12345")  # over the buffer: goes out as a fragment now
    first = peer.next_event()
    assert isinstance(first, BytesMessage) and first.data == b"12345" and not first.message_finished
    other = threading.Thread(target=lambda: (conn.send("other"), others_done.set()), name="test-other")
    other.start()
    assert not others_done.wait(0.2)  # waits for the streamed message to end
    writer.write(b"67")
    writer.close()
    other.join(5)
    assert others_done.is_set()
    rest = whole_messages(peer, 2)
    assert rest[0] == ("binary", b"67", 1)
    assert rest[1] == ("text", "other", 1)
    writer.close()  # idempotent


def test_text_writer_takes_split_utf8_and_refuses_invalid(pair, role):
    conn, peer = pair(role)
    encoded = "é✓".encode()
    with conn.next_writer(MessageType.TEXT, buffer_size=2) as writer:
        for i in range(len(encoded)):
            writer.write(encoded[i : i + 1])  # one byte at a time, mid-character
        writer.write(" and str")
    (kind, data, frames), = whole_messages(peer, 1)
    assert (kind, data) == ("text", "é✓ and str") and frames > 1
    thread, seen = answering_peer(peer)
    writer = conn.next_writer(MessageType.TEXT)
    with pytest.raises(ValueError):
        writer.write(b"\xff")
    writer.abort()
    thread.join(5)
    assert isinstance(seen[-1], CloseConnection) and seen[-1].code == CloseCode.INTERNAL_ERROR


def answering_peer(peer: Peer) -> tuple[threading.Thread, list[object]]:
    """Run the peer in a thread: collect events until threadws's close, then answer it."""
    seen: list[object] = []

    def run() -> None:
        while True:
            event = peer.next_event()
            seen.append(event)
            if isinstance(event, CloseConnection):
                peer.send(event.response())
                if not peer.client:
                    peer.sock.shutdown(socket.SHUT_WR)
                return

    thread = threading.Thread(target=run, name="test-peer")
    thread.start()
    return thread, seen


def test_exception_in_writer_block_closes_1011(pair, role):
    conn, peer = pair(role)
    thread, seen = answering_peer(peer)
    with pytest.raises(RuntimeError):
        with conn.next_writer(MessageType.BINARY, buffer_size=4) as writer:
            writer.write(b"half a message")
            raise RuntimeError("producer failed")
    thread.join(5)
    # A fragment, then no final fragment but a clean close with 1011.
    assert isinstance(seen[0], BytesMessage) and not seen[0].message_finished
    assert isinstance(seen[1], CloseConnection) and seen[1].code == CloseCode.INTERNAL_ERROR
    assert conn.wait_closed(5)
    assert isinstance(conn.close_exception, ConnectionClosedError) and conn.close_exception.clean
    with pytest.raises(ConnectionClosed):
        conn.send("more")


# --- JSON and prepared messages --------------------------------------------------------


def test_json_round_trip_and_bad_json(pair, role):
    conn, peer = pair(role)
    conn.write_json({"a": [1, 2, "ü"]})
    event = peer.next_event()
    assert isinstance(event, TextMessage) and json.loads(event.data) == {"a": [1, 2, "ü"]}
    peer.send(TextMessage(data="{not json"))
    peer.send(TextMessage(data='{"ok": true}'))
    with pytest.raises(ValueError):
        conn.read_json(timeout=5)
    assert conn.read_json(timeout=5) == {"ok": True}  # still usable
    with pytest.raises(TypeError):
        conn.write_json({"set": {1, 2}})
    conn.abort()


def test_prepared_message(pair, role):
    conn, peer = pair(role)
    text = PreparedMessage(MessageType.TEXT, "to everyone ✓")
    binary = PreparedMessage(MessageType.BINARY, b"\x00\x01")
    assert conn.write_prepared(text) and conn.try_send(binary)
    assert whole_messages(peer, 2) == [("text", "to everyone ✓", 1), ("binary", b"\x00\x01", 1)]
    with pytest.raises(TypeError):
        PreparedMessage(MessageType.BINARY, "str")
    conn.abort()


# --- send-queue policies ---------------------------------------------------------------


def fill(conn: threadws.Conn) -> int:
    """Queue until the send queue is full (the peer isn't reading); return how many went in."""
    count = 0
    while conn.try_send(b"f" * 65536):
        count += 1
        assert count < 10_000
    return count


_ROOM = object()


def when_full(conn: threadws.Conn, attempt):
    """Fill the send queue, then return attempt()'s result.

    Between fill() and attempt() the writer may still move queued bytes into
    the socket's buffers, making room again; attempt() returns _ROOM when that
    happened, and we fill again. The peer never reads, so the kernel's buffers
    fill up after a bounded number of rounds and the queue then stays full.
    """
    for _ in range(200):
        fill(conn)
        result = attempt()
        if result is not _ROOM:
            return result
    pytest.fail("the send queue never stayed full")


def test_try_send_and_queued_bytes(pair, role):
    conn, peer = pair(role, max_write_queue=256 * 1024)
    assert fill(conn) > 0

    def attempt():
        if conn.try_send("no room"):
            return _ROOM
        # A refusal with the queue below the mark means the writer drained it
        # in between; once the socket's buffers are full, both must hold.
        return conn.queued_bytes if conn.queued_bytes >= 256 * 1024 else _ROOM

    assert when_full(conn, attempt) >= 256 * 1024
    assert not conn.closed
    conn.abort()


def test_policy_raise(pair, role):
    conn, peer = pair(role, max_write_queue=256 * 1024)
    conn.set_write_policy("raise")

    def attempt():
        try:
            conn.send(b"one more")
        except queue.Full:
            return None
        return _ROOM

    when_full(conn, attempt)
    assert not conn.closed
    conn.abort()


def test_policy_drop(pair, role):
    conn, peer = pair(role, max_write_queue=256 * 1024)
    conn.set_write_policy("drop")
    when_full(conn, lambda: None if conn.send(b"dropped") is False else _ROOM)
    assert not conn.closed
    conn.abort()


def test_policy_close(pair, role):
    conn, peer = pair(role, max_write_queue=256 * 1024, close_timeout=0.5)
    conn.set_write_policy("close", CloseCode.TRY_AGAIN_LATER)

    def attempt():
        try:
            conn.send(b"too much")
        except ConnectionClosed:
            return None
        return _ROOM

    when_full(conn, attempt)
    assert conn.wait_closed(5)  # the peer never reads, yet it ends within close_timeout
    assert conn.close_exception is not None and "send queue full" in str(conn.close_exception)


def test_policy_block_times_out(pair, role):
    conn, peer = pair(role, max_write_queue=256 * 1024)

    def attempt():
        start = time.monotonic()
        try:
            conn.send(b"wait", timeout=0.2)
        except TimeoutError:
            return time.monotonic() - start
        return _ROOM

    assert when_full(conn, attempt) >= 0.2
    with pytest.raises(ValueError):
        conn.set_write_policy("explode")
    conn.abort()


def test_try_send_never_waits_behind_a_stream_that_is_just_starting(pair, role):
    # A MessageWriter takes the message lock first and says it streams just
    # after: a try_send that looked in between must still give up, not wait
    # for the whole streamed message.
    conn, peer = pair(role)
    outbox = conn._outbox
    assert outbox._msg_lock.acquire(timeout=5)  # the stream's first step
    results: list[bool] = []
    trying = threading.Thread(target=lambda: results.append(conn.try_send("not now")))
    trying.start()
    try:
        outbox._streaming = True  # the stream's second step
        trying.join(5)
        assert not trying.is_alive() and results == [False]
    finally:
        outbox._streaming = False
        outbox._msg_lock.release()
        trying.join(5)
    assert conn.try_send("now") is True
    event = peer.next_event()
    assert isinstance(event, TextMessage) and event.data == "now"
    conn.abort()
