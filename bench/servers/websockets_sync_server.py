"""websockets (sync, threaded) echo server for the benchmark (listening with the full backlog, as threadws does)."""

import argparse
import socket

from websockets.sync.server import serve

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()


def echo(ws):
    for message in ws:
        ws.send(message)


with serve(echo, "127.0.0.1", args.port, compression=None, max_size=64 << 20, ping_interval=None,
           backlog=socket.SOMAXCONN) as server:
    print("READY", server.socket.getsockname()[1], flush=True)
    server.serve_forever()
