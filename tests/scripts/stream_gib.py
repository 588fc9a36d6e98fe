"""Stream one big message each way through a loopback connection; print the peak memory.

Run in its own process so that VmHWM (the peak resident set) means something:
``python tests/scripts/stream_gib.py SIZE`` prints JSON with the baseline and
peak RSS and each side's SHA-256 of what it received.
"""

from __future__ import annotations

import hashlib
import json
import queue
import sys
import threading

import threadws
from threadws import MessageType

CHUNK = bytes(range(256)) * 256  # 64 KiB, not all the same byte


def vm(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def produce(writer: threadws.MessageWriter, size: int) -> str:
    digest = hashlib.sha256()
    sent = 0
    while sent < size:
        chunk = CHUNK[: min(len(CHUNK), size - sent)]
        writer.write(chunk)
        digest.update(chunk)
        sent += len(chunk)
    writer.close()
    return digest.hexdigest()


def consume(reader: threadws.MessageReader) -> tuple[int, str]:
    digest = hashlib.sha256()
    total = 0
    for chunk in reader:
        digest.update(chunk)
        total += len(chunk)
    return total, digest.hexdigest()


def main() -> None:
    size = int(sys.argv[1])
    results: queue.Queue[object] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        kind, reader = conn.next_reader()
        results.put(consume(reader))
        with conn.next_writer(MessageType.BINARY) as writer:
            results.put(produce(writer, size))
        conn.recv()  # until the client closes

    # 1 GiB in 64 KiB fragments is 16,384 frames: over the default max_fragments.
    settings = {"read_limit": 1 << 40, "max_fragments": 1 << 20, "ping_interval": None}
    server = threadws.serve(handler, "127.0.0.1", 0, upgrader=threadws.Upgrader(**settings))
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    conn = threadws.dial("ws://%s:%d/" % server.server_address, **settings)
    # Warm up every code path once, then take the baseline.
    with conn.next_writer(MessageType.BINARY) as writer:
        writer.write(CHUNK)
    results.get(timeout=30)
    _, reader = conn.next_reader()
    consume(reader)
    results.get(timeout=30)
    conn.close()
    baseline = vm("VmRSS")

    conn = threadws.dial("ws://%s:%d/" % server.server_address, **settings)
    with conn.next_writer(MessageType.BINARY) as writer:
        up_sent = produce(writer, size)
    up_received = results.get(timeout=600)
    _, reader = conn.next_reader()
    down_received = consume(reader)
    down_sent = results.get(timeout=600)
    conn.close()
    server.shutdown()
    print(json.dumps({
        "baseline_rss": baseline,
        "peak_rss": vm("VmHWM"),
        "up": [up_sent, up_received],
        "down": [down_sent, down_received],
    }))


if __name__ == "__main__":
    main()
