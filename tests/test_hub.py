"""The broadcast hub: healthy peers get everything, a peer that stopped reading is dropped."""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Any

import threadws

from .conftest import start_server, stop_server, url_of, wait_until
from .test_leaks import handshake

HEALTHY = 50
MESSAGES = 400
SIZE = 16 * 1024
QUEUE = 256 * 1024  # each connection's send queue bound on the server
# Every STEP messages the broadcaster waits for the healthy peers to catch up, so at
# most STEP messages (128 KiB, half of QUEUE) wait in a healthy peer's queue even on
# a loaded machine; the peer that stopped reading gets far more than QUEUE.
STEP = 8


def test_slow_peer_is_dropped_and_stalls_no_one():
    hub = threadws.Hub()
    dropped: queue.Queue[threadws.Conn] = queue.Queue()
    hub.on_drop = dropped.put

    def handler(conn: threadws.Conn) -> None:
        hub.register(conn)
        for _ in conn:
            pass

    upgrader = threadws.Upgrader(ping_interval=None, max_write_queue=QUEUE, close_timeout=1.0)
    server = start_server(handler, upgrader=upgrader)
    clients: list[threadws.Conn] = []
    slow: socket.socket | None = None
    try:
        received = [0] * HEALTHY
        progress = threading.Condition()
        errors: list[BaseException] = []

        def consume(index: int, conn: threadws.Conn) -> None:
            try:
                for i in range(MESSAGES):
                    data = conn.recv(timeout=30)
                    assert data[:8] == i.to_bytes(8, "big") and len(data) == SIZE
                    with progress:
                        received[index] = i + 1
                        progress.notify_all()
            except BaseException as exc:
                errors.append(exc)
                with progress:
                    progress.notify_all()

        consumers = []
        for index in range(HEALTHY):
            conn = threadws.dial(url_of(server), ping_interval=None)
            clients.append(conn)
            consumers.append(threading.Thread(target=consume, args=(index, conn), name=f"test-consumer-{index}"))
        # The slow peer: completes the handshake, then never reads again.
        slow = handshake(server.server_address[1], "/")
        wait_until(lambda: len(hub) == HEALTHY + 1)
        for thread in consumers:
            thread.start()

        start = time.monotonic()
        body = bytes(SIZE - 8)
        for i in range(MESSAGES):
            hub.broadcast(i.to_bytes(8, "big") + body)
            if (i + 1) % STEP == 0:
                with progress:
                    assert progress.wait_for(lambda: errors or min(received) >= i + 1, timeout=30)
                assert not errors, errors
        with progress:
            assert progress.wait_for(lambda: errors or min(received) == MESSAGES, timeout=30)
        elapsed = time.monotonic() - start
        for thread in consumers:
            thread.join(10)
        assert not errors, errors
        assert received == [MESSAGES] * HEALTHY
        assert elapsed < 30

        # The slow one was dropped, and its queue never grew past the bound. Its
        # close frame (1008) can't get past the data its peer never read, so
        # the connection is torn down within close_timeout.
        gone = dropped.get(timeout=5)
        assert len(hub) == HEALTHY and gone not in hub.connections
        assert gone.queued_bytes <= QUEUE + SIZE + 64
        assert gone.wait_closed(10)
        assert "dropped by the hub" in str(gone.close_exception)
        assert dropped.empty()  # nobody healthy was dropped
    finally:
        if slow is not None:
            slow.close()
        for conn in clients:
            conn.abort()
        stop_server(server)


def test_hub_unregisters_closed_connections_and_prepared_broadcast():
    hub = threadws.Hub()
    got: queue.Queue[Any] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        hub.register(conn)
        for _ in conn:
            pass

    server = start_server(handler)
    try:
        a = threadws.dial(url_of(server), ping_interval=None)
        b = threadws.dial(url_of(server), ping_interval=None)
        wait_until(lambda: len(hub) == 2)
        message = threadws.PreparedMessage(threadws.MessageType.TEXT, "hello all")
        assert hub.broadcast(message) == []
        assert a.recv(timeout=5) == "hello all" and b.recv(timeout=5) == "hello all"
        a.close()
        wait_until(lambda: len(hub) == 1)
        hub.broadcast(b"\x01")
        assert b.recv(timeout=5) == b"\x01"
        got.put(None)
        b.close()
        wait_until(lambda: len(hub) == 0)
    finally:
        stop_server(server)
