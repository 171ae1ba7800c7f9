"""The state an ``AsyncClient`` shares with its ``with_options`` copies: one pool, one loop."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from ._exceptions import ClientClosedError, WrongEventLoopError
from ._transport import AiohttpTransport

__all__ = ["SharedState"]


class SharedState:
    """One connection pool, the event loop it belongs to, and whether it was closed."""

    def __init__(self, transport: AiohttpTransport) -> None:
        self.transport = transport
        self.closed = False
        #: Shared (Redis) limiters made by this client and its copies, closed with it.
        self.redis_limiters: list[Any] = []
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
