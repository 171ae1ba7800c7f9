"""Large response bodies: soft-limited concurrent reads, one decode per loop iteration."""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path

import anyio
import pytest

import cometgen
from cometgen._pacing import BodyPacer
from cometgen.testing import MockServer

pytestmark = pytest.mark.anyio

PRO_FIXTURE = Path(__file__).parent / "fixtures" / "recorded" / (
    "gemini-3-pro-image_sea-otter_image-only.json"
)
PRO = "gemini-3-pro-image-preview"


async def _peak_readers(pacer: BodyPacer, reads: int, hold: float) -> int:
    """Run ``reads`` concurrent reads that each hold their slot ``hold`` s; the peak inside."""
    inside = peak = 0

    async def read() -> None:
        nonlocal inside, peak
        async with pacer.reading():
            inside += 1
            peak = max(peak, inside)
            await anyio.sleep(hold)
            inside -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(reads):
            tg.start_soon(read)
    return peak


async def test_reader_slots_bound_concurrent_large_reads() -> None:
    pacer = BodyPacer(readers=2, patience=30)
    assert await _peak_readers(pacer, 8, 0.01) == 2
    assert pacer.impatient_reads == 0 and pacer.large_reads == 8


async def test_a_read_waits_at_most_patience_then_goes_ahead() -> None:
    pacer = BodyPacer(readers=1, patience=0.05)
    held = anyio.Event()
    release = anyio.Event()

    async def hog() -> None:
        async with pacer.reading():
            held.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hog)
        await held.wait()
        with anyio.fail_after(5):
            async with pacer.reading():  # the slot is still held: goes ahead after patience
                pass
        release.set()
    assert pacer.impatient_reads == 1
    async with pacer.reading():  # the hog released its slot
        pass


async def test_a_slow_link_opens_one_extra_read_per_patience() -> None:
    """Slow readers admit waiting bodies one at a time, not the whole queue at once."""
    pacer = BodyPacer(readers=1, patience=0.05)
    starts: list[float] = []

    async def slow_read() -> None:
        async with pacer.reading():
            starts.append(anyio.current_time())
            await anyio.sleep(0.5)  # every read is slow: far longer than the patience

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(slow_read)
    assert pacer.impatient_reads == 4  # all read concurrently in the end: never throttled
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.04 for gap in gaps), gaps  # one extra reader per patience


async def test_a_busy_queue_keeps_waiting_past_patience() -> None:
    """Fast holders (a busy loop, not a slow link) keep the limit however long the queue."""
    pacer = BodyPacer(readers=1, patience=0.05)
    # Each holds 0.03 s < patience; the last waits ~0.15 s, three times the patience.
    assert await _peak_readers(pacer, 6, 0.03) == 1
    assert pacer.impatient_reads == 0


async def test_decode_turns_are_exclusive_and_in_distinct_iterations() -> None:
    pacer = BodyPacer()
    order: list[str] = []

    async def decode(name: str) -> None:
        async with pacer.decoding():
            order.append(f"{name}+")
            order.append(f"{name}-")  # nothing else can run between: no await here

    async def other() -> None:
        for _ in range(3):
            order.append("tick")
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for name in "abc":
            tg.start_soon(decode, name)
        tg.start_soon(other)
    turns = [x for x in order if x != "tick"]
    assert turns == ["a+", "a-", "b+", "b-", "c+", "c-"]
    # The ticking task got the loop between turns: decodes never all run back to back.
    assert order.index("tick") < order.index("c+")


def test_reader_count_is_validated() -> None:
    with pytest.raises(ValueError):
        BodyPacer(readers=0)


async def test_many_large_responses_decode_exactly(tmp_path: Path) -> None:
    """The 4 MB recorded response, 12 at once: the paced read path returns every byte."""
    recorded = json.loads(PRO_FIXTURE.read_text())["response"]
    part = recorded["candidates"][0]["content"]["parts"][0]
    expected = base64.b64decode(part["inlineData"]["data"])
    async with MockServer(replay=PRO_FIXTURE) as server, cometgen.AsyncClient(
        api_key="k", base_url=server.url, model=PRO, limits=cometgen.Limits(concurrency=12),
    ) as client:
        results: list[cometgen.GenerateResult] = []

        async def one(i: int) -> None:
            results.append(await client.generate(f"otter {i}", include_text=False))

        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(one, i)
        saved = await results[0].images[0].save(tmp_path / "otter.jpg")
        assert client.transport.pacer.large_reads == 12
    for result in results:
        (image,) = result.images
        assert image.data == expected
        assert image.thought_signature == part["thoughtSignature"]
    assert saved.read_bytes() == expected


async def test_truncated_large_body_is_a_dropped_connection() -> None:
    async with MockServer(replay=PRO_FIXTURE) as server, cometgen.AsyncClient(
        api_key="k", base_url=server.url, model=PRO,
        retry=cometgen.RetryPolicy(max_attempts=1),
    ) as client:
        with pytest.raises(cometgen.ConnectionDroppedError) as info:
            await client.generate("otter [[mock:truncate]]")
    assert info.value.maybe_billed


async def test_burst_gate_spreads_a_burst_over_iterations() -> None:
    from collections import Counter

    from _loop_iterations import LoopIterations

    from cometgen._pacing import BurstGate

    gate = BurstGate(per_iteration=4)
    started: list[int] = []
    with LoopIterations() as iterations:

        async def start() -> None:
            await gate.wait()
            started.append(iterations.count)

        async with anyio.create_task_group() as tg:
            for _ in range(40):
                tg.start_soon(start)
    per_iteration = Counter(started)
    assert len(started) == 40
    assert max(per_iteration.values()) <= 8  # fresh starts + the woken ones, at most
    assert len(per_iteration) >= 5  # spread over several iterations, not all in one


async def test_burst_gate_survives_cancelled_waiters() -> None:
    from cometgen._pacing import BurstGate

    gate = BurstGate(per_iteration=1)
    done: list[int] = []

    async def start(i: int) -> None:
        await gate.wait()
        done.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(start, i)
        async with anyio.create_task_group() as doomed:
            doomed.start_soon(start, 99)
            await anyio.lowlevel.checkpoint()  # 99 queues behind 1 and 2
            assert 99 not in done
            doomed.cancel_scope.cancel()
        for i in range(3, 6):
            tg.start_soon(start, i)
    assert sorted(done) == list(range(6))
    with pytest.raises(ValueError):
        BurstGate(per_iteration=0)
