"""websockets (sync, threaded) echo server for the benchmark (full backlog, as threadws; ``--certfile/--keyfile``: wss://)."""

import argparse
import socket
import ssl

from websockets.sync.server import serve

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--certfile", help="PEM certificate chain: serve wss://")
parser.add_argument("--keyfile", help="PEM private key for --certfile")
args = parser.parse_args()
context = None
if args.certfile:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.certfile, args.keyfile)


def echo(ws):
    for message in ws:
        ws.send(message)


with serve(echo, "127.0.0.1", args.port, compression=None, max_size=64 << 20, ping_interval=None,
           backlog=socket.SOMAXCONN, ssl=context) as server:
    print("READY", server.socket.getsockname()[1], flush=True)
    server.serve_forever()
