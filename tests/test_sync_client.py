"""Blocking use: ``cometgen.generate`` (also in a running event loop) and ``cometgen.Client``."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import cometgen
from cometgen.testing import MockServer
from cometgen.types import Content, GenerateContentRequest, Part

KEY = "sk-test-sync-client"


def test_generate_inside_a_running_event_loop() -> None:
    # A Jupyter cell: code that is synchronous, but runs while an event loop is running.
    with MockServer().run_in_thread() as server:

        async def cell() -> cometgen.GenerateResult:
            return cometgen.generate("a fox", api_key=KEY, base_url=server.url)

        result = asyncio.run(cell())
        assert result.ok and result.images[0].data

        async def failing_cell() -> None:
            cometgen.generate("x [[mock:429_daily]]", api_key=KEY, base_url=server.url)

        with pytest.raises(cometgen.QuotaExhaustedError):
            asyncio.run(failing_cell())


def _client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "cometgen-client"]


def test_client_shares_one_pool_across_calls() -> None:
    with MockServer().run_in_thread() as server:
        with cometgen.Client(api_key=KEY, base_url=server.url,
                             model="gemini-2.5-flash-image") as client:
            transport = client.async_client.transport
            results = [client.generate(f"fox {i}") for i in range(3)]
            assert client.async_client.transport is transport
            assert len(_client_threads()) == 1
            raw = client.generate_content(
                "gemini-2.5-flash-image",
                GenerateContentRequest(contents=[Content(role="user", parts=[Part(text="x")])]),
            )
            assert raw.image_parts()
        assert server.stats.requests == 4
    assert all(r.ok and r.model == "gemini-2.5-flash-image" for r in results)
    assert not _client_threads()  # close() stopped the loop thread
    with pytest.raises(cometgen.ClientClosedError):
        client.generate("after close")


def test_client_takes_the_async_client_options() -> None:
    with MockServer().run_in_thread() as server:
        with cometgen.Client(api_key=KEY, base_url=server.url, on_no_image="return",
                             retry=cometgen.RetryPolicy(initial_delay=0.01, max_delay=0.02),
                             limits=cometgen.Limits(concurrency=2)) as client:
            assert not client.generate("x [[mock:no_image]]").ok
            assert client.generate("y [[mock:503:1]]").attempts == 2
            assert "api_key='***'" in repr(client) and KEY not in repr(client)
    with pytest.raises(cometgen.ConfigError):
        cometgen.Client(api_key=KEY, auth="basic")  # type: ignore[arg-type]
    assert not _client_threads()


def test_client_from_many_threads_and_inside_a_running_loop() -> None:
    with MockServer(latency=0.5).run_in_thread() as server, cometgen.Client(
        api_key=KEY, base_url=server.url
    ) as client:
        with ThreadPoolExecutor(4) as pool:
            t0 = time.monotonic()
            results = list(pool.map(client.generate, [f"cat {i}" for i in range(4)]))
            assert time.monotonic() - t0 < 1.5  # concurrent: one after the other takes 2 s
        assert all(r.ok for r in results)

        async def cell() -> cometgen.GenerateResult:
            return client.generate("in a notebook")

        assert asyncio.run(cell()).ok


def test_client_chat_keeps_history() -> None:
    with MockServer().run_in_thread() as server, cometgen.Client(
        api_key=KEY, base_url=server.url
    ) as client:
        chat = client.chat()
        assert chat.send("a mug").ok
        assert chat.send("make it blue").ok
        assert [c.role for c in chat.history] == ["user", "model", "user", "model"]


def test_client_generate_has_the_async_signature() -> None:
    sync = inspect.signature(cometgen.Client.generate).parameters
    async_ = inspect.signature(cometgen.AsyncClient.generate).parameters
    assert list(sync) == list(async_)
    assert [p.default for p in sync.values()] == [p.default for p in async_.values()]


def test_client_that_cannot_open_stops_its_thread() -> None:
    from _redis_server import free_port

    limits = cometgen.Limits(shared=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(cometgen.LimiterBackendError):
        with cometgen.Client(api_key=KEY, base_url="http://127.0.0.1:9", limits=limits):
            pass
    assert not _client_threads()
