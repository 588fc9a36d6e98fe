"""python examples/flask_chat/app.py --port 8080

The chat example inside a Flask app: ordinary Flask routes and a WebSocket
route side by side, under Werkzeug's threaded development server. (Flask is
needed: ``pip install flask``.) Open the address it prints in two tabs.

For production, the same app runs under gunicorn's gthread worker, with a
thread per chat member plus some for ordinary requests::

    gunicorn --worker-class gthread --threads 64 -b 127.0.0.1:8080 examples.flask_chat.app:app

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

app = Flask(__name__)
upgrader = threadws.Upgrader(read_limit=4096)
hub = threadws.Hub()


@app.get("/")
def home():  # type: ignore[no-untyped-def]
    return send_file(PAGE)


@app.get("/members")
def members() -> dict[str, int]:
    """An ordinary route next to the WebSocket one."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description="the chat example in a Flask app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args()
    from werkzeug.serving import make_server

    server = make_server(args.host, args.port, app, threaded=True)
    print(f"Flask chat at http://{args.host}:{server.server_port}/ (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        for conn in hub.connections:
            conn.close(threadws.CloseCode.GOING_AWAY, timeout=3)
    sys.exit(0)


if __name__ == "__main__":
    main()
