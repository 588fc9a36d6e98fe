"""A Flask app with a WebSocket route next to ordinary ones, for tests/test_wsgi.py.

Run under a server by the test, as a subprocess:

    python -m tests.wsgi_apps.flask_app werkzeug      # prints "listening on PORT"
    python -m tests.wsgi_apps.flask_app werkzeug CERTFILE KEYFILE   # the same over https
    python -m tests.wsgi_apps.flask_app wsgiref
    python -m tests.wsgi_apps.flask_app waitress
    gunicorn --worker-class gthread --threads 4 -b 127.0.0.1:0 tests.wsgi_apps.flask_app:app
"""

from __future__ import annotations

import sys
import threading

from flask import Flask, request

import threadws

app = Flask(__name__)
upgrader = threadws.Upgrader(ping_interval=None, close_timeout=2.0)


@app.get("/")
def index() -> str:
    return "an ordinary route\n"


@app.post("/upload")
def upload() -> str:
    return f"got {len(request.get_data())} bytes\n"


def echo(conn: threadws.Conn) -> None:
    with conn:  # leaving closes with 1000
        conn.send(f"hello from {conn.path}")
        for message in conn:
            conn.send(message)


@app.route("/echo", websocket=True)  # Werkzeug routes an "Upgrade: websocket" request only to such rules
def echo_here() -> tuple[str, int]:
    """Serve the WebSocket on the request's own thread, until it ends."""
    try:
        conn = upgrader.upgrade_wsgi(request.environ)
    except threadws.HandshakeError as exc:
        return "", exc.status  # already answered; what is returned here goes nowhere
    except RuntimeError as exc:
        return f"{exc}\n", 500
    echo(conn)
    return "", 101


@app.route("/handoff", websocket=True)
def echo_elsewhere() -> tuple[str, int]:
    """Hand the WebSocket to a thread of its own and return at once."""
    try:
        conn = upgrader.upgrade_wsgi(request.environ)
    except threadws.HandshakeError as exc:
        return "", exc.status
    threading.Thread(target=echo, args=(conn,), name=f"echo-{conn.name}", daemon=True).start()
    return "", 101


def main(server: str, *tls_files: str) -> None:
    if server == "werkzeug":
        from werkzeug.serving import make_server

        context = None
        if tls_files:
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls_files)
        httpd = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=context)
        print(f"listening on {httpd.server_port}", flush=True)
        httpd.serve_forever()
    elif server == "wsgiref":
        from wsgiref.simple_server import make_server as make_wsgiref_server

        wsgiref_server = make_wsgiref_server("127.0.0.1", 0, app)
        print(f"listening on {wsgiref_server.server_port}", flush=True)
        wsgiref_server.serve_forever()
    elif server == "waitress":
        import waitress

        waitress_server = waitress.create_server(app, host="127.0.0.1", port=0)
        print(f"listening on {waitress_server.effective_port}", flush=True)
        waitress_server.run()
    else:
        raise SystemExit(f"unknown server {server!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
