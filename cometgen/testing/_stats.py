"""What the mock saw and what it would have charged for."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

#: Requests kept in ``MockStats.log``: the newest ones, so a long run's memory stays flat.
LOG_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request: ``status`` is 0 when the connection was dropped without an answer."""

    t: float
    model: str
    prompt: str
    status: int
    outcome: str


@dataclass
class MockStats:
    """Counters of a running mock server; safe to read from another thread.

    ``billed`` counts generations the real service would charge for, keyed by the sha256 hex
    digest of the raw request body; ``billed_by_prompt`` keys them by the first user text.
    """

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    billed: dict[str, int] = field(default_factory=dict)
    billed_by_prompt: dict[str, int] = field(default_factory=dict)
    billed_total: int = 0
    rate_limited: int = 0
    #: Flex requests shed (``MockOptions.flex_shed_rate``): not billed, not rate-limited.
    shed: int = 0
    #: The newest ``LOG_LIMIT`` requests, oldest first (the counters above count them all).
    log: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests += 1
            self.by_status[rec.status] = self.by_status.get(rec.status, 0) + 1
            self.log.append(rec)

    def bill(self, body_sha256: str, prompt: str) -> None:
        with self._lock:
            self.billed[body_sha256] = self.billed.get(body_sha256, 0) + 1
            self.billed_by_prompt[prompt] = self.billed_by_prompt.get(prompt, 0) + 1
            self.billed_total += 1

    def count_rate_limited(self) -> None:
        with self._lock:
            self.rate_limited += 1

    def count_shed(self) -> None:
        with self._lock:
            self.shed += 1

    def reset(self) -> None:
        """Zero every counter (marker counts and rate windows are reset by the server)."""
        with self._lock:
            self.requests = self.billed_total = self.rate_limited = self.shed = 0
            self.by_status.clear()
            self.billed.clear()
            self.billed_by_prompt.clear()
            self.log.clear()
