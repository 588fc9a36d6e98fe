"""A connection's limits and timers, with their defaults written once.

:func:`threadws.dial`, :class:`threadws.Upgrader` (and so :func:`threadws.serve`)
take the same settings as keyword arguments whose defaults are read from here,
and build one :class:`Settings` per connection factory.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """Per-connection limits and timers (see :func:`threadws.dial` for each one's meaning)."""

    read_limit: int = 1 << 20
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 10.0
    max_read_queue: int = 4 << 20
    max_write_queue: int = 4 << 20

    def __post_init__(self) -> None:
        if self.read_limit <= 0:
            raise ValueError("read_limit must be positive")
        for name in ("ping_interval", "ping_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None")
        if self.close_timeout < 0:
            raise ValueError("close_timeout must be >= 0")
        if self.max_read_queue <= 0 or self.max_write_queue <= 0:
            raise ValueError("queue bounds must be positive")
