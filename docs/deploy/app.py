"""A Flask app with WebSockets next to ordinary routes (docs/howto/gunicorn.md).

    gunicorn --config gunicorn.conf.py app:app

tests/test_deploy_gunicorn.py runs it under gunicorn with this directory's
gunicorn.conf.py.
"""

import threading

from flask import Flask, request

import threadws

app = Flask(__name__)
upgrader = threadws.Upgrader()  # same-origin only, by default

#: This worker process's open WebSockets. gunicorn.conf.py closes them with
#: 1001 when the worker is told to stop; a Hub can also broadcast to them.
open_websockets = threadws.Hub()


@app.get("/")
def index():
    return "an ordinary route\n"


def echo(conn):
    with conn:  # leaving the block closes with 1000 (or 1011 if it raised)
        for message in conn:
            conn.send(message)


@app.route("/echo", websocket=True)
def echo_here():
    """gthread: serve the WebSocket on this request's thread (one of --threads)."""
    try:
        conn = upgrader.upgrade_wsgi(request.environ)
    except threadws.HandshakeError as exc:
        return "", exc.status  # already answered (400, 403, 405 or 426)
    open_websockets.register(conn)
    echo(conn)
    return "", 101  # goes nowhere: the connection is no longer gunicorn's


@app.route("/echo-in-a-thread", websocket=True)
def echo_elsewhere():
    """sync (or gthread): hand the WebSocket to a thread of its own, return at once."""
    try:
        conn = upgrader.upgrade_wsgi(request.environ)
    except threadws.HandshakeError as exc:
        return "", exc.status
    open_websockets.register(conn)
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
    return "", 101
