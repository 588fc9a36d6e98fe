"""Reused connection threads (threadws._workers, threadws.reuse_threads): bounded in number and in idle time, free when idle."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

import threadws
from threadws.settings import Settings

from .conftest import wait_until


@pytest.fixture(autouse=True)
def default_reuse() -> Iterator[None]:
    threadws.reuse_threads(0)  # start each test with no waiting thread
    threadws.reuse_threads()
    yield
    threadws.reuse_threads(0)
    threadws.reuse_threads()


def idle_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "threadws-idle"]


def open_and_close(count: int) -> set[int]:
    """Open *count* connections over socketpairs, then close them all; their threads' ids."""
    made = []
    idents: set[int] = set()
    for _ in range(count):
        a, b = socket.socketpair()
        conn = threadws.Conn(a, client=False, settings=Settings(ping_interval=None))
        made.append((conn, b))
        # (A reused thread takes the connection's name when it starts on it.)
        mine = wait_until(lambda: [t.ident for t in threading.enumerate() if t.name.startswith(conn.name)][1:])
        idents.update(t.ident for t in threading.enumerate() if t.name.startswith(conn.name))
        assert mine
    for conn, peer in made:
        conn.abort()
        peer.close()
    return idents


def test_a_finished_connections_threads_serve_the_next_one() -> None:
    first = open_and_close(1)
    wait_until(lambda: len(idle_threads()) == 2)
    second = open_and_close(1)
    assert first == second, "new threads were started although two were waiting"


def test_at_most_max_idle_threads_wait() -> None:
    threadws.reuse_threads(max_idle=3)
    open_and_close(5)  # ten threads finish
    wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("threadws-server")])
    assert len(idle_threads()) == 3


def test_waiting_threads_end_after_the_idle_timeout() -> None:
    threadws.reuse_threads(idle_timeout=0.2)
    open_and_close(2)
    wait_until(lambda: len(idle_threads()) == 4)
    wait_until(lambda: not idle_threads(), timeout=10)


def test_reuse_threads_0_ends_the_waiting_threads_at_once_and_turns_reuse_off() -> None:
    open_and_close(2)
    wait_until(lambda: len(idle_threads()) == 4)
    threadws.reuse_threads(0)
    wait_until(lambda: not idle_threads(), timeout=5)
    open_and_close(1)
    wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("threadws")])


def test_waiting_threads_use_no_cpu() -> None:
    open_and_close(10)
    wait_until(lambda: len(idle_threads()) == 20)

    def cpu_ticks() -> int:
        total = 0
        for thread in idle_threads():
            with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total

    before = cpu_ticks()
    threading.Event().wait(1.0)  # an interval to measure over, not a wait for a condition
    assert cpu_ticks() == before
    assert all(open(f"/proc/self/task/{t.native_id}/stat").read().rsplit(")", 1)[1].split()[0] == "S" for t in idle_threads())


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        threadws.reuse_threads(-1)
    with pytest.raises(ValueError):
        threadws.reuse_threads(1, -1.0)


if not os.path.exists("/proc/self/task"):  # pragma: no cover - Linux only
    pytestmark = pytest.mark.skip("needs /proc")
