"""Two floors under threadws's numbers that no change inside the design can lower.

    python bench/floors.py

* Resident memory of a parked Python thread. threadws's design runs three threads
  per server connection (the handler's, a reader and a writer), so a connection
  costs at least three of these before any socket, buffer or object.
* The cost of unmasking 1 KiB and 1 MiB (RFC 6455 section 5.3): threadws's C
  extension (threadws._speedups, when built), its pure-Python fallback
  (threadws._frames.py_unmask, and py_unmask_into in place, which the
  connection uses for long frames) and plain big-integer XOR, next to
  websockets' C extension when it is installed. A server must unmask every
  byte a client sends.
* The hand-offs of a request-response. Under threadws's design the application
  never touches the socket: a message goes application -> writer thread ->
  socket, and socket -> reader thread -> application. This measures one 66-byte
  request-response over loopback TCP against an echo in another process, done
  by the calling thread itself (what websocket-client does) and through a
  writer and a reader thread handing off over ``queue.SimpleQueue`` (no framing,
  no parsing: only the hand-offs), so the ratio between them is an upper bound
  on what the threaded client can reach against a single-threaded one.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from threadws import _frames  # noqa: E402

THREADS = 2000


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def thread_rss() -> None:
    for name in ("queue.SimpleQueue.get", "threading.Event.wait"):
        before = rss_kib()
        wakes: list[queue.SimpleQueue[None]] = []
        event = threading.Event()
        threads = []
        for _ in range(THREADS):
            if name == "threading.Event.wait":
                thread = threading.Thread(target=event.wait, daemon=True)
            else:
                wake: queue.SimpleQueue[None] = queue.SimpleQueue()
                wakes.append(wake)
                thread = threading.Thread(target=wake.get, daemon=True)
            thread.start()
            threads.append(thread)
        per_thread = (rss_kib() - before) / THREADS
        print(f"a thread parked in {name}: {per_thread:.1f} KiB resident ({THREADS} threads)")
        event.set()
        for wake in wakes:
            wake.put(None)
        for thread in threads:
            thread.join()


def unmask_cost() -> None:
    key = b"\x12\x34\x56\x78"
    print(f"threadws masks with {'C (threadws._speedups)' if _frames.SPEEDUPS else 'pure Python'} here")
    for n, label in ((1 << 10, "1 KiB"), (1 << 20, "1 MiB")):
        data = os.urandom(n)
        buf = bytearray(data)

        def big_int() -> bytes:
            keys = (key * ((n >> 2) + 1))[:n]
            return (int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")).to_bytes(n, "little")

        ways: list[tuple[str, Callable[[], object]]] = []
        try:
            from threadws import _speedups
        except ImportError:
            print("(threadws._speedups is not built: no C figures for threadws)")
        else:
            ways.append(("threadws C, new bytes (_speedups.mask)", lambda: _speedups.mask(data, key)))
            ways.append(("threadws C, in place (_speedups.mask_into)", lambda: _speedups.mask_into(buf, 0, n, key)))
        ways.append(("threadws pure Python, new bytes (py_unmask)", lambda: _frames.py_unmask(data, key)))
        ways.append(("threadws pure Python, in place (py_unmask_into)", lambda: _frames.py_unmask_into(buf, 0, n, key)))
        ways.append(("big-integer XOR", big_int))
        try:
            from websockets.speedups import apply_mask  # type: ignore[import-not-found]
        except ImportError:
            pass
        else:
            ways.append(("websockets.speedups.apply_mask (C)", lambda: apply_mask(data, key)))
        expected = _frames.py_unmask(data, key)
        number = 20_000 if n < 1 << 16 else 50
        for name, way in ways:
            if "in place" in name:
                buf[:] = data
                way()
                assert buf == expected, name
            else:
                assert way() == expected, name
            seconds = min(timeit.repeat(way, number=number, repeat=5)) / number
            print(f"unmask {label}, {name}: {seconds * 1e6:,.2f} µs")


ECHO = """
import socket, sys
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
sock, _ = listener.accept()
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = bytearray(65536)
while n := sock.recv_into(buf):
    sock.sendall(buf[:n])
"""


def handoff_cost(seconds: float = 3.0) -> None:
    message = b"\x82\x40" + bytes(64)  # what a 64 B binary frame from a server looks like (no mask)
    for name in ("the calling thread does the socket calls", "through a writer and a reader thread"):
        echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
        assert echo.stdout is not None
        sock = socket.create_connection(("127.0.0.1", int(echo.stdout.readline())))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if name.startswith("the calling"):
                def round_trip() -> None:
                    sock.sendall(message)
                    got = 0
                    while got < len(message):
                        got += len(sock.recv(65536))
            else:
                outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
                inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()

                def writer() -> None:
                    while (item := outbox.get()) is not None:
                        sock.sendall(item)

                def reader() -> None:
                    pending = 0
                    while data := sock.recv(65536):
                        pending += len(data)
                        while pending >= len(message):
                            pending -= len(message)
                            inbox.put(message)

                threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=reader, daemon=True)]
                for thread in threads:
                    thread.start()

                def round_trip() -> None:
                    outbox.put(message)
                    inbox.get()
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                round_trip()
                count += 1
            elapsed = time.perf_counter() - start
            print(f"64 B request-response, {name}: {count / elapsed:,.0f} per second")
        finally:
            if not name.startswith("the calling"):
                outbox.put(None)
            sock.shutdown(socket.SHUT_RDWR)  # wakes the reader; the echo sees EOF and ends
            sock.close()
            echo.wait(10)


if __name__ == "__main__":
    thread_rss()
    unmask_cost()
    handoff_cost()
