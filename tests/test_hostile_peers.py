"""A connection against a hostile peer (issue 12, the connection's side): every queue bounded, every wait bounded.

Each test is over a socketpair against a raw peer, for both roles, and each
fails on the code before these limits existed.
"""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc

import pytest
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

import threadws
from threadws import CloseCode, ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, MessageType

from .conftest import ROLES, Peer, wait_until

pytestmark = pytest.mark.parametrize("role", ROLES)


def stop_reading(peer: Peer) -> None:
    """The peer stops reading: shrink its receive buffer so the writer gets stuck quickly."""
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


def fill_until_stuck(conn: threadws.Conn) -> None:
    """Queue data until it backs up: the writer is then stuck in a send (the peer isn't reading)."""
    chunk = b"x" * 65536
    deadline = time.monotonic() + 10
    while conn.queued_bytes < 256 * 1024:
        conn.try_send(chunk)
        assert time.monotonic() < deadline, "the writer never got stuck"


# --- the control-frame queue ----------------------------------------------------------


def test_a_ping_flood_from_a_peer_that_never_reads_keeps_memory_flat(pair, role):
    """RFC 6455 5.5.3 lets an endpoint answer only the latest ping: past 16 waiting pongs, the oldest is dropped."""
    conn, peer = pair(role)
    stop_reading(peer)
    ping = peer.frame(9, b"p" * 125)
    burst = ping * 500
    # Warm up: the writer gets stuck behind pongs the peer doesn't read.
    for _ in range(20):
        peer.send_raw(burst)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(40):  # 20,000 pings, 2.7 MB of them
            peer.send_raw(burst)
        # Everything sent has been read by threadws (the pings are all handled).
        wait_until(lambda: not conn.closed and _drained(peer), timeout=30)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Each ping used to leave its pong behind in the control queue (about 5 MB here).
    assert grown < 1 << 20, f"memory grew by {grown} bytes under a ping flood"
    assert not conn.closed
    conn.abort()


def _drained(peer: Peer) -> bool:
    """Nothing the peer sent is still waiting in its own send buffer (threadws read it all)."""
    import fcntl
    import struct
    import termios

    outq = struct.unpack("i", fcntl.ioctl(peer.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    return outq == 0


def test_a_burst_of_pings_from_a_peer_that_reads_gets_every_answer(pair, role):
    conn, peer = pair(role)
    peer.send_raw(b"".join(peer.frame(9, b"%d" % i) for i in range(10)))
    assert [peer.next_event().payload for _ in range(10)] == [b"%d" % i for i in range(10)]  # type: ignore[union-attr]
    conn.abort()


def test_the_latest_ping_is_always_answered(pair, role):
    conn, peer = pair(role)
    stop_reading(peer)
    fill_until_stuck(conn)
    peer.send_raw(b"".join(peer.frame(9, b"%d" % i) for i in range(100)))
    # The peer reads again: what it gets ends with the answer to its last ping.
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    pongs = []
    while not pongs or pongs[-1] != b"99":
        event = peer.next_event(timeout=10)
        if isinstance(event, Pong):
            pongs.append(event.payload)
    assert pongs == sorted(pongs, key=int)  # in order, the oldest dropped when too many waited
    conn.abort()


# --- a stuck writer doesn't delay the end ------------------------------------------------


def test_keepalive_on_a_peer_that_stopped_reading_ends_at_interval_plus_timeout(pair, role):
    conn, peer = pair(role, ping_interval=0.5, ping_timeout=0.5, close_timeout=60.0)
    stop_reading(peer)
    fill_until_stuck(conn)
    started = time.monotonic()
    # The failing close frame can't get past the stuck send: the connection is
    # aborted at once rather than after close_timeout (60 s here).
    assert conn.wait_closed(30), "still open long after ping_interval + ping_timeout"
    assert "keepalive ping timeout" in str(conn.close_exception)
    assert time.monotonic() - started < 30


def test_the_close_write_policy_on_a_stuck_writer_aborts_at_once(pair, role):
    conn, peer = pair(role, close_timeout=60.0, max_write_queue=256 * 1024)
    stop_reading(peer)
    conn.set_write_policy("close", CloseCode.TRY_AGAIN_LATER)
    with pytest.raises(ConnectionClosed):
        while True:
            conn.send(b"x" * 65536)
    assert conn.wait_closed(30), "the close policy waited for close_timeout"
    assert "send queue full" in str(conn.close_exception)


def test_fail_on_a_stuck_writer_does_not_wait(pair, role):
    conn, peer = pair(role, close_timeout=60.0)
    stop_reading(peer)
    fill_until_stuck(conn)
    conn.fail(CloseCode.POLICY_VIOLATION, "too slow")
    assert conn.wait_closed(30)


def test_fail_on_a_writer_that_is_not_stuck_still_sends_the_close_frame(pair, role):
    conn, peer = pair(role)
    conn.send("queued, then dropped")
    conn.fail(CloseCode.POLICY_VIOLATION, "too slow")
    close = peer.expect_close()
    assert (close.code, close.reason) == (CloseCode.POLICY_VIOLATION, "too slow")


# --- messages: fragments, count bound, read limit -------------------------------------------


def test_a_message_in_too_many_fragments_is_1008(pair, role):
    conn, peer = pair(role, max_fragments=100)
    peer.send_raw(peer.frame(2, b"a", fin=False) + b"".join(peer.frame(0, b"", fin=False) for _ in range(99)))
    peer.send_raw(peer.frame(0, b"z", fin=True))  # the 101st frame
    with pytest.raises(ConnectionClosedError) as info:
        conn.read_message(timeout=5)
    assert info.value.sent is not None and info.value.sent.code == CloseCode.POLICY_VIOLATION
    assert peer.expect_close().code == CloseCode.POLICY_VIOLATION


def test_exactly_max_fragments_is_fine(pair, role):
    conn, peer = pair(role, max_fragments=100)
    peer.send_raw(peer.frame(1, b"a", fin=False) + b"".join(peer.frame(0, b"b", fin=False) for _ in range(98)))
    peer.send_raw(peer.frame(0, b"c", fin=True))
    assert conn.read_message(timeout=5) == (MessageType.TEXT, "a" + "b" * 98 + "c")
    # Control frames between fragments don't count, and the count starts over.
    peer.send_raw(peer.frame(2, b"x", fin=False) + peer.frame(9, b"") + peer.frame(0, b"y"))
    assert conn.read_message(timeout=5) == (MessageType.BINARY, b"xy")
    conn.abort()


def test_empty_continuation_frames_cannot_keep_a_message_open_forever(pair, role):
    conn, peer = pair(role)  # the default limit
    flood = peer.frame(2, b"", fin=False) + peer.frame(0, b"", fin=False) * 200_000
    # From another thread: threadws stops reading while the application doesn't read.
    sender = threading.Thread(target=lambda: _send_quietly(peer, flood), name="test-flood")
    sender.start()
    with pytest.raises(ConnectionClosedError):
        conn.read_message(timeout=30)
    assert peer.expect_close(timeout=30).code == CloseCode.POLICY_VIOLATION
    sender.join(30)


def _send_quietly(peer: Peer, data: bytes) -> None:
    try:
        peer.send_raw(data)
    except OSError:
        pass  # threadws closed the connection before all of it went out


def test_the_message_count_bound_of_the_queues_is_a_setting(pair, role):
    conn, peer = pair(role, max_queued_messages=10)
    for i in range(30):
        peer.send(TextMessage(data=str(i)))
    peer.send(Ping(payload=b"behind"))
    # The reader stopped after 10 unread messages, so the ping behind them is
    # not answered (with the old fixed bound of 4,096 it was, at once).
    with pytest.raises(TimeoutError):
        peer.next_event(timeout=0.5)
    assert [conn.recv(timeout=5) for _ in range(30)] == [str(i) for i in range(30)]  # none is lost
    assert peer.next_event().payload == b"behind"  # type: ignore[union-attr]
    conn.abort()


def test_a_new_read_limit_applies_from_the_next_message(pair, role):
    conn, peer = pair(role, read_limit=1000)
    peer.send(BytesMessage(data=b"a" * 600, message_finished=False))
    _, reader = conn.next_reader(timeout=5)  # the message has begun
    conn.set_read_limit(100)  # the message in progress keeps its limit
    peer.send(BytesMessage(data=b"b" * 300, message_finished=True))
    peer.send(BytesMessage(data=b"c" * 101))
    assert reader.read() == b"a" * 600 + b"b" * 300
    with pytest.raises(ConnectionClosedError):
        conn.read_message(timeout=5)  # the next one is over 100
    assert peer.expect_close().code == CloseCode.MESSAGE_TOO_BIG


# --- the idle timeout ------------------------------------------------------------------


def test_a_peer_that_only_answers_pings_is_closed_after_the_idle_timeout(pair, role):
    conn, peer = pair(role, ping_interval=0.1, ping_timeout=1.0, idle_timeout=0.6)
    pongs = 0
    while True:  # the peer answers every ping (keepalive is satisfied) but sends no message
        event = peer.next_event(timeout=10)
        if isinstance(event, CloseConnection):
            break
        pongs += 1
        peer.send(event.response())  # type: ignore[union-attr]
    assert pongs >= 2
    assert (event.code, event.reason) == (CloseCode.GOING_AWAY, "idle timeout")
    peer.send(event.response())
    if peer.client:
        peer.wait_eof()
    else:
        peer.sock.shutdown(socket.SHUT_WR)
    assert conn.wait_closed(5)
    assert isinstance(conn.close_exception, ConnectionClosedOK)
    assert "idle timeout" in str(conn.close_exception)


def test_messages_keep_an_idle_timeout_away_and_the_code_is_a_setting(pair, role):
    conn, peer = pair(role, idle_timeout=0.5, idle_close_code=4000)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # a message every 0.1 s: never idle
        peer.send(TextMessage(data="still here"))
        assert conn.recv(timeout=5) == "still here"
        threading.Event().wait(0.1)  # the pace of the traffic, not a wait for a condition
    assert not conn.closed
    assert peer.expect_close(timeout=5).code == 4000
    conn.abort()
