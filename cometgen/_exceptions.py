"""The exception tree. Every error cometgen raises derives from ``CometgenError``::

    CometgenError
    ├── ConfigError (also ValueError)       bad option value given to cometgen
    ├── LimiterBackendError                 the shared-limits backend (Redis) is down or failing
    ├── ClientClosedError (also RuntimeError)   the client was used after aclose()
    ├── WrongEventLoopError (also RuntimeError) the client was used from a second event loop
    ├── InputError (also ValueError)        bad input line: file, line, field
    ├── OutputLockedError                   another run is writing the same output folder
    ├── MergeConflictError                  merged output folders disagree about an item
    ├── TransportError                      no HTTP status came back
    │   ├── ConnectError                    could not connect: never sent
    │   ├── ConnectionDroppedError          sent, then the connection closed: ambiguous
    │   └── TimeoutException
    │       ├── PoolTimeout                 no free connection in time: never sent
    │       ├── ConnectTimeout              never sent
    │       └── ReadTimeout                 sent, no full answer in time: ambiguous
    ├── DecodeError                         body is not valid JSON of the expected shape
    ├── APIStatusError                      the provider answered with an HTTP error status
    │   ├── BadRequestError                 400
    │   ├── AuthenticationError             401 (and 400 API_KEY_INVALID)
    │   ├── PermissionDeniedError           403
    │   ├── NotFoundError                   404
    │   ├── QuotaExhaustedError             402, and 429 on a per-day quota
    │   ├── RateLimitError                  429
    │   └── ServerError                     5xx
    └── GenerationError                     HTTP 200, but no image
        ├── PromptBlockedError              promptFeedback.blockReason
        ├── ImageSafetyError                IMAGE_SAFETY, SAFETY, *PROHIBITED_CONTENT...
        └── NoImageError                    NO_IMAGE, IMAGE_OTHER, a text-only answer...

aiohttp's exceptions are translated once, in ``_transport``, with ``raise ... from exc``.
Messages never contain the API key.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = [
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "CometgenError",
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionDroppedError",
    "DecodeError",
    "GenerationError",
    "ImageSafetyError",
    "InputError",
    "LimiterBackendError",
    "MergeConflictError",
    "NoImageError",
    "NotFoundError",
    "OutputLockedError",
    "PermissionDeniedError",
    "PoolTimeout",
    "PromptBlockedError",
    "QuotaExhaustedError",
    "RateLimitError",
    "ReadTimeout",
    "ServerError",
    "TimeoutException",
    "TransportError",
    "WrongEventLoopError",
    "status_error_class",
]

#: Whether a failed request may have reached the provider (and so may have been billed).
Delivery = Literal["not_sent", "rejected", "ambiguous"]


class CometgenError(Exception):
    """Base of every error cometgen raises."""

    #: How many HTTP attempts were made before this error was raised (set by the client).
    attempts: int = 0
    #: True when some attempt may have been generated and billed by the provider.
    maybe_billed: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    #: See ``Delivery``; used by the retry policy.
    delivery: Delivery = "rejected"


class ConfigError(CometgenError, ValueError):
    """An option given to cometgen has a bad value."""


class LimiterBackendError(CometgenError):
    """The shared-limits backend (Redis) is unreachable or failed; nothing was sent.

    Not retried by the client: mid-run outages already wait inside the limiter (fail
    closed); what reaches the caller is a Redis that refuses the limiter's commands.
    """


class ClientClosedError(CometgenError, RuntimeError):
    """The client was used after ``aclose()`` (or after its ``async with`` block)."""


class WrongEventLoopError(CometgenError, RuntimeError):
    """The client was used from an event loop other than the one it first ran in."""


class InputError(CometgenError, ValueError):
    """A bad input line, located by file, line and field."""

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None,
        field: str | None = None,
    ) -> None:
        where = ":".join(str(p) for p in (file, line) if p is not None)
        text = message
        if field:
            text = f"field {field!r}: {text}"
        if where:
            text = f"{where}: {text}"
        super().__init__(text)
        self.reason = message
        self.file = file
        self.line = line
        self.field = field
        #: The line's ``id`` when it could still be read (the bad line's item key).
        self.item_id: str | None = None


class OutputLockedError(CometgenError):
    """Another process is writing this output folder's manifest."""


class MergeConflictError(CometgenError):
    """Inputs disagree about a key (or two keys claim one file); nothing was written."""

    def __init__(self, message: str, *, report: Any) -> None:
        super().__init__(message)
        #: The ``MergeReport`` with the conflicts found.
        self.report = report


class TransportError(CometgenError):
    """No HTTP response was received."""

    delivery: Delivery = "ambiguous"


class ConnectError(TransportError):
    """The connection could not be opened; the request was never sent."""

    delivery: Delivery = "not_sent"


class ConnectionDroppedError(TransportError):
    """The connection closed after the request was sent, before a full response."""

    delivery: Delivery = "ambiguous"


class TimeoutException(TransportError):
    """A phase of the request took longer than its timeout."""


class PoolTimeout(TimeoutException):
    """No connection became free in time; the request was never sent."""

    delivery: Delivery = "not_sent"


class ConnectTimeout(TimeoutException):
    """Connecting took too long; the request was never sent."""

    delivery: Delivery = "not_sent"


class ReadTimeout(TimeoutException):
    """The request was sent but no full response arrived in time."""

    delivery: Delivery = "ambiguous"


class DecodeError(CometgenError):
    """A response body is not valid JSON of the expected shape."""

    delivery: Delivery = "ambiguous"

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class APIStatusError(CometgenError):
    """The provider answered with an HTTP error status."""

    delivery: Delivery = "rejected"

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        status: str | None = None,
        request_id: str | None = None,
        retry_delay: float | None = None,
        retry_after: float | None = None,
        quota_id: str | None = None,
        reason: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        #: The HTTP status code.
        self.status_code = status_code
        #: The provider's status string, e.g. ``RESOURCE_EXHAUSTED`` (Google envelope only).
        self.status = status
        #: The provider's request id, when it gave one (header or CometAPI message).
        self.request_id = request_id
        #: Seconds to wait, from Google's ``RetryInfo.retryDelay``.
        self.retry_delay = retry_delay
        #: Seconds to wait, from the ``Retry-After`` header.
        self.retry_after = retry_after
        #: The violated quota, from ``QuotaFailure.violations[].quotaId``.
        self.quota_id = quota_id
        #: ``ErrorInfo.reason`` (e.g. ``API_KEY_INVALID``) or CometAPI's ``code``.
        self.reason = reason
        #: The decoded error body (a dict), or the raw text of a non-JSON body.
        self.body = body

    def __str__(self) -> str:
        extra = f" [{self.status}]" if self.status else ""
        return f"HTTP {self.status_code}{extra}: {self.message}"


class BadRequestError(APIStatusError):
    """400: the request is invalid; retrying will not help."""


class AuthenticationError(APIStatusError):
    """401, or 400 with ``API_KEY_INVALID``: the API key is missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not use this model or resource."""


class NotFoundError(APIStatusError):
    """404: unknown or retired model, or wrong base URL."""


class QuotaExhaustedError(APIStatusError):
    """402, or 429 on a per-day quota: more requests today will not succeed."""


class RateLimitError(APIStatusError):
    """429: too many requests for now; ``retry_delay`` says how long to wait when known."""


class ServerError(APIStatusError):
    """5xx (and Cloudflare's 52x): a provider-side failure, usually worth retrying."""


class GenerationError(CometgenError):
    """HTTP 200 without an image: blocked, filtered, or the model declined."""

    delivery: Delivery = "rejected"

    def __init__(self, message: str, *, result: Any) -> None:
        super().__init__(message)
        #: The full ``GenerateResult``, with ``finish_reason``, ``block_reason``, ``text`` and
        #: ``usage``. Typed ``Any``: this module is the bottom layer and imports nothing of
        #: cometgen's (``_result`` imports it).
        self.result = result


class PromptBlockedError(GenerationError):
    """The prompt was blocked (``promptFeedback.blockReason``); nothing was generated."""


class ImageSafetyError(GenerationError):
    """The generated image was withheld by a safety filter."""


class NoImageError(GenerationError):
    """The model answered without an image (``NO_IMAGE``, ``IMAGE_OTHER``, text only...)."""


def status_error_class(status_code: int, *, quota_id: str | None = None,
                       reason: str | None = None) -> type[APIStatusError]:
    """Map an HTTP status (plus quota id / reason hints) to the exception class to raise."""
    if status_code == 400:
        return AuthenticationError if reason == "API_KEY_INVALID" else BadRequestError
    if status_code == 401:
        return AuthenticationError
    if status_code == 402:
        return QuotaExhaustedError
    if status_code == 403:
        return PermissionDeniedError
    if status_code == 404:
        return NotFoundError
    if status_code == 429:
        if quota_id and "perday" in quota_id.lower():
            return QuotaExhaustedError
        return RateLimitError
    if status_code >= 500:
        return ServerError
    return APIStatusError
