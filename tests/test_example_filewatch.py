"""The filewatch example (examples/filewatch): a file pushed to the page when it changes."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import threadws

from .example_process import ROOT, ExampleServer, run_example

SERVER = ROOT / "examples" / "filewatch" / "server.py"


@pytest.fixture
def watched(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("first version\n", encoding="utf-8")
    return path


@pytest.fixture
def server(tmp_path: Path, watched: Path) -> Iterator[ExampleServer]:
    with run_example(SERVER, ["--interval", "0.05", str(watched)], tmp_path / "server.stderr") as running:
        yield running


def _replace(path: Path, text: str) -> None:
    """Write the file the way editors do: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def test_sends_the_file_then_each_change(server: ExampleServer, watched: Path) -> None:
    with threadws.dial(server.ws_url()) as conn:
        assert conn.recv(timeout=10) == "first version\n"
        _replace(watched, "second version\n")
        assert conn.recv(timeout=10) == "second version\n"
        with open(watched, "a", encoding="utf-8") as f:  # an append in place, same second
            f.write("and a line more ✓\n")
        assert conn.recv(timeout=10) == "second version\nand a line more ✓\n"
        watched.unlink()
        assert conn.recv(timeout=10).startswith(f"cannot read {watched}")
        _replace(watched, "back again\n")
        assert conn.recv(timeout=10) == "back again\n"


def test_every_page_gets_the_change(server: ExampleServer, watched: Path) -> None:
    conns = [threadws.dial(server.ws_url()) for _ in range(3)]
    try:
        for conn in conns:
            assert conn.recv(timeout=10) == "first version\n"
        _replace(watched, "news for all\n")
        for conn in conns:
            assert conn.recv(timeout=10) == "news for all\n"
    finally:
        for conn in conns:
            conn.close()


def test_only_its_own_origin(server: ExampleServer) -> None:
    with pytest.raises(threadws.HandshakeError) as info:
        threadws.dial(server.ws_url(), origin="http://evil.example", timeout=10)
    assert info.value.status == 403


def test_serves_its_page_and_nothing_else(server: ExampleServer) -> None:
    with urllib.request.urlopen(server.url, timeout=10) as response:
        assert response.read() == (SERVER.parent / "static" / "index.html").read_bytes()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{server.netloc}/server.py", timeout=10)
    assert info.value.code == 404
    info.value.close()


@pytest.mark.interop
def test_page_in_a_browser(server: ExampleServer, watched: Path) -> None:
    from selenium.webdriver.common.by import By

    from .peers.browser import open_browser, require_browser

    require_browser()
    with open_browser() as browser:
        browser.get(server.url)
        browser.wait_for("document.getElementById('file').textContent === 'first version\\n'")
        assert browser.driver.find_element(By.ID, "status").text.startswith("connected")

        _replace(watched, "edited while you watch\n<b>not bold</b>\n")
        browser.wait_for("document.getElementById('file').dataset.updates === '2'")
        shown = browser.driver.find_element(By.ID, "file")
        assert shown.text == "edited while you watch\n<b>not bold</b>"  # shown as text, not run as HTML
        assert browser.evaluate("document.querySelectorAll('#file b').length") == 0

        browser.driver.refresh()  # a reload shows the current file at once
        browser.wait_for("document.getElementById('file').textContent.startsWith('edited while you watch')")
