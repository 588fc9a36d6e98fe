"""python examples/flask_chat/app.py --port 8080 [--redis redis://localhost:6379/0]

The chat example inside a Flask app: ordinary Flask routes and a WebSocket
route side by side, under Werkzeug's threaded development server. (Flask is
needed: ``pip install flask``.) Open the address it prints in two tabs.

For production, the same app runs under gunicorn's gthread worker, with a
thread per chat member plus some for ordinary requests::

    gunicorn --worker-class gthread --threads 64 -b 127.0.0.1:8080 examples.flask_chat.app:app

Several workers are several processes, each with a room of its own, unless
a Redis carries the broadcasts between them (``pip install
'threadws[redis]'``); then the room is one, across workers and hosts, and
the plain chat example (``--redis``) joins it too::

    gunicorn --worker-class gthread --workers 3 --threads 64 -b 127.0.0.1:8080 \\
        'examples.flask_chat.app:create_app(redis="redis://localhost:6379/0")'

The view upgrades with :meth:`threadws.Upgrader.upgrade_wsgi` and then serves
the connection on the request's own thread, exactly like the chat example's
handler; the default origin check lets only this app's own page connect.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from flask import Flask, request, send_file

import threadws

PAGE = pathlib.Path(__file__).resolve().parent.parent / "chat" / "static" / "index.html"


def create_app(redis: str | None = None) -> Flask:
    """The chat app; with *redis* (a URL), its room spans every process on that Redis."""
    app = Flask(__name__)
    upgrader = threadws.Upgrader(read_limit=4096)
    hub = threadws.Hub("chat", backplane=threadws.RedisBackplane(redis)) if redis else threadws.Hub()
    app.extensions["chat_hub"] = hub

    @app.get("/")
    def home():  # type: ignore[no-untyped-def]
        return send_file(PAGE)

    @app.get("/members")
    def members() -> dict[str, int]:
        """An ordinary route next to the WebSocket one: the members on this process."""
        return {"members": len(hub)}

    @app.route("/ws", websocket=True)  # Werkzeug routes "Upgrade: websocket" requests only to such rules
    def ws():  # type: ignore[no-untyped-def]
        try:
            conn = upgrader.upgrade_wsgi(request.environ)
        except threadws.HandshakeError as exc:
            return "", exc.status  # already answered with the right HTTP error
        hub.register(conn)
        with conn:
            for message in conn:
                if isinstance(message, str):
                    hub.broadcast(message)
        return "", 101  # nothing more is sent: the socket is threadws's now

    return app


app = create_app()  # for `gunicorn examples.flask_chat.app:app`: one process, one room


def main() -> None:
    parser = argparse.ArgumentParser(description="the chat example in a Flask app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--redis", metavar="URL", help="share the room with every server on this Redis")
    args = parser.parse_args()
    from werkzeug.serving import make_server

    chat = create_app(args.redis)
    hub: threadws.Hub = chat.extensions["chat_hub"]
    server = make_server(args.host, args.port, chat, threaded=True)
    print(f"Flask chat at http://{args.host}:{server.server_port}/ (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        for conn in hub.connections:
            conn.close(threadws.CloseCode.GOING_AWAY, timeout=3)
        hub.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
