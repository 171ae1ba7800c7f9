"""examples/aiohttp_app.py served on loopback in front of the real mock server."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import cometgen
from cometgen.testing import MockServer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "aiohttp_app.py"
KEY = "sk-webapp-SECRET-0123456789abcdef"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("aiohttp_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


app_mod = _load_example()
FAST_RETRY = dataclasses.replace(app_mod.BACKEND_RETRY, initial_delay=0.01, max_delay=0.02)


@asynccontextmanager
async def serve_app(
    base_url: str, *, key: str = KEY, request_timeout: float = 10.0
) -> AsyncIterator[tuple[str, web.Application]]:
    """The example app on 127.0.0.1:<free port>, its one client pointed at ``base_url``."""

    def factory() -> cometgen.AsyncClient:
        return cometgen.AsyncClient(
            api_key=key, base_url=base_url, retry=FAST_RETRY,
            limits=cometgen.Limits(concurrency=64),
        )

    app = app_mod.create_app(factory, request_timeout=request_timeout)
    runner, url = await app_mod.start_server(app, "127.0.0.1", 0)
    try:
        yield url, app
    finally:
        await runner.cleanup()


async def _post(session: aiohttp.ClientSession, url: str, body: Any, **kw: Any
                ) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    async with session.post(f"{url}/generate", data=data, **kw) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_concurrent_requests_share_one_client_without_blocking_the_loop() -> None:
    async with (
        MockServer(latency=1.0) as mock,
        serve_app(mock.url) as (url, app),
        aiohttp.ClientSession() as session,
    ):
        max_lag = 0.0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal max_lag
            while not stop.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(0.01)
                max_lag = max(max_lag, time.perf_counter() - t0 - 0.01)

        await _post(session, url, {"prompt": "warm-up"})  # one-time costs out of the way
        tick = asyncio.create_task(ticker())
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(_post(session, url, {"prompt": f"fox number {i}"}) for i in range(30))
        )
        elapsed = time.perf_counter() - started
        stop.set()
        await tick
        client = app[app_mod.CLIENT]
        print(f"\n30 concurrent requests: {elapsed:.2f}s, max loop lag {max_lag * 1000:.1f}ms")

        for status, headers, body in answers:
            assert status == 200
            assert headers["Content-Type"] == "image/jpeg"
            assert body[:3] == b"\xff\xd8\xff"
        assert 1.0 <= elapsed < 3.0  # concurrent, not 30 x 1 s
        # The 30 answers arrive together and are handled in one burst by all three parties
        # (mock, app, test client share this loop); a blocking call would show >= 1 s.
        assert max_lag < 0.2
        assert mock.stats.requests == 31
        assert client.transport.acquired_connections == 0
        assert client.limiter.in_flight == 0

        status, headers, body = await _post(
            session, url, {"prompt": "a fox", "aspect_ratio": "16:9"}, params={"format": "json"}
        )
        doc = json.loads(body)
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert doc["images"][0]["mime_type"] == "image/jpeg" and doc["usage"]["image_tokens"]
        async with session.get(f"{url}/health") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"


async def test_client_disconnect_cancels_the_upstream_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp_app")
    async with MockServer(latency=3.0) as mock, serve_app(mock.url) as (url, app):
        client = app[app_mod.CLIENT]
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        body = json.dumps({"prompt": "a slow fox"}).encode()
        writer.write(
            b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        await writer.drain()
        await asyncio.sleep(0.3)
        assert client.limiter.in_flight == 1  # the upstream call is under way
        assert client.transport.acquired_connections == 1
        writer.close()
        await writer.wait_closed()

        closed_at = time.perf_counter()
        while client.transport.acquired_connections or client.limiter.in_flight:
            assert time.perf_counter() - closed_at < 1.0, "the handler was not cancelled"
            await asyncio.sleep(0.01)
        assert "upstream call cancelled" in caplog.text
        # It had been sent: the mock, which does not cancel, logs it once its latency is over.
        while not mock.stats.log:
            assert time.perf_counter() - closed_at < 5.0
            await asyncio.sleep(0.05)
        assert mock.stats.log[0].prompt == "a slow fox"
        del reader


async def test_errors_map_to_http_answers_without_the_key() -> None:
    async with (
        MockServer() as mock,
        serve_app(mock.url, request_timeout=1.0) as (url, _),
        aiohttp.ClientSession() as session,
    ):
        bodies: list[bytes] = []

        async def expect(
            body: Any, status: int, error: str
        ) -> tuple[dict[str, Any], dict[str, str]]:
            got, headers, raw = await _post(session, url, body)
            bodies.append(raw)
            doc = json.loads(raw)
            assert (got, doc["error"]) == (status, error), doc
            return doc, headers

        doc, _ = await expect({"prompt": "a fox [[mock:block]]"}, 422, "prompt_blocked")
        assert doc["reason"] == "PROHIBITED_CONTENT"
        doc, _ = await expect({"prompt": "a fox [[mock:image_safety]]"}, 422, "image_safety")
        assert doc["reason"] == "IMAGE_SAFETY"
        doc, _ = await expect({"prompt": "a fox [[mock:text_only]]"}, 422, "no_image")
        assert doc["text"]
        doc, headers = await expect({"prompt": "a fox [[mock:429_daily]]"}, 429, "quota_exhausted")
        assert "Retry-After" not in headers
        await expect({"prompt": "a fox", "aspect_ratio": "7:3"}, 400, "bad_request")
        await expect({"prompt": "a fox", "model": "gemini-9-image"}, 400, "unknown_model")
        await expect({"prompt": "a fox [[mock:503]]"}, 502, "upstream_error")
        await expect({"prompt": "a fox [[mock:slow::3s]]"}, 504, "upstream_timeout")
        await expect("{not json", 400, "bad_request")
        await expect({"prompt": ""}, 400, "bad_request")
        await expect({"prompt": "a fox", "size": "2K"}, 400, "bad_request")

        # Upstream asks for a wait longer than the backend absorbs: 429 + Retry-After, and the
        # shared client's 429 gate turns the next caller away at once instead of queueing it.
        doc, headers = await expect({"prompt": "a fox [[mock:429::7s]]"}, 429, "rate_limited")
        assert headers["Retry-After"] == "7"
        started = time.perf_counter()
        doc, headers = await expect({"prompt": "a calm fox"}, 429, "rate_limited")
        assert time.perf_counter() - started < 0.5 and 5 <= int(headers["Retry-After"]) <= 7
        sent = [record.prompt for record in mock.stats.log]
        assert sent.count("a fox [[mock:503]]") == 3  # retried, then 502
        assert "a calm fox" not in sent  # turned away at once: never sent

        assert all(KEY.encode() not in raw for raw in bodies)


async def _echo_key_upstream(request: web.Request) -> web.Response:
    """A provider that quotes the key it got back in its error messages."""
    key = request.headers.get("Authorization", "").removeprefix("Bearer ")
    status = 401 if "auth" in request.path else 400
    return web.json_response(
        {"error": {"code": status, "message": f"bad request with key {key}", "status": "X"}},
        status=status,
    )


async def test_upstream_auth_failure_is_502_and_never_leaks_the_key() -> None:
    upstream = web.Application()
    upstream.router.add_post("/{tail:.*}", _echo_key_upstream)
    async with MockServer(api_key="the-right-key") as mock:
        async with serve_app(mock.url) as (url, _), aiohttp.ClientSession() as session:
            status, _, raw = await _post(session, url, {"prompt": "a fox"})
        assert status == 502 and json.loads(raw)["error"] == "upstream_auth"
        assert KEY.encode() not in raw

    runner, upstream_url = await app_mod.start_server(upstream)
    try:
        async with aiohttp.ClientSession() as session:
            for base, want in ((upstream_url, 400), (f"{upstream_url}/auth", 502)):
                async with serve_app(base) as (url, _):
                    status, _, raw = await _post(session, url, {"prompt": "a fox"})
                assert status == want
                assert KEY.encode() not in raw and b"SECRET" not in raw
    finally:
        await runner.cleanup()


async def test_runs_as_a_script_on_the_builtin_mock() -> None:
    env = {k: v for k, v in os.environ.items() if k != "COMETAPI_KEY"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "--port", "0", "--mock-latency", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        async with asyncio.timeout(15):
            while not lines or not lines[-1].startswith("listening on "):
                lines.append((await proc.stdout.readline()).decode().strip())
                assert lines[-1], f"the example exited: {lines}"
        assert any("mock" in line for line in lines[:-1])
        url = lines[-1].removeprefix("listening on ")
        async with aiohttp.ClientSession() as session:
            status, headers, body = await _post(session, url, {"prompt": "a red fox"})
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert body[:3] == b"\xff\xd8\xff"
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
