"""Frozen configuration values and the defaults, named in one place."""

from __future__ import annotations

import os
from typing import Literal

import msgspec

from ._exceptions import ConfigError

DEFAULT_BASE_URL = "https://api.cometapi.com"
DEFAULT_API_VERSION = "v1beta"
API_KEY_ENV = "COMETAPI_KEY"
BASE_URL_ENV = "COMETAPI_BASE_URL"
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Per attempt: a 4K image on the Pro model takes up to ~150 s at p95.
DEFAULT_ATTEMPT_TIMEOUT = 300.0
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_CONCURRENCY = 16
#: Requests and images are paced this fraction under the configured per-minute limits, so
#: timing jitter between client and server never fits one request too many in a window.
RATE_HEADROOM = 0.99
DEFAULT_LEASE_TTL = 10.0
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

AuthStyle = Literal["bearer", "x-goog-api-key"]
OnNoImage = Literal["raise", "return"]


class Timeouts(msgspec.Struct, frozen=True, kw_only=True):
    """Timeouts for one HTTP attempt, in seconds. ``None`` disables one.

    A deadline spanning all retries of a call is ``generate(..., timeout=...)``.
    """

    connect: float | None = DEFAULT_CONNECT_TIMEOUT
    #: Waiting for a free pooled connection.
    pool: float | None = None
    #: The whole attempt: connect, send, wait for and read the response.
    total: float | None = DEFAULT_ATTEMPT_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("connect", "pool", "total"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"Timeouts.{name} must be > 0 or None, got {value!r}")


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Client-side limits: concurrent requests, requests and images per minute.

    ``adaptive=True`` shrinks the concurrency window on 429s and grows it back (AIMD),
    for providers whose limits are unknown (CometAPI publishes none).
    """

    concurrency: int = DEFAULT_CONCURRENCY
    rpm: float | None = None
    ipm: float | None = None
    adaptive: bool = False
    #: ``redis://host:port/db``: share these limits (and the 429 gate) with every process
    #: using the same Redis and ``namespace``; needs ``pip install cometgen[redis]``.
    shared: str | None = None
    #: Who shares: default a hash of the API key and base URL (never the key itself).
    namespace: str | None = None
    #: Seconds a crashed process can keep its shared concurrency slots (renewed while alive).
    lease_ttl: float = DEFAULT_LEASE_TTL

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"Limits.concurrency must be >= 1, got {self.concurrency!r}")
        for name in ("rpm", "ipm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"Limits.{name} must be > 0 or None, got {value!r}")
        if self.shared is not None and not self.shared.startswith(_REDIS_SCHEMES):
            raise ConfigError(
                "Limits.shared must be a Redis URL (redis://, rediss:// or unix://), got "
                f"{self.shared.split('://', 1)[0]!r}"
            )
        if self.namespace is not None and (
            not self.namespace.strip() or len(self.namespace) > 200
        ):
            raise ConfigError("Limits.namespace must be a non-empty string (<= 200 chars)")
        if not self.lease_ttl > 0:
            raise ConfigError(f"Limits.lease_ttl must be > 0, got {self.lease_ttl!r}")


class Secret:
    """Holds the API key so that it never shows in a repr, log line or traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def resolve_api_key(api_key: str | None) -> Secret:
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    if not key:
        raise ConfigError(
            f"no API key: pass api_key=... or set {API_KEY_ENV} "
            "(or run against the built-in mock server: cometgen.testing.MockServer)"
        )
    check_api_key(key, "api_key" if api_key is not None else f"${API_KEY_ENV}")
    return Secret(key)


def check_api_key(key: str, where: str) -> None:
    """``ConfigError`` if ``key`` holds a control character, which no HTTP header may carry
    (aiohttp would refuse it on every request); the message never shows the key."""
    bad = next((i for i, c in enumerate(key) if c < " " or c == "\x7f"), None)
    if bad is not None:
        hint = " (a trailing newline, as from a file?)" if key[bad:].isspace() else ""
        raise ConfigError(f"{where} contains a control character at position {bad + 1} of "
                          f"{len(key)}{hint}: an API key cannot be sent with it")


def resolve_base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"base_url must start with http:// or https://, got {url!r}")
    return url.rstrip("/")


def coerce_timeouts(timeout: Timeouts | float | None) -> Timeouts:
    if timeout is None:
        return Timeouts()
    if isinstance(timeout, Timeouts):
        return timeout
    return Timeouts(total=float(timeout))
