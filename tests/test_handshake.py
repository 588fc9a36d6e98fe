"""The opening handshake's pure functions: no sockets."""

from __future__ import annotations

import email.message

import pytest

from threadws import HandshakeError, handshake


def headers(**fields: str) -> email.message.Message:
    message = email.message.Message()
    for name, value in fields.items():
        message[name.replace("_", "-")] = value
    return message


KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3's example


def good(**overrides: str) -> email.message.Message:
    fields = {
        "Host": "example.com:8000",
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    fields.update({k.replace("_", "-"): v for k, v in overrides.items()})
    message = email.message.Message()
    for name, value in fields.items():
        if value:
            message[name] = value
    return message


def test_accepts_rfc_example():
    accepted = handshake.check_request("GET", "HTTP/1.1", good())
    assert accepted.accept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # the RFC's answer
    response = handshake.build_response(accepted)
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert response.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("method", "version", "fields", "status"),
    [
        ("POST", "HTTP/1.1", {}, 405),
        ("GET", "HTTP/1.0", {}, 400),
        ("GET", "HTTP/1.1", {"Upgrade": ""}, 400),
        ("GET", "HTTP/1.1", {"Upgrade": "h2c"}, 400),
        ("GET", "HTTP/1.1", {"Connection": "keep-alive"}, 400),
        ("GET", "HTTP/1.1", {"Host": ""}, 400),
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Version": "8"}, 426),
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Version": ""}, 426),
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Key": ""}, 400),
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Key": "c2hvcnQ="}, 400),
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Key": "not base64!!!!!!!!!!!!=="}, 400),
        ("GET", "HTTP/1.1", {"Origin": "http://evil.example"}, 403),
    ],
)
def test_refusals(method, version, fields, status):
    with pytest.raises(HandshakeError) as info:
        handshake.check_request(method, version, good(**fields))
    assert info.value.status == status
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in info.value.headers
    response = handshake.build_error_response(info.value)
    assert response.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Connection: close" in response


def test_origin_policies():
    same = good(Origin="http://EXAMPLE.com:8000")
    assert handshake.check_request("GET", "HTTP/1.1", same)
    other = good(Origin="https://other.example")
    with pytest.raises(HandshakeError):
        handshake.check_request("GET", "HTTP/1.1", other)
    assert handshake.check_request("GET", "HTTP/1.1", other, check_origin=["https://other.example"])
    assert handshake.check_request("GET", "HTTP/1.1", other, check_origin=lambda origin, h: "other" in origin)
    with pytest.raises(HandshakeError):
        handshake.check_request("GET", "HTTP/1.1", other, check_origin=lambda origin, h: False)
    # No Origin: not a browser, nothing to protect.
    assert handshake.check_request("GET", "HTTP/1.1", good(), check_origin=lambda origin, h: False)
    with pytest.raises(HandshakeError):
        handshake.check_request("GET", "HTTP/1.1", good(Origin="null"))


def test_subprotocol_follows_server_preference():
    request = good(Sec_WebSocket_Protocol="chat.v1, chat.v2")
    assert handshake.check_request("GET", "HTTP/1.1", request, subprotocols=["chat.v2", "chat.v1"]).subprotocol == "chat.v2"
    assert handshake.check_request("GET", "HTTP/1.1", request, subprotocols=["other"]).subprotocol is None
    response = handshake.build_response(handshake.Accepted("x", "chat.v2"))
    assert b"Sec-WebSocket-Protocol: chat.v2\r\n" in response


def test_header_injection_is_refused():
    with pytest.raises(ValueError):
        handshake.build_response(handshake.Accepted("x", None), [("Set-Cookie", "a=b\r\nEvil: yes")])


@pytest.mark.parametrize("header", [("X Bad", "v"), ("X:Y", "v"), ("X", "a\x01b"), ("X", "caf\u00e9\u20ac")])
def test_a_response_header_that_cannot_be_sent_is_a_value_error(header):
    with pytest.raises(ValueError):
        handshake.build_response(handshake.Accepted("x", None), [header])
    response = handshake.build_response(handshake.Accepted("x", None), [("Set-Cookie", "a=b; Path=/"), ("X", "caf\u00e9")])
    assert b"Set-Cookie: a=b; Path=/\r\n" in response and b"X: caf\xe9\r\n" in response


def test_parse_url():
    target = handshake.parse_url("wss://example.com/chat?room=1")
    assert (target.secure, target.host, target.port, target.resource, target.host_header) == (
        True, "example.com", 443, "/chat?room=1", "example.com")
    target = handshake.parse_url("ws://[::1]:8080")
    assert (target.host, target.port, target.resource, target.host_header) == ("::1", 8080, "/", "[::1]:8080")
    for bad in ("http://example.com/", "ws://", "ws://host/#frag"):
        with pytest.raises(ValueError):
            handshake.parse_url(bad)


def test_client_checks_the_response():
    key = handshake.new_key()
    target = handshake.parse_url("ws://localhost:9/x")
    request = handshake.build_request(target, key, subprotocols=["a", "b"], origin="http://localhost:9")
    assert request.startswith(b"GET /x HTTP/1.1\r\nHost: localhost:9\r\n")
    accepted = handshake.check_request(
        "GET", "HTTP/1.1", handshake.parse_head(b"HTTP/1.1 200 OK\r\n" + request.split(b"\r\n", 1)[1][:-4])[3],
        subprotocols=["b"])
    _, status, _, response_headers = handshake.parse_head(handshake.build_response(accepted)[:-4])
    assert handshake.check_response(status, response_headers, key, ["a", "b"]) == "b"
    with pytest.raises(HandshakeError):
        handshake.check_response(status, response_headers, handshake.new_key(), ["a", "b"])  # wrong accept
    with pytest.raises(HandshakeError):
        handshake.check_response(status, response_headers, key, ["a"])  # protocol not offered
    with pytest.raises(HandshakeError) as info:
        handshake.check_response(403, response_headers, key)
    assert info.value.status == 403


def test_parse_head_rejects_garbage():
    for head in (b"garbage", b"HTTP/1.1 abc OK", b"SPDY/3 101 x"):
        with pytest.raises(HandshakeError):
            handshake.parse_head(head)
