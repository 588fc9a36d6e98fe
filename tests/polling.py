"""One bounded poll for the tests and their helpers: check a condition until it holds or a deadline passes.

Where an event can be waited on, wait on it; this is for what only polling can
see (a port that starts listening, a process's state in /proc, a directory
that goes away).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.01) -> T | None:
    """Call *predicate* until it returns something truthy (returned) or *timeout* seconds pass (None)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: its wait is the poll step
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        pause.wait(interval)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll *predicate* until it returns something truthy; fail the test at *timeout*."""
    value = poll(predicate, timeout, interval)
    if not value:
        raise AssertionError(f"condition not met within {timeout} s: {predicate}")
    return value
