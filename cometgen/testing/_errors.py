"""Error envelopes the mock answers with: Google's and CometAPI's."""

from __future__ import annotations

import random
import time
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode

JSON_TYPE = "application/json; charset=UTF-8"
HTML_TYPE = "text/html; charset=UTF-8"

RATE_LIMITS_URL = "https://ai.google.dev/gemini-api/docs/rate-limits"
REQUESTS_METRIC = "generativelanguage.googleapis.com/generate_content_paid_tier_requests"
IMAGES_METRIC = "generativelanguage.googleapis.com/generate_content_paid_tier_images"
PER_MINUTE = "GenerateRequestsPerMinutePerProjectPerModel"
PER_DAY = "GenerateRequestsPerDayPerProjectPerModel"
IMAGES_PER_MINUTE = "GenerateImagesPerMinutePerProjectPerModel"


class MockHTTPError(Exception):
    """A complete non-200 answer, raised from deep inside request handling."""

    def __init__(self, status: int, body: bytes, content_type: str = JSON_TYPE) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type


def google_body(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return _encode({"error": error})


def google_error(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> MockHTTPError:
    return MockHTTPError(code, google_body(code, status, message, details))


def invalid_argument(message: str) -> MockHTTPError:
    return google_error(400, "INVALID_ARGUMENT", message)


def field_error(path: str, message: str) -> MockHTTPError:
    """Google's field-violation style: ``* GenerateContentRequest.<path>: <message>``."""
    return invalid_argument(f"* GenerateContentRequest.{path}: {message}\n")


def request_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + "".join(random.choices("0123456789", k=12))


def comet_error(status: int, message: str, code: str = "") -> MockHTTPError:
    body = {
        "error": {
            "message": f"{message} (request id: {request_id()})",
            "type": "comet_api_error",
            "param": "",
            "code": code,
        }
    }
    return MockHTTPError(status, _encode(body))


def format_delay(seconds: float) -> str:
    """Protobuf Duration JSON: ``"23s"``, ``"1.5s"``, ``"45.837906927s"``."""
    text = f"{max(0.0, seconds):.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def quota_error(
    model: str, *, quota_id: str, metric: str, limit: int | str, delay: float
) -> MockHTTPError:
    """Google's 429: QuotaFailure + RetryInfo in the body, no ``Retry-After`` header."""
    message = (
        "You exceeded your current quota, please check your plan and billing details. "
        f"For more information on this error, head to: {RATE_LIMITS_URL}. "
        "To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. "
        f"\n* Quota exceeded for metric: {metric}, limit: {limit}, model: {model}"
        f"\nPlease retry in {max(0.0, delay):.6f}s."
    )
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {"description": "Learn more about Gemini API quotas", "url": RATE_LIMITS_URL}
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": metric,
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": str(limit),
                }
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format_delay(delay)},
    ]
    return google_error(429, "RESOURCE_EXHAUSTED", message, details)


def api_key_invalid() -> MockHTTPError:
    return google_error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ],
    )


def model_not_found(model: str, version: str) -> MockHTTPError:
    return google_error(
        404,
        "NOT_FOUND",
        f"models/{model} is not found for API version {version}, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods.",
    )


_GOOGLE_5XX = {
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
_COMET_5XX = {
    500: "internal server error",
    503: "The model is overloaded. Please try again later.",
    504: "upstream request timed out",
    524: "upstream timeout: the origin did not answer in time",
}


def server_error(code: int, style: str) -> MockHTTPError:
    if style == "comet" or code not in _GOOGLE_5XX:
        return comet_error(code, _COMET_5XX.get(code, "upstream error"))
    status, message = _GOOGLE_5XX[code]
    return google_error(code, status, message)


def html_error(code: int, reason: str) -> MockHTTPError:
    page = (
        f"<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return MockHTTPError(code, page.encode(), HTML_TYPE)
