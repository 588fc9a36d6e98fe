"""simple-websocket echo server under Werkzeug's threaded development server."""

import argparse
import logging
import socket

import simple_websocket
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()
logging.getLogger("werkzeug").setLevel(logging.ERROR)


@Request.application
def app(request):
    ws = simple_websocket.Server(request.environ, max_message_size=64 << 20)
    try:
        while True:
            ws.send(ws.receive())
    except simple_websocket.ConnectionClosed:
        pass
    return Response()


server = make_server("127.0.0.1", args.port, app, threaded=True)
server.socket.listen(socket.SOMAXCONN)
print("READY", server.socket.getsockname()[1], flush=True)
server.serve_forever()
