"""The DEBUG trace: every message and control frame, both ways, and nothing when DEBUG is off."""

from __future__ import annotations

import logging
import re

import pytest

import threadws
from threadws import MessageType

from .conftest import start_server, stop_server, url_of


def _echo(conn: threadws.Conn) -> None:
    for message in conn:
        conn.send(message)


def _talk(url: str) -> None:
    with threadws.dial(url, ping_interval=None) as conn:
        conn.send("hello")
        assert conn.recv(timeout=5) == "hello"
        conn.send(b"\x00\x01")
        assert conn.recv(timeout=5) == b"\x00\x01"
        conn.write_control(MessageType.PING, b"x")
        with conn.next_writer(MessageType.TEXT, buffer_size=3) as writer:
            writer.write("abcdef")
        assert conn.recv(timeout=5) == "abcdef"


def _is_frame(line: str) -> bool:
    return re.match(r"\S+ [<>] (TEXT|BINARY|PING|PONG|CLOSE)\b", line) is not None


def test_debug_traces_every_frame_both_ways(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="threadws")
    server = start_server(_echo)
    try:
        _talk(url_of(server))
    finally:
        stop_server(server)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    client = [line.split(" ", 1)[1] for line in lines if line.startswith("threadws-client") and _is_frame(line)]
    served = [line.split(" ", 1)[1] for line in lines if line.startswith("threadws-server") and _is_frame(line)]
    assert client[:4] == [
        "> TEXT 'hello' [5 bytes]",
        "< TEXT 'hello' [5 bytes]",
        "> BINARY 00 01 [2 bytes]",
        "< BINARY 00 01 [2 bytes]",
    ]
    assert "> PING 78 [1 byte]" in client and "< PONG 78 [1 byte]" in client
    assert "> TEXT 'abcdef' [6 bytes, part]" in client and "> TEXT '' [0 bytes, last part]" in client
    assert client[-2:] == ["> CLOSE 1000 (NORMAL_CLOSURE)", "< CLOSE 1000 (NORMAL_CLOSURE)"]
    assert "< PING 78 [1 byte]" in served and "> PONG 78 [1 byte]" in served
    assert "< TEXT 'abcdef' [6 bytes, part]" in served and "> TEXT 'abcdef' [6 bytes]" in served
    assert served[-2:] == ["< CLOSE 1000 (NORMAL_CLOSURE)", "> CLOSE 1000 (NORMAL_CLOSURE)"]


def test_nothing_is_traced_when_debug_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="threadws")
    server = start_server(_echo)
    try:
        _talk(url_of(server))
    finally:
        stop_server(server)
    assert not [r for r in caplog.records if r.levelno == logging.DEBUG]


def test_long_payloads_are_cut_short() -> None:
    from threadws._trace import describe

    assert describe("TEXT", "x" * 100, 100) == f"TEXT {'x' * 60!r}... [100 bytes]"
    assert describe("BINARY", bytes(range(20)), 20).endswith("0e 0f ... [20 bytes]")


def test_client_traces_its_handshake_under_the_connections_name(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="threadws")
    server = start_server(_echo)
    try:
        host, port = server.server_address
        url = f"ws://u%C3%A9:secret@{host}:{port}/chat?room=1"
        with threadws.dial(url, ping_interval=None, subprotocols="chat", headers={"Cookie": "session=1"}) as conn:
            conn.send("hi")
            assert conn.recv(timeout=5) == "hi"
    finally:
        stop_server(server)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(conn.name + " ")]
    shown = [line[len(conn.name) + 1 :] for line in lines]
    assert shown[0] == f"connected to {host}:{port}"
    assert shown[1] == "> GET /chat?room=1 HTTP/1.1"
    assert f"> Host: {host}:{port}" in shown and "> Sec-WebSocket-Protocol: chat" in shown
    # Credentials stay out of the log: only the scheme shows.
    assert "> Authorization: Basic [hidden]" in shown and "> Cookie: [hidden]" in shown
    assert not any("secret" in line or "session=1" in line for line in lines)
    response = shown.index("< HTTP/1.1 101 Switching Protocols")
    assert "< Upgrade: websocket" in shown[response:]
    assert shown.index("> TEXT 'hi' [2 bytes]") > response  # frames follow, under the same name


def test_head_lines_hide_credentials() -> None:
    from threadws._trace import describe_head

    assert describe_head("CONNECT h:1 HTTP/1.1", [("Proxy-Authorization", "Basic dTpw"), ("Set-Cookie", "a=b")]) == [
        "CONNECT h:1 HTTP/1.1",
        "Proxy-Authorization: Basic [hidden]",
        "Set-Cookie: [hidden]",
    ]
