"""The network steps of a dial, each taking its time from one total deadline.

A :class:`Deadline` is the time a whole dial may take: name resolution, the
TCP connect, a proxy's tunnel, TLS and the HTTP exchange each use what is left
of it, and a step that runs out raises :class:`TimeoutError` saying which step
it was (``dial ws://example.com/ timed out after 10 s while resolving
example.com``). HTTP responses (the server's answer to the upgrade, a proxy's
answer to ``CONNECT``) are parsed by h11, bounded in size.

What it must never do
---------------------
Wait without a deadline (every step takes its time from the one
:class:`Deadline`), or know about WebSockets: it moves bytes and parses HTTP.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import h11

from ._tls import TLSSocket
from .exceptions import HandshakeError

#: What getaddrinfo returns for one address.
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


class Deadline:
    """The time left for one dial; *what* names the dial in timeout messages."""

    def __init__(self, timeout: float | None, what: str) -> None:
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
            if not timeout > 0:
                raise ValueError(f"timeout must be more than 0 seconds (or None for no limit), not {timeout!r}")
        self.timeout = timeout
        self.what = what
        self._at = None if timeout is None else time.monotonic() + timeout

    @property
    def at(self) -> float | None:
        """The deadline as a ``time.monotonic()`` value, None if unlimited."""
        return self._at

    @property
    def unlimited(self) -> bool:
        """True if there is no deadline (``timeout=None``)."""
        return self._at is None

    @property
    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self._at is not None and time.monotonic() >= self._at

    def left(self) -> float | None:
        """Seconds left, None if unlimited. Raises TimeoutError if none are."""
        if self._at is None:
            return None
        left = self._at - time.monotonic()
        if left <= 0:
            raise TimeoutError("no time left")
        return left

    def share(self, ways: int) -> float | None:
        """What is left divided *ways* ways (an address's share when several are tried in turn)."""
        left = self.left()
        return None if left is None else left / max(1, ways)

    @contextlib.contextmanager
    def step(self, doing: str) -> Iterator[None]:
        """Run one step of the dial; a timeout in it says what the dial was *doing*."""
        try:
            yield
        except TimeoutError:
            if self.timeout is None:
                raise  # the system's own timeout (e.g. TCP's): its message stands
            raise TimeoutError(f"{self.what} timed out after {self.timeout:g} s {doing}") from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def resolve(host: str, port: int, deadline: Deadline) -> list[AddrInfo]:
    """The addresses of *host* (``socket.getaddrinfo``), found within *deadline*.

    ``getaddrinfo`` takes no timeout and cannot be interrupted, so unless the
    host is an IP address or there is no deadline it runs on a short-lived
    daemon thread (``threadws-resolve-HOST``) that this call stops waiting
    for when the deadline passes; that thread then ends by itself when the
    system's resolver gives up (its own timeouts, typically seconds).

    Raises:
        TimeoutError: the deadline passed first.
        socket.gaierror: the name does not resolve.
    """
    if deadline.unlimited or _is_ip(host):
        return list(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    box: list[Any] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            box.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the dialing thread
            box.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name=f"threadws-resolve-{host}", daemon=True).start()
    if not done.wait(deadline.left()):
        raise TimeoutError("name resolution timed out")
    if isinstance(box[0], BaseException):
        raise box[0]
    result: list[AddrInfo] = box[0]
    return result


def _show(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _explained(exc: OSError, doing: str) -> OSError:
    """*exc* with what the dial was doing in its message, same class and errno."""
    if exc.errno is None or not exc.strerror:
        return exc
    try:
        return type(exc)(exc.errno, f"{exc.strerror} ({doing})")
    except Exception:  # an OSError subclass with another signature
        return exc


def connect_tcp(host: str, port: int, deadline: Deadline, *, label: str = "") -> socket.socket:
    """A TCP connection to *host*:*port* (TCP_NODELAY on), within *deadline*.

    Each address the name resolves to is tried in turn with an equal share
    of the time left, so that one address that drops SYNs does not use up
    the whole timeout. *label* says what the host is in messages (``proxy``).

    Raises:
        TimeoutError: the deadline passed (the message says during which step).
        OSError: every address failed (the last address's error, e.g.
            ConnectionRefusedError), or the name does not resolve
            (socket.gaierror).
    """
    named = f"{label} {host}".strip()
    with deadline.step(f"while resolving {named}"):
        infos = resolve(host, port, deadline)
    last: OSError | None = None
    for index, (family, kind, proto, _, address) in enumerate(infos):
        doing = f"connecting to {named} port {port}" if _is_ip(host) else f"connecting to {named} ({_show(address)})"
        sock = socket.socket(family, kind, proto)
        try:
            with deadline.step(f"while {doing}"):
                sock.settimeout(deadline.share(len(infos) - index))
                sock.connect(address)
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError) and (index == len(infos) - 1 or deadline.expired):
                raise
            last = _explained(exc, doing)
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    assert last is not None  # getaddrinfo never returns an empty list
    raise last


def connect_unix(path: str | os.PathLike[str], deadline: Deadline) -> socket.socket:
    """A connection to the Unix socket at *path*, within *deadline*."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with deadline.step(f"while connecting to Unix socket {os.fspath(path)}"):
            sock.settimeout(deadline.left())
            sock.connect(os.fspath(path))
    except OSError as exc:
        sock.close()
        if isinstance(exc, TimeoutError):
            raise
        raise _explained(exc, f"connecting to Unix socket {os.fspath(path)}") from None
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class Response:
    """An HTTP response as :func:`read_response` read it."""

    http_version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    """At most ``max_body`` bytes of the body, decoded from chunks if chunked."""
    trailing: bytes = b""
    """After a 101 (or a CONNECT's 2xx): the bytes that followed the head, the start of the new protocol."""

    @property
    def status_line(self) -> str:
        return f"HTTP/{self.http_version} {self.status} {self.reason}".rstrip()

    def header(self, name: str) -> str | None:
        """The first value of header *name*, or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    def excerpt(self, limit: int = 200) -> str:
        """The start of the body as one line of printable text (for an error message)."""
        text = " ".join(self.body[: limit * 4].decode("utf-8", "replace").split())
        text = "".join(c if c.isprintable() else "?" for c in text)
        return text if len(text) <= limit else text[:limit] + "..."


def read_response(
    sock: socket.socket | TLSSocket,
    deadline: Deadline,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    *,
    max_head: int,
    max_body: int,
) -> Response:
    """Read the response to the request just sent (*method*, *target*, *headers*).

    Returns at the 101 (or, for ``CONNECT``, a 2xx), keeping the bytes after
    the head in ``trailing``; for any other final status, after the body, at
    most *max_body* bytes of it, or when the connection ends or the deadline
    passes during the body (a refusal is reported with what arrived).
    Interim 1xx responses are skipped.

    Raises:
        TimeoutError: no complete head by the deadline.
        HandshakeError: the response is not valid HTTP/1.1, its head is over
            *max_head* bytes, or the connection closed before it.
        OSError: the connection failed before the head arrived.
    """
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head)
    try:
        conn.send(h11.Request(method=method, target=target, headers=list(headers)))
        conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError as exc:
        raise ValueError(f"invalid request: {exc}") from None
    response: h11.Response | None = None
    body = bytearray()
    received = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if response is not None:
                break  # a malformed body: the status and what came of the body still tell why
            raise HandshakeError(f"invalid HTTP response: {exc}") from None
        if event is h11.NEED_DATA:
            if response is not None and len(body) >= max_body:
                break
            # Until the head is complete, read no further than max_head + 1
            # bytes in all: h11 then refuses a longer head however it arrives.
            size = 65536 if response is not None else max(1, min(65536, max_head + 1 - received))
            try:
                sock.settimeout(deadline.left())
                data = sock.recv(size)
            except OSError:
                if response is None:
                    raise
                break  # the body only explains the refusal: keep what arrived
            if not data and response is None:
                raise HandshakeError("the connection closed before a complete HTTP response arrived")
            received += len(data)
            conn.receive_data(data)
        elif isinstance(event, h11.InformationalResponse):
            if event.status_code == 101:
                return _response(event, b"", conn.trailing_data[0])
        elif isinstance(event, h11.Response):
            response = event
            if method == "CONNECT" and 200 <= event.status_code < 300:
                return _response(event, b"", conn.trailing_data[0])
        elif isinstance(event, h11.Data):
            body += event.data[: max(0, max_body - len(body))]
        else:  # EndOfMessage, ConnectionClosed or PAUSED: the response is complete
            break
    assert response is not None
    return _response(response, bytes(body), b"")


def _response(event: h11.Response | h11.InformationalResponse, body: bytes, trailing: bytes) -> Response:
    return Response(
        event.http_version.decode("ascii"),
        event.status_code,
        event.reason.decode("latin-1"),
        [(name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers.raw_items()],
        body,
        bytes(trailing),
    )
