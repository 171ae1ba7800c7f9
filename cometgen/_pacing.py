"""Pacing of large response bodies, so that a burst of them keeps the event loop responsive.

On a fast link, 64 multi-MB bodies arriving at once would otherwise be read (64 sockets per
loop iteration) and decoded (~0.7 ms per 4 MB) in the same iterations, and every other
task on the loop (a web app's handlers) would wait tens of milliseconds. ``BodyPacer``
bounds both: at most ``readers`` large bodies stream at once (the others wait in their
socket buffers, with TCP flow control pausing the sender) and large bodies are decoded one
per loop iteration.
The reader limit is soft: when the slot holders have all been reading for ``patience``
seconds (a slow link, where data trickles in and concurrent reads cost the loop nothing), a
waiting body is read anyway, so a slow network never throttles a run; on a fast link, where
a holder reads its body in milliseconds, the limit holds.
"""

from __future__ import annotations

import asyncio
from collections import deque

import anyio

from ._config import LARGE_BODY_BYTES, LARGE_BODY_PATIENCE, LARGE_BODY_READERS

__all__ = ["BodyPacer", "BurstGate"]


class BodyPacer:
    """Soft limit on concurrent large-body reads, and one large decode per loop iteration."""

    def __init__(
        self,
        *,
        large: int = LARGE_BODY_BYTES,
        readers: int = LARGE_BODY_READERS,
        patience: float = LARGE_BODY_PATIENCE,
    ) -> None:
        if readers < 1:
            raise ValueError("readers must be >= 1")
        self.large = large
        self.patience = patience
        self._readers = anyio.Semaphore(readers)
        self._turn = anyio.Lock()
        self._holding: list[float] = []  # start times of the current slot holders
        #: Large bodies read, and those that gave up waiting for a slot (diagnostics).
        self.large_reads = 0
        self.impatient_reads = 0

    def is_large(self, size: int | None) -> bool:
        return size is not None and size >= self.large

    def reading(self) -> _ReadSlot:
        """Hold a reader slot while streaming one large body (``async with``).

        A body waits for a slot while the readers are fast (the latest started less than
        ``patience`` ago); when every reader has been reading for longer (a slow or stuck
        link, where concurrent reads cost the loop nothing), one waiting body goes ahead
        without a slot, and another after each further ``patience`` of slowness.
        """
        return _ReadSlot(self)

    async def _enter(self) -> tuple[float, bool]:
        self.large_reads += 1
        acquired = False
        while not acquired:
            with anyio.move_on_after(self.patience):
                await self._readers.acquire()
                acquired = True
            if not acquired and self._holders_slow():
                self.impatient_reads += 1
                break
        # An impatient reader counts as a holder too: the others wait for it to turn slow
        # in its turn, so a slow link opens one extra read per ``patience``, not all at once.
        started = anyio.current_time()
        self._holding.append(started)
        return started, acquired

    def _exit(self, started: float, acquired: bool) -> None:
        self._holding.remove(started)
        if acquired:
            self._readers.release()

    def _holders_slow(self) -> bool:
        youngest = max(self._holding, default=None)
        return youngest is None or anyio.current_time() - youngest >= self.patience

    def decoding(self) -> anyio.Lock:
        """The decode turn (``async with``): acquiring yields once, so turns land in distinct
        iterations."""
        return self._turn


class _ReadSlot:
    """``BodyPacer.reading()``: a class, not a generator context manager (cheaper per body)."""

    __slots__ = ("_acquired", "_pacer", "_started")

    def __init__(self, pacer: BodyPacer) -> None:
        self._pacer = pacer
        self._started = 0.0
        self._acquired = False

    async def __aenter__(self) -> None:
        self._started, self._acquired = await self._pacer._enter()

    async def __aexit__(self, *_exc: object) -> None:
        self._pacer._exit(self._started, self._acquired)


class BurstGate:
    """About ``per_iteration`` requests start in one event-loop iteration.

    Starting a request costs ~0.3 ms of loop time, opening a connection ~1 ms more, so 64
    calls made at once would hold the loop for tens of ms in one iteration; the gate spreads
    such a burst over several iterations (waiters are woken in order, ``per_iteration`` at
    a time) and costs nothing when requests trickle in. The transport uses one gate for
    request starts and a tighter one for new connections (see ``_config``).
    """

    def __init__(self, per_iteration: int = 4) -> None:
        if per_iteration < 1:
            raise ValueError("per_iteration must be >= 1")
        self.per_iteration = per_iteration
        self._started = 0
        self._armed = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    def _arm(self) -> None:
        if not self._armed:
            self._armed = True
            asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self._armed = False
        self._started = 0
        while self._waiters and self._started < self.per_iteration:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._started += 1
        if self._started:
            self._arm()  # the woken start in the next iteration: count them there

    async def wait(self) -> None:
        """Return when a request may start."""
        if self._started < self.per_iteration and not self._waiters:
            self._started += 1
            self._arm()
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._arm()
        await waiter
