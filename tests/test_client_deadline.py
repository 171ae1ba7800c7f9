"""The call deadline reports what really happened: attempts sent, and maybe_billed only if so."""

from __future__ import annotations

import time

import anyio
import pytest

import cometgen
from cometgen.testing import MockServer

pytestmark = pytest.mark.anyio

KEY = "sk-test-deadline"


async def test_deadline_in_backoff_counts_only_sent_attempts() -> None:
    # One 429 asking for 5 s: the deadline fires in the sleep, with nothing in flight.
    async with MockServer() as server, cometgen.AsyncClient(
        api_key=KEY, base_url=server.url
    ) as client:
        t0 = time.monotonic()
        with pytest.raises(cometgen.ReadTimeout, match="nothing in flight") as info:
            await client.generate("x [[mock:429:1:5s]]", timeout=0.5)
        assert time.monotonic() - t0 < 2
    assert server.stats.requests == 1
    assert info.value.attempts == 1
    assert info.value.maybe_billed is False
    assert info.value.delivery == "not_sent"


async def test_deadline_while_waiting_for_a_limiter_slot_sent_nothing() -> None:
    async with MockServer() as server, cometgen.AsyncClient(
        api_key=KEY, base_url=server.url, limits=cometgen.Limits(rpm=2)
    ) as client:
        assert (await client.generate("first")).ok
        with pytest.raises(cometgen.ReadTimeout, match="waiting to send") as info:
            await client.generate("second", timeout=0.3)  # the pacing slot is ~30 s away
    assert server.stats.requests == 1
    assert info.value.attempts == 0 and info.value.maybe_billed is False


async def test_deadline_during_an_attempt_may_have_been_billed() -> None:
    async with MockServer(latency=2.0) as server, cometgen.AsyncClient(
        api_key=KEY, base_url=server.url
    ) as client:
        with pytest.raises(cometgen.ReadTimeout, match="during an attempt") as info:
            await client.generate("slow", timeout=0.3)
    assert info.value.attempts == 1 and info.value.maybe_billed is True
    assert info.value.delivery == "ambiguous"


async def test_deadline_after_an_ambiguous_failure_keeps_maybe_billed() -> None:
    async def long_backoff(_: float) -> None:
        await anyio.sleep(5)

    policy = cometgen.RetryPolicy(max_ambiguous_retries=1, retry_statuses=frozenset({524}))
    async with MockServer() as server, cometgen.AsyncClient(
        api_key=KEY, base_url=server.url, retry=policy, _sleep=long_backoff
    ) as client:
        with pytest.raises(cometgen.ReadTimeout, match="nothing in flight") as info:
            # 524: the gateway gave up, the model may still have run; then a backoff.
            await client.generate("x [[mock:524:9]]", timeout=0.4)
    assert info.value.attempts == 1 and info.value.maybe_billed is True
