"""Pure retry policy: which failures are retried, and how long to wait first.

Nothing here sleeps or does I/O; the client asks ``decide()`` after each failed attempt and
sleeps for ``RetryDecision.delay`` itself. The rule that matters most: a request that may
already have been generated (and billed) is not re-sent unless the caller opted in with
``RetryPolicy.max_ambiguous_retries``.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random as _random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ._exceptions import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    CometgenError,
    ConfigError,
    GenerationError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExhaustedError,
)

__all__ = [
    "RetryDecision",
    "RetryPolicy",
    "RetryState",
    "backoff_delay",
    "decide",
    "parse_retry_after",
]

DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504, 524})
#: Statuses a client must never retry: more attempts cannot succeed.
NEVER_RETRY_STATUSES: frozenset[int] = frozenset({400, 401, 402, 403, 404})
_NEVER_RETRY_CLASSES: tuple[type[APIStatusError], ...] = (
    QuotaExhaustedError, BadRequestError, AuthenticationError, PermissionDeniedError,
    NotFoundError,
)


def _finite(name: str, value: float, *, minimum: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name} must be a finite number >= {minimum}, got {value!r}")


def _count(name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _statuses(name: str, value: object) -> frozenset[int]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(f"{name} must be a set of HTTP status codes, got {value!r}")
    statuses: set[int] = set()
    for code in value:
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
            raise ConfigError(f"{name} must hold HTTP status codes (100-599), got {code!r}")
        statuses.add(code)
    return frozenset(statuses)


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How failed attempts are retried. Frozen; derive variants with ``dataclasses.replace``."""

    #: Total attempts (first try included) for retryable statuses and not-sent failures.
    max_attempts: int = 4
    #: Extra attempts allowed after a failure whose outcome is unknown (the request may have
    #: been generated and billed): read timeouts, dropped connections, undecodable 200 bodies,
    #: ``ambiguous_statuses``. 0 (the default) never risks paying twice.
    max_ambiguous_retries: int = 0
    #: HTTP statuses worth another attempt.
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
    #: Statuses after which the provider may still have generated the image (Cloudflare's 524
    #: means the gateway stopped waiting, not that the origin stopped working). They are retried
    #: only within ``max_ambiguous_retries``, like a read timeout.
    ambiguous_statuses: frozenset[int] = frozenset({524})
    #: Backoff: full jitter over ``min(max_delay, initial_delay * multiplier ** (attempt - 1))``.
    initial_delay: float = 1.0
    max_delay: float = 60.0
    multiplier: float = 2.0
    #: A server-asked wait longer than this is not waited for: the call fails instead.
    max_server_delay: float = 300.0

    def __post_init__(self) -> None:
        _count("max_attempts", self.max_attempts, minimum=1)
        _count("max_ambiguous_retries", self.max_ambiguous_retries, minimum=0)
        _finite("initial_delay", self.initial_delay)
        _finite("max_delay", self.max_delay)
        _finite("multiplier", self.multiplier, minimum=1.0)
        _finite("max_server_delay", self.max_server_delay)
        retry = _statuses("retry_statuses", self.retry_statuses)
        if never := sorted(retry & NEVER_RETRY_STATUSES):
            raise ConfigError(f"retry_statuses: {never} can never succeed on retry")
        object.__setattr__(self, "retry_statuses", retry)
        object.__setattr__(
            self, "ambiguous_statuses", _statuses("ambiguous_statuses", self.ambiguous_statuses)
        )


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after a failed attempt."""

    retry: bool
    #: Seconds to sleep before the next attempt (0.0 when not retrying).
    delay: float
    #: Human-readable why, e.g. ``"429 RESOURCE_EXHAUSTED, server asked 1.5s"``.
    reason: str
    #: The failed attempt may have been generated and billed.
    ambiguous: bool = False


@dataclass(slots=True)
class RetryState:
    """Mutable bookkeeping for one call across its attempts.

    Call ``failed(error, policy)`` after each failed attempt; on a final failure,
    ``annotate(error)`` copies ``attempts`` and ``maybe_billed`` onto the exception.
    Call ``succeeded()`` after the attempt that worked.
    """

    attempts: int = 0
    ambiguous_retries: int = 0
    maybe_billed: bool = False
    #: Reasons of the retries taken so far, oldest first.
    history: list[str] = field(default_factory=list)
    #: True while an attempt is being sent or answered (not while in backoff or waiting
    #: for a limiter slot): a deadline firing then may cut a request that gets billed.
    in_flight: bool = False

    def failed(
        self, error: BaseException, policy: RetryPolicy, *,
        random: Callable[[], float] = _random.random,
    ) -> RetryDecision:
        self.attempts += 1
        decision = decide(
            error, attempt=self.attempts, ambiguous_retries_used=self.ambiguous_retries,
            policy=policy, random=random,
        )
        if decision.ambiguous:
            self.maybe_billed = True
        if decision.retry:
            if decision.ambiguous:
                self.ambiguous_retries += 1
            self.history.append(decision.reason)
        return decision

    def succeeded(self) -> None:
        self.attempts += 1

    def annotate(self, error: BaseException) -> None:
        if isinstance(error, CometgenError):
            error.attempts = self.attempts
            error.maybe_billed = error.maybe_billed or self.maybe_billed


def backoff_delay(attempt: int, policy: RetryPolicy, random: Callable[[], float]) -> float:
    """Full-jitter backoff after ``attempt`` failed attempts (1 after the first)."""
    try:
        ceiling = policy.initial_delay * policy.multiplier ** max(attempt - 1, 0)
    except OverflowError:
        ceiling = policy.max_delay
    return random() * min(policy.max_delay, ceiling)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    ``now`` is the wall-clock time (``time.time()``) an HTTP-date is measured against.
    Returns None when the value is missing or unreadable; a date in the past gives 0.0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses as naive; HTTP dates are always UTC
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _label(error: BaseException) -> str:
    if isinstance(error, APIStatusError):
        return f"{error.status_code} {error.status or type(error).__name__}"
    return type(error).__name__


def _fmt(seconds: float) -> str:
    return f"{seconds:.3g}s"


def decide(
    error: BaseException, *, attempt: int, ambiguous_retries_used: int, policy: RetryPolicy,
    random: Callable[[], float] = _random.random,
) -> RetryDecision:
    """Whether to retry after ``error``, the failure of attempt number ``attempt`` (1-based).

    ``ambiguous_retries_used`` counts retries already taken after ambiguous failures.
    """
    label = _label(error)

    def stop(why: str, *, ambiguous: bool = False) -> RetryDecision:
        return RetryDecision(False, 0.0, f"{label}: {why}", ambiguous)

    if not isinstance(error, CometgenError):
        return stop("not a cometgen error (a bug?), not retried")
    if isinstance(error, GenerationError):
        return stop("the model answered without an image; not retried")

    delivery = error.delivery
    if isinstance(error, APIStatusError):
        if isinstance(error, _NEVER_RETRY_CLASSES):
            quota = f" ({error.quota_id})" if error.quota_id else ""
            why = ("quota exhausted" + quota if isinstance(error, QuotaExhaustedError)
                   else "retrying cannot help")
            return stop(f"{why}; not retried")
        if error.status_code >= 500 and error.reason == "invalid_request":
            return stop("CometAPI says invalid_request; not retried")  # per CometAPI's docs
        if error.status_code not in policy.retry_statuses:
            return stop("status not in retry_statuses; not retried")
        if error.status_code in policy.ambiguous_statuses:
            delivery = "ambiguous"
    elif delivery == "rejected":
        return stop("not retried")  # ConfigError, InputError: a bad request stays bad

    ambiguous = delivery == "ambiguous"
    if attempt >= policy.max_attempts:
        return stop(f"gave up after {attempt} attempts (max_attempts)", ambiguous=ambiguous)
    if ambiguous and ambiguous_retries_used >= policy.max_ambiguous_retries:
        return stop(
            "the request may have been processed and billed; not retried "
            f"(max_ambiguous_retries={policy.max_ambiguous_retries})",
            ambiguous=True,
        )

    server = _server_delay(error)
    if server is not None:
        source, seconds = server
        if seconds > policy.max_server_delay:
            return stop(
                f"server asked to wait {_fmt(seconds)} ({source}), more than "
                f"max_server_delay={_fmt(policy.max_server_delay)}; not retried",
                ambiguous=ambiguous,
            )
        return RetryDecision(True, seconds, f"{label}, server asked {_fmt(seconds)}", ambiguous)
    delay = backoff_delay(attempt, policy, random)
    kind = " (maybe billed)" if ambiguous else ""
    return RetryDecision(True, delay, f"{label}{kind}, backoff {_fmt(delay)}", ambiguous)


def _server_delay(error: CometgenError) -> tuple[str, float] | None:
    if not isinstance(error, APIStatusError):
        return None
    for source, value in (("RetryInfo", error.retry_delay), ("Retry-After", error.retry_after)):
        if value is not None and math.isfinite(value):
            return source, max(0.0, float(value))
    return None
