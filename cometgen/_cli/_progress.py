"""Progress for a batch run: a live rich panel on a terminal, log lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Literal, TextIO

import anyio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .._bulk._stats import BatchStats
from .._limits import LimiterStats

Mode = Literal["auto", "live", "plain", "quiet"]


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt_cost(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


def status_line(stats: BatchStats, limiter: LimiterStats | None) -> str:
    """One plain line: what a log file or CI console gets every few seconds."""
    p50, p95 = stats.latency_percentiles()
    parts = [
        f"done {stats.done}",
        f"failed {stats.failed}",
        f"blocked {stats.blocked}",
        f"no_image {stats.no_image}",
    ]
    if stats.planned is not None:
        parts.insert(0, f"{stats.finished}/{stats.planned}")
    if stats.skipped:
        parts.append(f"skipped {stats.skipped}")
    window = f"/{limiter.window}" if limiter else ""
    parts += [
        f"in flight {stats.in_flight}{window}",
        f"{stats.images_per_minute():.0f} img/min",
        f"429s {limiter.rate_limited_count if limiter else 0}",
        f"retries {stats.retries}",
        f"p50 {p50:.2f}s p95 {p95:.2f}s" if p50 is not None and p95 is not None else "p50 -",
        f"cost {_fmt_cost(stats.cost)}",
    ]
    projected = stats.projected_cost()
    if projected is not None:
        parts.append(f"projected {_fmt_cost(projected)}")
    parts.append(f"ETA {_fmt_duration(stats.eta())}")
    return "cometgen: " + " | ".join(parts)


def _table(stats: BatchStats, limiter: LimiterStats | None) -> Table:
    p50, p95 = stats.latency_percentiles()
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_column(style="bold")
    table.add_column()
    total = f"/{stats.planned}" if stats.planned is not None else ""
    table.add_row(
        "progress", f"{stats.finished}{total}",
        "elapsed / ETA", f"{_fmt_duration(stats.elapsed())} / {_fmt_duration(stats.eta())}",
    )
    table.add_row(
        "done", f"[green]{stats.done}[/]",
        "failed", f"[red]{stats.failed}[/]" if stats.failed else "0",
    )
    table.add_row(
        "blocked", str(stats.blocked), "no image", str(stats.no_image),
    )
    window = f" / window {limiter.window}" if limiter else ""
    table.add_row(
        "in flight", f"{stats.in_flight}{window}",
        "images/min", f"{stats.images_per_minute():.1f}",
    )
    table.add_row(
        "429s", str(limiter.rate_limited_count if limiter else 0),
        "retries", str(stats.retries),
    )
    table.add_row(
        "latency p50", "-" if p50 is None else f"{p50:.2f}s",
        "p95", "-" if p95 is None else f"{p95:.2f}s",
    )
    table.add_row(
        "cost", _fmt_cost(stats.cost), "projected", _fmt_cost(stats.projected_cost()),
    )
    if stats.skipped or stats.maybe_billed:
        table.add_row(
            "skipped (done before)", str(stats.skipped),
            "maybe billed", str(stats.maybe_billed),
        )
    if stats.stop_reason:
        table.add_row("stopping", f"[yellow]{stats.stop_reason}[/]", "", "")
    return table


class Progress:
    """Shows ``stats`` until closed. ``auto`` picks live on a terminal, else plain lines."""

    def __init__(
        self,
        stats: BatchStats,
        limiter: Callable[[], LimiterStats] | None = None,
        *,
        mode: Mode = "auto",
        stream: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        self.stats = stats
        self._limiter = limiter
        self._stream = stream or sys.stderr
        if mode == "auto":
            mode = "live" if self._stream.isatty() else "plain"
        self.mode = mode
        self._interval = interval if interval is not None else (0.25 if mode == "live" else 10.0)
        self._scope: anyio.CancelScope | None = None
        self._live: Live | None = None

    def _snapshot(self) -> LimiterStats | None:
        return self._limiter() if self._limiter else None

    async def __aenter__(self) -> Progress:
        if self.mode == "quiet":
            return self
        if self.mode == "live":
            console = Console(file=self._stream)
            self._live = Live(
                _table(self.stats, self._snapshot()), console=console, auto_refresh=False,
                transient=False,
            )
            self._live.start()
        return self

    async def run(self) -> None:
        """Refresh until cancelled; run it in the caller's task group."""
        if self.mode == "quiet":
            return
        with anyio.CancelScope() as scope:
            self._scope = scope
            while True:
                await anyio.sleep(self._interval)
                self.refresh()

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(_table(self.stats, self._snapshot()), refresh=True)
        elif self.mode == "plain":
            print(status_line(self.stats, self._snapshot()), file=self._stream, flush=True)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._scope is not None:
            self._scope.cancel()
        if self._live is not None:
            self._live.update(_table(self.stats, self._snapshot()), refresh=True)
            self._live.stop()
            self._live = None
