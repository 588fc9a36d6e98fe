"""Taking a connection over from a WSGI server (for :meth:`Upgrader.upgrade_wsgi`).

WSGI has no way to hand a connection over, so this works only under servers
that put their socket in the environ: Werkzeug's development server
(``environ["werkzeug.socket"]``) and gunicorn's sync and gthread workers
(``environ["gunicorn.socket"]``).

Theory of operation
-------------------
The server still holds its socket object and will use it after the view
returns: it writes the view's response, may wait for a next request
(keep-alive), then shuts the socket down and closes it. None of that may touch
the WebSocket. So the takeover works on file descriptors, not on objects:

1. ``os.dup`` the server's descriptor: the WebSocket gets its own descriptor
   for the TCP connection.
2. ``os.dup2`` one end of a fresh ``socketpair()``, whose other end is already
   closed, onto the server's descriptor number. The server's socket object now
   talks to that dead pair: a read finds end-of-file (no next request: the
   keep-alive loop ends), a write fails with EPIPE (which servers take for a
   client that went away, silently), and shutdown and close affect only it.

``dup2`` replaces the descriptor atomically, and nothing else uses it at that
moment: the server's thread for this request is the one running the view.

Bytes the server's HTTP parser read past the request head (a client may send
its first frame right behind the request) are taken from the server's
buffer and fed to the connection first.

TLS can't be taken over this way (the session lives in the server's
``SSLSocket`` object), so a request that came over TLS raises RuntimeError:
terminate TLS in a proxy in front.

What it must never do
---------------------
Decide on the handshake or build the connection: :class:`threadws.Upgrader`
does both, and calls the functions here for the socket.
"""

from __future__ import annotations

import http.client
import io
import os
import socket
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ._http import take_buffered as take_from_rfile

__all__ = ["SUPPORTED_SERVERS", "environ_headers", "refuse", "request_target", "server_socket", "take_buffered", "take_over"]

#: Named in the error raised under a server that can't give up its socket.
SUPPORTED_SERVERS = "Werkzeug's development server (threaded=True) or gunicorn with sync or gthread workers"

# Where each supported server puts the connection's socket.
_SOCKET_KEYS = ("werkzeug.socket", "gunicorn.socket")


def environ_headers(environ: Mapping[str, Any]) -> http.client.HTTPMessage:
    """The request headers a WSGI environ carries, as an :class:`http.client.HTTPMessage`.

    Names come back in the usual capitalisation (``HTTP_SEC_WEBSOCKET_KEY``
    becomes ``Sec-Websocket-Key``; lookups ignore case). A header the client
    repeated arrives as one comma-joined value, as the server joined it.
    """
    headers = http.client.HTTPMessage()
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key
            if not value:
                continue
        else:
            continue
        headers[name.replace("_", "-").title()] = str(value)
    return headers


def server_socket(environ: Mapping[str, Any]) -> socket.socket:
    """The server's socket for this request, or RuntimeError naming the servers that work."""
    sock = next((environ[key] for key in _SOCKET_KEYS if environ.get(key) is not None), None)
    software = environ.get("SERVER_SOFTWARE") or "this WSGI server"
    if sock is None:
        raise RuntimeError(
            f"upgrade_wsgi: {software} does not hand over its connections' sockets; "
            f"run the app under {SUPPORTED_SERVERS} (uWSGI: use its own WebSocket support)"
        )
    if isinstance(sock, ssl.SSLSocket):
        raise RuntimeError(
            "upgrade_wsgi: a connection that came over TLS can't be taken over from the WSGI server; "
            "terminate TLS in a proxy in front of it, or use threadws.serve(ssl_context=...)"
        )
    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
        raise RuntimeError(f"upgrade_wsgi: {software} gave a {type(sock).__name__}, not a stream socket")
    return sock


def take_over(sock: socket.socket) -> socket.socket:
    """Give the caller the connection's descriptor and leave the server a dead one (see the module doc)."""
    fd = sock.fileno()
    ours = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(fd))
    dead, peer = socket.socketpair()
    peer.close()
    try:
        os.dup2(dead.fileno(), fd, inheritable=False)
    except OSError:
        ours.close()
        raise
    finally:
        dead.close()
    return ours


def refuse(sock: socket.socket, response: bytes) -> None:
    """Answer a refused handshake with *response* ourselves, as :meth:`Upgrader.upgrade` does, and end the connection.

    The connection is taken from the server first, so the response the view
    returns afterwards goes nowhere: the client sees exactly one answer.
    """
    ours = take_over(sock)
    try:
        ours.settimeout(5.0)  # a client that doesn't read its error must not hold this thread
        ours.sendall(response)
        ours.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the client is gone; it won't read the explanation
    finally:
        ours.close()


def take_buffered(environ: Mapping[str, Any], sock: socket.socket) -> bytes:
    """Bytes the server's HTTP parser already read past the request head."""
    stream = environ.get("wsgi.input")
    # gunicorn: the body reader's "unreader" holds what it read ahead.
    unreader = getattr(getattr(stream, "reader", None), "unreader", None)
    if unreader is not None:
        take = getattr(unreader, "take_buffered", None)
        if take is not None:
            return bytes(take())
        buf = getattr(unreader, "buf", None)
        if isinstance(buf, io.BytesIO):
            data = buf.getvalue()
            unreader.buf = io.BytesIO()
            return data
        return b""
    # Werkzeug: wsgi.input is the handler's rfile, a buffered reader on the socket.
    if isinstance(stream, io.BufferedReader):
        return take_from_rfile(stream, sock)
    return b""


def request_target(environ: Mapping[str, Any]) -> str:
    """The request target as the client sent it (``"/chat?room=1"``)."""
    for key in ("RAW_URI", "REQUEST_URI"):
        value = environ.get(key)
        if value:
            return str(value)
    path = quote(str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", "")), safe="/;=,:@!$&'()*+~")
    query = environ.get("QUERY_STRING")
    return f"{path or '/'}?{query}" if query else path or "/"
