"""Reliability: a 30 % fault soak, and cancellation at random points.

Real HTTP to the mock server; the longer soak is ``python -m tests.torture --soak 2000``.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import anyio
import pytest
from _reliability import (
    KEY,
    check_final_state,
    check_images_complete,
    fault_soak,
    read_manifest,
    scan_out_dir,
)

import cometgen
from cometgen.testing import MockServer

pytestmark = pytest.mark.anyio

FAST = cometgen.RetryPolicy(initial_delay=0.01, max_delay=0.05)


async def test_fault_soak_every_item_ends_and_nothing_is_paid_twice(tmp_path: Path) -> None:
    report = await fault_soak(tmp_path, items=150, seed=11, fault_rate=0.3, timeout=120)
    print("soak:", report)
    # Every item done or failed with a reason; no resend after an ambiguous answer; waits
    # as long as every RetryInfo asked; each prompt billed at most once; files intact.
    assert report["problems"] == []
    assert report["faults_injected"] >= 30
    faults = report["faults"]
    for kind in ("429", "429_comet", "503"):
        assert faults.get(kind, 0) > 0, (kind, faults)
    assert sum(1 for k in ("drop", "truncate", "malformed", "524") if faults.get(k)) >= 3
    assert report["google_429_waits_checked"] > 0
    assert report["maybe_billed"] > 0 and report["failed"] >= report["maybe_billed"] - 1
    assert report["done"] + report["failed"] == 150


async def test_ambiguous_retries_are_opt_in_and_bounded() -> None:
    policy = cometgen.RetryPolicy(initial_delay=0.01, max_delay=0.02, max_ambiguous_retries=1)
    async with MockServer() as server:
        async with cometgen.AsyncClient(api_key=KEY, base_url=server.url, retry=policy) as c:
            result = await c.generate("x [[mock:drop:1]]")
            assert result.attempts == 2 and result.maybe_billed
            with pytest.raises(cometgen.TransportError) as info:
                await c.generate("y [[mock:truncate:5]]")
            assert info.value.maybe_billed and info.value.attempts == 2
        assert server.stats.billed_by_prompt == {"x [[mock:drop:1]]": 2,
                                                 "y [[mock:truncate:5]]": 2}


# --------------------------------------------------------------------------- cancellation


async def _settled(client: cometgen.AsyncClient) -> None:
    for _ in range(50):  # connections closed by a cancel are released on the next loop turns
        if client.transport.acquired_connections == 0 and client.limiter.in_flight == 0:
            return
        await anyio.sleep(0.01)
    assert client.transport.acquired_connections == 0
    assert client.limiter.in_flight == 0


async def test_cancel_generate_at_random_points_leaks_nothing() -> None:
    rng = random.Random(5)
    cancelled = 0
    async with MockServer(latency=0.02) as server:
        async with cometgen.AsyncClient(api_key=KEY, base_url=server.url, retry=FAST) as c:
            for i in range(100):
                with anyio.move_on_after(rng.uniform(0, 0.05)) as scope:
                    await c.generate(f"cancel me {i}")
                cancelled += scope.cancelled_caught
                if i % 10 == 0:
                    await _settled(c)
            await _settled(c)
            copy = c.with_options(timeout=5)
            assert (await copy.generate("still usable")).images  # the pool survived
            assert (await c.generate("still usable 2")).images
            await _settled(c)
    assert 20 < cancelled < 100


async def test_cancel_batch_at_random_points_then_resume(tmp_path: Path) -> None:
    rng = random.Random(9)
    out = tmp_path / "out"
    jobs = [cometgen.Job(id=f"c{i:03d}", prompt=f"cancel batch {i}") for i in range(150)]
    expected = {j.id: "done" for j in jobs if j.id}
    async with MockServer(latency=0.02) as server:
        async with cometgen.AsyncClient(api_key=KEY, base_url=server.url, retry=FAST) as c:
            for _ in range(25):
                with anyio.move_on_after(rng.uniform(0, 0.15)):
                    async with cometgen.Batch(c, out_dir=out, concurrency=16) as batch:
                        async for _outcome in batch.run(jobs):
                            pass
                await _settled(c)
                assert scan_out_dir(out)[1] == [], "temp file left by a cancel"
                assert check_images_complete(out) == []
                for rec in read_manifest(out).latest.values():  # records point at whole files
                    for f in rec.get("files", []):
                        data = (out / f["path"]).read_bytes()
                        assert hashlib.sha256(data).hexdigest() == f["sha256"]
            async with cometgen.Batch(c, out_dir=out, concurrency=16) as batch:
                stats = await batch.run_all(jobs)
        done_early = 150 - stats.done
    assert check_final_state(out, expected) == []
    assert done_early > 0  # the cancelled runs did real work
    # Billed twice: only requests cut by a cancel (at most `concurrency` per cancel).
    twice = sum(1 for n in server.stats.billed_by_prompt.values() if n > 1)
    assert twice <= 16 * 25
