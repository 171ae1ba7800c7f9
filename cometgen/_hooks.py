"""Event hooks: ``AsyncClient(event_hooks={"request": [...], "response": [...]})``.

Like httpx's: each hook is called with an event, once per HTTP attempt, and may be a plain
function or a coroutine function. A hook that raises fails the call with that exception.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._exceptions import CometgenError, ConfigError
from ._retry import RetryDecision

__all__ = ["AttemptRecord", "EventHooks", "Hooks", "RequestEvent", "ResponseEvent",
           "request_id_of"]

#: ``{"request": [hook, ...], "response": [hook, ...]}``; a hook returns None or an awaitable.
EventHooks = Mapping[str, Sequence[Callable[[Any], Awaitable[None] | None]]]


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """An HTTP attempt is about to wait for its limiter slot and be sent."""

    model: str
    #: 1 for the first attempt of a call, 2 for its first retry...
    attempt: int


@dataclass(frozen=True, slots=True)
class ResponseEvent:
    """An HTTP attempt ended, with an answer or an error."""

    model: str
    attempt: int
    #: The HTTP status; None when none came back (connection error, attempt timeout).
    status: int | None
    #: Seconds from sending (the limiter slot granted) to the decoded answer or the error.
    latency: float
    #: Size of the response body (0 when none came back).
    bytes: int
    #: The provider's request id (``x-request-id`` / ``x-goog-request-id``, else the error's).
    request_id: str | None
    #: The attempt's error, None on success.
    error: CometgenError | None = None
    #: True when the call will try again after this error.
    retrying: bool = False
    #: Why it will (or will not) be retried, e.g. ``"429 RESOURCE_EXHAUSTED, server asked
    #: 1.5s"``; None on success.
    retry_reason: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


def request_id_of(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-request-id") or headers.get("x-goog-request-id")


class AttemptRecord:
    """What one attempt saw, filled in as it goes (by the client)."""

    __slots__ = ("headers", "size", "started", "status")

    def __init__(self) -> None:
        self.started = 0.0
        self.status: int | None = None
        self.headers: Mapping[str, str] = {}
        self.size = 0

    def event(
        self, model: str, attempt: int, now: float, error: CometgenError | None = None,
        decision: RetryDecision | None = None,
    ) -> ResponseEvent:
        request_id = request_id_of(self.headers) or getattr(error, "request_id", None)
        return ResponseEvent(
            model=model, attempt=attempt, status=self.status,
            latency=max(0.0, now - self.started) if self.started else 0.0, bytes=self.size,
            request_id=request_id, error=error,
            retrying=decision is not None and decision.retry,
            retry_reason=decision.reason if decision is not None else None,
            headers=self.headers,
        )


class Hooks:
    """The validated hooks of a client."""

    __slots__ = ("request", "response")

    def __init__(self, event_hooks: EventHooks | None) -> None:
        hooks = dict(event_hooks or {})
        if unknown := sorted(set(hooks) - {"request", "response"}):
            raise ConfigError(f"event_hooks: unknown event(s) {unknown}; use 'request', 'response'")
        for name, funcs in hooks.items():
            if isinstance(funcs, str) or not isinstance(funcs, Sequence) or not all(
                callable(f) for f in funcs
            ):
                raise ConfigError(f"event_hooks[{name!r}] must be a list of callables")
        self.request = tuple(hooks.get("request", ()))
        self.response = tuple(hooks.get("response", ()))

    @staticmethod
    async def emit(hooks: Sequence[Callable[[Any], Awaitable[None] | None]], event: Any) -> None:
        for hook in hooks:
            result = hook(event)
            if inspect.isawaitable(result):
                await result
