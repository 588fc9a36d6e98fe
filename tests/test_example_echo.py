"""The echo example (examples/echo), run the way a reader would: server and client as subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import threadws
from threadws import CloseCode, MessageType

from .example_process import ROOT, ExampleServer, example_env, run_example

EXAMPLE = ROOT / "examples" / "echo"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ExampleServer]:
    """examples/echo/server.py on a free port, killed at the end."""
    with run_example(EXAMPLE / "server.py", [], tmp_path / "server.stderr") as running:
        yield running


def test_home_page_is_served_at_root(server: ExampleServer) -> None:
    with urllib.request.urlopen(server.url, timeout=10) as response:
        assert response.status == 200
        assert response.headers.get_content_type() == "text/html"
        body = response.read()
    assert body == (EXAMPLE / "home.html").read_bytes()
    page = body.decode()
    for element_id in ("msg", "open", "send", "close", "output"):  # what a browser test drives
        assert f'id="{element_id}"' in page
    assert "location.host" in page  # the ws:// URL follows whatever port the page came from


def test_other_paths_are_404(server: ExampleServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{server.netloc}/server.py", timeout=10)
    assert info.value.code == 404
    info.value.close()


def test_client_count_mode(server: ExampleServer) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "client.py"), server.ws_url("/echo"), "--count", "20"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        env=example_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert lines == [f"message {i} of 20" for i in range(1, 21)] + ["all 20 messages came back"]
    assert result.stderr == b""


def test_client_echoes_stdin_lines(server: ExampleServer) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "client.py"), server.ws_url("/echo")],
        input="hello\n\nwörld ✓\n".encode(),
        capture_output=True,
        check=False,
        env={**example_env(), "PYTHONIOENCODING": "utf-8"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == "hello\n\nwörld ✓\n"


def test_client_reports_a_refused_handshake(server: ExampleServer) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "client.py"), f"ws://{server.netloc}/nope", "--count", "1"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        env=example_env(),
        timeout=60,
    )
    assert result.returncode == 1
    assert b"cannot connect" in result.stderr and b"404" in result.stderr
    assert b"Traceback" not in result.stderr


def test_echo_keeps_text_as_text_and_binary_as_binary(server: ExampleServer) -> None:
    with threadws.dial(server.ws_url("/echo")) as conn:
        conn.send("héllo ✓")
        assert conn.read_message(timeout=10) == (MessageType.TEXT, "héllo ✓")
        conn.send(b"\x00\xff\x80binary")
        assert conn.read_message(timeout=10) == (MessageType.BINARY, b"\x00\xff\x80binary")
        big = os.urandom(200_000)
        conn.send(big)
        assert conn.recv(timeout=10) == big
        conn.send("")
        assert conn.read_message(timeout=10) == (MessageType.TEXT, "")
    with pytest.raises(threadws.ConnectionClosedOK):
        conn.recv(timeout=10)
    assert conn.close_exception is not None and conn.close_exception.code == CloseCode.NORMAL_CLOSURE


def test_only_its_own_origin_may_connect(server: ExampleServer) -> None:
    with pytest.raises(threadws.HandshakeError) as info:
        threadws.dial(server.ws_url("/echo"), origin="http://evil.example")
    assert info.value.status == 403
    # The page the server served itself has the server's own origin: allowed.
    with threadws.dial(server.ws_url("/echo"), origin=f"http://{server.netloc}") as conn:
        conn.send("same origin")
        assert conn.recv(timeout=10) == "same origin"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_server_cleanly(server: ExampleServer, signum: signal.Signals) -> None:
    conn = threadws.dial(server.ws_url("/echo"))
    try:
        conn.send("still there?")
        assert conn.recv(timeout=10) == "still there?"  # the server is serving this connection
        server.proc.send_signal(signum)
        # Open connections are told the server is going away, then it exits with 0.
        with pytest.raises(threadws.ConnectionClosedOK) as info:
            conn.recv(timeout=10)
        assert info.value.code == CloseCode.GOING_AWAY
        assert server.proc.wait(timeout=5) == 0, server.stderr()
    finally:
        conn.abort()
    assert "Traceback" not in server.stderr()
    with pytest.raises(OSError):
        threadws.dial(server.ws_url("/echo"), timeout=5)  # nothing listens any more


@pytest.mark.interop
def test_page_in_a_browser(tmp_path):
    from .peers.browser import open_browser, require_browser

    require_browser()
    with run_example(EXAMPLE / "server.py", [], tmp_path / "stderr") as server, open_browser() as browser:
        browser.get(server.url)
        driver = browser.driver
        driver.find_element("id", "open").click()
        browser.wait_for("document.getElementById('output').textContent.includes('OPEN')")
        field = driver.find_element("id", "msg")
        field.clear()
        field.send_keys("typed by a person ✓")
        driver.find_element("id", "send").click()
        lines = browser.wait_for(
            "(() => { const l = [...document.querySelectorAll('#output div')].map(d => d.textContent);"
            " return l.some(t => t.startsWith('RESPONSE')) ? l : null; })()"
        )
        assert lines == ["OPEN", "SEND: typed by a person ✓", "RESPONSE: typed by a person ✓"]
        driver.find_element("id", "close").click()
        browser.wait_for("document.getElementById('output').textContent.includes('CLOSE')")
