#!/usr/bin/env python3
"""What each step of a threadws server connection's life costs, step by step, in one process.

    python bench/handshake_costs.py [--n 2000]

The handshakes scenario (bench/run.py) gives the whole: the server's CPU per
connection that does connect, one 64 B echo, close. This script times the
steps that make it up, each alone, so PROFILE.md can say where that CPU goes
and what cutting each step would save:

* starting a thread and letting it end (threadws starts three per connection:
  socketserver's, the reader and the writer), with ``threading.Thread`` and with
  ``_thread.start_new_thread``;
* parsing the request head: ``BaseHTTPRequestHandler.parse_request`` (which
  goes through ``http.client.parse_headers`` and ``email.parser``) against a
  plain split of the lines;
* the Upgrader's decision and its 101 (``handshake.check_request`` and
  ``build_response``), and parsing that 101 back into headers
  (``handshake.parse_head``, which ``Upgrader`` does to fill
  ``Conn.response_headers``);
* constructing a server ``Conn`` over a socketpair (its two threads started),
  without and with the threads;
* one 64 B echo through a ``Conn`` (peer -> reader -> application -> writer -> peer);
* the closing handshake as the handshakes scenario does it: the peer sends a
  close frame, the server answers and closes TCP, its threads end.

Each figure is CPU time of the whole process (``time.process_time``, all
threads) per operation, the median of 5 batches of --n; wall time per
operation beside it. The peer's side of the socketpair is a plain socket in
the measuring thread, doing as little as a socket can.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import io
import os
import socket
import statistics
import sys
import threading
import time
import _thread
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import threadws  # noqa: E402
from threadws import handshake  # noqa: E402
from threadws.settings import Settings  # noqa: E402

# What Node's `ws` (the load generator) sends, byte for byte but for the key.
HEAD = (b"GET / HTTP/1.1\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nHost: 127.0.0.1:8765\r\n\r\n")
SETTINGS = Settings(ping_interval=None, read_limit=64 << 20, max_read_queue=64 << 20, max_write_queue=64 << 20)
MASK = b"\x01\x02\x03\x04"


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN set, short payload), masked with MASK."""
    body = bytes(b ^ MASK[i & 3] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + MASK + body


def timed(fn: Callable[[], None], n: int, batches: int = 5) -> tuple[float, float]:
    """(CPU µs, wall µs) per call of fn: medians over batches of n calls."""
    cpu, wall = [], []
    for _ in range(batches):
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            fn()
        cpu.append((time.process_time() - c0) / n * 1e6)
        wall.append((time.perf_counter() - w0) / n * 1e6)
    return statistics.median(cpu), statistics.median(wall)


def noop() -> None:
    pass


def thread_start_threading() -> None:
    t = threading.Thread(target=noop, name="threadws-costs", daemon=True)
    t.start()
    t.join()


def thread_start_raw() -> None:
    done = _thread.allocate_lock()
    done.acquire()
    _thread.start_new_thread(done.release, ())
    done.acquire()


class Parser(http.server.BaseHTTPRequestHandler):
    """parse_request without a socket: what http.server does with each request head."""

    def __init__(self) -> None:  # no socket, no handle(): only the parsing
        pass


def parse_request() -> None:
    p = Parser()
    line, _, rest = HEAD.partition(b"\r\n")
    p.raw_requestline = line + b"\r\n"
    p.rfile = io.BytesIO(rest)
    assert p.parse_request()


def parse_headers_only() -> None:
    http.client.parse_headers(io.BytesIO(HEAD.partition(b"\r\n")[2]))


def split_headers() -> None:
    """The least a server must do: split the lines and lower-case the names."""
    lines = HEAD[:-4].decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}


HEADERS = http.client.parse_headers(io.BytesIO(HEAD.partition(b"\r\n")[2]))


def check_and_build() -> None:
    accepted = handshake.check_request("GET", "HTTP/1.1", HEADERS)
    handshake.build_response(accepted)


RESPONSE = handshake.build_response(handshake.check_request("GET", "HTTP/1.1", HEADERS))


def parse_response() -> None:
    handshake.parse_head(RESPONSE[:-4])


class ConnSteps:
    """Conn construction, one echo and the closing handshake, each over a fresh socketpair."""

    def __init__(self) -> None:
        self.pending: list[tuple[threadws.Conn, socket.socket]] = []

    def make(self) -> tuple[threadws.Conn, socket.socket]:
        ours, peer = socket.socketpair()
        conn = threadws.Conn(ours, client=False, settings=SETTINGS, path="/", request_headers=HEADERS,
                             response_headers=HEADERS)
        return conn, peer

    def construct(self) -> None:
        self.pending.append(self.make())

    def construct_cleanup(self) -> None:
        for conn, peer in self.pending:
            conn.abort()
            peer.close()
        self.pending.clear()

    def close_handshake(self, conn: threadws.Conn, peer: socket.socket) -> None:
        """The peer closes as Node's ws does; the server answers, closes TCP and its threads end."""
        peer.sendall(masked(0x8, b"\x03\xe8"))
        while peer.recv(4096):
            pass
        peer.close()
        assert conn.wait_closed(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="operations per batch (5 batches)")
    args = parser.parse_args()
    n = args.n
    rows: list[tuple[str, float, float]] = []

    def row(name: str, fn: Callable[[], None], count: int = n) -> None:
        cpu, wall = timed(fn, count)
        rows.append((name, cpu, wall))
        print(f"{name:<72} {cpu:8.1f} µs CPU {wall:8.1f} µs wall", file=sys.stderr, flush=True)

    row("threading.Thread: create, start, run nothing, join", thread_start_threading)
    row("_thread.start_new_thread: start, run nothing, wait for it", thread_start_raw)
    row("BaseHTTPRequestHandler.parse_request (http.client / email.parser)", parse_request)
    row("  of which http.client.parse_headers", parse_headers_only)
    row("split the head into a dict by hand (for comparison)", split_headers)
    row("handshake.check_request + build_response (the Upgrader's decision)", check_and_build)
    row("handshake.parse_head(101) (Conn.response_headers, parsed back)", parse_response)

    steps = ConnSteps()
    small = max(50, n // 10)

    def construct_batch() -> None:
        steps.construct()

    # Construction alone: build `small` connections, then tear them down outside the timing.
    cpu, wall = [], []
    for _ in range(5):
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(small):
            construct_batch()
        cpu.append((time.process_time() - c0) / small * 1e6)
        wall.append((time.perf_counter() - w0) / small * 1e6)
        steps.construct_cleanup()
    rows.append(("Conn(...) over a socketpair, server side (starts reader + writer)", statistics.median(cpu),
                 statistics.median(wall)))
    print(f"{rows[-1][0]:<72} {rows[-1][1]:8.1f} µs CPU {rows[-1][2]:8.1f} µs wall", file=sys.stderr)

    # One 64 B echo through a live Conn: reader -> application (this thread) -> writer.
    conn, peer = steps.make()
    frame = masked(0x2, bytes(64))

    def echo() -> None:
        peer.sendall(frame)
        conn.send(conn.recv(timeout=10))
        got = 0
        while got < 66:
            got += len(peer.recv(4096))

    row("one 64 B echo through a Conn (peer -> reader -> app -> writer -> peer)", echo)
    conn.abort()
    peer.close()

    # The closing handshake, each on a fresh connection built outside the timing.
    cpu, wall = [], []
    for _ in range(5):
        batch = [steps.make() for _ in range(small)]
        c0, w0 = time.process_time(), time.perf_counter()
        for conn, peer in batch:
            steps.close_handshake(conn, peer)
        cpu.append((time.process_time() - c0) / small * 1e6)
        wall.append((time.perf_counter() - w0) / small * 1e6)
    rows.append(("closing handshake: peer's close -> server's close, TCP close, threads end",
                 statistics.median(cpu), statistics.median(wall)))
    print(f"{rows[-1][0]:<72} {rows[-1][1]:8.1f} µs CPU {rows[-1][2]:8.1f} µs wall", file=sys.stderr)

    print("| step | CPU µs | wall µs |\n| --- | --- | --- |")
    for name, cpu_us, wall_us in rows:
        print(f"| {name} | {cpu_us:,.1f} | {wall_us:,.1f} |")


if __name__ == "__main__":
    main()
