"""A threadws Hub for the fan-out benchmark: subscribers on /, the publisher on /pub.

    python bench/servers/hub_server.py --port 8765 [--redis redis://127.0.0.1:6379/0]

Every connection on / is registered with the hub and only read from; every
message that comes in on /pub is broadcast. With --redis the hub is on a
RedisBackplane, so broadcasts made on any process reach every process's
subscribers. Keepalive is off, as in the other benchmark servers.
"""

import argparse

import threadws

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--redis", help="a Redis URL: put the hub on a backplane")
args = parser.parse_args()

hub = threadws.Hub("bench", backplane=threadws.RedisBackplane(args.redis)) if args.redis else threadws.Hub()
upgrader = threadws.Upgrader(ping_interval=None)


def handler(conn):
    if conn.path == "/pub":
        for message in conn:
            hub.broadcast(message)
        return
    hub.register(conn)
    for _ in conn:
        pass


with threadws.serve(handler, "127.0.0.1", args.port, upgrader=upgrader) as server:
    print("READY", server.server_address[1], flush=True)
    server.serve_forever()
