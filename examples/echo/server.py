"""python examples/echo/server.py --port 8080

A WebSocket echo server. Open the address it prints in a browser: the page at
``/`` connects to ``/echo``, which sends every message straight back (text as
text, binary as binary). ``examples/echo/client.py`` talks to it from a terminal.

It is a plain ``http.server`` that hands ``/echo`` to a :class:`threadws.Upgrader`,
so each WebSocket connection runs on the thread that accepted its request.
Ctrl-C or SIGTERM stops it, telling open connections "1001 going away" first.
"""

from __future__ import annotations

import argparse
import http.server
import pathlib
import signal
import threading
import urllib.parse

import threadws

HOME_PAGE = pathlib.Path(__file__).with_name("home.html").read_bytes()

# The default origin check lets a browser connect only from a page this server
# served itself (the Origin header must name the host:port of the Host header).
# A page from any other site gets 403 Forbidden; scripts, which send no Origin,
# are let in.
upgrader = threadws.Upgrader()

# The connections currently open, so that shutting down can close them politely.
open_conns: set[threadws.Conn] = set()
open_conns_lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    timeout = 10  # seconds a client has to send its request (the upgrade lifts it)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/":
            self.send_home_page()
        elif path == "/echo":
            self.echo()
        else:
            self.send_error(404)

    def send_home_page(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(HOME_PAGE)))
        self.end_headers()
        self.wfile.write(HOME_PAGE)

    def echo(self) -> None:
        try:
            conn = upgrader.upgrade(self)
        except threadws.HandshakeError:
            return  # the upgrader has already answered (403 for a foreign origin, 400, ...)
        with open_conns_lock:
            open_conns.add(conn)
        try:
            for message in conn:  # str for text, bytes for binary; ends when the peer closes
                conn.send(message)  # a str goes back as text, bytes as binary
        except threadws.ConnectionClosed as exc:
            self.log_message("connection ended: %s", exc)
        finally:
            conn.close()
            with open_conns_lock:
                open_conns.discard(conn)


def close_all_connections(timeout: float = 3.0) -> None:
    """Close every open connection with 1001 (going away), all at once.

    A peer that doesn't answer the close frame within *timeout* seconds is cut off.
    """
    with open_conns_lock:
        conns = list(open_conns)
    closers = [
        threading.Thread(target=conn.close, args=(threadws.CloseCode.GOING_AWAY, "server shutting down", timeout))
        for conn in conns
    ]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join()


def main() -> None:
    parser = argparse.ArgumentParser(description="WebSocket echo server with a test page.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on, 0 for any (default: %(default)s)")
    args = parser.parse_args()

    # Ctrl-C raises KeyboardInterrupt; make SIGTERM do the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    httpd = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    try:
        host, port = httpd.server_address[:2]  # the real port, even when 0 was asked
        print(f"Open http://{host}:{port}/ in a browser (Ctrl-C stops the server)", flush=True)
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()  # stop accepting
        close_all_connections()


if __name__ == "__main__":
    main()
