"""AsyncClient against the real mock server over loopback HTTP."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import anyio
import pytest

import cometgen
from cometgen.testing import MockServer
from cometgen.types import Content, GenerateContentRequest, Part

pytestmark = pytest.mark.anyio

KEY = "sk-test-SECRET-1234567890"
FAST_RETRY = cometgen.RetryPolicy(initial_delay=0.01, max_delay=0.05)


def client_for(server: MockServer, **kwargs: object) -> cometgen.AsyncClient:
    kwargs.setdefault("retry", FAST_RETRY)
    return cometgen.AsyncClient(api_key=KEY, base_url=server.url, **kwargs)  # type: ignore[arg-type]


async def test_generate_returns_image_text_usage() -> None:
    async with MockServer() as server, client_for(server) as client:
        result = await client.generate("a red fox", aspect_ratio="16:9", image_size="2K")
    assert result.ok and result.outcome == "done"
    image = result.images[0]
    assert image.mime_type == "image/jpeg" and image.extension == "jpg"
    assert image.data[:3] == b"\xff\xd8\xff"
    assert image.thought_signature
    assert result.text
    assert result.finish_reason == "STOP"
    assert result.usage.image_tokens == 1680  # 3.1 Flash at 2K
    assert result.model_version == "gemini-3.1-flash-image"
    assert result.response_id
    assert result.attempts == 1 and not result.maybe_billed


async def test_png_for_25_and_atomic_save(tmp_path: Path) -> None:
    async with MockServer() as server, client_for(server) as client:
        result = await client.generate("a cat", model="gemini-2.5-flash-image")
        path = await result.images[0].save(tmp_path / "cat.png")
    assert path.read_bytes() == result.images[0].data
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.png"]


async def test_reference_images_bytes_path_and_image(tmp_path: Path) -> None:
    async with MockServer() as server, client_for(server) as client:
        first = await client.generate("a mug", model="gemini-2.5-flash-image")
        png = first.images[0].data
        ref = tmp_path / "ref.png"
        ref.write_bytes(png)
        result = await client.generate(
            "put it on a desk", images=[png, ref, str(ref), first.images[0]]
        )
    assert result.ok
    assert server.stats.requests == 2


async def test_x_goog_api_key_auth_and_wrong_key() -> None:
    async with MockServer(api_key=KEY) as server:
        async with client_for(server, auth="x-goog-api-key") as client:
            assert (await client.generate("ok")).ok
        async with cometgen.AsyncClient(api_key="wrong", base_url=server.url) as client:
            with pytest.raises(cometgen.AuthenticationError) as info:
                await client.generate("no")
    assert info.value.status_code == 400
    assert info.value.reason == "API_KEY_INVALID"


@pytest.mark.parametrize(
    ("marker", "exc_type", "outcome"),
    [
        ("block", cometgen.PromptBlockedError, "blocked"),
        ("image_safety", cometgen.ImageSafetyError, "blocked"),
        ("no_image", cometgen.NoImageError, "no_image"),
        ("image_other", cometgen.NoImageError, "no_image"),
        ("text_only", cometgen.NoImageError, "no_image"),
    ],
)
async def test_no_image_outcomes_raise_or_return(
    marker: str, exc_type: type[Exception], outcome: str
) -> None:
    prompt = f"x [[mock:{marker}]]"
    async with MockServer() as server, client_for(server) as client:
        with pytest.raises(exc_type) as info:
            await client.generate(prompt)
        result = await client.generate(prompt, on_no_image="return")
    assert isinstance(info.value, cometgen.GenerationError)
    assert info.value.result.outcome == outcome
    assert not result.ok and result.outcome == outcome
    if marker == "block":
        assert result.block_reason == "PROHIBITED_CONTENT"
    else:
        assert result.finish_reason is not None
    # Outcomes are answers, not failures: never retried.
    assert server.stats.requests == 2


async def test_retry_info_delay_is_honoured() -> None:
    async with MockServer() as server, client_for(server) as client:
        t0 = time.monotonic()
        result = await client.generate("fox [[mock:429:1:0.4s]]")
        elapsed = time.monotonic() - t0
    assert result.ok and result.attempts == 2
    assert 0.4 <= elapsed < 1.5
    assert server.stats.by_status.get(429) == 1


async def test_rate_limit_error_fields_when_retries_exhausted() -> None:
    policy = cometgen.RetryPolicy(max_attempts=2, initial_delay=0.01)
    async with MockServer() as server, client_for(server, retry=policy) as client:
        with pytest.raises(cometgen.RateLimitError) as info:
            await client.generate("fox [[mock:429::0.05s]]")
    err = info.value
    assert err.status_code == 429 and err.status == "RESOURCE_EXHAUSTED"
    assert err.retry_delay == pytest.approx(0.05)
    assert err.quota_id == "GenerateRequestsPerMinutePerProjectPerModel"
    assert err.attempts == 2


async def test_daily_quota_is_not_retried() -> None:
    async with MockServer() as server, client_for(server) as client:
        with pytest.raises(cometgen.QuotaExhaustedError) as info:
            await client.generate("fox [[mock:429_daily]]")
    assert info.value.attempts == 1
    assert server.stats.requests == 1


async def test_comet_429_without_hint_backs_off_and_succeeds() -> None:
    async with MockServer() as server, client_for(server) as client:
        result = await client.generate("fox [[mock:429_comet:2]]")
    assert result.attempts == 3


@pytest.mark.parametrize("marker", ["500", "503", "504", "502_html"])
async def test_server_errors_are_retried(marker: str) -> None:
    async with MockServer() as server, client_for(server) as client:
        result = await client.generate(f"fox [[mock:{marker}:1]]")
    assert result.ok and result.attempts == 2


async def test_server_error_class_and_html_body() -> None:
    policy = cometgen.RetryPolicy(max_attempts=1)
    async with MockServer() as server, client_for(server, retry=policy) as client:
        with pytest.raises(cometgen.ServerError) as info:
            await client.generate("fox [[mock:502_html]]")
    assert info.value.status_code == 502
    assert "<html" not in str(info.value).lower()


@pytest.mark.parametrize(
    ("marker", "exc_type"),
    [
        ("drop", cometgen.TransportError),
        ("truncate", cometgen.CometgenError),
        ("malformed", cometgen.DecodeError),
        # Cloudflare's 524: the gateway gave up waiting; the generation may go on and bill.
        ("524", cometgen.ServerError),
    ],
)
async def test_ambiguous_failures_not_retried_and_marked(
    marker: str, exc_type: type[Exception]
) -> None:
    async with MockServer() as server, client_for(server) as client:
        with pytest.raises(exc_type) as info:
            await client.generate(f"fox [[mock:{marker}]]")
    err = info.value
    assert isinstance(err, cometgen.CometgenError)
    assert err.attempts == 1 and err.maybe_billed
    if marker != "524":  # the mock cannot know whether the origin finished after a 524
        assert server.stats.billed_total == 1


async def test_ambiguous_retry_budget_is_opt_in() -> None:
    policy = cometgen.RetryPolicy(max_ambiguous_retries=1, initial_delay=0.01)
    async with MockServer() as server, client_for(server, retry=policy) as client:
        result = await client.generate("fox [[mock:drop:1]]")
    assert result.ok and result.attempts == 2 and result.maybe_billed
    assert server.stats.billed_total == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_not_sent_failure_is_retried() -> None:
    policy = cometgen.RetryPolicy(max_attempts=3, initial_delay=0.01)
    url = f"http://127.0.0.1:{_closed_port()}"
    async with cometgen.AsyncClient(api_key=KEY, base_url=url, retry=policy) as client:
        with pytest.raises(cometgen.ConnectError) as info:
            await client.generate("fox")
    assert info.value.attempts == 3
    assert not info.value.maybe_billed


async def test_rpm_limit_paces_evenly_with_zero_429s() -> None:
    limits = cometgen.Limits(concurrency=16, rpm=600)
    async with MockServer(rpm=600) as server, client_for(server, limits=limits) as client:
        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(client.generate, f"p{i}")
        elapsed = time.monotonic() - t0
    assert server.stats.rate_limited == 0
    assert server.stats.requests == 20
    # 20 requests at 10/s, evenly from the first: the last leaves at t0 + 1.9 s.
    assert 1.8 <= elapsed < 3.5


async def test_without_client_limit_the_mock_rate_limits() -> None:
    policy = cometgen.RetryPolicy(max_attempts=1)
    async with MockServer(rpm=5) as server, client_for(server, retry=policy) as client:
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(_ignore_errors, client.generate(f"p{i}"))
    assert server.stats.rate_limited == 3


async def _ignore_errors(coro: object) -> None:
    try:
        await coro  # type: ignore[misc]
    except cometgen.CometgenError:
        pass


async def test_adaptive_window_shrinks_on_429_and_grows_back() -> None:
    limits = cometgen.Limits(concurrency=8, adaptive=True)
    async with MockServer() as server, client_for(server, limits=limits) as client:
        start = client.limiter.window
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(client.generate, f"p{i} [[mock:429_comet:1]]")
        shrunk = client.limiter.window
        for i in range(120):
            await client.generate(f"ok{i}")
        grown = client.limiter.window
    assert shrunk < start
    assert grown > shrunk
    assert grown <= 8


async def test_cancellation_leaves_no_connection_and_client_usable() -> None:
    async with MockServer(latency=2.0) as server, client_for(server) as client:
        with anyio.move_on_after(0.2) as scope:
            await client.generate("slow")
        assert scope.cancelled_caught
        await anyio.sleep(0.05)
        assert client.transport.acquired_connections == 0
        assert client.limiter.in_flight == 0
    async with MockServer() as server2, client_for(server2) as client2:
        assert (await client2.generate("again")).ok


async def test_call_deadline_spans_retries() -> None:
    async with MockServer(latency=1.0) as server, client_for(server) as client:
        t0 = time.monotonic()
        with pytest.raises(cometgen.TimeoutException) as info:
            await client.generate("slow", timeout=0.3)
        assert time.monotonic() - t0 < 0.9
    assert info.value.attempts == 1


async def test_key_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    messages = []
    async with MockServer(api_key="other") as server, client_for(server) as client:
        messages.append(repr(client))
        messages.append(repr(client.with_options(model="gemini-3-pro-image")))
        for prompt in ["x", "x [[mock:429_daily]]"]:
            try:
                await client.generate(prompt)
            except cometgen.CometgenError as exc:
                messages += [str(exc), repr(exc), repr(exc.__dict__)]
    async with MockServer() as server, client_for(server) as client:
        for marker in ["429:1:0.01s", "503:1", "drop", "block"]:
            try:
                await client.generate(f"x [[mock:{marker}]]")
            except cometgen.CometgenError as exc:
                messages += [str(exc), repr(exc)]
    text = "\n".join(messages) + caplog.text
    assert KEY not in text
    assert "SECRET" not in text


async def test_with_options_copies_and_shares_pool() -> None:
    async with MockServer() as server, client_for(server) as client:
        pro = client.with_options(model="gemini-3-pro-image-preview", on_no_image="return")
        assert client.model == "gemini-3.1-flash-image"
        assert client.on_no_image == "raise"
        result = await pro.generate("otter", image_size="4K")
        assert result.usage.image_tokens == 2000
        assert pro.transport is client.transport
        assert pro.limiter is client.limiter
        blocked = await pro.generate("x [[mock:block]]")
        assert not blocked.ok


async def test_generate_content_raw() -> None:
    request = GenerateContentRequest(contents=[Content(role="user", parts=[Part(text="fox")])])
    async with MockServer() as server, client_for(server) as client:
        response = await client.generate_content("gemini-3-pro-image", request)
    assert response.image_parts()
    assert response.usage_metadata is not None


async def test_bad_request_is_typed() -> None:
    async with MockServer() as server, client_for(server) as client:
        with pytest.raises(cometgen.BadRequestError) as info:
            await client.generate("fox", model="gemini-2.5-flash-image", image_size="4K")
        with pytest.raises(cometgen.NotFoundError):
            await client.generate("fox", model="gemini-9-ultra-image")
    assert info.value.status == "INVALID_ARGUMENT"
    assert info.value.attempts == 1


async def test_chat_sends_back_model_turn_with_signatures() -> None:
    async with MockServer() as server, client_for(server) as client:
        chat = client.chat(model="gemini-3-pro-image-preview")
        first = await chat.send("a mug on a desk")
        second = await chat.send("make the light golden")
    assert first.ok and second.ok
    assert [c.role for c in chat.history] == ["user", "model", "user", "model"]
    model_turn = chat.history[1]
    signed = [p for p in model_turn.parts if p.thought_signature]
    assert signed and signed[-1].inline_data is not None
    assert signed[-1].inline_data.data == first.images[0].data


def test_sync_generate() -> None:
    with MockServer().run_in_thread() as server:
        result = cometgen.generate("a fox", api_key=KEY, base_url=server.url)
    assert result.ok


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(cometgen.ConfigError, match="COMETAPI_KEY"):
        cometgen.AsyncClient()


def test_a_key_with_a_control_character_is_refused_up_front(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiohttp refuses such a header on every request; a key read from a file often ends
    # with a newline.
    secret = "sk-secret-7f3a"
    with pytest.raises(cometgen.ConfigError) as info:
        cometgen.AsyncClient(api_key=secret + "\n")
    assert str(info.value) == (
        "api_key contains a control character at position 15 of 15 (a trailing newline, "
        "as from a file?): an API key cannot be sent with it")
    with pytest.raises(cometgen.ConfigError, match=r"position 15 of 16 \(a trailing newline"):
        cometgen.AsyncClient(api_key=secret + "\r\n")  # a file written on Windows
    monkeypatch.setenv("COMETAPI_KEY", "sk-\r" + secret)
    with pytest.raises(cometgen.ConfigError) as info:
        cometgen.AsyncClient()
    assert str(info.value).startswith("$COMETAPI_KEY contains a control character at "
                                      "position 4 of 18: ")
    assert secret not in str(info.value)


@pytest.mark.parametrize("marker", ["", " [[mock:slow:3]]"])
async def test_attempt_timeout_covers_the_wait_and_the_body(marker: str) -> None:
    """Timeouts.total bounds an attempt: waiting for headers, and trickling body bytes."""
    async with MockServer(latency=3 if not marker else 0) as server, client_for(
        server, timeout=cometgen.Timeouts(total=0.3), retry=cometgen.RetryPolicy(max_attempts=1)
    ) as client:
        started = time.monotonic()
        with pytest.raises(cometgen.ReadTimeout) as info:
            await client.generate(f"a fox{marker}")
        assert time.monotonic() - started < 2.5
        assert info.value.maybe_billed
        assert client.transport.acquired_connections == 0

