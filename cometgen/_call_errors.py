"""The exceptions a call raises: from an HTTP error answer, and when its deadline fires."""

from __future__ import annotations

from . import _wire as wire
from ._exceptions import APIStatusError, ReadTimeout, status_error_class
from ._retry import RetryState, parse_retry_after
from ._transport import RawResponse

__all__ = ["deadline_error", "status_error"]


def status_error(raw: RawResponse) -> APIStatusError:
    info = wire.parse_error_body(raw.body, status_code=raw.status, reason_phrase=raw.reason)
    request_id = (
        raw.headers.get("x-request-id")
        or raw.headers.get("x-goog-request-id")
        or info.request_id
    )
    cls = status_error_class(raw.status, quota_id=info.quota_id, reason=info.reason)
    return cls(
        info.message,
        status_code=raw.status,
        status=info.status,
        request_id=request_id,
        retry_delay=info.retry_delay,
        retry_after=parse_retry_after(raw.headers.get("Retry-After")),
        quota_id=info.quota_id,
        reason=info.reason,
        body=info.body,
    )


def deadline_error(timeout: float | None, state: RetryState) -> ReadTimeout:
    """The call deadline's error, saying what really happened before it fired."""
    in_flight = state.in_flight
    attempts = state.attempts + in_flight
    where = ("during an attempt" if in_flight
             else "while waiting to send (backoff or rate limit), nothing in flight")
    err = ReadTimeout(
        f"call deadline of {timeout}s exceeded {where}, after {attempts} attempt(s) sent"
    )
    err.attempts = attempts
    err.maybe_billed = state.maybe_billed or in_flight
    if not in_flight:
        err.delivery = "not_sent"
    return err
