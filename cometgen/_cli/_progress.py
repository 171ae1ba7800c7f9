"""Progress for a batch run: a live rich panel on a terminal, log lines otherwise."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, TextIO

import anyio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .._bulk._stats import BatchStats
from .._limits import LimiterStats

Mode = Literal["auto", "live", "plain", "quiet"]

_BAR_WIDTH = 20


class Gate(Protocol):
    """What the display reads from the batch's ``StopGate``."""

    http_in_flight: int
    waiting: int

    def snapshot(self) -> LimiterStats: ...


@dataclass(frozen=True, slots=True)
class _View:
    """The figures both displays show, computed once per refresh."""

    finished: int
    total: int | None
    http: int
    queued: int
    window: int | None
    rate_limited: int
    paused_for: int  # whole seconds left of a 429 pause (rounded up), 0 when not paused

    @property
    def percent(self) -> float | None:
        if self.total is None:  # not known yet (input still being read)
            return None
        if self.total == 0:  # nothing left to do: a rerun of a finished folder
            return 100.0
        return min(100.0, 100.0 * self.finished / self.total)

    def bar(self) -> str:
        pct = self.percent
        if pct is None:
            return f"{self.finished}"
        filled = round(_BAR_WIDTH * pct / 100)
        return (f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {pct:3.0f}% "
                f"{self.finished}/{self.total}")


def _view(stats: BatchStats, gate: Gate | None) -> _View:
    snap = gate.snapshot() if gate is not None else None
    http = gate.http_in_flight if gate is not None else stats.in_flight
    # Items taken by a worker but not in an HTTP attempt: waiting for the limiter, a retry
    # backoff or their files.
    queued = max(0, stats.in_flight - http)
    # Rounded up, so a pause that is still on never shows as 0s.
    paused = math.ceil(max(0.0, snap.paused_until - time.monotonic())) if snap is not None else 0
    return _View(
        finished=stats.finished, total=stats.todo, http=http, queued=queued,
        window=snap.window if snap is not None else None,
        rate_limited=snap.rate_limited_count if snap is not None else 0, paused_for=paused,
    )


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt_cost(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


def status_line(stats: BatchStats, gate: Gate | None) -> str:
    """One plain line: what a log file or CI console gets every few seconds."""
    view = _view(stats, gate)
    p50, p95 = stats.latency_percentiles()
    parts = [
        view.bar(),
        f"done {stats.done}",
        f"failed {stats.failed}",
        f"blocked {stats.blocked}",
        f"no_image {stats.no_image}",
    ]
    if stats.skipped:
        parts.append(f"skipped {stats.skipped} (done earlier)")
    window = f"/{view.window}" if view.window is not None else ""
    parts += [
        f"in flight {view.http}{window}",
        f"queued {view.queued}",
        f"{stats.images_per_minute():.0f} img/min",
        f"429s {view.rate_limited}",
    ]
    if view.paused_for > 0:
        parts.append(f"429 pause {view.paused_for}s")
    parts += [
        f"retries {stats.retries}",
        f"p50 {p50:.2f}s p95 {p95:.2f}s" if p50 is not None and p95 is not None else "p50 -",
        f"cost {_fmt_cost(stats.cost)}",
    ]
    projected = stats.projected_cost()
    if projected is not None:
        parts.append(f"projected {_fmt_cost(projected)}")
    parts.append(f"ETA {_fmt_duration(stats.eta())}")
    return "cometgen: " + " | ".join(parts)


def _table(stats: BatchStats, gate: Gate | None) -> Table:
    view = _view(stats, gate)
    p50, p95 = stats.latency_percentiles()
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "progress", view.bar(),
        "elapsed / ETA", f"{_fmt_duration(stats.elapsed())} / {_fmt_duration(stats.eta())}",
    )
    table.add_row(
        "done", f"[green]{stats.done}[/]",
        "failed", f"[red]{stats.failed}[/]" if stats.failed else "0",
    )
    table.add_row(
        "blocked", str(stats.blocked), "no image", str(stats.no_image),
    )
    window = f" / window {view.window}" if view.window is not None else ""
    table.add_row(
        "in flight (HTTP)", f"{view.http}{window}",
        "queued", str(view.queued),
    )
    pause = f" [yellow](paused {view.paused_for}s)[/]" if view.paused_for > 0 else ""
    table.add_row(
        "429s", f"{view.rate_limited}{pause}",
        "retries", str(stats.retries),
    )
    table.add_row("images/min", f"{stats.images_per_minute():.1f}", "", "")
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
        gate: Gate | None = None,
        *,
        mode: Mode = "auto",
        stream: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        self.stats = stats
        self._gate = gate
        self._stream = stream or sys.stderr
        if mode == "auto":
            mode = "live" if self._stream.isatty() else "plain"
        self.mode = mode
        self._interval = interval if interval is not None else (0.25 if mode == "live" else 10.0)
        self._scope: anyio.CancelScope | None = None
        self._live: Live | None = None

    async def __aenter__(self) -> Progress:
        if self.mode == "quiet":
            return self
        if self.mode == "live":
            console = Console(file=self._stream)
            self._live = Live(
                _table(self.stats, self._gate), console=console, auto_refresh=False,
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
            self._live.update(_table(self.stats, self._gate), refresh=True)
        elif self.mode == "plain":
            print(status_line(self.stats, self._gate), file=self._stream, flush=True)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._scope is not None:
            self._scope.cancel()
        if self._live is not None:
            self._live.update(_table(self.stats, self._gate), refresh=True)
            self._live.stop()
            self._live = None
        elif self.mode == "plain":
            self.refresh()  # the final figures, for the log
