"""The command example (examples/command): a process wired to a page, run as a reader would run it."""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import threadws

from .conftest import wait_until
from .example_process import ROOT, ExampleServer, run_example

SERVER = ROOT / "examples" / "command" / "server.py"

# A command that says hello on both streams, tells its pid, and answers each line in capitals.
SHOUT = (
    "import os, sys\n"
    "print('pid', os.getpid(), flush=True)\n"
    "print('warming up', file=sys.stderr, flush=True)\n"
    "print('type a line', flush=True)\n"
    "for line in sys.stdin:\n"
    "    print('you said:', line.strip().upper(), flush=True)\n"
)


@pytest.fixture
def shout_server(tmp_path: Path) -> Iterator[ExampleServer]:
    with run_example(SERVER, ["--", sys.executable, "-u", "-c", SHOUT], tmp_path / "server.stderr") as server:
        yield server


def _read_until(conn: threadws.Conn, needle: str) -> str:
    text = ""
    while needle not in text:
        message = conn.recv(timeout=10)
        assert isinstance(message, str)
        text += message
    return text


def _pid_of(output: str) -> int:
    match = re.search(r"pid (\d+)", output)
    assert match, output
    return int(match.group(1))


def _gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")  # the server reaps its children, so no zombie lingers


def test_output_both_streams_and_input(shout_server: ExampleServer) -> None:
    with threadws.dial(shout_server.ws_url()) as conn:
        output = _read_until(conn, "type a line\n")
        assert "warming up\n" in output  # stderr comes through too
        conn.send("hello")
        conn.send("second line")
        assert _read_until(conn, "SECOND LINE\n").endswith("you said: HELLO\nyou said: SECOND LINE\n")


def test_the_process_ends_when_the_connection_does(shout_server: ExampleServer) -> None:
    conn = threadws.dial(shout_server.ws_url())
    try:
        pid = _pid_of(_read_until(conn, "type a line\n"))
        assert not _gone(pid)
    finally:
        conn.close()
    wait_until(lambda: _gone(pid))
    wait_until(lambda: f"pid {pid} ended" in shout_server.stderr())


def test_the_process_ends_when_the_connection_is_cut(shout_server: ExampleServer) -> None:
    conn = threadws.dial(shout_server.ws_url())
    pid = _pid_of(_read_until(conn, "type a line\n"))
    conn.abort()  # no closing handshake: TCP just goes away
    wait_until(lambda: _gone(pid))


def test_the_connection_ends_when_the_process_does(tmp_path: Path) -> None:
    command = ["--", sys.executable, "-c", "print('bye'); raise SystemExit(3)"]
    with run_example(SERVER, command, tmp_path / "server.stderr") as server:
        with threadws.dial(server.ws_url()) as conn:
            assert _read_until(conn, "bye\n") == "bye\n"
            with pytest.raises(threadws.ConnectionClosedOK) as info:
                conn.recv(timeout=10)
        assert info.value.code == threadws.CloseCode.NORMAL_CLOSURE
        assert info.value.reason == "command exited with status 3"


def test_only_its_own_origin(shout_server: ExampleServer) -> None:
    with pytest.raises(threadws.HandshakeError) as info:
        threadws.dial(shout_server.ws_url(), origin="http://evil.example", timeout=10)
    assert info.value.status == 403
    with threadws.dial(shout_server.ws_url(), origin=f"http://{shout_server.netloc}") as conn:
        _read_until(conn, "type a line\n")


def test_serves_its_page_and_nothing_else(shout_server: ExampleServer) -> None:
    with urllib.request.urlopen(shout_server.url, timeout=10) as response:
        assert response.status == 200
        assert response.read() == (SERVER.parent / "static" / "index.html").read_bytes()
    for path in ("/server.py", "/static/index.html", "/../server.py"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://{shout_server.netloc}{path}", timeout=10)
        assert info.value.code == 404
        info.value.close()


@pytest.mark.interop
def test_page_in_a_browser(shout_server: ExampleServer) -> None:
    from selenium.webdriver.common.by import By

    from .peers.browser import open_browser, require_browser

    require_browser()
    with open_browser() as browser:
        browser.get(shout_server.url)
        browser.wait_for("document.getElementById('status').textContent === 'connected'")
        browser.wait_for("document.getElementById('output').textContent.includes('type a line')")
        output = browser.driver.find_element(By.ID, "output")
        pid = _pid_of(output.text)
        assert "warming up" in output.text

        box = browser.driver.find_element(By.ID, "input")
        box.send_keys("hello from the page")
        browser.driver.find_element(By.ID, "send").click()
        box.send_keys("and enter works too\n")
        browser.wait_for("document.getElementById('output').textContent.includes('AND ENTER WORKS TOO')")
        lines = output.text.splitlines()
        assert lines[-2:] == ["you said: HELLO FROM THE PAGE", "you said: AND ENTER WORKS TOO"]
        assert box.get_attribute("value") == ""

        browser.get("about:blank")  # leaving the page ends the command
        wait_until(lambda: _gone(pid))


def test_a_command_that_cannot_start_closes_with_1011(tmp_path: Path) -> None:
    missing = str(tmp_path / ("no-such-command-é" * 8))
    with run_example(SERVER, ["--", missing], tmp_path / "server.stderr") as server:
        with threadws.dial(server.ws_url()) as conn, pytest.raises(threadws.ConnectionClosedError) as info:
            conn.recv(timeout=10)
        assert info.value.code == threadws.CloseCode.INTERNAL_ERROR
        assert info.value.reason.startswith("cannot start the command: [Errno 2]")
        assert len(info.value.reason.encode()) <= 123
