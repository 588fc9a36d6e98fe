"""The public surface is small and pinned."""

import pathlib

import threadws


def test_all_is_pinned():
    assert sorted(threadws.__all__) == [
        "CloseCode",
        "Compression",
        "Conn",
        "ConnectionClosed",
        "ConnectionClosedError",
        "ConnectionClosedOK",
        "HandshakeError",
        "Hub",
        "MessageReader",
        "MessageType",
        "MessageWriter",
        "PreparedMessage",
        "ProxyError",
        "RedisBackplane",
        "Server",
        "ServerLimits",
        "ServerStats",
        "Settings",
        "Upgrader",
        "dial",
        "is_close_error",
        "is_unexpected_close_error",
        "reconnecting",
        "reuse_threads",
        "serve",
    ]
    for name in threadws.__all__:
        assert getattr(threadws, name).__doc__, f"{name} has no docstring"


def test_enums_use_rfc_numbers():
    M = threadws.MessageType
    assert (M.TEXT, M.BINARY, M.CLOSE, M.PING, M.PONG) == (1, 2, 8, 9, 10)
    C = threadws.CloseCode
    assert (C.NORMAL_CLOSURE, C.GOING_AWAY, C.PROTOCOL_ERROR, C.INVALID_PAYLOAD_DATA, C.MESSAGE_TOO_BIG,
            C.INTERNAL_ERROR) == (1000, 1001, 1002, 1007, 1009, 1011)


def test_close_error_helpers():
    from threadws.exceptions import Close, closed_exception

    normal = closed_exception(Close(1000, ""), Close(1000, ""), True)
    going = closed_exception(Close(1001, "bye"), Close(1001, ""), True)
    lost = closed_exception(None, None, None)
    assert isinstance(normal, threadws.ConnectionClosedOK) and isinstance(lost, threadws.ConnectionClosedError)
    assert threadws.is_close_error(going, 1001) and not threadws.is_close_error(going, 1000)
    assert lost.code == 1006 and threadws.is_close_error(lost, 1006)
    assert not threadws.is_unexpected_close_error(going, 1000, 1001)
    assert threadws.is_unexpected_close_error(lost, 1000, 1001)
    assert not threadws.is_close_error(ValueError(), 1000) and not threadws.is_unexpected_close_error(None)


def test_ships_py_typed():
    assert (pathlib.Path(threadws.__file__).parent / "py.typed").exists()
