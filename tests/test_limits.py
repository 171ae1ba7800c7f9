"""RateLimiter in virtual time: pacing, concurrency, the 429 gate, AIMD, cancellation."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from cometgen._exceptions import ConfigError
from cometgen._limits import Limiter, LimiterStats, RateLimiter, Slot

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

T0 = 1000.0


class VirtualTime:
    """A clock plus a sleep that advances it: time jumps to the next sleeper's deadline
    only when every other task is blocked, so ordering is as in real time, minus the wait."""

    def __init__(self, start: float = T0) -> None:
        self.now = start
        self._heap: list[tuple[float, int, list[object]]] = []
        self._seq = itertools.count()
        self._new = anyio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        if delay <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        entry: list[object] = [event, True]  # [event, live]
        heapq.heappush(self._heap, (self.now + delay, next(self._seq), entry))
        self._new.set()
        try:
            await event.wait()
        finally:
            entry[1] = False

    async def _settle(self) -> None:
        me = asyncio.current_task()
        while True:
            await asyncio.sleep(0)
            if all(
                t is me or (t._fut_waiter is not None and not t._fut_waiter.done())  # type: ignore[attr-defined]
                for t in asyncio.all_tasks()
            ):
                return

    async def drive(self) -> None:
        while True:
            await self._settle()
            while self._heap and not self._heap[0][2][1]:
                heapq.heappop(self._heap)
            if not self._heap:
                self._new = anyio.Event()
                await self._new.wait()
                continue
            deadline = self._heap[0][0]
            self.now = max(self.now, deadline)
            while self._heap and self._heap[0][0] <= self.now:
                _, _, entry = heapq.heappop(self._heap)
                if entry[1]:
                    entry[0].set()  # type: ignore[attr-defined]


@asynccontextmanager
async def virtual_time() -> AsyncIterator[VirtualTime]:
    vt = VirtualTime()
    async with anyio.create_task_group() as tg:
        tg.start_soon(vt.drive)
        yield vt
        tg.cancel_scope.cancel()


def limiter(vt: VirtualTime, **kw: object) -> RateLimiter:
    return RateLimiter(clock=vt, sleep=vt.sleep, **kw)  # type: ignore[arg-type]


# --- pacing --------------------------------------------------------------------------------

async def test_rpm_is_evenly_paced_from_the_first_request() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=1000, rpm=600)
        granted: list[float] = []

        async def one() -> None:
            async with lim.slot() as slot:
                granted.append(vt())
                slot.succeeded()

        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(one)
    granted.sort()
    assert granted == pytest.approx([T0 + 0.1 * k for k in range(100)], abs=1e-9)


async def test_rpm_no_burst_after_idle() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, rpm=60)
        async with lim.slot():
            pass
        await vt.sleep(100)  # idle: no credit is banked
        times = []
        for _ in range(3):
            async with lim.slot():
                times.append(vt())
    assert times == pytest.approx([T0 + 100, T0 + 101, T0 + 102])


async def test_ipm_reserves_one_interval_per_image() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, ipm=60)  # one image per second
        times = []
        for images in (2, 1, 3, 1):
            async with lim.slot(images=images):
                times.append(vt() - T0)
    assert times == pytest.approx([0, 2, 3, 6])


async def test_rpm_and_ipm_together_take_the_later_schedule() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, rpm=120, ipm=30)  # 0.5 s per request, 2 s per image
        times = []
        for _ in range(3):
            async with lim.slot():
                times.append(vt() - T0)
    assert times == pytest.approx([0, 2, 4])


# --- concurrency ---------------------------------------------------------------------------

async def test_concurrency_cap_never_exceeded() -> None:
    rng = random.Random(7)
    peak = 0
    done = 0
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=5)

        async def job() -> None:
            nonlocal peak, done
            async with lim.slot() as slot:
                peak = max(peak, lim.in_flight)
                assert lim.in_flight <= 5
                await vt.sleep(rng.uniform(0.1, 3))
                slot.succeeded()
            done += 1

        async with anyio.create_task_group() as tg:
            for _ in range(60):
                tg.start_soon(job)
        stats = lim.snapshot()
    assert peak == 5 and done == 60
    assert stats == LimiterStats(window=5, in_flight=0, waiting=0, rate_limited_count=0,
                                 paused_until=0.0, granted=60)


async def test_waiters_are_served_fifo() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=1)
        order: list[int] = []

        async def job(i: int) -> None:
            async with lim.slot():
                order.append(i)
                await vt.sleep(1)

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(job, i)
                await anyio.lowlevel.checkpoint()
    assert order == [0, 1, 2, 3, 4]


# --- the 429 gate --------------------------------------------------------------------------

async def test_gate_blocks_everyone_until_the_delay_passes() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=10)
        granted: list[float] = []

        async def other() -> None:
            async with lim.slot():
                granted.append(vt())

        async with anyio.create_task_group() as tg:
            async with lim.slot() as slot:
                await vt.sleep(1)
                slot.rate_limited(2.0)
                assert lim.paused_until == T0 + 3.0
                for _ in range(5):
                    tg.start_soon(other)
                await vt.sleep(0.5)
                assert granted == []
        assert lim.snapshot().rate_limited_count == 1
    assert len(granted) == 5 and min(granted) >= T0 + 3.0


async def test_gate_holds_a_task_already_queued_for_the_window() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=1)
        granted: list[float] = []

        async def queued() -> None:
            async with lim.slot():
                granted.append(vt() - T0)

        async with anyio.create_task_group() as tg:
            async with lim.slot() as slot:
                tg.start_soon(queued)
                await vt.sleep(1)
                slot.rate_limited(2.0)  # gate until t=3; we release at t=1
    assert granted == pytest.approx([3.0])


async def test_gate_restarts_pacing_after_the_pause() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=10, rpm=60)
        granted: list[float] = []

        async def other() -> None:
            async with lim.slot():
                granted.append(vt() - T0)

        async with anyio.create_task_group() as tg:
            async with lim.slot() as slot:
                for _ in range(3):
                    tg.start_soon(other)  # reserved t=1, 2, 3 before the 429
                await vt.sleep(0.5)
                slot.rate_limited(4.5)  # gate until t=5
    # no backlog burst at t=5: the schedule restarts there
    assert sorted(granted) == pytest.approx([5, 6, 7])


async def test_pause_until_never_shortens_and_none_delay_opens_no_gate() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt)
        lim.pause_until(T0 + 10)
        lim.pause_until(T0 + 5)
        assert lim.paused_until == T0 + 10
        lim2 = limiter(vt)
        async with lim2.slot() as slot:
            slot.rate_limited(None)
        assert lim2.paused_until == 0.0 and lim2.snapshot().rate_limited_count == 1


async def test_one_report_pauses_at_most_max_pause() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, max_pause=60)
        async with lim.slot() as slot:
            slot.rate_limited(3600)
        assert lim.paused_until == T0 + 60
        uncapped = limiter(vt, max_pause=None)
        async with uncapped.slot() as slot:
            slot.rate_limited(3600)
        assert uncapped.paused_until == T0 + 3600


# --- adaptive AIMD -------------------------------------------------------------------------

async def _wave(lim: RateLimiter, n: int, outcome: str) -> None:
    """n slots held at once, then all report the same outcome."""
    slots: list[Slot] = []
    release = anyio.Event()
    ready = anyio.Event()

    async def hold() -> None:
        async with lim.slot() as slot:
            slots.append(slot)
            if len(slots) == n:
                ready.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(hold)
        await ready.wait()
        for slot in slots:
            slot.rate_limited(None) if outcome == "429" else slot.succeeded()
        release.set()


async def test_adaptive_window_halves_once_per_epoch() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=8, adaptive=True, min_window=2)
        assert lim.window == 8
        await _wave(lim, 8, "429")  # eight 429s from one wave: one halving
        assert lim.window == 4
        await _wave(lim, 4, "429")
        assert lim.window == 2
        await _wave(lim, 2, "429")
        assert lim.window == 2  # floor: min_window
        assert lim.snapshot().rate_limited_count == 14


async def test_adaptive_window_grows_by_one_per_window_successes() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=4, adaptive=True, initial_window=2)
        assert lim.window == 2
        await _wave(lim, 2, "ok")
        assert lim.window == 3
        await _wave(lim, 2, "ok")
        assert lim.window == 3  # needs 3 successes at window 3
        await _wave(lim, 1, "ok")
        assert lim.window == 4
        for _ in range(5):
            await _wave(lim, 4, "ok")
        assert lim.window == 4  # never above concurrency


async def test_adaptive_window_limits_in_flight_and_wakes_on_growth() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=4, adaptive=True)
        await _wave(lim, 4, "429")
        assert lim.window == 2
        peak = 0

        async def job() -> None:
            nonlocal peak
            async with lim.slot() as slot:
                peak = max(peak, lim.in_flight)
                await vt.sleep(1)
                slot.succeeded()

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(job)
        assert lim.window == 4 and peak == 4  # grew back while running


async def test_non_adaptive_window_is_fixed() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=4)
        await _wave(lim, 4, "429")
        assert lim.window == 4


# --- cancellation --------------------------------------------------------------------------

async def test_cancel_while_waiting_for_capacity_leaks_nothing() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=1)
        async with lim.slot():
            with anyio.move_on_after(0):
                async with lim.slot():
                    pytest.fail("must not be granted")
            assert lim.snapshot().waiting == 0
        assert lim.in_flight == 0
        async with lim.slot():
            assert lim.in_flight == 1


async def test_cancel_in_the_grant_instant_hands_the_slot_back() -> None:
    # asyncio's Task.cancel() can land after the hand-off but before the waiter runs
    # (anyio's own cancel scopes wait for the next checkpoint instead).
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=1)
        got = False

        async def waiter() -> None:
            nonlocal got
            async with lim.slot():
                got = True

        async with lim.slot():
            task = asyncio.get_running_loop().create_task(waiter())
            await vt.sleep(1)  # waiter is queued
            assert lim.snapshot().waiting == 1
        # released: in_flight now counts the queued waiter, which has not run yet
        assert lim.in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not got and lim.in_flight == 0 and lim.snapshot().waiting == 0


async def test_cancel_while_pacing_or_gated_releases_and_unreserves() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=5, rpm=60)
        async with lim.slot():
            pass  # t0; the next place is t0+1

        async def paced() -> None:
            async with lim.slot():
                pytest.fail("cancelled before its time")

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(paced)
                await vt.sleep(0.5)
                assert lim.in_flight == 1  # holds the window while pacing
                scope.cancel()
        assert lim.in_flight == 0 and lim.snapshot().waiting == 0
        async with lim.slot():  # the handed-back place t0+1 is reused
            assert vt() == pytest.approx(T0 + 1)

        lim.pause_until(vt() + 10)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(paced)
                await vt.sleep(1)
                scope.cancel()
        assert lim.in_flight == 0 and lim.snapshot().waiting == 0


async def test_cancelled_in_flight_slot_releases() -> None:
    async with virtual_time() as vt:
        lim = limiter(vt, concurrency=2)
        with anyio.move_on_after(0):
            async with lim.slot():
                await vt.sleep(5)
        assert lim.in_flight == 0


# --- surface -------------------------------------------------------------------------------

def test_rate_limiter_satisfies_the_protocol() -> None:
    assert isinstance(RateLimiter(), Limiter)


@pytest.mark.parametrize("kwargs", [
    {"concurrency": 0}, {"concurrency": 2.5}, {"rpm": 0}, {"rpm": -1}, {"ipm": float("inf")},
    {"min_window": 0}, {"min_window": 20}, {"initial_window": 17}, {"max_pause": -1},
    {"concurrency": 4, "min_window": 3, "initial_window": 2},
])
def test_bad_options_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


def test_bad_images_rejected() -> None:
    with pytest.raises(ConfigError):
        RateLimiter().slot(images=0)


async def test_default_clock_and_sleep_work() -> None:
    lim = RateLimiter(concurrency=2, rpm=60_000)  # 1 ms spacing, real time
    with anyio.fail_after(2):
        for _ in range(3):
            async with lim.slot() as slot:
                slot.succeeded()
    assert lim.snapshot().granted == 3
