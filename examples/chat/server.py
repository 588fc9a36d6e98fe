"""python examples/chat/server.py --port 8080 [--redis redis://localhost:6379/0]

A chat room. Open the address it prints in two browser tabs (or two browsers)
and type: everyone in the room sees every message.

With ``--redis URL`` the room spans processes and hosts: start it several
times (each on its own port) with the same Redis, and people on any of them
chat together (the Flask chat under gunicorn joins the same room).

Every connection runs ``chat`` on its own thread, and a :class:`threadws.Hub`
does the broadcasting: it frames each message once and never waits for
anyone, so a browser that stops reading is dropped instead of holding up the
room. The page (``static/index.html``) is served from ``/`` and connects to
``/ws``; the default origin check lets only that page in.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import signal
import threading

import threadws

STATIC = pathlib.Path(__file__).with_name("static")
MAX_MESSAGE = 4096  # bytes; a longer message closes that connection with 1009


def chat(hub: threadws.Hub, conn: threadws.Conn) -> None:
    """One member of the room: everything they say goes to everyone."""
    hub.register(conn)  # they leave the hub by themselves when they disconnect
    for message in conn:
        if isinstance(message, str):  # a chat is text; ignore anything else
            hub.broadcast(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--redis", metavar="URL", help="share the room with every server on this Redis")
    args = parser.parse_args()
    # The room: in this process only, or in every process on that Redis.
    hub = threadws.Hub("chat", backplane=threadws.RedisBackplane(args.redis)) if args.redis else threadws.Hub()

    upgrader = threadws.Upgrader(read_limit=MAX_MESSAGE)
    handler = functools.partial(chat, hub)
    server = threadws.serve(handler, args.host, args.port, upgrader=upgrader, path="/ws", static_dir=STATIC)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    threading.Thread(target=server.serve_forever, name="chat-accept", daemon=True).start()

    host, port = server.server_address
    print(f"Chat at http://{host}:{port}/ (open it in two tabs; Ctrl-C stops the server)", flush=True)
    stop.wait()
    server.shutdown(timeout=3)  # everyone gets "1001 going away"
    hub.close()  # leaves Redis; the backplane's threads end


if __name__ == "__main__":
    main()
