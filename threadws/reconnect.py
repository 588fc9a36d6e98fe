"""Reconnecting on purpose: :func:`reconnecting` dials again after each connection ends.

A :class:`~threadws.Conn` never reconnects by itself (a message sent on a
connection that dropped must fail, not vanish into a new one). A client that
should stay connected loops over :func:`reconnecting` instead, and sees each
new connection as one more turn of the loop.

What it must never do
---------------------
Keep a connection the loop body is done with (each is closed before the next
dial), try again after a refusal another try would not change, or wait in a
way that *stop* can't cut short.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Generator, Iterable
from typing import Any

from .client import dial
from .connection import Conn
from .exceptions import HandshakeError

__all__ = ["reconnecting"]

_logger = logging.getLogger("threadws")


def reconnecting(
    url: str,
    *,
    backoff_initial: float = 1.0,
    backoff_factor: float = 2.0,
    backoff_max: float = 60.0,
    stop_codes: Iterable[int] = (),
    max_failures: int | None = None,
    stop: threading.Event | None = None,
    **dial_args: Any,
) -> Generator[Conn, None, None]:
    """Yield a connection to *url*, and a new one each time the last has ended.

    Typical use::

        for conn in threadws.reconnecting("wss://example.com/feed", stop_codes=[1000]):
            try:
                for message in conn:
                    handle(message)
            except threadws.ConnectionClosed:
                pass  # dropped: the loop dials again

    Each connection is closed (1000) when the loop body is done with it: when
    the body returns and the loop asks for the next, or when it leaves the loop
    (``break``, an exception: CPython closes the generator then; if you keep a
    reference to it, call its ``close()``). Between one connection and the next attempt,
    and after each failed attempt, the loop waits a random time between 0 and
    ``min(backoff_max, backoff_initial * backoff_factor ** n)`` seconds ("full
    jitter", so that many clients of a restarted server do not come back at
    once), where *n* counts the failed dials and the connections that lasted
    less than *backoff_max* seconds since one last lasted longer. A refusal
    with a ``Retry-After`` of some seconds (429, 503) waits at least that long
    (up to *backoff_max*).

    What ends it:

    * the caller leaves the loop, or sets *stop* (from any thread: it also
      cuts a wait short);
    * the server closes a connection with a code in *stop_codes* (a close the
      client starts does not count);
    * a refusal that another try would not change: a :class:`HandshakeError`
      with a 3xx or 4xx status other than 408 and 429 (a proxy's 407
      included) is raised;
    * *max_failures* dials failing in a row: the last error is raised;
    * an argument error (ValueError, TypeError) from :func:`dial` is raised
      at once.

    Any other failure to connect (OSError, TimeoutError, a 5xx, 408 or 429
    refusal, an invalid handshake) is logged at INFO and tried again.

    Args:
        url: as for :func:`dial`.
        backoff_initial, backoff_factor, backoff_max: the waits, in seconds.
        stop_codes: close codes from the server that end the loop.
        max_failures: give up after this many failed dials in a row (None: never).
        stop: an event that ends the loop when set.
        **dial_args: passed to :func:`dial` (``sock=`` cannot be: a socket
            is used once).
    """
    if "sock" in dial_args:
        raise ValueError("reconnecting cannot reuse sock=: pass the URL (and unix_socket= or proxy=) instead")
    if not 0 <= backoff_initial <= backoff_max or backoff_factor < 1:
        raise ValueError("need 0 <= backoff_initial <= backoff_max and backoff_factor >= 1")
    if max_failures is not None and max_failures < 1:
        raise ValueError("max_failures must be at least 1 (or None)")
    codes = frozenset(stop_codes)
    logger = dial_args.get("logger") or _logger
    return _connections(
        url, backoff_initial, backoff_factor, backoff_max, codes, max_failures, stop or threading.Event(), logger,
        dial_args,
    )


def _connections(
    url: str,
    initial: float,
    factor: float,
    cap: float,
    stop_codes: frozenset[int],
    max_failures: int | None,
    stop: threading.Event,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    dial_args: dict[str, Any],
) -> Generator[Conn, None, None]:
    streak = 0  # the n of the backoff
    failures = 0  # dials failed in a row
    at_least = 0.0  # the last refusal's Retry-After
    first = True
    while not stop.is_set():
        if not first:
            delay = max(at_least, random.uniform(0, min(cap, initial * factor ** min(streak, 64))))
            logger.info("reconnecting to %s in %.1f s", url, delay)
            if stop.wait(delay):  # a wait that stop= cuts short (and Ctrl-C interrupts)
                return
        first = False
        try:
            conn = dial(url, **dial_args)
        except (OSError, HandshakeError) as exc:
            if isinstance(exc, HandshakeError) and _final(exc.status):
                raise
            failures += 1
            streak += 1
            if max_failures is not None and failures >= max_failures:
                raise
            at_least = min(cap, _retry_after(exc))
            logger.info("could not connect to %s: %s", url, exc)
            continue
        failures = 0
        at_least = 0.0
        opened = time.monotonic()
        try:
            yield conn
        finally:
            conn.close()  # no-op if it has ended; otherwise the loop is done with it
        lasted = time.monotonic() - opened
        streak = 0 if lasted >= cap else streak + 1
        ended = conn.close_exception
        if ended is not None and ended.rcvd is not None and ended.rcvd_then_sent is not False:
            if ended.rcvd.code in stop_codes:
                logger.info("%s closed the connection with %s: not reconnecting", url, ended.rcvd)
                return
        logger.info("connection to %s ended after %.1f s: %s", url, lasted, ended)


def _final(status: int) -> bool:
    """True for a refusal that trying again would not change."""
    return 300 <= status < 500 and status not in (408, 429)


def _retry_after(exc: BaseException) -> float:
    """A refusal's ``Retry-After`` in seconds (0 if none, or if it is an HTTP date)."""
    if not isinstance(exc, HandshakeError):
        return 0.0
    value = next((v for k, v in exc.headers if k.lower() == "retry-after"), "").strip()
    return float(value) if value.isdigit() else 0.0
