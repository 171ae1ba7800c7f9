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
from .._limits import Limiter, LimiterStats, Slot, SlotRefused
from ._manifest import ManifestRecord
from ._outcomes import Failed, Outcome

__all__ = [
    "CONNECT_FAILURES_TO_HALT",
    "HALT_MESSAGES",
    "HaltDetector",
    "Halted",
    "ItemTrace",
    "StopGate",
    "Verdict",
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
    "interrupted": "Ctrl-C or SIGTERM: the items not sent are not recorded; rerun to do them",
}


class Halted(SlotRefused):
    """Raised by ``StopGate`` instead of sending: the batch is stopping.

    Not a failure of the item, unless an earlier attempt of it may have been billed
    (``maybe_billed``, filled in by the client): then it is recorded, so no rerun pays again.
    """


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


#: A finished item and its manifest record.
Finished = tuple[Outcome, ManifestRecord]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the batch does with a finished item (and the items it held before it)."""

    #: The reason the run halts now, or None.
    halt: str | None = None
    #: To record, in order.
    record: tuple[Finished, ...] = ()
    #: Handed out but not recorded: a rerun does them.
    unrecorded: tuple[Outcome, ...] = ()


class HaltDetector:
    """Tells which failures are systemic: no later item can succeed, so the run halts.

    Such failures are not recorded as the item's result: a rerun after the fix does them
    without ``--retry-failed``. An item that could not connect is held until the streak it
    belongs to ends: it halts the run at ``CONNECT_FAILURES_TO_HALT`` (all left unrecorded),
    and otherwise is recorded failed, so every line has a record and the exit code agrees
    with ``cometgen status``.
    """

    def __init__(self) -> None:
        self._held: list[Finished] = []
        self._network_down = False

    def judge(self, outcome: Outcome, record: ManifestRecord) -> Verdict:
        error = outcome.error if isinstance(outcome, Failed) else None
        if isinstance(error, AuthenticationError | PermissionDeniedError):
            return self._halt("auth", outcome)
        if isinstance(error, QuotaExhaustedError):
            return self._halt("quota", outcome)
        if isinstance(error, NotFoundError):
            return self._halt("model", outcome)
        if self.unsent(error, maybe_billed=outcome.maybe_billed):
            if self._network_down:  # in flight when the run halted
                return self._halt("network", outcome)
            self._held.append((outcome, record))
            if len(self._held) < CONNECT_FAILURES_TO_HALT:
                return Verdict()
            self._network_down = True
            held, self._held = self._held, []
            return Verdict(halt="network", unrecorded=tuple(o for o, _ in held))
        # Any other answer ends the streak: the endpoint is reachable.
        held, self._held = self._held, []
        return Verdict(record=(*held, (outcome, record)))

    def release(self) -> list[Finished]:
        """The items held when the run ends: too few in a row to halt it, so they failed."""
        held, self._held = self._held, []
        return held

    @staticmethod
    def _halt(reason: str, outcome: Outcome) -> Verdict:
        return Verdict(halt=reason, unrecorded=(outcome,))

    @staticmethod
    def unsent(error: BaseException | None, *, maybe_billed: bool) -> bool:
        """Nothing reached the endpoint: the connection could not be opened."""
        return isinstance(error, ConnectError | ConnectTimeout) and not maybe_billed


def with_gate(
    client: AsyncClient, stopping: Callable[[], bool],
    on_attempt: Callable[[float], None] | None = None,
) -> tuple[AsyncClient, StopGate]:
    """A copy of ``client`` whose every attempt passes a ``StopGate`` around its limiter."""
    gate = StopGate(client.limiter, stopping, on_attempt)
    return client.with_options(limiter=gate), gate
