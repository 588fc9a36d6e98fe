"""permessage-deflate benchmark: compressed vs uncompressed echo throughput for 4 KiB JSON messages.

Runs a threadws echo server and client over loopback, once without compression
and once for each compression setting, and prints messages per second
(round trips, pipelined) and the compression ratio on the wire.

    python bench/deflate_bench.py [--count 5000] [--size 4096]
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time

from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

import threadws
from threadws.compression import Agreement, Compression, PerMessageDeflate


def make_messages(count: int, size: int, seed: int = 7692) -> list[str]:
    """Distinct JSON messages of *size* bytes, like an API's event stream."""
    rng = random.Random(seed)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    messages = []
    for n in range(count):
        records, text = [], ""
        while True:
            records.append(
                {
                    "id": rng.randrange(10**9),
                    "user": f"{rng.choice(words)}_{rng.randrange(1000)}",
                    "status": rng.choice(["active", "idle", "away"]),
                    "score": round(rng.random() * 100, 3),
                    "tags": rng.sample(words, 3),
                    "ts": 1_700_000_000 + n * 10 + len(records),
                }
            )
            candidate = json.dumps({"seq": n, "records": records})
            if len(candidate) > size:
                break
            text = candidate
        messages.append(text.ljust(size))  # exactly *size* bytes (JSON allows trailing spaces)
    return messages


def wire_ratio(messages: list[str], config: Compression) -> float:
    """Bytes a server puts on the wire with *config*, over the bytes without compression."""
    agreement = Agreement(
        config.server_no_context_takeover,
        config.client_no_context_takeover,
        config.server_max_window_bits,
        config.client_max_window_bits,
    )
    plain = Connection(ConnectionType.SERVER)
    deflating = Connection(
        ConnectionType.SERVER, [PerMessageDeflate(agreement, config, client=False, read_limit=1 << 20)]
    )
    raw = sum(len(plain.send(TextMessage(data=m))) for m in messages)
    compressed = sum(len(deflating.send(TextMessage(data=m))) for m in messages)
    return raw / compressed


def echo(conn: threadws.Conn) -> None:
    for message in conn:
        conn.send(message)


def throughput(messages: list[str], config: Compression | None) -> float:
    """Echoed messages per second: one thread sends them all, another reads the echoes."""
    upgrader = threadws.Upgrader(ping_interval=None, compression=config, max_read_queue=64 << 20)
    server = threadws.serve(echo, "127.0.0.1", 0, upgrader=upgrader)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        host, port = server.server_address
        with threadws.dial(f"ws://{host}:{port}/", ping_interval=None, compression=config) as conn:
            agreed = conn.response_headers.get("Sec-WebSocket-Extensions")
            assert (agreed is not None) == (config is not None), agreed
            for m in messages[:100]:  # warm up
                conn.send(m)
                conn.recv(timeout=10)
            start = time.perf_counter()
            sender = threading.Thread(target=lambda: [conn.send(m) for m in messages])
            sender.start()
            for _ in messages:
                conn.recv(timeout=30)
            elapsed = time.perf_counter() - start
            sender.join(30)
    finally:
        server.shutdown()
        serving.join(10)
    return len(messages) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    messages = make_messages(args.count, args.size)
    settings: list[tuple[str, Compression | None]] = [
        ("uncompressed", None),
        ("compressed, defaults (12 bits, level 6, mem 5)", Compression()),
        (
            "compressed, no context takeover",
            Compression(server_no_context_takeover=True, client_no_context_takeover=True),
        ),
        ("compressed, level 1", Compression(level=1)),
        (
            "compressed, 15 bits, mem 8 (zlib defaults)",
            Compression(server_max_window_bits=15, client_max_window_bits=15, mem_level=8),
        ),
    ]
    print(f"{args.count} echoed JSON messages of {args.size} bytes over loopback (threadws client and server)")
    print(f"{'setting':<48} {'msgs/s':>8} {'MiB/s':>7} {'ratio':>6}")
    for name, config in settings:
        rate = throughput(messages, config)
        ratio = 1.0 if config is None else wire_ratio(messages, config)
        print(f"{name:<48} {rate:>8.0f} {rate * args.size / (1 << 20):>7.1f} {ratio:>5.1f}x")


if __name__ == "__main__":
    main()
