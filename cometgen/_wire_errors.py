"""Parsing of HTTP error bodies: Google's envelope, CometAPI's OpenAI-style one, or not JSON."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = ["ErrorInfo", "parse_duration", "parse_error_body"]

_DECODER = msgspec.json.Decoder()

_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*s?\s*")
# Google's 429 message ends "Please retry in 23.518233s." (sometimes in ms).
_RETRY_IN_RE = re.compile(r"retry in (\d+(?:\.\d+)?)\s*(ms|s)\b", re.IGNORECASE)
_REQUEST_ID_RE = re.compile(r"\(request id: ([^)\s]+)\)\s*\.?\s*$", re.IGNORECASE)
_SCRIPT_RE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")
_EXCERPT_CHARS = 200

_TYPE_PREFIX = "type.googleapis.com/google.rpc."


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What an HTTP error body says, whatever its shape."""

    #: Human-readable message (never empty).
    message: str
    #: Google's status string, e.g. ``RESOURCE_EXHAUSTED``.
    status: str | None
    #: ``error.code``: Google's numeric code, or CometAPI's code string.
    code: int | str | None
    #: ``google.rpc.ErrorInfo.reason`` (e.g. ``API_KEY_INVALID``), or CometAPI's code/type.
    reason: str | None
    #: Seconds to wait, from ``google.rpc.RetryInfo`` or the "Please retry in Ns." message.
    retry_delay: float | None
    #: The first ``google.rpc.QuotaFailure`` violation's ``quotaId``.
    quota_id: str | None
    #: CometAPI's request id, from a message ending ``(request id: ...)``.
    request_id: str | None
    #: The decoded JSON body, or the raw text of a non-JSON body.
    body: Any


def parse_duration(value: object) -> float | None:
    """Seconds in a protobuf JSON Duration (``"23s"``, ``"1.5s"``); ``None`` if not one."""
    if not isinstance(value, str):
        return None
    match = _DURATION_RE.fullmatch(value)
    return float(match.group(1)) if match else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _excerpt(text: str) -> str:
    text = _SCRIPT_RE.sub(" ", text)
    text = _TAG_RE.sub(" ", text)
    text = _SPACE_RE.sub(" ", text).strip()
    if len(text) > _EXCERPT_CHARS:
        text = text[: _EXCERPT_CHARS - 1].rstrip() + "…"
    return text


def _fallback_message(status_code: int, reason_phrase: str, text: str = "") -> str:
    head = reason_phrase or f"HTTP {status_code}"
    excerpt = _excerpt(text)
    return f"{head}: {excerpt}" if excerpt and excerpt != head else head


def _retry_from_message(message: str) -> float | None:
    match = _RETRY_IN_RE.search(message)
    if not match:
        return None
    seconds = float(match.group(1))
    return seconds / 1000 if match.group(2).lower() == "ms" else seconds


def _from_envelope(
    error: dict[str, Any], body: Any, status_code: int, reason_phrase: str
) -> ErrorInfo:
    message = _str_or_none(error.get("message")) or _fallback_message(status_code, reason_phrase)
    raw_code = error.get("code")
    code: int | str | None
    if isinstance(raw_code, bool):
        code = None
    elif isinstance(raw_code, int):
        code = raw_code
    else:
        code = _str_or_none(raw_code)
    reason = retry_delay = quota_id = None
    details = error.get("details")
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", "")).removeprefix(_TYPE_PREFIX)
        if kind == "RetryInfo" and retry_delay is None:
            retry_delay = parse_duration(detail.get("retryDelay"))
        elif kind == "QuotaFailure" and quota_id is None:
            violations = detail.get("violations")
            for violation in violations if isinstance(violations, list) else ():
                if isinstance(violation, dict) and _str_or_none(violation.get("quotaId")):
                    quota_id = violation["quotaId"]
                    break
        elif kind == "ErrorInfo" and reason is None:
            reason = _str_or_none(detail.get("reason"))
    if retry_delay is None:
        retry_delay = _retry_from_message(message)
    request_id = None
    match = _REQUEST_ID_RE.search(message)
    if match:
        request_id = match.group(1)
    if reason is None and ("type" in error or "param" in error):
        # CometAPI (OpenAI-style): the code when set, else the error type.
        reason = _str_or_none(code) if isinstance(code, str) else None
        reason = reason or _str_or_none(error.get("type"))
    return ErrorInfo(
        message=message,
        status=_str_or_none(error.get("status")),
        code=code,
        reason=reason,
        retry_delay=retry_delay,
        quota_id=quota_id,
        request_id=request_id,
        body=body,
    )


def parse_error_body(
    body: bytes | bytearray, *, status_code: int, reason_phrase: str = ""
) -> ErrorInfo:
    """Extract message, status, retry delay, quota id, reason and request id; never raises."""
    try:
        data = _DECODER.decode(body)
    except Exception:
        data = None
    else:
        try:
            # Streaming endpoints without ``alt=sse`` wrap the error in a JSON array.
            if isinstance(data, list) and len(data) == 1:
                data = data[0]
            if isinstance(data, dict):
                error = data.get("error")
                if isinstance(error, dict):
                    return _from_envelope(error, data, status_code, reason_phrase)
                if isinstance(error, str) and error:
                    return _from_envelope({"message": error}, data, status_code, reason_phrase)
                if _str_or_none(data.get("message")):
                    return _from_envelope(data, data, status_code, reason_phrase)
        except Exception:  # a body shape nobody anticipated must not mask the HTTP error
            pass
    try:
        text = bytes(body).decode("utf-8", errors="replace")
    except Exception:
        text = ""
    return ErrorInfo(
        message=_fallback_message(status_code, reason_phrase, text),
        status=None,
        code=None,
        reason=None,
        retry_delay=None,
        quota_id=None,
        request_id=None,
        body=data if data is not None else text,
    )
