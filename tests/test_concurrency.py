"""Many application threads writing to one connection at once."""

from __future__ import annotations

import hashlib
import queue
import random
import struct
import threading
from typing import Any

import pytest

import threadws

from .conftest import start_server, stop_server, url_of

THREADS = 16
PER_THREAD = 1000


def encode(thread: int, seq: int, rng: random.Random) -> bytes:
    body = rng.randbytes(rng.randrange(0, 8192))
    head = struct.pack("!HI", thread, seq)
    return head + hashlib.blake2b(head + body, digest_size=8).digest() + body


def check(message: bytes) -> tuple[int, int]:
    head, digest, body = message[:6], message[6:14], message[14:]
    assert hashlib.blake2b(head + body, digest_size=8).digest() == digest, "message torn or interleaved"
    return struct.unpack("!HI", head)


@pytest.fixture
def collector():
    got: queue.Queue[Any] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        last = [-1] * THREADS
        try:
            for message in conn:
                thread, seq = check(message)
                assert seq == last[thread] + 1, f"thread {thread}: {seq} after {last[thread]}"
                last[thread] = seq
        except threadws.ConnectionClosed:
            pass
        except AssertionError as exc:
            got.put(exc)
        got.put(last)

    server = start_server(handler, upgrader=threadws.Upgrader(ping_interval=None, max_read_queue=1 << 20))
    try:
        yield server, got
    finally:
        stop_server(server)


def test_sixteen_writers_never_interleave(collector):
    server, got = collector
    conn = threadws.dial(url_of(server), ping_interval=None, max_write_queue=256 * 1024)
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        rng = random.Random(index)
        try:
            for seq in range(PER_THREAD):
                conn.send(encode(index, seq, rng))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,), name=f"test-writer-{i}") for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    conn.close()
    result = got.get(timeout=30)
    assert not isinstance(result, BaseException), result
    assert result == [PER_THREAD - 1] * THREADS
    assert isinstance(conn.close_exception, threadws.ConnectionClosedOK)


def test_close_from_another_thread_mid_stream(collector):
    server, got = collector
    conn = threadws.dial(url_of(server), ping_interval=None, max_write_queue=256 * 1024)
    errors: list[BaseException] = []
    sent = [0] * THREADS
    halfway = threading.Semaphore(0)

    def writer(index: int) -> None:
        rng = random.Random(index)
        try:
            for seq in range(PER_THREAD * 100):
                conn.send(encode(index, seq, rng))
                sent[index] = seq + 1
                if seq == 50:
                    halfway.release()
        except threadws.ConnectionClosed:
            return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,), name=f"test-writer-{i}") for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert halfway.acquire(timeout=30)
    conn.close()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    assert not errors  # writers only ever see ConnectionClosed
    exc = conn.close_exception
    assert isinstance(exc, threadws.ConnectionClosedOK) and exc.sent == (1000, "")
    last = got.get(timeout=30)
    assert not isinstance(last, BaseException), last
    # Everything queued before the close frame arrived, whole and in order.
    for index in range(THREADS):
        assert last[index] + 1 <= sent[index]
        assert last[index] >= 50
