"""threadws echo server for the benchmark: threadws.serve, keepalive off, 64 MiB read limit.

``--certfile FILE --keyfile FILE`` serve wss:// (threadws.serve(ssl_context=...)).
"""

import argparse
import os
import ssl
import threading

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--stack-size", type=int, default=0, help="thread stack size in KiB (0: the default, ulimit -s)")
parser.add_argument("--no-speedups", action="store_true", help="mask in pure Python (THREADWS_NO_SPEEDUPS=1)")
parser.add_argument("--certfile", help="PEM certificate chain: serve wss://")
parser.add_argument("--keyfile", help="PEM private key for --certfile")
args = parser.parse_args()
context = None
if args.certfile:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.certfile, args.keyfile)

if args.no_speedups:
    os.environ["THREADWS_NO_SPEEDUPS"] = "1"  # read when threadws is imported, just below
if args.stack_size:
    threading.stack_size(args.stack_size * 1024)

import threadws  # noqa: E402

upgrader = threadws.Upgrader(ping_interval=None, read_limit=64 << 20, max_read_queue=64 << 20, max_write_queue=64 << 20)


def echo(conn):
    for message in conn:
        conn.send(message)


# max_connections lifted: its default (4,096) would refuse half of the conns scenario's 8,000,
# as a deployment holding that many would lift it.
with threadws.serve(echo, "127.0.0.1", args.port, upgrader=upgrader, ssl_context=context, max_connections=None) as server:
    print("READY", server.server_address[1], flush=True)
    server.serve_forever()
