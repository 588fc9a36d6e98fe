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


def test_server_traces_its_handshake_under_the_connections_name(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="threadws")
    names: list[str] = []

    def echo(conn: threadws.Conn) -> None:
        names.append(conn.name)
        _echo(conn)

    server = start_server(echo, upgrader=threadws.Upgrader(ping_interval=None, subprotocols=["chat"]))
    try:
        with threadws.dial(url_of(server, "/chat?room=1"), ping_interval=None, subprotocols="chat",
                           headers={"Cookie": "session=1"}) as conn:  # fmt: skip
            conn.send("hi")
            assert conn.recv(timeout=5) == "hi"
    finally:
        stop_server(server)
    name = names[0]
    assert name.startswith("threadws-server-")
    shown = [r.getMessage()[len(name) + 1 :] for r in caplog.records if r.getMessage().startswith(name + " ")]
    assert shown[0] == "< GET /chat?room=1 HTTP/1.1"
    assert "< Sec-WebSocket-Protocol: chat" in shown and "< Cookie: [hidden]" in shown
    response = shown.index("> HTTP/1.1 101 Switching Protocols")
    assert "> Sec-WebSocket-Protocol: chat" in shown[response:] and "> Upgrade: websocket" in shown[response:]
    assert shown.index("< TEXT 'hi' [2 bytes]") > response  # frames follow, under the same name
    assert not any("session=1" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("where", ["serve", "Upgrader"])
def test_logger_argument_of_serve_and_upgrader(caplog: pytest.LogCaptureFixture, where: str) -> None:
    caplog.set_level(logging.DEBUG)
    mine = logging.getLogger("app.ws")
    kwargs: dict = (
        {"logger": mine, "upgrader": None, "ping_interval": None}  # serve() makes the Upgrader
        if where == "serve"
        else {"upgrader": threadws.Upgrader(ping_interval=None, logger=mine)}
    )
    conns: list[threadws.Conn] = []

    def handler(conn: threadws.Conn) -> None:
        conns.append(conn)
        if conn.path == "/boom":
            raise RuntimeError("boom")
        _echo(conn)

    server = start_server(handler, **kwargs)
    try:
        with threadws.dial(url_of(server), ping_interval=None) as conn:
            conn.send("hi")
            assert conn.recv(timeout=5) == "hi"
        with threadws.dial(url_of(server, "/boom"), ping_interval=None) as conn:
            with pytest.raises(threadws.ConnectionClosedError):
                conn.recv(timeout=5)
    finally:
        stop_server(server)
    assert conns[0].logger is mine
    name = conns[0].name
    ours = [r for r in caplog.records if r.name == "app.ws"]
    assert f"{name} < GET / HTTP/1.1" in [r.getMessage() for r in ours]
    assert f"{name} < TEXT 'hi' [2 bytes]" in [r.getMessage() for r in ours]
    server_side = [r.getMessage() for r in caplog.records if r.name == ("app.ws" if where == "serve" else "threadws")]
    # The server's own lines (the request log, the handler's exception) go to serve()'s logger.
    assert any("GET / HTTP/1.1" in line and "101" in line for line in server_side)
    assert any("raised" in line for line in server_side)
    assert not any(r.name == "threadws" and r.getMessage().startswith(name + " ") for r in caplog.records)


def test_head_lines_hide_credentials() -> None:
    from threadws._trace import describe_head

    assert describe_head("CONNECT h:1 HTTP/1.1", [("Proxy-Authorization", "Basic dTpw"), ("Set-Cookie", "a=b")]) == [
        "CONNECT h:1 HTTP/1.1",
        "Proxy-Authorization: Basic [hidden]",
        "Set-Cookie: [hidden]",
    ]
