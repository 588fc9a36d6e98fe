"""Hubs on a Redis backplane: every connection of every process gets each broadcast once, in order.

Each "process" here is a RedisBackplane of its own (its own publisher id,
threads and Redis connections) with a hub and a loopback server: what
separates two processes on the backplane is exactly that. The examples'
tests run real separate processes (tests/test_example_chat_redis.py).
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

import threadws

from .conftest import start_server, stop_server, url_of, wait_until
from .redis_server import RedisServer
from .test_leaks import handshake


def room() -> str:
    """A hub name no other test uses (the session's Redis is shared)."""
    return f"room-{uuid.uuid4().hex[:8]}"


@dataclass
class Node:
    """One process's share of the room: a backplane, a hub on it and a server whose
    handler registers every connection and broadcasts what it says."""

    backplane: threadws.RedisBackplane
    hub: threadws.Hub
    server: threadws.Server
    clients: list[threadws.Conn] = field(default_factory=list)

    def dial(self) -> threadws.Conn:
        before = len(self.hub)
        conn = threadws.dial(url_of(self.server), ping_interval=None)
        self.clients.append(conn)
        wait_until(lambda: len(self.hub) > before)
        return conn


@contextmanager
def node(url: str, name: str, upgrader: threadws.Upgrader | None = None, **hub_args: Any) -> Iterator[Node]:
    backplane = threadws.RedisBackplane(url, timeout=hub_args.pop("timeout", 2.0))
    hub = threadws.Hub(name, backplane=backplane, **hub_args)

    def handler(conn: threadws.Conn) -> None:
        hub.register(conn)
        for message in conn:
            hub.broadcast(message)

    server = start_server(handler, upgrader=upgrader) if upgrader else start_server(handler)
    result = Node(backplane, hub, server)
    try:
        yield result
    finally:
        for conn in result.clients:
            conn.abort()
        stop_server(server)
        hub.close()


def wait_processes(hub: threadws.Hub, count: int) -> None:
    """Until Redis says *count* processes are subscribed (a subscription is made in the background)."""
    def subscribed() -> bool:
        try:
            return hub.count_processes() == count
        except ConnectionError:
            return False
    wait_until(subscribed, timeout=15)


def read_until(conn: threadws.Conn, last: set[Any], timeout: float = 10) -> list[Any]:
    """Every message up to and including the last of *last* to arrive."""
    got: list[Any] = []
    missing = set(last)
    while missing:
        message = conn.recv(timeout=timeout)
        got.append(message)
        missing.discard(message)
    return got


def test_every_connection_everywhere_gets_each_broadcast_once_in_order(redis_server: RedisServer) -> None:
    name, per_sender = room(), 60
    with ExitStack() as stack:
        nodes = [stack.enter_context(node(redis_server.url, name)) for _ in range(3)]
        wait_processes(nodes[0].hub, 3)
        clients = [n.dial() for n in nodes for _ in range(2)]
        senders = clients[::2]  # one on each process
        for k in range(per_sender):
            for i, sender in enumerate(senders):
                sender.send(f"{i}:{k}")
        nodes[1].hub.broadcast(b"\x00binary \xff")  # kept apart from text, and straight from the hub
        # Everything arrived everywhere...
        lasts = {f"{i}:{per_sender - 1}" for i in range(3)} | {b"\x00binary \xff"}
        received = [read_until(conn, lasts) for conn in clients]
        # ...so Redis has passed on every message; a fence from each process now comes after
        # any copy of them that could still be on its way (a process's own, sent back).
        fences = {f"fence {i}" for i in range(3)}
        for i, n in enumerate(nodes):
            n.hub.broadcast(f"fence {i}")
        for got, conn in zip(received, clients):
            got += read_until(conn, fences)
    for index, got in enumerate(received):
        data = [m for m in got if m not in fences]
        assert len(data) == len(set(data)) == 3 * per_sender + 1, f"client {index}: duplicates or losses"
        assert b"\x00binary \xff" in data and "\x00binary \xff" not in data
        for i in range(3):
            assert [m for m in data if isinstance(m, str) and m.startswith(f"{i}:")] == [
                f"{i}:{k}" for k in range(per_sender)
            ], f"client {index}: sender {i}'s messages out of order"


def test_a_process_does_not_get_its_own_broadcasts_back_from_redis(redis_server: RedisServer) -> None:
    name = room()
    with node(redis_server.url, name) as a, node(redis_server.url, name) as b:
        wait_processes(a.hub, 2)
        alice, bob = a.dial(), b.dial()
        for k in range(20):
            a.hub.broadcast(f"a{k}")
        assert read_until(bob, {"a19"}) == [f"a{k}" for k in range(20)]  # so Redis has passed them all on
        b.hub.broadcast("fence")  # it reaches a after any copies of a's own that Redis sent back
        assert read_until(alice, {"fence"}) == [f"a{k}" for k in range(20)] + ["fence"]


def test_url_options_do_not_change_what_the_backplane_speaks(redis_server: RedisServer) -> None:
    name = room()
    odd = redis_server.url + "?protocol=3&decode_responses=True&socket_timeout=60"
    with node(odd, name) as a, node(redis_server.url, name) as b:
        wait_processes(a.hub, 2)
        alice, bob = a.dial(), b.dial()
        alice.send("from a")
        assert bob.recv(timeout=5) == "from a"
        bob.send(b"from b")
        assert read_until(alice, {b"from b"}) == ["from a", b"from b"]


def test_count_processes_counts_processes_and_len_counts_local_connections(redis_server: RedisServer) -> None:
    name = room()
    with node(redis_server.url, name) as a, node(redis_server.url, name) as b:
        wait_processes(a.hub, 2)
        for _ in range(3):
            a.dial()
        b.dial()
        assert (len(a.hub), len(b.hub)) == (3, 1) and len(a.hub.connections) == 3
        assert a.hub.count_processes() == b.hub.count_processes() == 2
    assert threadws.Hub().count_processes() == 1


def test_one_pair_of_threads_per_backplane_ending_with_its_last_hub(redis_server: RedisServer) -> None:
    def backplane_threads() -> list[str]:
        return sorted(t.name for t in threading.enumerate() if t.name.startswith("threadws-backplane"))

    assert backplane_threads() == []
    backplane = threadws.RedisBackplane(redis_server.url)
    chat, news = threadws.Hub(room(), backplane=backplane), threadws.Hub(room(), backplane=backplane)
    assert backplane_threads() == ["threadws-backplane-pub", "threadws-backplane-sub"]
    with pytest.raises(ValueError, match="already open"):
        threadws.Hub(chat.name or "", backplane=backplane)
    with pytest.raises(ValueError, match="needs a name"):
        threadws.Hub(backplane=backplane)
    chat.close()
    assert backplane_threads() == ["threadws-backplane-pub", "threadws-backplane-sub"]
    news.close()
    assert backplane_threads() == []
    news.close()  # idempotent
    with threadws.Hub(chat.name, backplane=backplane) as again:  # the name is free again; threads anew
        assert backplane_threads() == ["threadws-backplane-pub", "threadws-backplane-sub"]
        wait_processes(again, 1)
    assert backplane_threads() == []


def test_redis_going_away_and_coming_back(private_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="threadws")
    name = room()
    unpublished: queue.Queue[threadws.PreparedMessage] = queue.Queue()
    with node(private_redis.url, name, on_unpublished=unpublished.put) as a, node(private_redis.url, name) as b:
        wait_processes(a.hub, 2)
        alice, anne, bob = a.dial(), a.dial(), b.dial()
        alice.send("before")
        assert anne.recv(timeout=5) == bob.recv(timeout=5) == "before"

        private_redis.kill()
        # Local delivery goes on; nothing waits for Redis; what was not published is reported.
        for k in range(50):
            alice.send(f"during {k}")
        for conn in (alice, anne):
            assert read_until(conn, {"during 49"})[-50:] == [f"during {k}" for k in range(50)]
        reported = [unpublished.get(timeout=10).data for _ in range(50)]
        assert reported == [f"during {k}" for k in range(50)]
        with pytest.raises(ConnectionError):
            a.hub.count_processes()

        private_redis.start()  # same port
        wait_processes(a.hub, 2)  # both subscribers are back
        # The publisher reconnects on its next broadcast (or after its backoff): probe until one crosses.
        probes = iter(range(1000))

        def crossed() -> bool:
            alice.send(f"probe {next(probes)}")
            try:
                return str(bob.recv(timeout=0.5)).startswith("probe")
            except TimeoutError:
                return False
        wait_until(crossed, timeout=15)
        bob.send("after")
        for conn in (alice, anne):
            assert read_until(conn, {"after"})[-1] == "after"
        assert not [m for m in read_until(bob, {"after"}) if m.startswith("during")]
    down = [r for r in caplog.records if "unreachable" in r.getMessage()]
    back = [r for r in caplog.records if "reachable again" in r.getMessage()]
    # Once per outage and per process (two backplanes here), not once per attempt or message.
    assert 1 <= len(down) <= 2 and 1 <= len(back) <= 2, [r.getMessage() for r in caplog.records]


def test_a_silent_redis_blocks_no_broadcast_and_no_close(private_redis: RedisServer) -> None:
    name = room()
    unpublished: list[threadws.PreparedMessage] = []
    backplane = threadws.RedisBackplane(private_redis.url, timeout=0.5, max_pending=4096)
    hub = threadws.Hub(name, backplane=backplane, on_unpublished=unpublished.append)
    try:
        wait_processes(hub, 1)
        hub.broadcast("warm")  # the publisher connects
        private_redis.freeze()  # connections stay open; nothing is answered
        sent = [f"{k:0100d}" for k in range(200)]
        for message in sent:
            hub.broadcast(message)  # a publisher stuck in a read: the outbox fills
        assert len(unpublished) > 100  # reported by broadcast() itself, at once
        # And the rest once the read has timed out ("warm" too, if it was not out before the freeze).
        wait_until(lambda: sorted(m.data for m in unpublished if m.data != "warm") == sent, timeout=10)
    finally:
        hub.close()  # returns although Redis still says nothing (the test's timeout would catch a hang)
        private_redis.thaw()


def test_a_stalled_client_is_dropped_and_delays_no_one(redis_server: RedisServer) -> None:
    name, messages, size = room(), 400, 16 * 1024
    dropped: queue.Queue[threadws.Conn] = queue.Queue()
    upgrader = threadws.Upgrader(ping_interval=None, max_write_queue=256 * 1024, close_timeout=1.0)
    with node(redis_server.url, name, upgrader, on_drop=dropped.put) as a, node(redis_server.url, name) as b:
        wait_processes(a.hub, 2)
        healthy = [a.dial(), a.dial(), b.dial(), b.dial()]
        stalled = handshake(a.server.server_address[1], "/")  # never reads again
        try:
            wait_until(lambda: len(a.hub) == 3)
            body = bytes(size - 8)
            received = {id(conn): 0 for conn in healthy}
            for k in range(messages):
                b.hub.broadcast(k.to_bytes(8, "big") + body)  # from the other process, through Redis
                if k % 8 == 7:  # keep the healthy ones' queues short however loaded the machine is
                    for conn in healthy:
                        while received[id(conn)] <= k:
                            data = conn.recv(timeout=30)
                            assert data[:8] == received[id(conn)].to_bytes(8, "big") and len(data) == size
                            received[id(conn)] += 1
            gone = dropped.get(timeout=10)
            assert gone.wait_closed(10) and "dropped by the hub" in str(gone.close_exception)
            assert len(a.hub) == 2 and dropped.empty()
            assert all(count == messages for count in received.values())
        finally:
            stalled.close()


def test_messages_threadws_did_not_publish_are_ignored(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="threadws")
    name = room()
    with node(redis_server.url, name) as a, node(redis_server.url, name) as b:
        wait_processes(a.hub, 2)
        alice = a.dial()
        channel = a.backplane.channel(name)
        other = b"\x01\x01" + os.urandom(8)
        raw = redis.Redis.from_url(redis_server.url)
        try:
            for junk in [b"", b"hello", b"\x02\x01" + os.urandom(8) + b"v2", b"\x01\x07" + os.urandom(8) + b"x",
                         other + b"\xff\xfe not UTF-8", b"\x01\x02" + os.urandom(8) + bytes(5 << 20)]:
                assert raw.publish(channel, junk) == 2
            assert raw.publish(channel, other + "fine ✓".encode()) == 2
        finally:
            raw.close()
        assert alice.recv(timeout=5) == "fine ✓"  # the first thing alice got
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 2 * 6, ignored  # each process logged each bad one


def test_without_redis_py_a_clear_error() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import threadws\n"
        "try:\n    threadws.RedisBackplane('redis://127.0.0.1:1/0')\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 'threadws[redis]'" in out.stdout, out.stdout + out.stderr


def test_bad_urls_and_arguments() -> None:
    with pytest.raises(ValueError):
        threadws.RedisBackplane("http://example.invalid/")
    with pytest.raises(ValueError):
        threadws.RedisBackplane("redis://127.0.0.1/0", timeout=0)


FORK_SCRIPT = """
import os, sys, threadws
from tests.conftest import wait_until
url, name = sys.argv[1], sys.argv[2]
hub = threadws.Hub(name, backplane=threadws.RedisBackplane(url))
got = []
server = threadws.serve(lambda conn: (hub.register(conn), conn.wait_closed()), "127.0.0.1", 0)
import threading; threading.Thread(target=server.serve_forever, daemon=True).start()
client = threadws.dial(f"ws://127.0.0.1:{server.server_address[1]}/", ping_interval=None)
wait_until(lambda: len(hub) == 1)
pid = os.fork()
if pid == 0:  # the child: a process of its own on the backplane, with threads and an id of its own
    wait_until(lambda: hub.count_processes() == 2)
    hub.broadcast("from the child")
    hub.close()
    os._exit(0)
print(client.recv(timeout=10), os.waitpid(pid, 0)[1], flush=True)
client.close(); server.shutdown(timeout=5); hub.close()
"""


def test_a_forked_process_joins_as_a_process_of_its_own(redis_server: RedisServer) -> None:
    from .example_process import ROOT, example_env

    out = subprocess.run([sys.executable, "-c", FORK_SCRIPT, redis_server.url, room()], capture_output=True,
                         text=True, timeout=60, cwd=ROOT, env=example_env())
    assert out.stdout.strip() == "from the child 0", out.stdout + out.stderr

