"""``RedisLimiter``: the ``Limiter`` protocol with its state in Redis, shared by processes.

Every process (and host) using the same Redis and namespace shares one set of limits:

- RPM / IPM: GCRA (virtual scheduling, even pacing, no burst), one atomic Lua script per
  reservation on Redis' own clock (``TIME``), so hosts never need synchronised clocks.
- Concurrency: leases in a sorted set scored by expiry. Acquire is a Lua script (drop
  expired, count, add if below the cap); a background task renews held leases every
  ``lease_ttl / 3``, so a process killed with ``kill -9`` frees its slots within ``lease_ttl``.
- Retry-after gate: a 429 with a delay sets ``gate`` to max(current, now + delay); no
  process is granted anything before it (and pacing restarts after it).
- Adaptive (AIMD) window: window, epoch and success count live in Redis too.

Failure policy (fail closed): Redis unreachable when the limiter opens, or answering with an
error mid-run, is a ``LimiterBackendError``.
Mid-run, no slot is granted while Redis is down: every call is retried with exponential
backoff (50 ms doubling to 2 s, with jitter) until Redis answers again; requests already
granted carry on. Leases of in-flight requests are re-registered after an outage and each
process passes its own latest reservation as a floor, so a Redis that restarted empty does
not hand out a burst. Redis-py is imported lazily: ``pip install cometgen[redis]``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio

from ._exceptions import ConfigError, LimiterBackendError
from ._limits import LimiterStats, Slot
from ._redis_scripts import SCRIPTS as _SCRIPTS
from ._redis_support import US as _US
from ._redis_support import RedisSlot as _RedisSlot
from ._redis_support import derive_namespace, import_redis, interval_us, redact_url

__all__ = ["RedisLimiter", "derive_namespace", "redact_url"]

logger = logging.getLogger("cometgen")

_MAX_BACKOFF = 2.0
_POLL_MAX = 0.05  # waiting for a free lease: poll at most this far apart (plus jitter)
_LATE = 0.25  # a paced slot this late (seconds) gives up its place and takes a new one
_FINISH_BUDGET = 5.0  # reporting an outcome never holds the caller longer than this


class RedisLimiter:
    """A ``Limiter`` whose concurrency, RPM/IPM pacing, 429 gate and AIMD window live in Redis.

    ``url``: ``redis://[:password@]host:port/db`` (or ``rediss://``, ``unix://``). Processes
    sharing ``namespace`` share the limits. Set the same limits in every process: each
    value is the account-wide one. Call ``open()`` (the client does, on ``async with``) to
    check the connection early, and ``aclose()`` at the end.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        concurrency: int = 16,
        rpm: float | None = None,
        ipm: float | None = None,
        adaptive: bool = False,
        min_window: int = 1,
        lease_ttl: float = 10.0,
        max_pause: float | None = 300.0,
        connect_timeout: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if not 1 <= min_window <= concurrency:
            raise ConfigError(f"min_window must be in [1, concurrency], got {min_window!r}")
        if not lease_ttl > 0:
            raise ConfigError(f"lease_ttl must be > 0, got {lease_ttl!r}")
        if not namespace:
            raise ConfigError("namespace must be a non-empty string")
        self._aioredis = import_redis()
        self.url = url
        self.namespace = namespace
        self._concurrency = concurrency
        self._rpm_us = interval_us("rpm", rpm)
        self._ipm_us = interval_us("ipm", ipm)
        self._adaptive = adaptive
        self._min_window = min_window
        self._ttl = float(lease_ttl)
        self._max_pause = max_pause
        self._connect_timeout = connect_timeout
        self._sleep = sleep
        tag = "{" + namespace + "}"  # one hash slot: the scripts also work on Redis Cluster
        p = f"cometgen:{tag}:"
        self._k = {n: p + n for n in ("leases", "gate", "tat_r", "tat_i", "window", "epoch",
                                      "succ")}
        self._instance = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._ids = itertools.count()
        self._redis: Any = None
        self._scripts: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opened = False
        self._renewer: asyncio.Task[None] | None = None
        self._held: set[str] = set()
        self._floor_r = 0
        self._floor_i = 0
        self._local_gate = 0.0  # time.monotonic() deadline of the last gate seen
        self._down_since: float | None = None
        self._lost = False  # an outage happened: leases may have to be re-registered
        self._window = concurrency
        self._waiting = 0
        self._granted = 0
        self._rate_limited = 0

    # -- state for progress displays ------------------------------------------------------

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def window(self) -> int:
        """The shared window as last seen by this process."""
        return self._window

    @property
    def in_flight(self) -> int:
        """Slots held by this process."""
        return len(self._held)

    @property
    def paused_until(self) -> float:
        """``time.monotonic()`` deadline of the last gate this process saw."""
        return self._local_gate

    def snapshot(self) -> LimiterStats:
        return LimiterStats(
            window=self._window, in_flight=len(self._held), waiting=self._waiting,
            rate_limited_count=self._rate_limited, paused_until=self._local_gate,
            granted=self._granted,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._redis is None or self._loop is not loop:
            # A client is bound to its event loop (cometgen.generate runs one per call).
            self._redis = self._aioredis.Redis.from_url(
                self.url, socket_connect_timeout=self._connect_timeout,
                socket_timeout=max(5.0, self._connect_timeout),
            )
            self._scripts = {n: self._redis.register_script(s) for n, s in _SCRIPTS.items()}
            self._loop = loop
            self._opened = False
            self._renewer = None
        return self._redis

    async def open(self) -> None:
        """Check that Redis answers; a ``LimiterBackendError`` if not."""
        client = self._client()
        if self._opened:
            return
        try:
            with anyio.fail_after(self._connect_timeout + 1.0):
                await client.ping()
        except (TimeoutError, OSError, self._aioredis.RedisError) as exc:
            raise LimiterBackendError(
                f"cannot reach the shared-limits Redis at {redact_url(self.url)}: "
                f"{type(exc).__name__}: {exc}. Is it running? (Without Limits.shared / "
                "--shared-limits the limits stay in this process.)"
            ) from None
        self._opened = True

    async def aclose(self) -> None:
        """Stop renewing leases and close the connections (shielded)."""
        with anyio.CancelScope(shield=True):
            renewer, self._renewer = self._renewer, None
            if renewer is not None and not renewer.done():
                renewer.cancel()
                with anyio.move_on_after(1.0):
                    await asyncio.gather(renewer, return_exceptions=True)
            redis, self._redis = self._redis, None
            if redis is not None and self._loop is asyncio.get_running_loop():
                with anyio.move_on_after(1.0):
                    await redis.aclose()
            self._opened = False

    # -- Redis calls ---------------------------------------------------------------------------

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args, client=self._client())

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script; while Redis is unreachable, wait and retry (fail closed)."""
        backoff = 0.05
        while True:
            try:
                result = await self._script(name, keys, args)
            except (OSError, self._aioredis.ConnectionError, self._aioredis.TimeoutError) as exc:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    logger.warning("shared-limits Redis unreachable (%s: %s): pausing until "
                                   "it is back", type(exc).__name__, exc)
                self._lost = True
                await self._sleep(backoff * random.uniform(0.75, 1.25))
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            except self._aioredis.RedisError as exc:
                raise LimiterBackendError(f"shared-limits Redis error: {exc}") from None
            if self._down_since is not None:
                logger.warning("shared-limits Redis is back after %.1fs",
                               time.monotonic() - self._down_since)
                self._down_since = None
            return result

    # -- slots ----------------------------------------------------------------------------------

    def slot(self, images: int = 1) -> AbstractAsyncContextManager[Slot]:
        if isinstance(images, bool) or not isinstance(images, int) or images < 1:
            raise ConfigError(f"images must be an integer >= 1, got {images!r}")
        return self._slot(images)

    @asynccontextmanager
    async def _slot(self, images: int) -> AsyncIterator[Slot]:
        await self.open()
        self._waiting += 1
        try:
            lease, epoch = await self._acquire()
            try:
                await self._pace(images)
            except BaseException:
                await self._release(lease)
                raise
        finally:
            self._waiting -= 1
        self._granted += 1
        slot = _RedisSlot(epoch)
        try:
            yield slot
        finally:
            await self._finish(slot, lease)

    async def _wait_local_gate(self) -> None:
        while (left := self._local_gate - time.monotonic()) > 0:
            await self._sleep(left)

    def _see_gate(self, wait_us: int) -> None:
        self._local_gate = max(self._local_gate, time.monotonic() + wait_us / _US)

    async def _acquire(self) -> tuple[str, int]:
        lease = f"{self._instance}-{next(self._ids)}"
        keys = [self._k["leases"], self._k["gate"], self._k["window"], self._k["epoch"]]
        args = [lease, int(self._ttl * _US), self._concurrency, int(self._adaptive)]
        poll = 0.005
        while True:
            await self._wait_local_gate()
            try:
                status, wait_us, cap, epoch = await self._call("acquire", keys, args)
            except BaseException:
                # Cancelled mid-call: the lease may exist without us knowing; drop it.
                await self._forget(lease)
                raise
            if status == 2:
                self._window = int(cap)
                self._held.add(lease)
                self._start_renewer()
                return lease, int(epoch)
            if status == 0:
                self._see_gate(int(wait_us))
                continue
            self._window = int(cap)
            await self._sleep(poll * random.uniform(0.5, 1.0))
            poll = min(poll * 2, _POLL_MAX)

    async def _pace(self, images: int) -> None:
        if self._rpm_us is None and self._ipm_us is None:
            return
        keys = [self._k["tat_r"], self._k["tat_i"], self._k["gate"]]
        while True:
            args = [self._rpm_us or 0, (self._ipm_us or 0) * images, self._floor_r,
                    self._floor_i]
            status, wait_us, start, end_r, end_i = await self._call("reserve", keys, args)
            if status == 0:
                self._see_gate(int(wait_us))
                await self._wait_local_gate()
                continue
            self._floor_r = max(self._floor_r, int(end_r))
            self._floor_i = max(self._floor_i, int(end_i))
            if wait_us <= 0:
                return
            due = time.monotonic() + wait_us / _US
            try:
                await self._sleep(wait_us / _US)
            except BaseException:
                with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                    await self._script("unreserve", keys[:2], [start, end_r, end_i])
                raise
            # A 429 may have closed the gate while we slept: the reservation is then void.
            left = await self._call("gate_left", [self._k["gate"]], [])
            if left > 0:
                self._see_gate(int(left))
                await self._wait_local_gate()
                continue
            # Far past our place (Redis was down meanwhile): sending now would bunch up
            # with the other late slots, so take a new place instead.
            if time.monotonic() - due <= _LATE:
                return

    async def _finish(self, slot: _RedisSlot, lease: str) -> None:
        # Shielded and bounded: runs while an error or a cancellation propagates.
        with anyio.CancelScope(shield=True), anyio.move_on_after(_FINISH_BUDGET):
            if slot.outcome == "rate_limited":
                self._rate_limited += 1
                delay = slot.delay
                if delay is not None and self._max_pause is not None:
                    delay = min(delay, self._max_pause)
                if delay is not None:
                    self._local_gate = max(self._local_gate, time.monotonic() + delay)
                    left = await self._call(
                        "pause", [self._k["gate"], self._k["tat_r"], self._k["tat_i"]],
                        [int(delay * _US)],
                    )
                    self._see_gate(int(left))
                if self._adaptive:
                    self._window = int(await self._call(
                        "decrease", [self._k["window"], self._k["epoch"], self._k["succ"]],
                        [slot.epoch, self._min_window, self._concurrency],
                    ))
            elif slot.outcome == "succeeded" and self._adaptive and (
                self._window < self._concurrency
            ):
                self._window = int(await self._call(
                    "increase", [self._k["window"], self._k["succ"]],
                    [self._concurrency, self._concurrency],
                ))
        await self._release(lease)

    async def _release(self, lease: str) -> None:
        self._held.discard(lease)
        await self._forget(lease)

    async def _forget(self, lease: str) -> None:
        # Best effort: if Redis is unreachable the lease expires after lease_ttl anyway.
        with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
            try:
                await self._client().zrem(self._k["leases"], lease)
            except (OSError, self._aioredis.RedisError):
                pass

    # -- lease renewal -------------------------------------------------------------------------

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            # Runs only while this process holds leases, then ends by itself; aclose()
            # cancels it. (A plain task: the Limiter protocol has no task group to own it.)
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())

    async def _renew_loop(self) -> None:
        period = self._ttl / 3
        while self._held:
            await anyio.sleep(period)
            ids = list(self._held)
            if not ids:
                return
            restore = self._lost
            try:
                with anyio.fail_after(period):
                    await self._script(
                        "renew", [self._k["leases"]],
                        [int(self._ttl * _US), "1" if restore else "0", *ids],
                    )
            except (TimeoutError, OSError, self._aioredis.RedisError) as exc:
                logger.debug("lease renewal failed: %s", exc)
                self._lost = True
                continue
            if restore:
                self._lost = False

