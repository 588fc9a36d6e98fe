"""A threadws client behind real proxies: tinyproxy (HTTP CONNECT, Basic auth) and pproxy (SOCKS5, HTTP).

Each proxy runs as a process of its own on a free loopback port, started and
stopped by a fixture; tests/run.sh installs tinyproxy (Debian) and pproxy and
python-socks (PyPI). Whether a connection went through a proxy is read from
the proxy's own log.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import threadws
from threadws import ProxyError

from .conftest import start_server, stop_server, url_of, wait_until

pytestmark = pytest.mark.interop

USER, PASSWORD = "alice", "s3cret"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class Proxy:
    """A proxy process and its log (stdout and stderr)."""

    def __init__(self, argv: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.log = log
        self._out = open(log, "wb")
        self.process = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, env=env)
        wait_until(lambda: self.process.poll() is not None or _accepting(port), timeout=20)
        if self.process.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited at once:\n{self.text()}")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._out.close()


@pytest.fixture(scope="module")
def tinyproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """tinyproxy on a free port, asking for Basic auth."""
    exe = shutil.which("tinyproxy")
    if exe is None:
        raise RuntimeError("tinyproxy not found: tests/run.sh installs it (Debian: apt-get install tinyproxy-bin)")
    folder = tmp_path_factory.mktemp("tinyproxy")
    port = _free_port()
    config = folder / "tinyproxy.conf"
    config.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nAllow 127.0.0.1\n"
        f"BasicAuth {USER} {PASSWORD}\nLogLevel Connect\n"
    )
    proxy = Proxy([exe, "-d", "-c", str(config)], port, folder / "tinyproxy.log")
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def pproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """pproxy on a free port, serving HTTP CONNECT and SOCKS5 with a user and password."""
    folder = tmp_path_factory.mktemp("pproxy")
    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "pproxy", "-l", f"http+socks5://127.0.0.1:{port}#{USER}:{PASSWORD}",
            "--auth", "0", "-v"]  # --auth 0: credentials on every connection, not once per address
    proxy = Proxy(argv, port, folder / "pproxy.log", env)
    yield proxy
    proxy.stop()


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = start_server(lambda conn: [conn.send(m) for m in conn])
    try:
        yield url_of(server, "/echo")
    finally:
        stop_server(server)


def _round_trip(url: str, **kwargs: object) -> None:
    kwargs.setdefault("ping_interval", None)
    with threadws.dial(url, timeout=10, **kwargs) as conn:  # type: ignore[arg-type]
        conn.send("through the proxy")
        assert conn.recv(timeout=5) == "through the proxy"


def _tunnels(proxy: Proxy, port: int) -> int:
    """How many tunnels to *port* the proxy's log shows."""
    text = proxy.text()
    return text.count(f"CONNECT 127.0.0.1:{port} ") + text.count(f"-> 127.0.0.1:{port}")


def _port(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


# --- HTTP CONNECT (tinyproxy) ---------------------------------------------------------


def test_http_connect_with_basic_auth(tinyproxy, echo_url):
    port = _port(echo_url)
    before = _tunnels(tinyproxy, port)
    _round_trip(echo_url, proxy=f"http://{USER}:{PASSWORD}@127.0.0.1:{tinyproxy.port}")
    wait_until(lambda: _tunnels(tinyproxy, port) == before + 1)


def test_http_proxy_refusing_is_a_proxy_error(tinyproxy, echo_url):
    with pytest.raises(ProxyError) as info:
        threadws.dial(echo_url, proxy=f"http://127.0.0.1:{tinyproxy.port}", timeout=10)
    assert info.value.status == 407
    assert "407 Proxy Authentication Required" in str(info.value)
    assert any(name.lower() == "proxy-authenticate" for name, _ in info.value.headers)
    assert isinstance(info.value, threadws.HandshakeError)
    with pytest.raises(ProxyError) as info:
        threadws.dial(echo_url, proxy=f"http://{USER}:wrong@127.0.0.1:{tinyproxy.port}", timeout=10)
    assert info.value.status == 401  # tinyproxy's answer to wrong credentials
    assert "Unauthorized" in str(info.value)


def test_wss_through_an_http_proxy(tinyproxy):
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    server = start_server(lambda conn: [conn.send(m) for m in conn], ssl_context=server_context)
    try:
        port = server.server_address[1]
        before = tinyproxy.text().count(f"CONNECT localhost:{port} ")
        # The proxy resolves "localhost"; TLS runs end to end through the tunnel.
        _round_trip(f"wss://localhost:{port}/", ssl_context=client_context,
                    proxy=f"http://{USER}:{PASSWORD}@127.0.0.1:{tinyproxy.port}")
        wait_until(lambda: tinyproxy.text().count(f"CONNECT localhost:{port} ") == before + 1)
    finally:
        stop_server(server)


# --- from the environment -------------------------------------------------------------


def test_proxy_from_the_environment(tinyproxy, echo_url, monkeypatch):
    port = _port(echo_url)
    monkeypatch.setenv("HTTP_PROXY", f"http://{USER}:{PASSWORD}@127.0.0.1:{tinyproxy.port}")
    before = _tunnels(tinyproxy, port)
    _round_trip(echo_url)  # proxy=True, the default: the environment's
    wait_until(lambda: _tunnels(tinyproxy, port) == before + 1)
    # Lower case wins, as in urllib: a proxy that refuses everything proves it is the one used.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{tinyproxy.port}")
    with pytest.raises(ProxyError):
        threadws.dial(echo_url, timeout=10)


def test_no_proxy_and_proxy_none_connect_directly(echo_url, monkeypatch):
    dead = _free_port()  # nothing listens here: going through it would fail
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead}")
    with pytest.raises(ConnectionRefusedError, match="proxy"):
        threadws.dial(echo_url, timeout=10)
    _round_trip(echo_url, proxy=None)
    _round_trip(echo_url, proxy=False)
    monkeypatch.setenv("NO_PROXY", "example.com, 127.0.0.1")
    _round_trip(echo_url)
    monkeypatch.setenv("NO_PROXY", "*")
    _round_trip(echo_url)


def test_all_proxy_and_the_scheme_specific_ones(pproxy, echo_url, monkeypatch):
    port = _port(echo_url)
    dead = _free_port()
    monkeypatch.setenv("ALL_PROXY", f"socks5://{USER}:{PASSWORD}@127.0.0.1:{pproxy.port}")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{dead}")  # for wss:// only
    before = _tunnels(pproxy, port)
    _round_trip(echo_url)  # ws:// and no HTTP_PROXY: ALL_PROXY
    wait_until(lambda: _tunnels(pproxy, port) == before + 1)
    with pytest.raises(ConnectionRefusedError):
        threadws.dial(echo_url.replace("ws://", "wss://"), timeout=10)


# --- SOCKS5 and another HTTP proxy (pproxy) ---------------------------------------------


def test_socks5_with_auth(pproxy, echo_url):
    port = _port(echo_url)
    before = _tunnels(pproxy, port)
    _round_trip(echo_url, proxy=f"socks5://{USER}:{PASSWORD}@127.0.0.1:{pproxy.port}")
    wait_until(lambda: _tunnels(pproxy, port) == before + 1)
    with pytest.raises(ProxyError, match="SOCKS proxy socks5://127.0.0.1"):
        threadws.dial(echo_url, proxy=f"socks5://{USER}:wrong@127.0.0.1:{pproxy.port}", timeout=10)


def test_socks5h_lets_the_proxy_resolve_the_name(pproxy, echo_url):
    port = _port(echo_url)
    named = echo_url.replace("127.0.0.1", "localhost")
    before = pproxy.text().count(f"-> localhost:{port}")
    _round_trip(named, proxy=f"socks5h://{USER}:{PASSWORD}@127.0.0.1:{pproxy.port}")
    wait_until(lambda: pproxy.text().count(f"-> localhost:{port}") == before + 1)
    # socks5:// resolves here and sends the proxy an address.
    before = pproxy.text().count(f"-> localhost:{port}")
    _round_trip(named, proxy=f"socks5://{USER}:{PASSWORD}@127.0.0.1:{pproxy.port}")
    assert pproxy.text().count(f"-> localhost:{port}") == before


def test_http_connect_through_pproxy(pproxy, echo_url):
    _round_trip(echo_url, proxy=f"http://{USER}:{PASSWORD}@127.0.0.1:{pproxy.port}")
    with pytest.raises(ProxyError) as info:
        threadws.dial(echo_url, proxy=f"http://127.0.0.1:{pproxy.port}", timeout=10)
    assert info.value.status == 407


# --- mistakes -------------------------------------------------------------------------------


def test_unusable_proxy_urls(echo_url, monkeypatch):
    with pytest.raises(ValueError, match="HTTPS proxies"):
        threadws.dial(echo_url, proxy="https://127.0.0.1:3128")
    with pytest.raises(ValueError, match="unsupported proxy scheme"):
        threadws.dial(echo_url, proxy="ftp://127.0.0.1:21")
    with pytest.raises(ValueError, match="proxy= cannot be used with"):
        threadws.dial(echo_url, proxy="http://127.0.0.1:3128", unix_socket="/tmp/x.sock")
    monkeypatch.setitem(sys.modules, "python_socks", None)  # as if the socks extra were not installed
    with pytest.raises(ImportError, match=r"threadws\[socks\]"):
        threadws.dial(echo_url, proxy="socks5://127.0.0.1:1080")
