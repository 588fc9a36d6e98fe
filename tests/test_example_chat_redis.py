"""The chat examples in one room across processes, through a real Redis.

Five server processes share the session's redis-server: the Flask chat under
gunicorn with three workers (``upgrade_wsgi``) and the ``serve()`` chat twice.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis

import threadws

from .conftest import wait_until
from .example_process import ROOT, example_env, run_example
from .peers.browser import open_browser, require_browser
from .redis_server import RedisServer

CHAT = ROOT / "examples" / "chat" / "server.py"
CHANNEL = "threadws:hub:chat"  # the examples' hub is called "chat"
WORKERS = 3


@contextmanager
def gunicorn_chat(redis_url: str, log: Path, *extra: str) -> Iterator[tuple[int, list[int]]]:
    """The Flask chat under gunicorn, WORKERS gthread workers; yields (port, worker pids)."""
    pytest.importorskip("gunicorn")
    app = f'examples.flask_chat.app:create_app(redis="{redis_url}")'
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", str(WORKERS),
             "--threads", "64", "--bind", "127.0.0.1:0", "--no-control-socket", "--config", "/dev/null",
             "--graceful-timeout", "1", *extra, app],
            cwd=ROOT, env=example_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True,  # its own process group: killing it takes the workers too
        )  # fmt: skip
    try:
        def started() -> tuple[int, list[int]] | None:
            text = log.read_text(errors="replace")
            port = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text)
            pids = [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", text)]
            assert proc.poll() is None, f"gunicorn exited: {text}"
            return (int(port.group(1)), pids) if port and len(pids) == WORKERS else None

        yield wait_until(started, timeout=30)
    finally:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait(10)


def serving_pid(client: threadws.Conn, server_port: int, pids: list[int]) -> int | None:
    """Which of *pids* holds the server's end of *client*'s TCP connection (from /proc)."""
    client_port = client.local_address[1]
    inodes = set()
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
            if local == server_port and remote == client_port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
            except OSError:
                continue  # closed meanwhile
    return None


def subscribers(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(dict(client.pubsub_numsub(CHANNEL))[CHANNEL.encode()])
    finally:
        client.close()


def read_until(conn: threadws.Conn, last: set[str], timeout: float = 15) -> list[str]:
    got: list[str] = []
    missing = set(last)
    while missing:
        message = conn.recv(timeout=timeout)
        assert isinstance(message, str)
        got.append(message)
        missing.discard(message)
    return got


@pytest.mark.parametrize("preload", [False, True], ids=["", "preload"])
def test_one_room_across_gunicorn_workers_and_serve_processes(
    redis_server: RedisServer, tmp_path: Path, preload: bool
) -> None:
    url, per_sender = redis_server.url, 20
    with ExitStack() as stack:
        # With --preload the app (and its hub) is made in gunicorn's master, which then forks the
        # workers: each starts a backplane of its own, and the master stays subscribed too.
        extra = ["--preload"] if preload else []
        port, workers = stack.enter_context(gunicorn_chat(url, tmp_path / "gunicorn.log", *extra))
        chats = [stack.enter_context(run_example(CHAT, ["--redis", url], tmp_path / f"chat{i}.log")) for i in range(2)]
        expected = WORKERS + 2 + preload
        try:
            wait_until(lambda: subscribers(url) == expected, timeout=30)
        except AssertionError:
            raise AssertionError(f"{subscribers(url)} subscribers, not {expected}; gunicorn said:\n"
                                 + (tmp_path / "gunicorn.log").read_text(errors="replace")) from None

        # Clients on every gunicorn worker. The kernel hands each connection to whichever worker
        # accepts first, and an idle worker tends to win every time: connect a few at once, in
        # rounds, until every worker has one.
        by_worker: dict[int, list[threadws.Conn]] = {pid: [] for pid in workers}
        clients: list[threadws.Conn] = []
        pool = stack.enter_context(ThreadPoolExecutor(6))
        for _ in range(10):
            burst = list(pool.map(lambda _: threadws.dial(f"ws://127.0.0.1:{port}/ws", ping_interval=None), range(6)))
            clients += burst
            for conn in burst:
                by_worker[wait_until(lambda: serving_pid(conn, port, workers))].append(conn)
            if all(by_worker.values()):
                break
        assert all(by_worker.values()), {pid: len(conns) for pid, conns in by_worker.items()}
        on_chats = [threadws.dial(chat.ws_url("/ws"), ping_interval=None) for chat in chats for _ in range(2)]
        clients += on_chats
        # A connection is in the room once its handler has registered it: then its own words come back.
        for j, conn in enumerate(clients):
            conn.send(f"join {j}")
            while conn.recv(timeout=15) != f"join {j}":
                pass
        # One sender on each of the five processes, all talking at once.
        senders = [conns[0] for conns in by_worker.values()] + on_chats[::2]
        for k in range(per_sender):
            for i, sender in enumerate(senders):
                sender.send(f"{i}:{k}")
        lasts = {f"{i}:{per_sender - 1}" for i in range(len(senders))}
        received = [read_until(conn, lasts) for conn in clients]
        # Everything has gone through Redis now, so a fence from each process comes after any
        # duplicate that could still be on its way.
        fences = {f"fence {i}" for i in range(len(senders))}
        for i, sender in enumerate(senders):
            sender.send(f"fence {i}")
        for got, conn in zip(received, clients):
            got += read_until(conn, fences)
            got[:] = [m for m in got if not m.startswith("join ")]  # late ones from those who joined after
        for conn in clients:
            conn.close()

    for index, got in enumerate(received):
        data = [m for m in got if m not in fences]
        assert len(data) == len(set(data)) == len(senders) * per_sender, f"client {index}: duplicates or losses"
        for i in range(len(senders)):
            mine = [m for m in data if m.startswith(f"{i}:")]
            assert mine == [f"{i}:{k}" for k in range(per_sender)], f"client {index}: sender {i} out of order"


@pytest.mark.interop
def test_browsers_on_two_processes_chat(redis_server: RedisServer, tmp_path: Path) -> None:
    require_browser()
    url = redis_server.url
    with ExitStack() as stack:
        one, two = (stack.enter_context(run_example(CHAT, ["--redis", url], tmp_path / f"chat{i}.log"))
                    for i in range(2))  # fmt: skip
        browser = stack.enter_context(open_browser())
        wait_until(lambda: subscribers(url) == 2, timeout=30)
        connected = "document.getElementById('status').textContent === 'connected'"
        browser.get(one.url)
        first = browser.current_window
        browser.wait_for(connected)
        second = browser.new_window(two.url)
        browser.wait_for(connected)

        def say(window: str, text: str) -> None:
            browser.switch_to(window)
            browser.driver.find_element("id", "msg").send_keys(text)
            browser.driver.find_element("id", "send").click()

        def ends_with(window: str, *expected: str) -> None:
            browser.switch_to(window)
            want = json.dumps(json.dumps(list(expected), separators=(",", ":"), ensure_ascii=False))  # as JS writes it
            browser.wait_for(
                f"(() => {{ const l = [...document.querySelectorAll('#log div')].map(d => d.textContent);"
                f" return JSON.stringify(l.slice(-{len(expected)})) === {want}; }})()"
            )  # fmt: skip

        # In the room once their own words come back (the server registers a connection just
        # after the handshake): first one, then two, which one must see through Redis.
        say(first, "one is here")
        ends_with(first, "one is here")
        say(second, "two is here")
        for window in (first, second):
            ends_with(window, "two is here")
        say(first, "hello from process one")
        for window in (first, second):
            ends_with(window, "two is here", "hello from process one")
        say(second, "and from process two ✓")
        for window in (first, second):
            ends_with(window, "two is here", "hello from process one", "and from process two ✓")


def test_redis_restarting_under_two_chat_processes(private_redis: RedisServer, tmp_path: Path) -> None:
    url = private_redis.url
    with ExitStack() as stack:
        one, two = (stack.enter_context(run_example(CHAT, ["--redis", url], tmp_path / f"chat{i}.log"))
                    for i in range(2))  # fmt: skip
        wait_until(lambda: subscribers(url) == 2, timeout=30)
        alice, anne = (threadws.dial(one.ws_url("/ws"), ping_interval=None) for _ in range(2))
        bob = threadws.dial(two.ws_url("/ws"), ping_interval=None)
        for j, conn in enumerate((alice, anne, bob)):  # in the room once their own words come back
            conn.send(f"join {j}")
            while conn.recv(timeout=15) != f"join {j}":
                pass
        alice.send("before")
        assert read_until(bob, {"before"})[-1] == "before"

        private_redis.kill()
        alice.send("while Redis is away")  # this process's room goes on
        assert read_until(anne, {"while Redis is away"})[-1] == "while Redis is away"
        private_redis.start()
        wait_until(lambda: subscribers(url) == 2, timeout=30)  # both processes are back on Redis

        def crossed() -> bool:  # the first broadcast or two may still find the old connection
            bob.send("probe")
            try:
                return "probe" in read_until(alice, {"probe"}, timeout=0.5)
            except TimeoutError:
                return False

        wait_until(crossed, timeout=30)
        bob.send("after")
        assert read_until(alice, {"after"})[-1] == "after"
        assert "while Redis is away" not in read_until(bob, {"after"})  # lost, as documented
        for conn in (alice, anne, bob):
            conn.close()
