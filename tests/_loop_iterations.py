"""Counting event-loop iterations in a test (for code that spreads work over iterations)."""

from __future__ import annotations

import asyncio


class LoopIterations:
    """``with LoopIterations() as it:`` then ``it.count`` is the current iteration's number.

    A callback that re-schedules itself with ``call_soon`` runs exactly once per iteration.
    """

    def __init__(self) -> None:
        self.count = 0
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> LoopIterations:
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._loop.call_soon(self._tick)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._running = False

    def _tick(self) -> None:
        self.count += 1
        if self._running and self._loop is not None:
            self._loop.call_soon(self._tick)
