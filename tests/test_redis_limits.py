"""RedisLimiter against a real redis-server on loopback: pacing, leases, gate, AIMD, outages."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from _redis_server import RedisProcess, shared_redis_url

import cometgen
from cometgen import AsyncClient, ConfigError, Limits
from cometgen._bulk._batch import Batch
from cometgen._redis_limits import RedisLimiter, derive_namespace, redact_url
from cometgen.testing import MockServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    yield from shared_redis_url()


def _ns() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _limiters(url: str, n: int, **kwargs: object) -> list[RedisLimiter]:
    ns = _ns()
    return [RedisLimiter(url, namespace=ns, **kwargs) for _ in range(n)]  # type: ignore[arg-type]


async def _close(limiters: list[RedisLimiter]) -> None:
    for limiter in limiters:
        await limiter.aclose()


def test_limits_validation() -> None:
    with pytest.raises(ConfigError, match="Redis URL") as info:
        Limits(shared="http://user:hunter2@host/0")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match="namespace"):
        Limits(shared="redis://localhost", namespace=" ")
    with pytest.raises(ConfigError, match="lease_ttl"):
        Limits(lease_ttl=0)
    assert Limits(shared="redis://localhost:6379/0").lease_ttl == 10.0
    assert redact_url("redis://:hunter2@h:1/0") == "redis://:***@h:1/0"


def test_default_namespace_is_a_hash() -> None:
    ns = derive_namespace("sk-secret-key", "https://api.cometapi.com")
    assert "secret" not in ns and ns == derive_namespace("sk-secret-key",
                                                         "https://api.cometapi.com")
    assert ns != derive_namespace("sk-other", "https://api.cometapi.com")
    client = AsyncClient(api_key="sk-secret-key", base_url="https://api.cometapi.com",
                         limits=Limits(shared="redis://127.0.0.1:1/0"))
    assert isinstance(client.limiter, RedisLimiter) and client.limiter.namespace == ns


def test_missing_redis_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ConfigError, match=r"pip install cometgen\[redis\]"):
        AsyncClient(api_key="k", limits=Limits(shared="redis://127.0.0.1:6379/0"))


@pytest.mark.anyio
async def test_redis_down_at_open_is_a_clear_error() -> None:
    from _redis_server import free_port

    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    client = AsyncClient(api_key="k", base_url="http://127.0.0.1:9",
                         limits=Limits(shared=url))
    t0 = time.monotonic()
    with pytest.raises(cometgen.LimiterBackendError,
                       match="cannot reach the shared-limits Redis") as info:
        async with client:
            pass
    assert time.monotonic() - t0 < 5
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    assert not isinstance(info.value, ConfigError)  # a bad value is a ConfigError; this is not
    await client.aclose()


@pytest.mark.anyio
async def test_redis_failing_mid_run_is_a_limiter_backend_error(redis_url: str) -> None:
    import redis.asyncio as aioredis

    limits = Limits(shared=redis_url, namespace=_ns(), concurrency=2)
    async with MockServer() as server, AsyncClient(
        api_key="k", base_url=server.url, limits=limits
    ) as client:
        assert (await client.generate("fine")).ok
        # The leases key of another type: Redis answers the limiter's script with WRONGTYPE.
        raw = aioredis.from_url(redis_url)
        await raw.set(f"cometgen:{{{limits.namespace}}}:leases", "not a sorted set")
        await raw.aclose()
        with pytest.raises(cometgen.LimiterBackendError, match="shared-limits Redis error"):
            await client.generate("now failing")
    assert server.stats.requests == 1  # nothing was sent without a slot


@pytest.mark.anyio
async def test_rpm_is_shared_and_evenly_paced(redis_url: str) -> None:
    limiters = _limiters(redis_url, 3, concurrency=6, rpm=1200)  # one every 50 ms
    times: list[float] = []

    async def one(limiter: RedisLimiter) -> None:
        async with limiter.slot() as slot:
            times.append(time.monotonic())
            slot.succeeded()

    async with anyio.create_task_group() as tg:
        for i in range(31):
            tg.start_soon(one, limiters[i % 3])
    await _close(limiters)
    times.sort()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) > 0.035  # no burst, even across instances
    rate = len(gaps) / (times[-1] - times[0]) * 60
    assert abs(rate - 1200) / 1200 < 0.03, rate


@pytest.mark.anyio
async def test_ipm_counts_images(redis_url: str) -> None:
    a, b = _limiters(redis_url, 2, concurrency=4, ipm=1200)  # 50 ms per image
    t0 = time.monotonic()
    for limiter in (a, b, a):
        async with limiter.slot(images=4):
            pass
    # Three slots of 4 images: the third starts 2 * 4 * 50 ms after the first.
    assert time.monotonic() - t0 >= 0.38
    await _close([a, b])


@pytest.mark.anyio
async def test_concurrency_cap_is_global(redis_url: str) -> None:
    limiters = _limiters(redis_url, 3, concurrency=4)
    current = peak = 0

    async def one(limiter: RedisLimiter) -> None:
        nonlocal current, peak
        async with limiter.slot():
            current += 1
            peak = max(peak, current)
            await anyio.sleep(0.05)
            current -= 1

    async with anyio.create_task_group() as tg:
        for i in range(24):
            tg.start_soon(one, limiters[i % 3])
    await _close(limiters)
    assert peak == 4


@pytest.mark.anyio
async def test_429_gate_pauses_every_instance(redis_url: str) -> None:
    a, b = _limiters(redis_url, 2, concurrency=4, rpm=6000)
    async with a.slot() as slot:
        slot.rate_limited(0.6)
    t0 = time.monotonic()
    async with b.slot():
        waited = time.monotonic() - t0
    assert 0.5 < waited < 1.0
    assert b.snapshot().paused_until > 0
    await _close([a, b])


@pytest.mark.anyio
async def test_adaptive_window_is_shared(redis_url: str) -> None:
    a, b = _limiters(redis_url, 2, concurrency=8, adaptive=True)
    async with a.slot() as s1, a.slot() as s2:
        s1.rate_limited(None)
        s2.rate_limited(None)  # same epoch: one wave of 429s halves once
    async with b.slot():
        assert b.window == 4
    for _ in range(4):  # 4 successes at window 4 grow it by one
        async with b.slot() as slot:
            slot.succeeded()
    async with a.slot():
        assert a.window == 5
    await _close([a, b])


@pytest.mark.anyio
async def test_redis_outage_pauses_then_resumes_without_burst() -> None:
    server = RedisProcess()
    server.start()
    limiter = RedisLimiter(server.url, namespace=_ns(), concurrency=4, rpm=600)
    try:
        async with limiter.slot():
            first = time.monotonic()
        await anyio.to_thread.run_sync(server.stop)
        granted: list[float] = []

        async def wait_for_slot() -> None:
            async with limiter.slot():
                granted.append(time.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_slot)
            await anyio.sleep(1.0)
            assert not granted  # fail closed: nothing granted while Redis is down
            await anyio.to_thread.run_sync(server.start)
        assert granted and granted[0] - first >= 1.0
        # The restarted (empty) Redis still paces: the next slots are 100 ms apart.
        stamps = []
        for _ in range(3):
            async with limiter.slot():
                stamps.append(time.monotonic())
        assert stamps[2] - stamps[0] >= 0.18
    finally:
        await limiter.aclose()
        server.stop()


@pytest.mark.anyio
async def test_client_and_batch_use_the_shared_limiter(redis_url: str, tmp_path: object) -> None:
    async with MockServer() as server:
        limits = Limits(shared=redis_url, namespace=_ns(), rpm=3000, concurrency=4)
        async with AsyncClient(api_key="k", base_url=server.url, limits=limits) as client:
            assert isinstance(client.limiter, RedisLimiter)
            result = await client.generate("a red apple")
            assert result.images
            async with Batch(client, concurrency=3) as batch:
                assert isinstance(batch.gate.inner, RedisLimiter)  # behind the stop gate
                assert batch.client.limiter.namespace == limits.namespace
                stats = await batch.run_all([cometgen.Job(prompt=f"cat {i}") for i in range(6)])
            assert stats.done == 6
        assert server.stats.rate_limited == 0


def test_cli_with_redis_down_is_a_clear_error(tmp_path: Path) -> None:
    from _redis_server import free_port
    from _reliability import clean_env, cometgen_cmd

    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "prompt": "x"}\n')
    proc = subprocess.run(
        cometgen_cmd("run", str(src), "-o", str(tmp_path / "out"), "--api-key", "sk-k",
                     "--base-url", "http://127.0.0.1:9",
                     "--shared-limits", f"redis://127.0.0.1:{free_port()}/0"),
        env=clean_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert "cannot reach the shared-limits Redis" in proc.stderr
    assert "Traceback" not in proc.stderr
