"""Helpers of ``RedisLimiter``: namespaces, redacted URLs, the lazy redis import."""

from __future__ import annotations

import hashlib
import math
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._exceptions import ConfigError

__all__ = ["US", "RedisSlot", "derive_namespace", "import_redis", "interval_us", "redact_url"]

#: Microseconds per second: Redis-side times are integer microseconds.
US = 1_000_000


def derive_namespace(api_key: str, base_url: str) -> str:
    """The default namespace: a hash of the key and base URL (never the key itself)."""
    digest = hashlib.sha256(f"{base_url}\n{api_key}".encode()).hexdigest()
    return f"k-{digest[:20]}"


def redact_url(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def import_redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise ConfigError(
            "shared limits need the redis package: pip install cometgen[redis]"
        ) from None
    return aioredis


def interval_us(name: str, per_minute: float | None) -> int | None:
    if per_minute is None:
        return None
    if (isinstance(per_minute, bool) or not isinstance(per_minute, int | float)
            or not math.isfinite(per_minute) or per_minute <= 0):
        raise ConfigError(f"{name} must be a positive number or None, got {per_minute!r}")
    return round(60 * US / per_minute)


class RedisSlot:
    """A granted slot; the outcome reported through it is sent to Redis on release."""

    __slots__ = ("delay", "epoch", "outcome")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.outcome: str | None = None
        self.delay: float | None = None

    def rate_limited(self, delay: float | None = None) -> None:
        self.outcome = "rate_limited"
        if delay is not None and math.isfinite(delay) and delay > 0:
            self.delay = max(self.delay or 0.0, delay)

    def succeeded(self) -> None:
        if self.outcome is None:
            self.outcome = "succeeded"
