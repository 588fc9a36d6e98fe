"""websockets (asyncio) echo server for the benchmark."""

import argparse
import asyncio
import socket

from websockets.asyncio.server import serve

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main():
    async with serve(echo, "127.0.0.1", args.port, compression=None, max_size=64 << 20, ping_interval=None,
                     backlog=socket.SOMAXCONN) as server:
        print("READY", next(iter(server.sockets)).getsockname()[1], flush=True)
        await server.serve_forever()


asyncio.run(main())
