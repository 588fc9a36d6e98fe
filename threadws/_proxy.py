"""Reaching a WebSocket server through a proxy: HTTP ``CONNECT``, or SOCKS.

Which proxy a dial uses (:func:`choose_proxy`): the one its ``proxy=`` names, or by
default the one the environment names, read as the standard library's urllib
reads it (``urllib.request.getproxies`` and ``proxy_bypass``): ``ws://``
takes ``ws_proxy``, else ``http_proxy``, else ``all_proxy``; ``wss://`` takes
``wss_proxy``, else ``https_proxy``, else ``all_proxy`` (either case, the
lower-case one first), unless ``no_proxy`` lists the host.

How (:func:`open_tunnel`): an ``http://`` proxy gets ``CONNECT host:port``
(with ``Proxy-Authorization: Basic`` if its URL has credentials) and must
answer 2xx; ``socks5://``, ``socks5h://``, ``socks4://`` and ``socks4a://``
go through python-socks (the ``socks`` extra), the ``h`` and ``a`` forms
letting the proxy resolve the server's name. Either way the tunnel is a plain
TCP socket to the server, on which TLS and the WebSocket handshake follow.

What it must never do
---------------------
Touch what goes through the tunnel: TLS and the WebSocket handshake are the
dial's, end to end.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from ._net import Deadline, connect_tcp, read_response, resolve
from ._trace import describe_head
from .exceptions import HandshakeError, ProxyError
from .handshake import Target, basic_auth, check_header, format_request

#: Where the trace goes: (direction or "", lines).
Trace = Callable[[str, list[str]], None]

#: SOCKS schemes: (python-socks ProxyType name, whether the proxy resolves the server's name).
_SOCKS = {
    "socks5": ("SOCKS5", False),
    "socks5h": ("SOCKS5", True),
    "socks4": ("SOCKS4", False),
    "socks4a": ("SOCKS4", True),
}
_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024
#: python-socks needs a number: what "no timeout" means there (a year).
_NO_LIMIT = 365 * 24 * 3600.0


def choose_proxy(proxy: str | bool | None, target: Target) -> str | None:
    """The proxy URL to reach *target* through, or None to connect directly.

    *proxy* is dial's argument: True reads the environment, None or False
    means no proxy, a string is the proxy's URL.
    """
    if proxy is None or proxy is False:
        return None
    if proxy is True:
        return from_environment(target)
    if isinstance(proxy, str):
        return proxy
    raise TypeError(f"proxy must be a URL, True (from the environment) or None, not {type(proxy).__name__}")


def from_environment(target: Target) -> str | None:
    """The proxy URL the environment names for *target*, None if none or if ``no_proxy`` excludes it."""
    proxies = urllib.request.getproxies()
    names = ("wss", "https", "all") if target.secure else ("ws", "http", "all")
    url = next((proxies[name] for name in names if proxies.get(name)), None)
    if url is None:
        return None
    # proxy_bypass matches no_proxy entries against "host:port" and against the host alone.
    where = target.host if ":" in target.host else f"{target.host}:{target.port}"
    if urllib.request.proxy_bypass(where):
        return None
    return url


def check_proxy_url(url: str) -> SplitResult:
    """A proxy URL split (``http://`` assumed if it has no scheme, as curl does).

    Raises ValueError if it is not one threadws can use.
    """
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        parts.port
    except ValueError as exc:
        raise ValueError(f"invalid proxy URL {shown(parts)}: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"no host in proxy URL {shown(parts)}")
    scheme = parts.scheme.lower()
    if scheme == "https":
        # TLS to the proxy, then TLS to the server inside it, needs TLS over
        # something other than a socket; not done yet.
        raise ValueError(f"HTTPS proxies are not supported: {shown(parts)}; use http://, socks5:// or socks5h://")
    if scheme != "http" and scheme not in _SOCKS:
        raise ValueError(f"unsupported proxy scheme {scheme!r} in {shown(parts)}: use http://, socks5:// or socks5h://")
    return parts


def shown(parts: SplitResult) -> str:
    """The proxy's URL without credentials, for messages."""
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"


def _credentials(parts: SplitResult) -> tuple[str, str] | None:
    if parts.username is None and parts.password is None:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def open_tunnel(
    url: str,
    host: str,
    port: int,
    deadline: Deadline,
    *,
    user_agent: str | None,
    trace: Trace | None,
) -> socket.socket:
    """A TCP connection to *host*:*port* through the proxy at *url*, within *deadline*.

    Raises:
        ProxyError: the proxy refused (an HTTP proxy's status, headers and
            body are on it; 407 means it wants credentials).
        TimeoutError: the deadline passed (the message says during which step).
        OSError: the proxy could not be reached.
        ValueError: *url* is not a proxy URL threadws can use.
        ImportError: a SOCKS proxy without python-socks installed.
    """
    parts = check_proxy_url(url)
    if parts.scheme.lower() == "http":
        return _http_connect(parts, host, port, deadline, user_agent, trace)
    return _socks_connect(parts, host, port, deadline, trace)


def _http_connect(
    parts: SplitResult,
    host: str,
    port: int,
    deadline: Deadline,
    user_agent: str | None,
    trace: Trace | None,
) -> socket.socket:
    proxy = shown(parts)
    sock = connect_tcp(parts.hostname or "", parts.port or 80, deadline, label="proxy")
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        headers = [("Host", authority)]
        if user_agent is not None:
            headers.append(("User-Agent", user_agent))
        credentials = _credentials(parts)
        if credentials is not None:
            headers.append(("Proxy-Authorization", basic_auth(*credentials)))
        for name, value in headers:
            check_header(name, value)
        if trace is not None:
            trace(">", describe_head(f"CONNECT {authority} HTTP/1.1", headers))
        with deadline.step(f"while waiting for proxy {proxy} to open a tunnel to {authority}"):
            sock.settimeout(deadline.left())
            sock.sendall(format_request(authority, headers, method="CONNECT"))
            try:
                response = read_response(
                    sock, deadline, "CONNECT", authority, headers, max_head=_MAX_HEAD, max_body=_MAX_BODY
                )
            except HandshakeError as exc:  # the proxy's answer, not the server's
                raise ProxyError(f"proxy {proxy} did not open a tunnel to {authority}: {exc}") from None
        if trace is not None:
            trace("<", describe_head(response.status_line, response.headers))
        if not 200 <= response.status < 300:
            excerpt = response.excerpt()
            raise ProxyError(
                f"proxy {proxy} refused to open a tunnel to {authority}: {response.status_line}"
                + (f": {excerpt}" if excerpt else ""),
                response.status,
                response.headers,
                response.body,
            )
        if response.trailing:
            # Neither WebSocket nor TLS servers speak first: these bytes are the proxy's.
            raise ProxyError(f"proxy {proxy} sent data after its answer to CONNECT", response.status, response.headers)
        return sock
    except BaseException:
        sock.close()
        raise


def _socks_connect(
    parts: SplitResult,
    host: str,
    port: int,
    deadline: Deadline,
    trace: Trace | None,
) -> socket.socket:
    try:
        from python_socks import ProxyError as SocksRefusal
        from python_socks import ProxyType
        from python_socks.sync import Proxy
    except ImportError:
        raise ImportError(
            "a SOCKS proxy needs python-socks: pip install 'threadws[socks]' (or pass proxy=None to connect directly)"
        ) from None
    proxy = shown(parts)
    kind, remote_dns = _SOCKS[parts.scheme.lower()]
    proxy_host, proxy_port = parts.hostname or "", parts.port or 1080
    # Resolve here, within the deadline: python-socks would call getaddrinfo unbounded.
    with deadline.step(f"while resolving proxy {proxy_host}"):
        proxy_ip = resolve(proxy_host, proxy_port, deadline)[0][4][0]
    destination = host
    if not remote_dns:
        with deadline.step(f"while resolving {host}"):
            infos = resolve(host, port, deadline)
        if kind == "SOCKS4":  # SOCKS4 carries IPv4 addresses only
            infos = [info for info in infos if info[0] == socket.AF_INET] or infos
        destination = infos[0][4][0]
    credentials = _credentials(parts)
    client: Any = Proxy.create(
        proxy_type=getattr(ProxyType, kind),
        host=proxy_ip,
        port=proxy_port,
        username=credentials[0] if credentials else None,
        password=credentials[1] if credentials else None,
        rdns=remote_dns,
    )
    with deadline.step(f"while connecting through SOCKS proxy {proxy} to {host}:{port}"):
        left = deadline.left()
        try:
            sock: socket.socket = client.connect(destination, port, timeout=_NO_LIMIT if left is None else left)
        except SocksRefusal as exc:
            raise ProxyError(f"SOCKS proxy {proxy} refused the connection to {host}:{port}: {exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if trace is not None:
        trace("", [f"connected to {host}:{port} through SOCKS proxy {proxy}"])
    return sock
