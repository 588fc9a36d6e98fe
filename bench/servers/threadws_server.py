"""threadws echo server for the benchmark: threadws.serve, keepalive off, 64 MiB read limit."""

import argparse
import os
import threading

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--stack-size", type=int, default=0, help="thread stack size in KiB (0: the default, ulimit -s)")
parser.add_argument("--no-speedups", action="store_true", help="mask in pure Python (THREADWS_NO_SPEEDUPS=1)")
args = parser.parse_args()

if args.no_speedups:
    os.environ["THREADWS_NO_SPEEDUPS"] = "1"  # read when threadws is imported, just below
if args.stack_size:
    threading.stack_size(args.stack_size * 1024)

import threadws  # noqa: E402

upgrader = threadws.Upgrader(ping_interval=None, read_limit=64 << 20, max_read_queue=64 << 20, max_write_queue=64 << 20)


def echo(conn):
    for message in conn:
        conn.send(message)


with threadws.serve(echo, "127.0.0.1", args.port, upgrader=upgrader) as server:
    print("READY", server.server_address[1], flush=True)
    server.serve_forever()
