"""The transport seam: ``AsyncClient(transport=...)`` with ``cometgen.testing.MockTransport``.

No sockets: the handler answers in process. What a transport raises still reaches the retry
policy by class: a not-sent failure is retried, an ambiguous one is not (never pay twice).
"""

from __future__ import annotations

import anyio
import msgspec
import pytest

import cometgen
from cometgen import (
    AsyncClient,
    ConfigError,
    ConnectError,
    ConnectionDroppedError,
    RateLimitError,
    RetryPolicy,
    Timeouts,
    TransportRequest,
    TransportResponse,
)
from cometgen.testing import MockTransport, error_response, image_response

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.001)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_handler_answers_a_generate_call(kind: str) -> None:
    def sync_handler(request: TransportRequest) -> TransportResponse:
        return image_response(text="here it is")

    async def async_handler(request: TransportRequest) -> TransportResponse:
        await anyio.sleep(0)
        return image_response(text="here it is")

    transport = MockTransport(sync_handler if kind == "sync" else async_handler)
    async with AsyncClient("k", "https://api.example.test", model="gemini-2.5-flash-image",
                           transport=transport) as client:
        result = await client.generate("a red fox", aspect_ratio="16:9")
        assert client.transport is transport
    assert result.ok and len(result.images) == 1 and result.text == "here it is"
    assert result.images[0].data.startswith(b"\x89PNG")
    assert transport.closed  # closed with the client
    (request,) = transport.requests
    assert request.method == "POST"
    assert request.url == ("https://api.example.test/v1beta/models/"
                           "gemini-2.5-flash-image:generateContent")
    assert request.headers["Authorization"] == "Bearer k"
    sent = msgspec.json.decode(request.body)
    assert sent["contents"][0]["parts"][0]["text"] == "a red fox"
    assert sent["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"


async def test_timeouts_travel_with_each_request() -> None:
    transport = MockTransport(lambda request: image_response())
    client_timeouts = Timeouts(connect=3, pool=4, total=50)
    async with AsyncClient("k", transport=transport, timeout=client_timeouts) as client:
        await client.generate("one")
        await client.with_options(timeout=Timeouts(connect=1, pool=2)).generate("two")
    assert [r.timeouts for r in transport.requests] == [client_timeouts,
                                                        Timeouts(connect=1, pool=2)]


async def test_not_sent_failure_is_retried() -> None:
    answers: list[Exception | TransportResponse] = [ConnectError("refused"), image_response()]

    def handler(request: TransportRequest) -> TransportResponse:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    transport = MockTransport(handler)
    async with AsyncClient("k", transport=transport, retry=FAST) as client:
        result = await client.generate("a fox")
    assert result.attempts == 2 and not result.maybe_billed


async def test_ambiguous_failure_is_not_retried() -> None:
    def handler(request: TransportRequest) -> TransportResponse:
        raise ConnectionDroppedError("closed after sending")

    transport = MockTransport(handler)
    async with AsyncClient("k", transport=transport, retry=FAST) as client:
        with pytest.raises(ConnectionDroppedError) as info:
            await client.generate("a fox")
    assert len(transport.requests) == 1
    assert info.value.maybe_billed


async def test_status_errors_come_from_the_response() -> None:
    answers = [error_response(429, "slow down", status_name="RESOURCE_EXHAUSTED",
                              headers={"retry-after": "0"}),
               image_response()]
    transport = MockTransport(lambda request: answers.pop(0))
    async with AsyncClient("k", transport=transport, retry=FAST) as client:
        assert (await client.generate("a fox")).attempts == 2  # a 429 is retried
        transport.handler = lambda request: error_response(
            429, "slow down", status_name="RESOURCE_EXHAUSTED", headers={"X-Request-Id": "r1"})
        with pytest.raises(RateLimitError) as info:
            await client.with_options(retry=RetryPolicy(max_attempts=1)).generate("a fox")
    assert info.value.request_id == "r1"  # header looked up case-insensitively


def test_response_headers_are_case_insensitive() -> None:
    response = TransportResponse(200, {"X-Request-Id": "abc"}, b"{}")
    assert response.headers["x-request-id"] == "abc"


async def test_a_bad_handler_answer_is_a_clear_error() -> None:
    transport = MockTransport(lambda request: b"{}")  # type: ignore[arg-type,return-value]
    async with AsyncClient("k", transport=transport) as client:
        with pytest.raises(TypeError, match=r"not a cometgen\.TransportResponse"):
            await client.generate("a fox")


def test_transport_and_proxy_or_verify_do_not_mix() -> None:
    transport = MockTransport(lambda request: image_response())
    with pytest.raises(ConfigError, match="configure that transport"):
        AsyncClient("k", transport=transport, proxy="http://proxy.test:3128")
    with pytest.raises(ConfigError, match="configure that transport"):
        AsyncClient("k", transport=transport, verify=False)
    with pytest.raises(ConfigError, match="transport must have"):
        AsyncClient("k", transport=object())  # type: ignore[arg-type]


def test_mock_transport_is_an_async_transport() -> None:
    assert isinstance(MockTransport(lambda request: image_response()), cometgen.AsyncTransport)
    assert isinstance(cometgen.AiohttpTransport(), cometgen.AsyncTransport)


def test_response_body_is_immutable_bytes() -> None:
    buffer = bytearray(b'{"candidates": []}')
    response = TransportResponse(200, {}, buffer)  # type: ignore[arg-type]
    buffer[:] = b"x"
    assert response.body == b'{"candidates": []}' and type(response.body) is bytes


def test_default_transport_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_connections"):
        cometgen.AiohttpTransport(max_connections=0)
    with pytest.raises(ConfigError, match="verify must be"):
        cometgen.AiohttpTransport(verify=1)  # type: ignore[arg-type]
