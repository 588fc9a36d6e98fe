"""The chat example: two browser windows and two scripts in one room."""

from __future__ import annotations

import signal
import urllib.request

import pytest

import threadws

from .example_process import ROOT, run_example
from .peers.browser import open_browser, require_browser


CHAT = ROOT / "examples" / "chat" / "server.py"


def test_everyone_sees_every_message(tmp_path):
    with run_example(CHAT, [], tmp_path / "stderr") as server:
        proc, page, url = server.proc, server.url, server.ws_url("/ws")
        with urllib.request.urlopen(page, timeout=5) as response:
            assert b'id="log"' in response.read()
        alice = threadws.dial(url, ping_interval=None)
        alice.send("alice joined")
        assert alice.recv(timeout=5) == "alice joined"  # so she is in the room
        bob = threadws.dial(url, ping_interval=None)
        bob.send("bob joined")
        assert bob.recv(timeout=5) == "bob joined" and alice.recv(timeout=5) == "bob joined"
        alice.send("hi bob")
        assert alice.recv(timeout=5) == "hi bob" and bob.recv(timeout=5) == "hi bob"
        bob.send("hi alice ✓")
        assert alice.recv(timeout=5) == "hi alice ✓" and bob.recv(timeout=5) == "hi alice ✓"
        # Only the page's own origin may connect.
        with pytest.raises(threadws.HandshakeError) as info:
            threadws.dial(url, origin="http://evil.example")
        assert info.value.status == 403
        # Stopping the server tells everyone it is going away.
        proc.send_signal(signal.SIGTERM)
        for conn in (alice, bob):
            with pytest.raises(threadws.ConnectionClosedOK) as closed:
                conn.recv(timeout=10)
            assert closed.value.code == threadws.CloseCode.GOING_AWAY
        assert proc.wait(10) == 0


@pytest.mark.interop
def test_two_browser_windows_chat(tmp_path):
    require_browser()
    with run_example(CHAT, [], tmp_path / "stderr") as server, open_browser() as browser:
        page = server.url
        browser.get(page)
        first = browser.current_window
        browser.wait_for("document.getElementById('status').textContent === 'connected'")
        second = browser.new_window(page)
        browser.wait_for("document.getElementById('status').textContent === 'connected'")

        def say(window: str, text: str) -> None:
            browser.switch_to(window)
            browser.driver.find_element("id", "msg").send_keys(text)
            browser.driver.find_element("id", "send").click()

        def lines(window: str, count: int) -> list[str]:
            browser.switch_to(window)
            return browser.wait_for(
                f"(() => {{ const l = [...document.querySelectorAll('#log div')].map(d => d.textContent);"
                f" return l.length >= {count} ? l : null; }})()"
            )

        say(first, "hello from one")
        say(second, "<b>hello</b> from two")
        for window in (first, second):
            assert lines(window, 2) == ["hello from one", "<b>hello</b> from two"]
