"""A real browser (headless Chromium) talking to a threadws server.

The round trip runs twice: the page over http with ``ws://``, and over https
with ``wss://`` (``threadws.serve(ssl_context=...)`` serves both the page and
the WebSocket; a trustme certificate, which Chromium accepts by the pin of its
public key, ``--ignore-certificate-errors-spki-list``).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import pytest

import threadws
from threadws import MessageType

from .conftest import start_server, stop_server
from .peers.browser import open_browser, require_browser
from .tls_tools import Certificates, spki_sha256

pytestmark = pytest.mark.interop

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>threadws browser check</title>
<script>
const hex = (buffer) => [...new Uint8Array(buffer)].map(b => b.toString(16).padStart(2, "0")).join("");
const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
ws.binaryType = "arraybuffer";
const got = [];
ws.onopen = () => {
  ws.send("héllo wörld ✓");
  ws.send(new Uint8Array([0, 1, 2, 255, 254, 128]).buffer);
};
ws.onmessage = (event) => {
  got.push(typeof event.data === "string" ? {type: "text", text: event.data}
                                          : {type: "binary", hex: hex(event.data)});
  if (got.length === 2) ws.send("did my pong arrive?");
  if (got.length === 3) ws.close(4001, "done ✓");
};
ws.onclose = (event) => {
  window.__result = {got, code: event.code, reason: event.reason, clean: event.wasClean,
                     extensions: ws.extensions, protocol: ws.protocol, url: ws.url};
};
</script>
"""


@pytest.fixture(scope="module")
def browser(tls_certs: Certificates):
    require_browser()
    # Only the test certificate's key is let through: any other certificate error still fails.
    with open_browser(extra_args=[f"--ignore-certificate-errors-spki-list={spki_sha256(tls_certs.cert_pem)}"]) as b:
        yield b


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_browser_round_trip(tmp_path: Path, browser, tls_certs: Certificates, scheme: str):
    (tmp_path / "index.html").write_text(PAGE, encoding="utf-8")
    results: queue.Queue[Any] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        pong = threading.Event()
        conn.set_pong_handler(lambda payload: pong.set() if payload == b"hello browser" else None)
        conn.write_control(MessageType.PING, b"hello browser")
        results.put(conn.request_headers.get("Sec-WebSocket-Extensions"))
        try:
            while True:
                kind, data = conn.read_message()
                if data == "did my pong arrive?":
                    conn.send("yes" if pong.wait(5) else "no")
                else:
                    conn.write_message(kind, data)
        except threadws.ConnectionClosed as exc:
            results.put(exc)

    server = start_server(handler, static_dir=tmp_path, ssl_context=tls_certs.server if scheme == "https" else None)
    try:
        host, port = server.server_address
        browser.get(f"{scheme}://{host}:{port}/index.html")
        result = browser.wait_for("window.__result", timeout=15)
        offered = results.get(timeout=5)
        exc = results.get(timeout=5)
    finally:
        stop_server(server)
    assert result["got"] == [
        {"type": "text", "text": "héllo wörld ✓"},
        {"type": "binary", "hex": "000102fffe80"},
        {"type": "text", "text": "yes"},
    ]
    # Chromium offers permessage-deflate; without compression threadws declines it cleanly.
    assert offered and "permessage-deflate" in offered
    assert result["extensions"] == ""
    assert result["code"] == 4001 and result["clean"] is True
    assert exc.rcvd == (4001, "done ✓") and exc.sent == (4001, "")
    assert "timed out" not in str(exc)
    assert result["url"] == f"{'wss' if scheme == 'https' else 'ws'}://{host}:{port}/ws"


COMPRESSED_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>threadws compression check</title>
<script>
const ws = new WebSocket(`ws://${location.host}/ws`);
ws.binaryType = "arraybuffer";
const json = JSON.stringify({items: Array.from({length: 300}, (_, i) => ({id: i, name: "item ✓ " + i}))});
const bytes = new Uint8Array(100000).map((_, i) => i % 7);
const sent = [json, json, "short", bytes];
const got = [];
ws.onopen = () => sent.forEach((m) => ws.send(m));
ws.onmessage = (event) => {
  if (typeof event.data === "string") got.push(event.data === json ? "json" : event.data);
  else got.push(new Uint8Array(event.data).every((b, i) => b === i % 7) ? "bytes" : "bad bytes");
  if (got.length === 5) ws.close(1000);
};
ws.onclose = (event) => {
  window.__result = {got, code: event.code, extensions: ws.extensions, jsonLength: json.length};
};
</script>
"""


def test_browser_compressed_round_trip(tmp_path: Path, browser):
    """Chromium offers permessage-deflate on every connection; with compression on, both directions use it."""
    (tmp_path / "index.html").write_text(COMPRESSED_PAGE, encoding="utf-8")
    results: queue.Queue[Any] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        results.put(conn.response_headers.get("Sec-WebSocket-Extensions"))
        try:
            for _ in range(4):
                kind, data = conn.read_message()
                conn.write_message(kind, data)
            conn.write_message(MessageType.TEXT, "uncompressed on purpose " * 10, compress=False)
            conn.read_message()
        except threadws.ConnectionClosed as exc:
            results.put(exc)

    upgrader = threadws.Upgrader(ping_interval=None, close_timeout=2.0, compression=True)
    server = start_server(handler, static_dir=tmp_path, upgrader=upgrader)
    try:
        host, port = server.server_address
        browser.get(f"http://{host}:{port}/index.html")
        result = browser.wait_for("window.__result", timeout=15)
        answered = results.get(timeout=5)
        exc = results.get(timeout=5)
    finally:
        stop_server(server)
    assert result["extensions"].startswith("permessage-deflate")
    assert answered.startswith("permessage-deflate")
    assert result["got"] == ["json", "json", "short", "bytes", "uncompressed on purpose " * 10]
    assert result["code"] == 1000 and exc.rcvd is not None and exc.rcvd.code == 1000
