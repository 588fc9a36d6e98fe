"""websockets (asyncio) echo server for the benchmark (``--certfile/--keyfile``: wss://)."""

import argparse
import asyncio
import socket
import ssl

from websockets.asyncio.server import serve

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--certfile", help="PEM certificate chain: serve wss://")
parser.add_argument("--keyfile", help="PEM private key for --certfile")
args = parser.parse_args()
context = None
if args.certfile:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.certfile, args.keyfile)


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main():
    async with serve(echo, "127.0.0.1", args.port, compression=None, max_size=64 << 20, ping_interval=None,
                     backlog=socket.SOMAXCONN, ssl=context) as server:
        print("READY", next(iter(server.sockets)).getsockname()[1], flush=True)
        await server.serve_forever()


asyncio.run(main())
