"""The chat example embedded in a Flask app, under Werkzeug's threaded server."""

from __future__ import annotations

import json
import urllib.request

import pytest

import threadws

from .example_process import ROOT, run_example
from .peers.browser import open_browser, require_browser

APP = ROOT / "examples" / "flask_chat" / "app.py"


def test_flask_chat(tmp_path):
    with run_example(APP, [], tmp_path / "stderr") as server:
        url = server.ws_url("/ws")
        alice = threadws.dial(url, ping_interval=None)
        alice.send("alice joined")
        assert alice.recv(timeout=5) == "alice joined"
        bob = threadws.dial(url, ping_interval=None)
        bob.send("bob joined")
        assert bob.recv(timeout=5) == "bob joined" and alice.recv(timeout=5) == "bob joined"
        # The ordinary Flask routes keep working next to the WebSocket one.
        with urllib.request.urlopen(server.url + "members", timeout=5) as response:
            assert json.load(response) == {"members": 2}
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert b'id="log"' in response.read()
        with pytest.raises(threadws.HandshakeError) as info:
            threadws.dial(url, origin="http://evil.example")
        assert info.value.status == 403
        bob.close()
        alice.send("bye")
        assert alice.recv(timeout=5) == "bye"
        alice.close()


@pytest.mark.interop
def test_flask_chat_in_two_windows(tmp_path):
    require_browser()
    with run_example(APP, [], tmp_path / "stderr") as server, open_browser() as browser:
        browser.get(server.url)
        first = browser.current_window
        browser.wait_for("document.getElementById('status').textContent === 'connected'")
        second = browser.new_window(server.url)
        browser.wait_for("document.getElementById('status').textContent === 'connected'")
        browser.driver.find_element("id", "msg").send_keys("from the second window")
        browser.driver.find_element("id", "send").click()
        for window in (second, first):
            browser.switch_to(window)
            assert browser.wait_for(
                "[...document.querySelectorAll('#log div')].map(d => d.textContent).join('|') || null"
            ) == "from the second window"
