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
"""

from __future__ import annotations

import os
import queue
import sys
import threading
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


if __name__ == "__main__":
    thread_rss()
    unmask_cost()
