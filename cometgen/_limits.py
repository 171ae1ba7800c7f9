"""Client-side rate limiting: a concurrency window, RPM/IPM pacing and a shared 429 gate.

Pure policy: no HTTP, an injectable clock and sleep. The client wraps each HTTP attempt in
``async with limiter.slot(images=n) as slot:`` and reports the outcome with
``slot.succeeded()`` or ``slot.rate_limited(delay)``. ``Limiter`` is the small protocol a
shared (e.g. Redis-backed) implementation would provide instead.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import anyio

from ._exceptions import ConfigError

__all__ = ["Limiter", "LimiterStats", "RateLimiter", "Slot", "SlotRefused"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class LimiterStats:
    """A point-in-time view of a limiter, for progress displays."""

    #: Current concurrency window (equals ``concurrency`` unless adaptive).
    window: int
    #: Slots granted and not yet released.
    in_flight: int
    #: Tasks inside ``slot()`` still waiting for the gate, the window or pacing.
    waiting: int
    #: How many 429s were reported through ``Slot.rate_limited``.
    rate_limited_count: int
    #: Time on the limiter's clock until which nothing is granted (<= now: not paused).
    paused_until: float
    #: Slots granted since creation.
    granted: int


class SlotRefused(Exception):
    """Raised by a limiter's ``slot()`` instead of granting it: the attempt is not sent.

    The client lets it propagate (it is not a failure to retry) after filling in what the
    call's earlier attempts did, so whoever refused can tell whether one of them may have
    been billed.
    """

    #: Attempts of the call made before the refusal.
    attempts: int = 0
    #: One of those attempts may have been generated and billed (ambiguous failure).
    maybe_billed: bool = False


@runtime_checkable
class Slot(Protocol):
    """The permission to make one HTTP attempt; report its outcome through it."""

    def rate_limited(self, delay: float | None = None) -> None:
        """Report a 429. ``delay`` (seconds, when the server said) pauses every task."""

    def succeeded(self) -> None:
        """Report a response that was not a 429."""


@runtime_checkable
class Limiter(Protocol):
    """What the client needs from a limiter; other backends implement this."""

    def slot(self, images: int = 1) -> AbstractAsyncContextManager[Slot]:
        """Wait for permission to send one request that asks for ``images`` images."""

    def snapshot(self) -> LimiterStats:
        """Current counters."""


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


class _RateSlot:
    __slots__ = ("_epoch", "_limiter", "_reported")

    def __init__(self, limiter: RateLimiter, epoch: int) -> None:
        self._limiter = limiter
        self._epoch = epoch
        self._reported = False

    def rate_limited(self, delay: float | None = None) -> None:
        first, self._reported = not self._reported, True
        self._limiter._on_rate_limited(self._epoch, delay, first=first)

    def succeeded(self) -> None:
        if not self._reported:
            self._reported = True
            self._limiter._on_success()


class RateLimiter:
    """Concurrency cap, RPM and IPM pacing, a shared retry-after gate and optional AIMD.

    - ``concurrency``: at most this many slots at once.
    - ``rpm`` / ``ipm``: requests / images per minute, paced evenly with no burst (GCRA
      with burst 1): request k+1 goes ``60/rpm`` seconds after request k; a slot for
      ``n`` images holds the image schedule for ``n * 60/ipm`` seconds.
    - Gate: a 429 with a known delay (``Slot.rate_limited(delay)`` or ``pause_until``)
      stops every new grant until it passes, and pushes the pacing schedule past it.
    - ``adaptive``: AIMD on the window. A 429 halves it (not below ``min_window``), at most
      once per epoch: only slots granted after the last decrease can cause the next, so one
      wave of 429s halves once. After ``window`` successes it grows by one, up to
      ``concurrency``. It starts at ``initial_window`` (default ``concurrency``).
    - ``max_pause``: one reported 429 pauses everyone for at most this long (default 300 s,
      like ``RetryPolicy.max_server_delay``: a longer wait is not worth holding a batch for).

    Order of waits in ``slot()``: gate, then window, then pacing (the window is held while
    pacing so reservations never run far ahead of what can be sent).
    """

    def __init__(
        self,
        *,
        concurrency: int = 16,
        rpm: float | None = None,
        ipm: float | None = None,
        adaptive: bool = False,
        min_window: int = 1,
        initial_window: int | None = None,
        max_pause: float | None = 300.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        _count("concurrency", concurrency, minimum=1)
        _count("min_window", min_window, minimum=1)
        if min_window > concurrency:
            raise ConfigError(f"min_window ({min_window}) exceeds concurrency ({concurrency})")
        start = concurrency if initial_window is None else initial_window
        _count("initial_window", start, minimum=min_window)
        if start > concurrency:
            raise ConfigError(f"initial_window ({start}) exceeds concurrency ({concurrency})")
        if max_pause is not None and (
            isinstance(max_pause, bool) or not isinstance(max_pause, int | float)
            or not math.isfinite(max_pause) or max_pause < 0
        ):
            raise ConfigError(f"max_pause must be a number >= 0 or None, got {max_pause!r}")
        self._max_pause = max_pause
        self._interval_r = _interval("rpm", rpm)
        self._interval_i = _interval("ipm", ipm)
        self._concurrency = concurrency
        self._adaptive = adaptive
        self._min_window = min_window
        self._window = start if adaptive else concurrency
        self._clock = clock
        self._sleep = sleep
        self._in_flight = 0
        self._waiting = 0
        self._granted = 0
        self._waiters: deque[_Waiter] = deque()
        # GCRA "theoretical arrival times": the earliest time the next request may go.
        self._tat_r = -math.inf
        self._tat_i = -math.inf
        self._paused_until = 0.0
        self._rate_limited = 0
        self._epoch = 0
        self._successes = 0

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def window(self) -> int:
        return self._window

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def snapshot(self) -> LimiterStats:
        return LimiterStats(
            window=self._window, in_flight=self._in_flight, waiting=self._waiting,
            rate_limited_count=self._rate_limited, paused_until=self._paused_until,
            granted=self._granted,
        )

    def pause_until(self, deadline: float) -> None:
        """Grant nothing before ``deadline`` (on this limiter's clock); never shortens a pause."""
        if deadline > self._paused_until:
            self._paused_until = deadline
        # Pacing restarts at the deadline instead of releasing a backlog all at once.
        if self._interval_r is not None:
            self._tat_r = max(self._tat_r, deadline)
        if self._interval_i is not None:
            self._tat_i = max(self._tat_i, deadline)

    def slot(self, images: int = 1) -> AbstractAsyncContextManager[Slot]:
        _count("images", images, minimum=1)
        return _SlotContext(self, images)

    async def _grant(self, images: int) -> None:
        """Wait for the gate, a place in the window and pacing; holds the place on return."""
        self._waiting += 1
        try:
            await self._wait_gate()
            await self._acquire()
            try:
                await self._pace(images)
            except BaseException:
                self._release()
                raise
        finally:
            self._waiting -= 1

    async def _wait_gate(self) -> None:
        # A loop, because the gate may be extended while we sleep.
        while (remaining := self._paused_until - self._clock()) > 0:
            await self._sleep(remaining)

    async def _acquire(self) -> None:
        if not self._waiters and self._in_flight < self._window:
            self._in_flight += 1
            return
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:  # granted and cancelled in the same instant: hand it back
                self._release()
            else:
                self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        # FIFO hand-off: in_flight is counted for the waiter before it runs.
        while self._waiters and self._in_flight < self._window:
            waiter = self._waiters.popleft()
            waiter.granted = True
            self._in_flight += 1
            waiter.event.set()

    async def _pace(self, images: int) -> None:
        if self._interval_r is None and self._interval_i is None:
            await self._wait_gate()
            return
        while True:
            start, end_r, end_i = self._reserve(images)
            try:
                if (delay := start - self._clock()) > 0:
                    await self._sleep(delay)
            except BaseException:
                self._unreserve(start, end_r, end_i)
                raise
            if self._paused_until <= self._clock():
                return
            # A 429 arrived while we waited: the reservation is void (it only leaves a gap);
            # wait out the gate and take a place in the schedule that restarts after it.
            await self._wait_gate()

    def _reserve(self, images: int) -> tuple[float, float, float]:
        """Atomically take the next place on both schedules (no await in here)."""
        start = max(self._clock(), self._tat_r, self._tat_i)
        end_r = end_i = start
        if self._interval_r is not None:
            end_r = self._tat_r = start + self._interval_r
        if self._interval_i is not None:
            end_i = self._tat_i = start + images * self._interval_i
        return start, end_r, end_i

    def _unreserve(self, start: float, end_r: float, end_i: float) -> None:
        # Only the latest reservation can be handed back without disturbing others.
        if self._interval_r is not None and self._tat_r == end_r:
            self._tat_r = start
        if self._interval_i is not None and self._tat_i == end_i:
            self._tat_i = start

    def _on_rate_limited(self, epoch: int, delay: float | None, *, first: bool) -> None:
        if first:
            self._rate_limited += 1
        if delay is not None and math.isfinite(delay) and delay > 0:
            if self._max_pause is not None:
                delay = min(delay, self._max_pause)
            self.pause_until(self._clock() + delay)
        if self._adaptive and first and epoch == self._epoch:
            self._epoch += 1
            self._successes = 0
            self._window = max(self._min_window, self._window // 2)

    def _on_success(self) -> None:
        if not self._adaptive or self._window >= self._concurrency:
            return
        self._successes += 1
        if self._successes >= self._window:
            self._successes = 0
            self._window += 1
            self._wake()


class _SlotContext:
    """``async with limiter.slot(images) as slot``: a class, not ``@asynccontextmanager``.

    It is entered once per HTTP attempt; the generator-based manager cost ~2% of the loop's
    CPU per small request, and the common case (no pause, no pacing, a free place in the
    window, nobody queued) takes its place here without a coroutine call.
    """

    __slots__ = ("_images", "_limiter")

    def __init__(self, limiter: RateLimiter, images: int) -> None:
        self._limiter = limiter
        self._images = images

    async def __aenter__(self) -> Slot:
        lim = self._limiter
        if (
            lim._interval_r is None
            and lim._interval_i is None
            and not lim._waiters
            and lim._in_flight < lim._window
            and lim._paused_until <= lim._clock()
        ):
            lim._in_flight += 1  # what _grant does when nothing has to be waited for
        else:
            await lim._grant(self._images)
        lim._granted += 1
        return _RateSlot(lim, lim._epoch)

    async def __aexit__(self, *exc_info: object) -> None:
        self._limiter._release()


def _count(name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _interval(name: str, per_minute: float | None) -> float | None:
    if per_minute is None:
        return None
    if (isinstance(per_minute, bool) or not isinstance(per_minute, int | float)
            or not math.isfinite(per_minute) or per_minute <= 0):
        raise ConfigError(f"{name} must be a positive number or None, got {per_minute!r}")
    return 60.0 / per_minute
