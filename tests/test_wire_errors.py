"""Error bodies: Google's envelope, CometAPI's, and non-JSON bodies; protobuf durations."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from cometgen._wire import parse_duration, parse_error_body

# --- error bodies -----------------------------------------------------------------------------

GOOGLE_429 = (
    b'{"error": {"code": 429, "message": "You exceeded your current quota, please check your plan'
    b' and billing details. \\n* Quota exceeded for metric: generativelanguage.googleapis.com/'
    b'generate_content_paid_tier_requests, limit: 20, model: gemini-3-pro-image\\nPlease retry in'
    b' 23.518233s.", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/'
    b'google.rpc.Help", "links": [{"description": "Learn more about Gemini API quotas", "url": '
    b'"https://ai.google.dev/gemini-api/docs/rate-limits"}]}, {"@type": "type.googleapis.com/'
    b'google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com'
    b'/generate_content_paid_tier_requests", "quotaId": "GenerateRequestsPerMinutePerProjectPer'
    b'Model", "quotaDimensions": {"location": "global", "model": "gemini-3-pro-image"}, '
    b'"quotaValue": "20"}]}, {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay":'
    b' "23s"}]}}'
)


def test_google_429() -> None:
    info = parse_error_body(GOOGLE_429, status_code=429, reason_phrase="Too Many Requests")
    assert info.retry_delay == 23.0
    assert info.quota_id == "GenerateRequestsPerMinutePerProjectPerModel"
    assert info.status == "RESOURCE_EXHAUSTED"
    assert info.code == 429
    assert info.message.startswith("You exceeded your current quota")
    assert info.reason is None and info.request_id is None
    assert isinstance(info.body, dict) and info.body["error"]["code"] == 429


def test_google_429_fractional_and_message_only_delay() -> None:
    fractional = GOOGLE_429.replace(b'"retryDelay": "23s"', b'"retryDelay": "1.5s"')
    assert parse_error_body(fractional, status_code=429).retry_delay == 1.5
    no_retry_info = msgspec.json.decode(GOOGLE_429)
    no_retry_info["error"]["details"] = no_retry_info["error"]["details"][:2]
    info = parse_error_body(msgspec.json.encode(no_retry_info), status_code=429)
    assert info.retry_delay == pytest.approx(23.518233)
    ms = b'{"error": {"code": 429, "message": "Please retry in 565.4ms.", "status": "X"}}'
    assert parse_error_body(ms, status_code=429).retry_delay == pytest.approx(0.5654)


def test_google_400_api_key_invalid() -> None:
    body = (b'{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",'
            b' "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.'
            b'ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com", "metadata": '
            b'{"service": "generativelanguage.googleapis.com"}}]}}')
    info = parse_error_body(body, status_code=400, reason_phrase="Bad Request")
    assert info.reason == "API_KEY_INVALID"
    assert info.status == "INVALID_ARGUMENT"
    assert info.message == "API key not valid. Please pass a valid API key."
    assert info.retry_delay is None and info.quota_id is None


def test_google_503_plain() -> None:
    body = (b'{"error": {"code": 503, "message": "The model is overloaded. Please try again '
            b'later.", "status": "UNAVAILABLE"}}')
    info = parse_error_body(body, status_code=503)
    assert (info.status, info.code, info.retry_delay) == ("UNAVAILABLE", 503, None)


def test_streaming_array_wrapped_error() -> None:
    body = b'[{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}]'
    info = parse_error_body(body, status_code=503)
    assert (info.message, info.status) == ("overloaded", "UNAVAILABLE")


def test_cometapi_envelope() -> None:
    body = (b'{"error": {"message": "upstream rate limited (request id: 2026112500000000000000000)'
            b'", "type": "comet_api_error", "param": "", "code": ""}}')
    info = parse_error_body(body, status_code=429, reason_phrase="Too Many Requests")
    assert info.request_id == "2026112500000000000000000"
    assert info.reason == "comet_api_error"
    assert info.code is None and info.status is None and info.retry_delay is None
    assert info.message.startswith("upstream rate limited")

    coded = body.replace(b'"code": ""', b'"code": "invalid_request"')
    info = parse_error_body(coded, status_code=500)
    assert info.reason == "invalid_request" and info.code == "invalid_request"


def test_html_502_body() -> None:
    html = (b"<html>\r\n<head><title>502 Bad Gateway</title><style>body{color:red}</style></head>"
            b"\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx"
            b"</center>\r\n" + b"<p>padding</p>" * 100 + b"</body>\r\n</html>\r\n")
    info = parse_error_body(html, status_code=502, reason_phrase="Bad Gateway")
    assert info.message.startswith("Bad Gateway: 502 Bad Gateway 502 Bad Gateway nginx")
    assert "<" not in info.message and "color" not in info.message
    assert len(info.message) <= len("Bad Gateway: ") + 200
    assert info.body == html.decode()
    assert (info.status, info.code, info.reason, info.retry_delay) == (None, None, None, None)


@pytest.mark.parametrize(
    ("body", "reason_phrase", "message"),
    [
        (b"", "Bad Gateway", "Bad Gateway"),
        (b"", "", "HTTP 502"),
        (b'{"error": {"code": 5', "Bad Gateway", 'Bad Gateway: {"error": {"code": 5'),
        (b"\xff\xfe garbage", "", "HTTP 502: \ufffd\ufffd garbage"),
        (b'{"error": "bad gateway"}', "", "bad gateway"),
        (b'{"message": "Not Found"}', "", "Not Found"),
        (b'{"error": {"code": 502}}', "Bad Gateway", "Bad Gateway"),
        (b'{"error": {"details": 5, "message": 7}}', "", "HTTP 502"),
        (b"[1, 2]", "", "HTTP 502: [1, 2]"),
        (b"null", "", "HTTP 502: null"),
    ],
)
def test_odd_error_bodies_never_raise(body: bytes, reason_phrase: str, message: str) -> None:
    info = parse_error_body(body, status_code=502, reason_phrase=reason_phrase)
    assert info.message == message


def test_empty_body_keeps_text() -> None:
    info = parse_error_body(b"", status_code=504, reason_phrase="Gateway Timeout")
    assert info.body == "" and info.message == "Gateway Timeout"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("23s", 23.0), ("1.5s", 1.5), ("45.837906927s", 45.837906927), ("0s", 0.0), (".5s", 0.5),
     ("7", 7.0), ("", None), ("s", None), ("-1s", None), ("1m", None), ("abc", None),
     (None, None), (3, None)],
)
def test_parse_duration(value: Any, expected: float | None) -> None:
    assert parse_duration(value) == expected
