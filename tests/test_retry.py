"""The pure retry policy: decide(), backoff, Retry-After parsing, RetryState bookkeeping."""

from __future__ import annotations

import dataclasses
import email.utils

import pytest

from cometgen._exceptions import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConnectError,
    ConnectionDroppedError,
    ConnectTimeout,
    DecodeError,
    InputError,
    NoImageError,
    NotFoundError,
    PermissionDeniedError,
    PoolTimeout,
    PromptBlockedError,
    QuotaExhaustedError,
    RateLimitError,
    ReadTimeout,
    ServerError,
)
from cometgen._retry import (
    RetryDecision,
    RetryPolicy,
    RetryState,
    backoff_delay,
    decide,
    parse_retry_after,
)

POLICY = RetryPolicy()


def half() -> float:
    return 0.5


def one() -> float:
    return 1.0


def status(cls: type[APIStatusError], code: int, **kw: object) -> APIStatusError:
    return cls("boom", status_code=code, **kw)  # type: ignore[arg-type]


def d(error: BaseException, *, attempt: int = 1, used: int = 0,
      policy: RetryPolicy = POLICY) -> RetryDecision:
    return decide(error, attempt=attempt, ambiguous_retries_used=used, policy=policy,
                  random=half)


# --- what is retried ---------------------------------------------------------------------

@pytest.mark.parametrize("error", [
    ConnectError("refused"), ConnectTimeout("slow connect"), PoolTimeout("no free connection"),
])
def test_not_sent_is_retried_with_backoff(error: BaseException) -> None:
    decision = d(error)
    assert decision.retry and not decision.ambiguous
    assert decision.delay == 0.5 * POLICY.initial_delay
    assert type(error).__name__ in decision.reason


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses(code: int) -> None:
    cls = RateLimitError if code == 429 else ServerError if code >= 500 else APIStatusError
    decision = d(status(cls, code))
    assert decision.retry and not decision.ambiguous
    assert str(code) in decision.reason


def test_429_uses_retry_delay_exactly() -> None:
    err = status(RateLimitError, 429, status="RESOURCE_EXHAUSTED", retry_delay=1.5,
                 retry_after=9.0)
    decision = d(err, attempt=3)
    assert decision == RetryDecision(True, 1.5, "429 RESOURCE_EXHAUSTED, server asked 1.5s")


def test_retry_after_used_when_no_retry_delay() -> None:
    decision = d(status(ServerError, 503, retry_after=7.0))
    assert decision.retry and decision.delay == 7.0
    assert "server asked 7s" in decision.reason


def test_server_delay_of_zero_is_kept() -> None:
    assert d(status(RateLimitError, 429, retry_delay=0.0)).delay == 0.0


def test_server_delay_above_cap_gives_up() -> None:
    err = status(RateLimitError, 429, status="RESOURCE_EXHAUSTED", retry_delay=301.0)
    decision = d(err)
    assert not decision.retry
    assert "301s" in decision.reason and "max_server_delay" in decision.reason
    assert d(err, policy=RetryPolicy(max_server_delay=400)).retry


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_delay=1.0, multiplier=2.0, max_delay=10.0, max_attempts=100)
    assert [backoff_delay(n, policy, one) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff_delay(3, policy, half) == 2.0
    assert backoff_delay(3, policy, lambda: 0.0) == 0.0
    assert backoff_delay(10_000, policy, one) == 10.0  # no OverflowError
    decision = decide(ConnectError("x"), attempt=4, ambiguous_retries_used=0, policy=policy,
                      random=lambda: 0.25)
    assert decision.delay == 0.25 * 8


def test_max_attempts_respected() -> None:
    err = ConnectError("refused")
    assert d(err, attempt=3).retry
    decision = d(err, attempt=4)
    assert not decision.retry and "4 attempts" in decision.reason
    assert not d(err, attempt=1, policy=RetryPolicy(max_attempts=1)).retry


def test_per_day_quota_never_retried() -> None:
    err = status(QuotaExhaustedError, 429, status="RESOURCE_EXHAUSTED", retry_delay=1.0,
                 quota_id="GenerateRequestsPerDayPerProjectPerModel")
    decision = d(err)
    assert not decision.retry
    assert "quota" in decision.reason and "PerDay" in decision.reason
    assert not d(status(QuotaExhaustedError, 402)).retry


@pytest.mark.parametrize(("cls", "code"), [
    (BadRequestError, 400), (AuthenticationError, 400), (AuthenticationError, 401),
    (PermissionDeniedError, 403), (NotFoundError, 404), (APIStatusError, 409),
    (APIStatusError, 501),
])
def test_client_errors_never_retried(cls: type[APIStatusError], code: int) -> None:
    assert not d(status(cls, code)).retry


def test_cometapi_invalid_request_500_not_retried() -> None:
    assert not d(status(ServerError, 500, reason="invalid_request")).retry


@pytest.mark.parametrize("error", [
    NoImageError("no image", result=None),  # type: ignore[arg-type]
    PromptBlockedError("blocked", result=None),  # type: ignore[arg-type]
    InputError("bad line", file="x.jsonl", line=3),
    ConfigError("bad option"),
    ValueError("a bug"),
    KeyError("a bug"),
])
def test_other_errors_never_retried(error: BaseException) -> None:
    decision = d(error)
    assert not decision.retry and decision.delay == 0.0


# --- ambiguous (maybe billed) ------------------------------------------------------------

AMBIGUOUS = [
    ReadTimeout("slow"), ConnectionDroppedError("dropped"),
    DecodeError("bad json", status_code=200), status(ServerError, 524),
]


@pytest.mark.parametrize("error", AMBIGUOUS)
def test_ambiguous_not_retried_by_default(error: BaseException) -> None:
    decision = d(error)
    assert not decision.retry and decision.ambiguous
    assert "billed" in decision.reason


@pytest.mark.parametrize("error", AMBIGUOUS)
def test_ambiguous_retried_once_when_allowed(error: BaseException) -> None:
    policy = RetryPolicy(max_ambiguous_retries=1)
    first = d(error, policy=policy)
    assert first.retry and first.ambiguous
    assert not d(error, attempt=2, used=1, policy=policy).retry
    # max_attempts still bounds ambiguous retries
    assert not d(error, attempt=1, policy=RetryPolicy(max_ambiguous_retries=5,
                                                      max_attempts=1)).retry


def test_524_can_be_made_unambiguous() -> None:
    policy = RetryPolicy(ambiguous_statuses=frozenset())
    decision = d(status(ServerError, 524), policy=policy)
    assert decision.retry and not decision.ambiguous


def test_status_outside_retry_statuses() -> None:
    policy = RetryPolicy(retry_statuses=frozenset({429}))
    assert not d(status(ServerError, 503), policy=policy).retry
    assert d(status(RateLimitError, 429), policy=policy).retry


# --- RetryState --------------------------------------------------------------------------

def test_state_tracks_attempts_ambiguity_and_annotates() -> None:
    policy = RetryPolicy(max_ambiguous_retries=1, max_attempts=5)
    state = RetryState()
    assert state.failed(ConnectError("x"), policy, random=half).retry
    assert not state.maybe_billed
    assert state.failed(ReadTimeout("x"), policy, random=half).retry
    assert state.maybe_billed and state.ambiguous_retries == 1
    last = ReadTimeout("again")
    assert not state.failed(last, policy, random=half).retry
    assert state.attempts == 3 and len(state.history) == 2
    state.annotate(last)
    assert last.attempts == 3 and last.maybe_billed


def test_state_success_counts_attempt() -> None:
    state = RetryState()
    state.failed(status(RateLimitError, 429, retry_delay=1.0), POLICY)
    state.succeeded()
    assert state.attempts == 2 and not state.maybe_billed


# --- policy validation -------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"max_attempts": 1.5}, {"max_attempts": True},
    {"max_ambiguous_retries": -1}, {"initial_delay": -1.0}, {"max_delay": float("nan")},
    {"multiplier": 0.5}, {"max_server_delay": float("inf")}, {"retry_statuses": {429, 404}},
    {"retry_statuses": {42}}, {"retry_statuses": "429"}, {"ambiguous_statuses": 524},
])
def test_policy_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_frozen_and_copies_statuses() -> None:
    given = {429, 503}
    policy = RetryPolicy(retry_statuses=given)  # type: ignore[arg-type]
    given.add(500)
    assert policy.retry_statuses == frozenset({429, 503})
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 9  # type: ignore[misc]
    assert dataclasses.replace(policy, max_attempts=9).max_attempts == 9


# --- Retry-After -------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0), (" 1.5 ", 1.5), ("0", 0.0), (None, None), ("", None), ("-3", None),
    ("soon", None), ("nan", None), ("inf", None),
])
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 -0000", now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now=now) == 90.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0  # past
    assert parse_retry_after("Wed, 99 Foo 2015 07:27:00 GMT", now=now) is None
