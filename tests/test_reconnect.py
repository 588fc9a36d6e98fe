"""threadws.reconnecting(): a real server that drops connections, refuses, or is not there."""

from __future__ import annotations

import http.server
import itertools
import logging
import random
import re
import socket
import threading
from collections.abc import Iterator

import pytest

import threadws
from threadws import ConnectionClosed, HandshakeError

from .conftest import start_server, stop_server, url_of

FAST = {"backoff_initial": 0.01, "backoff_max": 0.05, "ping_interval": None, "close_timeout": 2, "timeout": 5}


def _dropping_server(endings: list[str]) -> tuple[threadws.Server, list[str]]:
    """Connection n gets "hello n", then ends as endings[n-1] says: a close code, "abort" or "wait" (for the client)."""
    counter = itertools.count(1)
    seen: list[str] = []

    def handler(conn: threadws.Conn) -> None:
        n = next(counter)
        conn.send(f"hello {n}")
        how = endings[min(n, len(endings)) - 1]
        if how == "abort":
            conn.recv(timeout=5)  # the client's "got it": the greeting is not lost in the abort
            conn.abort()
        elif how == "wait":
            try:
                for _ in conn:
                    pass
            except ConnectionClosed as exc:
                seen.append(f"{n}: {exc.code}")
                return
            seen.append(f"{n}: {conn.close_exception.code if conn.close_exception else None}")
        else:
            conn.close(int(how), "bye")

    return start_server(handler), seen


def _greetings(connections: Iterator[threadws.Conn], count: int) -> list[str]:
    got = []
    for conn in connections:
        got.append(conn.recv(timeout=5))
        try:
            conn.send("got it")
        except ConnectionClosed:
            pass  # the server has already closed this one
        if len(got) == count:
            break
    return got


def test_dials_again_after_each_drop():
    server, _ = _dropping_server(["1012", "abort", "1001"])
    try:
        assert _greetings(threadws.reconnecting(url_of(server), **FAST), 4) == [
            "hello 1", "hello 2", "hello 3", "hello 4"]
    finally:
        stop_server(server)


def test_a_close_code_the_caller_names_ends_the_loop():
    server, _ = _dropping_server(["1012", "4000", "1000"])
    try:
        seen = []
        for conn in threadws.reconnecting(url_of(server), stop_codes=[4000], **FAST):
            seen.append(conn.recv(timeout=5))
            with pytest.raises(ConnectionClosed):
                conn.recv(timeout=5)
        assert seen == ["hello 1", "hello 2"]  # ended after the server's 4000, without a break
    finally:
        stop_server(server)


def test_a_close_the_client_starts_does_not_end_the_loop():
    server, seen = _dropping_server(["wait"])
    try:
        got = []
        for conn in threadws.reconnecting(url_of(server), stop_codes=[1000], **FAST):
            got.append(conn.recv(timeout=5))
            if len(got) == 3:
                break
            # The body returns with the connection open: the loop closes it (1000) and dials again.
        assert got == ["hello 1", "hello 2", "hello 3"]
        assert conn.closed  # leaving the loop closed the last one too
    finally:
        stop_server(server)
    assert seen[:3] == ["1: 1000", "2: 1000", "3: 1000"]


class _RefusingHandler(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next status from the server's list; 101 upgrades."""

    server: _RefusingServer

    def do_GET(self) -> None:
        status = self.server.statuses.pop(0) if self.server.statuses else 101
        self.server.answered.append(status)
        if status == 101:
            conn = threadws.Upgrader(ping_interval=None, close_timeout=2).upgrade(self)
            conn.send("welcome")
            for _ in conn:
                pass
            return
        self.send_response(status)
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _RefusingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), _RefusingHandler)
        self.statuses = statuses
        self.answered: list[int] = []
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="test-refusing-serve", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


def test_transient_refusals_are_retried():
    server = _RefusingServer([503, 429, 408])
    try:
        url = f"ws://127.0.0.1:{server.server_address[1]}/"
        for conn in threadws.reconnecting(url, **FAST):
            assert conn.recv(timeout=5) == "welcome"
            break
        assert server.answered == [503, 429, 408, 101]
    finally:
        server.stop()


@pytest.mark.parametrize("status", [401, 403, 404, 407, 301])
def test_a_refusal_that_would_not_change_is_raised(status):
    server = _RefusingServer([status])
    try:
        url = f"ws://127.0.0.1:{server.server_address[1]}/"
        with pytest.raises(HandshakeError) as info:
            for _ in threadws.reconnecting(url, **FAST):
                pytest.fail("no connection was expected")
        assert info.value.status == status
        assert server.answered == [status]
    finally:
        server.stop()


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_max_failures_and_capped_jittered_waits(caplog):
    caplog.set_level(logging.INFO, logger="threadws")
    url = f"ws://127.0.0.1:{_dead_port()}/"
    with pytest.raises(ConnectionRefusedError):
        for _ in threadws.reconnecting(url, max_failures=4, backoff_initial=0.01, backoff_factor=2,
                                       backoff_max=0.03, timeout=5):
            pytest.fail("nothing listens there")
    waits = [float(m.group(1)) for r in caplog.records
             if (m := re.fullmatch(r"reconnecting to .* in ([\d.]+) s", r.getMessage()))]
    assert len(waits) == 3  # between 4 attempts
    assert all(0 <= wait <= 0.03 for wait in waits)
    assert sum("could not connect" in r.getMessage() for r in caplog.records) == 3


def test_stop_event_cuts_a_long_wait_short():
    stop = threading.Event()

    class StopOnWait(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("reconnecting to"):
                stop.set()  # another thread would do this; the wait must end at once

    handler = StopOnWait()
    logger = logging.getLogger("threadws")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        url = f"ws://127.0.0.1:{_dead_port()}/"
        connections = threadws.reconnecting(url, backoff_initial=3600, backoff_max=3600, stop=stop, timeout=5)
        assert list(connections) == []  # a wait of up to an hour, cut short: the loop just ends
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_arguments_are_checked_at_once(echo_server):
    with pytest.raises(ValueError):
        threadws.reconnecting(url_of(echo_server), sock=socket.socket())
    with pytest.raises(ValueError):
        threadws.reconnecting(url_of(echo_server), backoff_initial=5, backoff_max=1)
    with pytest.raises(ValueError):  # a bad URL is not retried
        next(iter(threadws.reconnecting("http://example.com/")))


class _RecordingStop(threading.Event):
    """A stop= event that records each wait the loop asks of it and returns at once (never set)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        return self.is_set()


def test_waits_grow_exponentially_up_to_the_cap_with_full_jitter(monkeypatch):
    real_uniform = random.uniform
    draws: list[tuple[float, float, float]] = []

    def uniform(low: float, high: float) -> float:
        value = real_uniform(low, high)
        draws.append((low, high, value))
        return value

    monkeypatch.setattr(random, "uniform", uniform)
    stop = _RecordingStop()
    url = f"ws://127.0.0.1:{_dead_port()}/"
    with pytest.raises(ConnectionRefusedError):
        for _ in threadws.reconnecting(url, max_failures=8, backoff_initial=0.5, backoff_factor=3, backoff_max=20,
                                       stop=stop, timeout=5):
            pytest.fail("nothing listens there")
    # Between 8 attempts, 7 waits: each drawn from [0, min(cap, initial * factor ** n)].
    assert [(low, high) for low, high, _ in draws] == [(0, b) for b in (1.5, 4.5, 13.5, 20, 20, 20, 20)]
    assert stop.waits == [value for _, _, value in draws]  # the wait is the draw (no Retry-After here)
    assert all(0 <= value <= high for _, high, value in draws)
    assert len(set(stop.waits)) > 1  # jittered, not the bound each time
