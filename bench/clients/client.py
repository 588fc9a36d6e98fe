"""One Python WebSocket client doing 64 B request-response against an echo server.

    python bench/clients/client.py {threadws,websockets-sync,websocket-client} URL --duration S --warmup S

Prints one JSON line: messages/s, p50/p99 latency (microseconds) and the
process's CPU seconds. Each client runs in a process of its own.
"""

import argparse
import json
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("client", choices=["threadws", "websockets-sync", "websocket-client"])
parser.add_argument("url")
parser.add_argument("--duration", type=float, default=3.0)
parser.add_argument("--warmup", type=float, default=1.0)
parser.add_argument("--size", type=int, default=64)
args = parser.parse_args()

payload = bytes((i * 31 + 7) & 0xFF for i in range(args.size))

if args.client == "threadws":
    import threadws

    conn = threadws.dial(args.url, ping_interval=None)
    send, recv, close = conn.send, conn.recv, conn.close
elif args.client == "websockets-sync":
    from websockets.sync.client import connect

    conn = connect(args.url, compression=None, ping_interval=None).__enter__()  # as in a with-block
    send, recv, close = conn.send, conn.recv, conn.close
else:
    import websocket

    conn = websocket.create_connection(args.url, enable_multithread=False)
    send, recv, close = conn.send_binary, conn.recv, conn.close

clock = time.perf_counter
latencies = []
start = clock()
measure_from = start + args.warmup
measure_to = measure_from + args.duration
cpu0 = None
while True:
    t0 = clock()
    if t0 >= measure_to:
        break
    if cpu0 is None and t0 >= measure_from:
        cpu0 = time.process_time()
    send(payload)
    reply = recv()
    t1 = clock()
    if len(reply) != args.size:
        raise SystemExit(f"bad echo: {len(reply)} bytes")
    if t0 >= measure_from:
        latencies.append(t1 - t0)
cpu = time.process_time() - (cpu0 or 0.0)
close()
latencies.sort()
n = len(latencies)


def pct(p):
    return latencies[min(n - 1, max(0, -(-p * n // 100) - 1))] * 1e6 if n else None


print(json.dumps({"client": args.client, "messages": n, "msgs_per_s": n / args.duration,
                  "p50_us": pct(50), "p99_us": pct(99), "cpu_s": cpu, "pid": os.getpid()}))
