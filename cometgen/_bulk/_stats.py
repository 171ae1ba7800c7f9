"""Live counters of a batch run, read by the progress display and the summary."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class BatchStats:
    """Counters of one run. Mutated only by the batch, on the event loop."""

    started: float = field(default_factory=time.monotonic)
    #: Items this run will try (after resume skips), when known.
    planned: int | None = None
    done: int = 0
    blocked: int = 0
    no_image: int = 0
    failed: int = 0
    #: Items skipped because an earlier run finished them.
    skipped: int = 0
    #: Items outside this run's ``--shard``.
    other_shard: int = 0
    duplicates: int = 0
    in_flight: int = 0
    images: int = 0
    retries: int = 0
    maybe_billed: int = 0
    #: Flex-tier items that failed because the provider shed them (429/503 under load).
    shed: int = 0
    #: Items answered from the cross-run cache (not sent, cost 0).
    cached: int = 0
    #: Items done with an image an interrupted run left on disk unrecorded (not sent again).
    adopted: int = 0
    #: Keys of this run's items that may have been billed without a result (first 1,000).
    maybe_billed_keys: list[str] = field(default_factory=list)
    cost: float = 0.0
    #: Spend an earlier run recorded in the same folder (the budget counts it).
    prior_cost: float = 0.0
    #: Items earlier runs recorded as failed, skipped without ``retry_failed``.
    skipped_failed: int = 0
    #: Done items whose id came back with a different request (skipped, or regenerated).
    changed: int = 0
    #: Items left unsent (or unrecorded) by a stop: a rerun does them.
    unsent: int = 0
    stop_reason: str | None = None
    #: The error that halted the run (a systemic failure), as text.
    stop_detail: str | None = None
    _http_times: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    _finish_times: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    _latencies: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    _image_times: deque[float] = field(default_factory=lambda: deque(maxlen=5000))

    @property
    def todo(self) -> int | None:
        """Items this run has to do: the planned input without what earlier runs finished."""
        if self.planned is None:
            return None
        left_out = (self.skipped + self.skipped_failed + self.changed + self.other_shard
                    + self.duplicates)
        return max(self.finished, self.planned - left_out)

    @property
    def finished(self) -> int:
        return self.done + self.blocked + self.no_image + self.failed

    def record(self, status: str, *, attempts: int, maybe_billed: bool,
               latency: float | None, cost: float | None, images: int,
               key: str | None = None) -> None:
        setattr(self, status, getattr(self, status) + 1)
        self._finish_times.append(time.monotonic())
        self.retries += max(0, attempts - 1)
        if maybe_billed:
            self.maybe_billed += 1
            if key is not None and status != "done" and len(self.maybe_billed_keys) < 1000:
                self.maybe_billed_keys.append(key)
        if latency is not None:
            self._latencies.append(latency)
        if cost:
            self.cost += cost
        if images:
            now = time.monotonic()
            self.images += images
            for _ in range(images):
                self._image_times.append(now)

    def http_time(self, seconds: float) -> None:
        """Time one HTTP attempt took (the wait for a limiter slot excluded)."""
        self._http_times.append(seconds)

    def latency_percentiles(self) -> tuple[float | None, float | None]:
        """p50/p95 of the HTTP attempts (per item, limiter wait included, without a gate)."""
        values = sorted(self._http_times or self._latencies)
        return _percentile(values, 0.50), _percentile(values, 0.95)

    def images_per_minute(self) -> float:
        now = time.monotonic()
        window = 60.0
        recent = [t for t in self._image_times if now - t <= window]
        span = min(window, now - self.started)
        return len(recent) * 60.0 / span if span > 0 else 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def recent_rate(self, window: float = 30.0) -> float:
        """Items finished per second over the last ``window`` seconds."""
        now = time.monotonic()
        recent = [t for t in self._finish_times if now - t <= window]
        span = min(window, now - self.started)
        if recent and len(self._finish_times) == self._finish_times.maxlen:
            span = min(span, now - recent[0])  # the buffer covers less than the window
        return len(recent) / span if recent and span > 0 else 0.0

    def eta(self) -> float | None:
        if self.planned is None or self.finished == 0:
            return None
        remaining = max(0, (self.todo or 0) - self.finished)
        rate = self.recent_rate()
        return remaining / rate if rate > 0 else None

    def projected_cost(self) -> float | None:
        if self.todo is None or self.finished == 0:
            return None
        return self.cost / self.finished * self.todo

    def count_unsent(self, *, cached: bool, adopted: bool) -> None:
        """Counts an item answered without a request: from the cache, or adopted."""
        self.cached += cached
        self.adopted += adopted

    def as_dict(self) -> dict[str, Any]:
        p50, p95 = self.latency_percentiles()
        return {
            "done": self.done,
            "blocked": self.blocked,
            "no_image": self.no_image,
            "failed": self.failed,
            "skipped": self.skipped,
            "skipped_failed": self.skipped_failed,
            "changed": self.changed,
            "unsent": self.unsent,
            "other_shard": self.other_shard,
            "duplicates": self.duplicates,
            "images": self.images,
            "retries": self.retries,
            "maybe_billed": self.maybe_billed,
            "shed": self.shed,
            "cached": self.cached,
            "adopted": self.adopted,
            "cost_usd": round(self.cost, 6),
            "folder_cost_usd": round(self.prior_cost + self.cost, 6),
            "elapsed_s": round(self.elapsed(), 3),
            "latency_p50_s": None if p50 is None else round(p50, 3),
            "latency_p95_s": None if p95 is None else round(p95, 3),
            "stop_reason": self.stop_reason,
            "stop_detail": self.stop_detail,
        }
