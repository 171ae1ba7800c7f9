"""Issue 15 bug 2: every ``Timeouts`` field reaches the transport, per client and per call.

Over real sockets: a port whose TCP handshake is never answered (connect), a pool of one
connection held busy (pool), a server that reads the request and never answers (total).
"""

from __future__ import annotations

import time

import anyio
import pytest
from _sockets import raw_server, unanswered_port

from cometgen import (
    AsyncClient,
    ConnectTimeout,
    Limits,
    PoolTimeout,
    ReadTimeout,
    RetryPolicy,
    TimeoutException,
    Timeouts,
)

pytestmark = pytest.mark.anyio

ONCE = RetryPolicy(max_attempts=1)


async def _timed_failure(client: AsyncClient, cls: type[TimeoutException]) -> float:
    started = time.monotonic()
    with anyio.fail_after(5):  # the old code waited for the parent's 10 s / 300 s limits
        with pytest.raises(cls) as info:
            await client.generate("a fox", include_text=False)
    assert info.value.delivery == ("ambiguous" if cls is ReadTimeout else "not_sent")
    return time.monotonic() - started


@pytest.mark.parametrize("per", ["client", "call"])
async def test_connect_timeout_is_honoured(per: str) -> None:
    with unanswered_port() as port:
        url = f"http://127.0.0.1:{port}"
        timeout = Timeouts(connect=0.3, total=None)
        async with AsyncClient("k", url, retry=ONCE,
                               timeout=timeout if per == "client" else None) as client:
            if per == "call":
                client = client.with_options(timeout=timeout)
            assert 0.25 < await _timed_failure(client, ConnectTimeout) < 2.0


@pytest.mark.parametrize("per", ["client", "call"])
async def test_pool_timeout_is_honoured(per: str) -> None:
    async with raw_server("hang") as raw_url:
        url = raw_url.removesuffix("/v1")
        pool = Timeouts(pool=0.2)
        async with AsyncClient("k", url, retry=ONCE, max_connections=1,
                               limits=Limits(concurrency=1),
                               timeout=pool if per == "client" else None) as holder:
            # A copy with its own limiter shares the one-connection pool.
            waiter = holder.with_options(limits=Limits(concurrency=1),
                                         timeout=pool if per == "call" else None)
            async with anyio.create_task_group() as tg:
                tg.start_soon(holder.with_options(timeout=Timeouts(pool=None)).generate,
                              "hold the only connection")
                await anyio.sleep(0.2)
                assert holder.transport.acquired_connections == 1  # type: ignore[attr-defined]
                assert 0.15 < await _timed_failure(waiter, PoolTimeout) < 2.0
                tg.cancel_scope.cancel()


@pytest.mark.parametrize("per", ["client", "call"])
async def test_total_timeout_is_honoured(per: str) -> None:
    async with raw_server("hang") as raw_url:
        timeout = Timeouts(total=0.3)
        async with AsyncClient("k", raw_url.removesuffix("/v1"), retry=ONCE,
                               timeout=timeout if per == "client" else None) as client:
            if per == "call":
                client = client.with_options(timeout=timeout)
            assert 0.25 < await _timed_failure(client, ReadTimeout) < 2.0


async def test_call_timeouts_override_the_clients() -> None:
    with unanswered_port() as port:
        async with AsyncClient("k", f"http://127.0.0.1:{port}", retry=ONCE,
                               timeout=Timeouts(connect=30, total=None)) as client:
            quick = client.with_options(timeout=Timeouts(connect=0.3, total=None))
            assert await _timed_failure(quick, ConnectTimeout) < 2.0
            assert client.timeouts.connect == 30  # the parent is unchanged
