"""Seams for web backends: ``limiter=`` (any ``Limiter``), event hooks, result headers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

import cometgen
from cometgen.testing import MockServer

pytestmark = pytest.mark.anyio

KEY = "sk-test-hooks-0123456789"
FAST_RETRY = cometgen.RetryPolicy(initial_delay=0.01, max_delay=0.02)
RECORDED = Path(__file__).parent / "fixtures" / "recorded"


class CountingLimiter:
    """A user's own limiter: no limits, just counts what the client reports."""

    def __init__(self) -> None:
        self.slots: list[int] = []
        self.outcomes: list[tuple[str, float | None]] = []

    @contextlib.asynccontextmanager
    async def _slot(self, images: int) -> AsyncIterator[cometgen.Slot]:
        self.slots.append(images)
        outcomes = self.outcomes

        class _Slot:
            def rate_limited(self, delay: float | None = None) -> None:
                outcomes.append(("rate_limited", delay))

            def succeeded(self) -> None:
                outcomes.append(("succeeded", None))

        yield _Slot()

    def slot(self, images: int = 1) -> contextlib.AbstractAsyncContextManager[cometgen.Slot]:
        return self._slot(images)

    def snapshot(self) -> cometgen.LimiterStats:
        return cometgen.LimiterStats(window=1, in_flight=0, waiting=0, rate_limited_count=0,
                                     paused_until=0.0, granted=len(self.slots))


async def test_any_limiter_protocol_object_is_used() -> None:
    limiter = CountingLimiter()
    assert isinstance(limiter, cometgen.Limiter)
    async with MockServer() as server, cometgen.AsyncClient(
        api_key=KEY, base_url=server.url, limiter=limiter, retry=FAST_RETRY
    ) as client:
        assert client.limiter is limiter
        assert (await client.generate("a fox [[mock:429:1:0.01s]]")).ok
        assert (await client.with_options(model="gemini-2.5-flash-image").generate("b")).ok
    assert limiter.slots == [1, 1, 1]
    assert limiter.outcomes == [("rate_limited", 0.01), ("succeeded", None),
                                ("succeeded", None)]


def test_limiter_must_follow_the_protocol_and_replaces_limits() -> None:
    with pytest.raises(cometgen.ConfigError, match="Limiter protocol"):
        cometgen.AsyncClient(api_key=KEY, limiter=object())  # type: ignore[arg-type]
    with pytest.raises(cometgen.ConfigError, match="not both"):
        cometgen.AsyncClient(api_key=KEY, limiter=CountingLimiter(),
                             limits=cometgen.Limits(rpm=10))


async def test_hooks_see_every_attempt_with_status_latency_and_retry_reason() -> None:
    events: list[Any] = []

    def on_request(event: Any) -> None:
        events.append(event)

    async def on_response(event: Any) -> None:
        events.append(event)

    hooks = {"request": [on_request], "response": [on_response]}
    async with MockServer() as server, cometgen.AsyncClient(
        api_key=KEY, base_url=server.url, event_hooks=hooks, retry=FAST_RETRY
    ) as client:
        result = await client.generate("a fox [[mock:503:1]]")
        with pytest.raises(cometgen.ConnectionDroppedError):
            await client.generate("x [[mock:drop]]")
    model = "gemini-3.1-flash-image"
    req1, resp1, req2, resp2, req3, resp3 = events
    assert (req1.model, req1.attempt, req2.attempt, req3.attempt) == (model, 1, 2, 1)
    assert (resp1.status, resp1.attempt, resp1.retrying) == (503, 1, True)
    assert "503" in resp1.retry_reason and isinstance(resp1.error, cometgen.ServerError)
    assert resp1.bytes > 0 and resp1.latency > 0
    assert (resp2.status, resp2.attempt, resp2.error, resp2.retry_reason) == (200, 2, None, None)
    assert resp2.bytes > 1000 and resp2.headers["Content-Type"].startswith("application/json")
    assert result.attempts == 2
    # No HTTP status came back; not retried (the request may have been billed).
    assert resp3.status is None and resp3.bytes == 0 and not resp3.retrying
    assert isinstance(resp3.error, cometgen.ConnectionDroppedError)
    assert "billed" in resp3.retry_reason


async def test_a_failing_hook_fails_the_call() -> None:
    def broken(event: Any) -> None:
        raise LookupError("metrics backend down")

    async with MockServer() as server, cometgen.AsyncClient(
        api_key=KEY, base_url=server.url, event_hooks={"response": [broken]}
    ) as client:
        with pytest.raises(LookupError):
            await client.generate("x")


def test_bad_event_hooks_are_a_config_error() -> None:
    for bad in ({"answer": []}, {"request": print}, {"response": ["not callable"]}):
        with pytest.raises(cometgen.ConfigError, match="event_hooks"):
            cometgen.AsyncClient(api_key=KEY, event_hooks=bad)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _recorded_server() -> AsyncIterator[str]:
    fixture = msgspec.json.decode((RECORDED / "gemini-2.5-flash-image_text-and-png.json")
                                  .read_bytes())

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=msgspec.json.encode(fixture["response"]),
                            content_type="application/json",
                            headers={"x-request-id": "req-42", "x-ratelimit-remaining": "99"})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_result_carries_headers_and_request_id() -> None:
    seen: list[Any] = []
    async with _recorded_server() as url, cometgen.AsyncClient(
        api_key=KEY, base_url=url, event_hooks={"response": [seen.append]}
    ) as client:
        result = await client.generate("a nano banana dish", model="gemini-2.5-flash-image")
    assert result.ok
    assert result.request_id == "req-42"
    assert result.headers["x-ratelimit-remaining"] == "99"
    assert seen[0].request_id == "req-42"
