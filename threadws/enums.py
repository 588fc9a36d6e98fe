"""Message types and close codes, numbered as in RFC 6455.

What it must never do
---------------------
Import anything of threadws's: every module may import it.
"""

from __future__ import annotations

import enum

__all__ = ["CloseCode", "MessageType"]


class MessageType(enum.IntEnum):
    """Frame opcodes (RFC 6455 section 5.2) as the API uses them.

    ``TEXT`` and ``BINARY`` name data messages; ``CLOSE``, ``PING`` and ``PONG``
    name control frames for :meth:`threadws.Conn.write_control`.
    """

    TEXT = 1
    BINARY = 2
    CLOSE = 8
    PING = 9
    PONG = 10


class CloseCode(enum.IntEnum):
    """Close status codes (RFC 6455 section 7.4.1, plus 1012-1014 from IANA's registry).

    1005, 1006 and 1015 are never sent on the wire: they only describe what
    happened (no status received, connection lost, TLS failure).
    """

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_PAYLOAD_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015


#: Codes an endpoint must not put in a close frame (RFC 6455 section 7.4.1).
RESERVED_CLOSE_CODES = frozenset({1004, 1005, 1006, 1015})


def check_close(code: int, reason: str) -> None:
    """Raise ValueError unless *code* and *reason* may be sent in a close frame."""
    check_close_code(code)
    if len(reason.encode("utf-8")) > 123:  # 125 bytes of payload, 2 of them the code
        raise ValueError("close reason must be at most 123 bytes in UTF-8")


def check_close_code(code: int) -> None:
    """Raise ValueError unless *code* may be sent in a close frame (section 7.4)."""
    if code in RESERVED_CLOSE_CODES:
        raise ValueError(f"close code {code} is reserved and cannot be sent")
    known = code in CloseCode._value2member_map_
    if not (known or 3000 <= code <= 4999):
        raise ValueError(f"close code {code} is not a valid close code (1000-1014 or 3000-4999)")
