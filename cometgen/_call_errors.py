"""The exceptions a call raises: from an HTTP error answer, and when its deadline fires."""

from __future__ import annotations

import msgspec

from . import _wire as wire
from ._exceptions import APIStatusError, ReadTimeout, status_error_class
from ._retry import RetryState, parse_retry_after
from ._transport import TransportResponse

__all__ = ["deadline_error", "status_error"]


#: What the client's own API key is replaced with in server-supplied text.
REDACTED = "***"
#: Shorter "keys" (tests, placeholders) are not real secrets, and replacing them everywhere
#: would mangle the message.
_MIN_REDACTED = 8


def redact(data: bytes | bytearray, key: str) -> bytes | bytearray:
    """``data`` with every occurrence of ``key`` (raw or JSON-escaped) replaced by ``***``."""
    if len(key) < _MIN_REDACTED:
        return data
    for form in {key, key.replace("/", "\\/"), msgspec.json.encode(key).decode()[1:-1]}:
        data = data.replace(form.encode(), REDACTED.encode())
    return data


def status_error(raw: TransportResponse, key: str) -> APIStatusError:
    """The exception for an HTTP error answer.

    Gateways quote a wrong key back ("Incorrect API key provided: sk-..."): the client's
    own ``key`` is redacted from the body, the reason phrase and the request id here, before
    any of it reaches a message, a repr, ``exc.body``, a log or the manifest.
    """
    body = redact(raw.body, key)
    reason = redact(raw.reason.encode(), key).decode()
    info = wire.parse_error_body(body, status_code=raw.status, reason_phrase=reason)
    header_id = raw.headers.get("x-request-id") or raw.headers.get("x-goog-request-id")
    request_id = redact(header_id.encode(), key).decode() if header_id else info.request_id
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
