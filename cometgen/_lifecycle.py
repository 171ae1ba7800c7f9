"""What an ``AsyncClient`` shares with its ``with_options`` copies: one pool, one event loop,
the shared limiters."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable

from ._config import RATE_HEADROOM, Limits, Secret
from ._exceptions import ClientClosedError, WrongEventLoopError
from ._limits import RateLimiter
from ._redis_limits import RedisLimiter, derive_namespace
from ._transport import AsyncTransport

__all__ = ["SharedState"]


class SharedState:
    """One connection pool, the event loop it belongs to, and whether it was closed."""

    def __init__(self, transport: AsyncTransport) -> None:
        self.transport = transport
        self.closed = False
        #: Shared (Redis) limiters made by this client and its copies, closed with it.
        self.redis_limiters: list[RedisLimiter] = []
        # Weak: a client must not keep a finished event loop alive.
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def check(self) -> None:
        """Raise unless the client may be used here: not closed, and in its own event loop.

        Without this, a closed client silently opened a new pool (and leaked it), and a
        second event loop got asyncio's bare ``RuntimeError`` from deep inside aiohttp.
        """
        if self.closed:
            raise ClientClosedError(
                "this AsyncClient is closed (aclose() was called or its `async with` block "
                "ended); create a new AsyncClient"
            )
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = weakref.ref(loop)
        elif self._loop() is not loop:
            raise WrongEventLoopError(
                "this AsyncClient belongs to another event loop (its connection pool is "
                "bound to the loop it first ran in); create one AsyncClient per event loop, "
                "or use cometgen.Client from synchronous code"
            )

    def make_limiter(
        self, limits: Limits, key: Secret, base_url: str, *, clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> RateLimiter | RedisLimiter:
        """The limiter ``limits`` describe; a shared (Redis) one is closed with the client."""
        if limits.shared is not None:
            limiter = RedisLimiter(
                limits.shared,
                namespace=limits.namespace or derive_namespace(key.reveal(), base_url),
                concurrency=limits.concurrency,
                rpm=_paced(limits.rpm),
                ipm=_paced(limits.ipm),
                adaptive=limits.adaptive,
                lease_ttl=limits.lease_ttl,
                sleep=sleep,
            )
            self.redis_limiters.append(limiter)
            return limiter
        return RateLimiter(
            concurrency=limits.concurrency,
            rpm=_paced(limits.rpm),
            ipm=_paced(limits.ipm),
            adaptive=limits.adaptive,
            clock=clock,
            sleep=sleep,
        )


def _paced(per_minute: float | None) -> float | None:
    return None if per_minute is None else per_minute * RATE_HEADROOM
