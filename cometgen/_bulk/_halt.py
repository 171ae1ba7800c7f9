"""Stopping a batch for real: no request leaves after a stop, systemic failures halt the run.

``StopGate`` wraps the client's limiter: once the batch is stopping, an attempt that asks for
a slot is refused (``Halted``) before anything is sent, whether it is an item's first
attempt or a retry. It also counts HTTP attempts actually in flight and the time spent in
them, apart from the limiter wait, and marks the item whose request left (``ItemTrace``), so a
grace-timer cut can be recorded as possibly billed.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from .._client import AsyncClient
from .._exceptions import (
    AuthenticationError,
    ConnectError,
    ConnectTimeout,
    NotFoundError,
    PermissionDeniedError,
    QuotaExhaustedError,
)
from .._limits import Limiter, LimiterStats, Slot
from ._outcomes import Failed, Outcome

__all__ = [
    "CONNECT_FAILURES_TO_HALT",
    "HALT_MESSAGES",
    "HaltDetector",
    "Halted",
    "ItemTrace",
    "StopGate",
    "current_trace",
    "with_gate",
]

#: Consecutive items failing to reach the endpoint after which the run halts.
CONNECT_FAILURES_TO_HALT: Final = 3

#: One line per reason a run stops early, for the CLI.
HALT_MESSAGES: Final = {
    "auth": "the API key was refused (401/403/API_KEY_INVALID): fix the key and rerun",
    "model": "the endpoint does not know the model (404): fix --model and rerun",
    "quota": "the quota is exhausted (402 or the per-day limit): rerun when it resets",
    "network": "cannot reach the endpoint (connect/DNS failures on "
    f"{CONNECT_FAILURES_TO_HALT} consecutive items): check the network or --base-url",
    "disk": "cannot write to the output folder (disk full?)",
    "budget": "--max-cost reached",
    "interrupted": "interrupted",
}


class Halted(Exception):
    """Raised by ``StopGate`` instead of sending: the batch is stopping. Never a failure."""


@dataclass(slots=True)
class ItemTrace:
    """What the gate saw of one item's attempts."""

    #: Some attempt was granted a slot, so a request may have left.
    sent: bool = False
    #: Seconds spent in HTTP attempts (limiter wait excluded).
    http_time: float = 0.0


_TRACE: contextvars.ContextVar[ItemTrace | None] = contextvars.ContextVar(
    "cometgen_item_trace", default=None
)
#: The key of the item the current task works on, for log lines.
CURRENT_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cometgen_item_key", default=None
)


def current_trace(key: str) -> ItemTrace:
    """A fresh trace for the current task's item (each item runs in its own context copy)."""
    trace = ItemTrace()
    _TRACE.set(trace)
    CURRENT_KEY.set(key)
    return trace


class StopGate:
    """A ``Limiter`` around another: refuses slots once ``stopping()``, counts HTTP in flight."""

    def __init__(
        self, inner: Limiter, stopping: Callable[[], bool],
        on_attempt: Callable[[float], None] | None = None,
    ) -> None:
        self.inner = inner
        self._stopping = stopping
        #: Called with the seconds each HTTP attempt held its slot (limiter wait excluded).
        self.on_attempt = on_attempt
        #: HTTP attempts holding a slot now.
        self.http_in_flight = 0
        #: Attempts waiting for a slot (pacing, window, 429 pause).
        self.waiting = 0

    def __getattr__(self, name: str) -> object:
        # window, concurrency, paused_until...: what displays read from the real limiter.
        return getattr(self.inner, name)

    def slot(self, images: int = 1) -> _GateSlot:
        return _GateSlot(self, images)

    def snapshot(self) -> LimiterStats:
        return self.inner.snapshot()


class _GateSlot:
    __slots__ = ("_cm", "_gate", "_images", "_t0", "_trace")

    def __init__(self, gate: StopGate, images: int) -> None:
        self._gate = gate
        self._images = images
        self._cm = gate.inner.slot(images)
        self._trace = _TRACE.get()
        self._t0 = 0.0

    async def __aenter__(self) -> Slot:
        gate = self._gate
        if gate._stopping():
            raise Halted
        gate.waiting += 1
        try:
            slot = await self._cm.__aenter__()
        finally:
            gate.waiting -= 1
        if gate._stopping():  # stopped while this attempt waited for its turn
            await self._cm.__aexit__(None, None, None)
            raise Halted
        gate.http_in_flight += 1
        if self._trace is not None:
            self._trace.sent = True
        self._t0 = time.monotonic()
        return slot

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        gate = self._gate
        gate.http_in_flight -= 1
        elapsed = time.monotonic() - self._t0
        if self._trace is not None:
            self._trace.http_time += elapsed
        if gate.on_attempt is not None:
            gate.on_attempt(elapsed)
        await self._cm.__aexit__(exc_type, exc, tb)


class HaltDetector:
    """Tells which failures are systemic: no later item can succeed, so the run halts.

    Such failures are not recorded as the item's result: a rerun after the fix does them
    without ``--retry-failed``.
    """

    def __init__(self) -> None:
        self._connect_failures = 0

    def reason(self, error: BaseException | None, *, maybe_billed: bool) -> str | None:
        """The halt reason ``error`` calls for, or None (an ordinary per-item failure)."""
        if isinstance(error, AuthenticationError | PermissionDeniedError):
            return "auth"
        if isinstance(error, QuotaExhaustedError):
            return "quota"
        if isinstance(error, NotFoundError):
            return "model"
        if isinstance(error, ConnectError | ConnectTimeout) and not maybe_billed:
            self._connect_failures += 1
            if self._connect_failures >= CONNECT_FAILURES_TO_HALT:
                return "network"
            return None
        self._connect_failures = 0
        return None

    def succeeded(self) -> None:
        self._connect_failures = 0

    def judge(self, outcome: Outcome) -> tuple[str | None, bool]:
        """(halt reason or None, whether to record the outcome) for a finished item."""
        if not isinstance(outcome, Failed):
            self.succeeded()
            return None, True
        halt = self.reason(outcome.error, maybe_billed=outcome.maybe_billed)
        return halt, not self.unsent(outcome.error, maybe_billed=outcome.maybe_billed)

    @staticmethod
    def unsent(error: BaseException | None, *, maybe_billed: bool) -> bool:
        """Nothing reached the endpoint: leave the item unrecorded so a rerun sends it."""
        return isinstance(error, ConnectError | ConnectTimeout) and not maybe_billed


def with_gate(
    client: AsyncClient, stopping: Callable[[], bool],
    on_attempt: Callable[[float], None] | None = None,
) -> tuple[AsyncClient, StopGate]:
    """A copy of ``client`` whose every attempt passes a ``StopGate`` around its limiter."""
    gate = StopGate(client.limiter, stopping, on_attempt)
    return client.with_options(limiter=gate), gate
