"""Two floors under threadws's numbers that no change inside the design can lower.

    python bench/floors.py

* Resident memory of a parked Python thread. threadws's design runs three threads
  per server connection (the handler's, a reader and a writer), so a connection
  costs at least three of these before any socket, buffer or object.
* The cost of unmasking 1 MiB (RFC 6455 section 5.3) in pure Python, the
  fastest way threadws knows (threadws._frames) and plain big-integer XOR,
  next to websockets' C extension when it is installed. A server must unmask
  every byte a client sends.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from threadws._frames import unmask  # noqa: E402

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
    data = os.urandom(1 << 20)
    key = b"\x12\x34\x56\x78"
    n = len(data)

    def big_int() -> bytes:
        keys = (key * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")).to_bytes(n, "little")

    ways = [("threadws._frames.unmask (bytes.translate)", lambda: unmask(data, key)), ("big-integer XOR", big_int)]
    try:
        from websockets.speedups import apply_mask  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        ways.append(("websockets.speedups.apply_mask (C)", lambda: apply_mask(data, key)))
    expected = unmask(data, key)
    for name, way in ways:
        assert way() == expected, name
        seconds = min(timeit.repeat(way, number=20, repeat=5)) / 20
        print(f"unmask 1 MiB, {name}: {seconds * 1e3:.2f} ms")


if __name__ == "__main__":
    thread_rss()
    unmask_cost()
