"""The progress line's 429 countdown and its recent-window ETA (issue 16, point 9), with a
controlled clock: the CLI prints the same line every few seconds, too slow for a CLI test to
catch a countdown reliably."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from cometgen import LimiterStats
from cometgen._bulk._stats import BatchStats
from cometgen._cli._progress import status_line


@dataclass
class _Gate:
    paused_until: float
    http_in_flight: int = 3

    def snapshot(self) -> LimiterStats:
        return LimiterStats(window=8, in_flight=self.http_in_flight, waiting=4,
                            rate_limited_count=2, paused_until=self.paused_until, granted=10)


def test_a_429_pause_shows_its_countdown_and_queued_items_apart() -> None:
    stats = BatchStats(planned=10)
    stats.in_flight = 7  # items taken by workers; 3 of them in an HTTP attempt
    line = status_line(stats, _Gate(paused_until=time.monotonic() + 42.4))
    assert "429 pause 43s" in line  # rounded up: never "0s" while the pause is on
    assert "in flight 3/8" in line and "queued 4" in line
    assert "429 pause 1s" in status_line(stats, _Gate(paused_until=time.monotonic() + 0.3))
    assert "429 pause" not in status_line(stats, _Gate(paused_until=time.monotonic() - 1))


def test_eta_follows_the_recent_rate_not_the_whole_run(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    stats = BatchStats(planned=200, started=now[0])
    # A slow start (1 item/s for 60 s), then 10 items/s for the last 10 s.
    for _ in range(60):
        now[0] += 1.0
        stats.record("done", attempts=1, maybe_billed=False, latency=1.0, cost=None, images=1)
    for _ in range(100):
        now[0] += 0.1
        stats.record("done", attempts=1, maybe_billed=False, latency=1.0, cost=None, images=1)
    eta = stats.eta()
    assert eta is not None
    # 40 left at the last 30 s's rate ((20 + 100) / 30 = 4/s): 10 s, not 40 / (160/70) = 17.5.
    assert eta == pytest.approx(10.0, rel=0.05)
    assert "ETA 0:10" in status_line(stats, None) or "ETA 0:09" in status_line(stats, None)


def test_a_rerun_with_nothing_left_shows_a_full_bar() -> None:
    stats = BatchStats(planned=0)
    stats.skipped = 11
    assert status_line(stats, None).startswith("cometgen: [####################] 100% 0/0 |")
