"""Interop with Node.js's `ws` package (a real peer threadws didn't write), both directions.

The round trips and closes run over ``ws://`` and ``wss://`` (a trustme
certificate: Node's server serves it, Node's client trusts its CA).
"""

from __future__ import annotations

import hashlib
import queue
from typing import Any

import pytest

import threadws
from threadws import MessageType

from .conftest import start_server, stop_server, url_of
from .peers.node_peer import ensure_node_ws, run_node_client, start_node_echo_server
from .tls_tools import Certificates

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module", autouse=True)
def node_ws() -> None:
    ensure_node_ws()


@pytest.fixture(params=["ws", "wss"])
def tls(request: pytest.FixtureRequest) -> Certificates | None:
    """None for ws://; for wss://, the certificates (PEM files for Node, contexts for threadws)."""
    return request.getfixturevalue("tls_certs") if request.param == "wss" else None


def test_node_client_to_threadws_server(tls: Certificates | None):
    closes: queue.Queue[Any] = queue.Queue()

    def handler(conn: threadws.Conn) -> None:
        try:
            for message in conn:
                conn.send(message)
        except threadws.ConnectionClosed as exc:
            closes.put(exc)
            raise
        closes.put(conn.close_exception)

    server = start_server(handler, ssl_context=tls.server if tls else None)
    url = url_of(server) if tls is None else url_of(server).replace("ws://", "wss://", 1)
    big = bytes(range(256)) * 1024  # 256 KiB
    try:
        report = run_node_client(
            url,
            [
                {"op": "send", "text": "héllo ✓", "expect_echo": True},
                {"op": "send", "hex": "00ff7f80", "expect_echo": True},
                {"op": "send", "text": "", "expect_echo": True},
                {"op": "send", "hex": big.hex(), "expect_echo": True},
                {"op": "send", "text": "frag", "fin": False},
                {"op": "send", "text": "mented", "fin": True},
                {"op": "expect", "text": "fragmented"},
                {"op": "ping", "text": "are you there"},
                {"op": "close", "code": 4000, "reason": "bye ✓"},
            ],
            ca=tls.ca_pem if tls else None,
        )
    finally:
        stop_server(server)
    assert report["ok"], report["errors"]
    received = report["received"]
    assert [m["type"] for m in received] == ["text", "binary", "text", "binary", "text"]
    assert received[0]["text"] == "héllo ✓" and received[1]["hex"] == "00ff7f80"
    assert received[3]["sha256"] == hashlib.sha256(big).hexdigest()
    assert report["pongs"] == [{"hex": b"are you there".hex()}]
    assert report["close"]["code"] == 4000 and report["close"]["initiated_by"] == "client"
    exc = closes.get(timeout=5)
    assert exc.rcvd == (4000, "bye ✓") and exc.sent == (4000, "") and exc.rcvd_then_sent
    assert "timed out" not in str(exc)


def test_threadws_client_to_node_server(tls: Certificates | None):
    pems = {"cert": tls.cert_pem, "key": tls.key_pem} if tls else {}
    context = tls.client if tls else None
    with start_node_echo_server(control=True, **pems) as node:
        assert node.url.startswith("wss://" if tls else "ws://")
        conn = threadws.dial(node.url, ping_interval=None, ssl_context=context)
        conn.send("héllo ✓")
        assert conn.read_message(timeout=5) == (MessageType.TEXT, "héllo ✓")
        big = bytes(range(256)) * 4096  # 1 MiB
        conn.send(big)
        assert conn.read_message(timeout=10) == (MessageType.BINARY, big)
        conn.send(b"")
        assert conn.recv(timeout=5) == b""
        pongs: queue.Queue[bytes] = queue.Queue()
        conn.set_pong_handler(pongs.put)
        conn.write_control(MessageType.PING, b"ping from python")
        assert pongs.get(timeout=5) == b"ping from python"
        conn.close(4002, "done ✓")
        close = node.wait_for_close()
        assert (close["code"], close["reason"]) == (4002, "done ✓")
        exc = conn.close_exception
        assert isinstance(exc, threadws.ConnectionClosedError)
        assert exc.sent == (4002, "done ✓") and exc.rcvd is not None and exc.rcvd.code == 4002
        assert "timed out" not in str(exc)

        # The Node server starts the close this time.
        conn = threadws.dial(node.url, ping_interval=None, ssl_context=context)
        conn.send("!close 4005 server says bye")
        with pytest.raises(threadws.ConnectionClosedError) as info:
            conn.recv(timeout=5)
        assert (info.value.code, info.value.reason) == (4005, "server says bye")
        assert conn.wait_closed(5)
        assert "timed out" not in str(conn.close_exception)

        # And drops TCP without a close frame.
        conn = threadws.dial(node.url, ping_interval=None, ssl_context=context)
        conn.send("!terminate")
        with pytest.raises(threadws.ConnectionClosedError) as info:
            conn.recv(timeout=5)
        assert info.value.code == threadws.CloseCode.ABNORMAL_CLOSURE and info.value.rcvd is None
    assert not [e for e in node.events if e["event"] in ("error", "tls_error", "handshake_error")], node.events


# --- permessage-deflate, both directions -------------------------------------------------


def test_compressed_node_client_to_threadws_server():
    server = start_server(
        lambda conn: [conn.send(m) for m in conn],
        upgrader=threadws.Upgrader(ping_interval=None, close_timeout=2.0, compression=True),
    )
    json_text = '{"items": [%s]}' % ", ".join('{"id": %d, "name": "item"}' % i for i in range(200))
    big = bytes(range(256)) * 1024  # 256 KiB
    try:
        report = run_node_client(
            url_of(server),
            [
                {"op": "send", "text": json_text, "expect_echo": True},  # over ws's 1 KiB threshold
                {"op": "send", "text": json_text, "expect_echo": True},  # context takeover
                {"op": "send", "hex": big.hex(), "expect_echo": True},
                {"op": "send", "text": "short ✓", "expect_echo": True},
                {"op": "send", "text": json_text, "compress": False, "expect_echo": True},
                {"op": "send", "text": json_text[:3000], "fin": False},  # a compressed fragmented message
                {"op": "send", "text": json_text[3000:], "fin": True},
                {"op": "expect", "text": json_text},
                {"op": "close", "code": 1000},
            ],
            compression=True,
        )
    finally:
        stop_server(server)
    assert report["ok"], report["errors"]
    assert "permessage-deflate" in report["extensions"]
    assert report["received"][2]["sha256"] == hashlib.sha256(big).hexdigest()


def test_compressed_threadws_client_to_node_server():
    json_text = '{"items": [%s]}' % ", ".join('{"id": %d, "name": "item"}' % i for i in range(200))
    with start_node_echo_server(compression=True) as node:
        with threadws.dial(node.url, ping_interval=None, compression=True) as conn:
            assert "permessage-deflate" in conn.response_headers["Sec-WebSocket-Extensions"]
            for message in [json_text, json_text, bytes(range(256)) * 4096, "short ✓", "é" * 5000]:
                conn.send(message)
                assert conn.recv(timeout=10) == message
            conn.write_message(MessageType.TEXT, json_text, compress=False)
            assert conn.recv(timeout=5) == json_text
        assert "permessage-deflate" in node.connections[0]["extensions"]
