"""Sliding-window counters for the mock's ``rpm``/``ipm`` limits."""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    """At most ``limit`` events in any ``window`` seconds; times come from the caller."""

    __slots__ = ("_events", "limit", "window")

    def __init__(self, limit: int, window: float = 60.0) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.window = window
        self._events: deque[float] = deque()

    def _expire(self, now: float) -> None:
        events = self._events
        while events and events[0] <= now - self.window:
            events.popleft()

    def wait_time(self, now: float, n: int = 1) -> float:
        """Seconds until ``n`` more events fit; 0.0 when they fit now."""
        self._expire(now)
        excess = len(self._events) + n - self.limit
        if excess <= 0:
            return 0.0
        if n > self.limit:
            return self.window
        return max(0.0, self._events[excess - 1] + self.window - now)

    def add(self, now: float, n: int = 1) -> None:
        self._events.extend([now] * n)

    def clear(self) -> None:
        self._events.clear()
