"""The Batch job API against the mock server: outcomes as values, files, manifest, resume."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import cometgen
from cometgen.testing import MockServer

pytestmark = pytest.mark.anyio

FAST = cometgen.RetryPolicy(initial_delay=0.01, max_delay=0.05)


def client_for(server: MockServer) -> cometgen.AsyncClient:
    return cometgen.AsyncClient(api_key="k", base_url=server.url, retry=FAST)


def manifest(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


async def test_in_memory_outcomes_are_values() -> None:
    jobs = [
        cometgen.Job(prompt="a fox", id="fox"),
        cometgen.Job(prompt="x [[mock:block]]", id="blocked"),
        cometgen.Job(prompt="x [[mock:no_image]]", id="noimg"),
        cometgen.Job(prompt="two cats", id="cats", n=2),
        # Last: a quota error halts the batch; every item before it was already taken.
        cometgen.Job(prompt="x [[mock:429_daily]]", id="quota"),
    ]
    async with MockServer() as server, client_for(server) as client:
        async with cometgen.Batch(client, concurrency=4) as batch:
            outcomes = {o.key: o async for o in batch.run(jobs)}
    assert set(outcomes) == {"fox", "blocked", "noimg", "quota", "cats", "cats-1"}
    fox = outcomes["fox"]
    assert isinstance(fox, cometgen.Done)
    assert fox.images and fox.images[0].data[:3] == b"\xff\xd8\xff"
    assert fox.cost and fox.cost > 0
    assert isinstance(outcomes["blocked"], cometgen.Blocked)
    assert outcomes["blocked"].block_reason == "PROHIBITED_CONTENT"
    assert isinstance(outcomes["noimg"], cometgen.NoImage)
    failed = outcomes["quota"]
    assert isinstance(failed, cometgen.Failed)
    assert isinstance(failed.error, cometgen.QuotaExhaustedError)
    assert "QuotaExhaustedError" in failed.reason


async def test_results_stream_as_they_complete() -> None:
    order: list[str] = []
    jobs = [cometgen.Job(prompt="slow [[mock:slow:1:0.6s]]", id="slow")] + [
        cometgen.Job(prompt=f"fast {i}", id=f"fast{i}") for i in range(5)
    ]
    async with MockServer() as server, client_for(server) as client:
        async with cometgen.Batch(client, concurrency=6) as batch:
            async for outcome in batch.run(jobs):
                order.append(outcome.key)
    assert order[-1] == "slow"


async def test_async_iterable_source_and_bad_lines() -> None:
    async def source() -> AsyncIterator[cometgen.Job | cometgen.InputError]:
        yield cometgen.Job(prompt="ok", id="ok")
        yield cometgen.InputError("unknown field", file="in.jsonl", line=2, field="promt")

    async with MockServer() as server, client_for(server) as client:
        async with cometgen.Batch(client) as batch:
            outcomes = [o async for o in batch.run(source())]
    failed = [o for o in outcomes if isinstance(o, cometgen.Failed)]
    assert len(failed) == 1 and failed[0].key == "line-2"
    assert "in.jsonl:2" in failed[0].reason


async def test_files_manifest_metadata_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "out"
    jobs = [cometgen.Job(prompt=f"p{i}", id=f"../../evil/{i}", metadata={"i": i})
            for i in range(6)]
    jobs.append(cometgen.Job(prompt="p0", id="../../evil/0"))  # duplicate key
    async with MockServer() as server, client_for(server) as client:
        async with cometgen.Batch(client, out_dir=out, concurrency=3) as batch:
            stats = await batch.run_all(jobs)
        assert stats.done == 6 and stats.duplicates == 1
        assert server.stats.requests == 6
        records = manifest(out)
        assert {r["status"] for r in records} == {"done"}
        for record in records:
            for f in record["files"]:  # type: ignore[union-attr]
                path = (out / f["path"]).resolve()
                assert path.parent.parent.parent.parent == out.resolve()  # images/ab/cd/
        meta = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
        assert len(meta) == 6 and all((out / m["file_name"]).exists() for m in meta)
        assert {m["i"] for m in meta} == set(range(6))
        # Rerun: nothing sent again.
        async with cometgen.Batch(client, out_dir=out, concurrency=3) as batch:
            stats = await batch.run_all([*jobs[:6], cometgen.Job(prompt="new", id="new")])
        assert stats.skipped == 6 and stats.done == 1
        assert server.stats.requests == 7
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


async def test_failed_items_resent_only_with_retry_failed(tmp_path: Path) -> None:
    jobs = [cometgen.Job(prompt="x [[mock:malformed:1]]", id="q")]
    async with MockServer() as server, client_for(server) as client:
        async with cometgen.Batch(client, out_dir=tmp_path) as batch:
            stats = await batch.run_all(jobs)
        assert stats.failed == 1 and batch.stats.stop_reason is None
        async with cometgen.Batch(client, out_dir=tmp_path) as batch:
            await batch.run_all(jobs)
        assert server.stats.requests == 1
        async with cometgen.Batch(client, out_dir=tmp_path, retry_failed=True) as batch:
            stats = await batch.run_all(jobs)
        assert stats.done == 1 and server.stats.requests == 2


async def test_one_failure_never_cancels_siblings() -> None:
    jobs = [cometgen.Job(prompt="x [[mock:malformed]]", id="bad")] + [
        cometgen.Job(prompt=f"ok{i}", id=f"ok{i}") for i in range(8)
    ]
    async with MockServer() as server, client_for(server) as client:
        async with cometgen.Batch(client, concurrency=4) as batch:
            stats = await batch.run_all(jobs)
    assert stats.done == 8 and stats.failed == 1 and stats.maybe_billed == 1


async def test_cancelling_the_caller_cancels_cleanly(tmp_path: Path) -> None:
    jobs = [cometgen.Job(prompt=f"p{i}", id=f"p{i}") for i in range(50)]
    async with MockServer(latency=0.3) as server, client_for(server) as client:
        with anyio.move_on_after(0.5):
            async with cometgen.Batch(client, out_dir=tmp_path, concurrency=8) as batch:
                await batch.run_all(jobs)
        await anyio.sleep(0.05)
        assert client.transport.acquired_connections == 0
        # The client still works after the cancelled batch.
        assert (await client.generate("after")).ok
    records = manifest(tmp_path)
    done = {r["key"] for r in records if r["status"] == "done"}
    files = {p.name for p in tmp_path.rglob("*.jpg")}
    assert files == {f"{k}.jpg" for k in done}
    assert not [p for p in tmp_path.rglob(".*") if "tmp" in p.name]


async def test_max_cost_stops_dispatching() -> None:
    jobs = [cometgen.Job(prompt=f"p{i}", id=f"p{i}") for i in range(40)]
    async with MockServer() as server, client_for(server) as client:
        async with cometgen.Batch(client, concurrency=2, max_cost=0.5) as batch:
            stats = await batch.run_all(jobs)
    assert stats.stop_reason == "budget"
    assert 0 < stats.done < 40
    assert stats.cost <= 0.5


async def test_planned_is_exact_once_the_input_ends_and_unset_on_a_stop() -> None:
    async def source() -> AsyncIterator[cometgen.Job | cometgen.InputError]:
        yield cometgen.Job(prompt="three foxes", id="fox", n=3)
        yield cometgen.InputError("bad JSON", file="in.jsonl", line=2)
        yield cometgen.Job(prompt="a cat", id="cat")

    async with MockServer() as server, client_for(server) as client:
        async with cometgen.Batch(client, concurrency=2) as batch:
            stats = await batch.run_all(source())
        assert (stats.planned, stats.todo, stats.finished) == (5, 5, 5)
        jobs = [cometgen.Job(prompt=f"p{i}", id=f"p{i}") for i in range(40)]
        async with cometgen.Batch(client, concurrency=2, max_cost=0.5) as batch:
            stats = await batch.run_all(jobs)
        assert stats.stop_reason == "budget" and stats.planned is None


async def test_shards_partition_keys() -> None:
    jobs = [cometgen.Job(prompt=f"p{i}") for i in range(30)]
    keys: list[set[str]] = []
    async with MockServer() as server, client_for(server) as client:
        for i in range(3):
            async with cometgen.Batch(client, shard=(i, 3)) as batch:
                keys.append({o.key async for o in batch.run(jobs)})
    assert sum(len(k) for k in keys) == 30
    assert len(set.union(*keys)) == 30
    assert all(keys)


async def test_unwritable_out_dir_is_a_config_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    async with MockServer() as server, client_for(server) as client:
        with pytest.raises(cometgen.ConfigError, match="not writable"):
            async with cometgen.Batch(client, out_dir=target / "sub"):
                pass


async def test_a_cancelled_batch_raises_the_cancellation_not_broken_streams(
    tmp_path: Path,
) -> None:
    # A cancelled Batch: its workers leave (closing their end of the work stream) while the
    # producer may still hand items over. That must surface as the cancellation, never as
    # BrokenResourceError (an ExceptionGroup from Batch's exit). Cancelled at several points.
    jobs = [cometgen.Job(prompt=f"p{i}") for i in range(300)]
    async with MockServer() as server, client_for(server) as client:
        for stop_after in (0, 1, 5, 20):
            seen = 0
            with anyio.fail_after(30), anyio.CancelScope() as scope:
                async with cometgen.Batch(
                    client, out_dir=tmp_path / f"out{stop_after}", concurrency=4
                ) as batch:
                    async for _ in batch.run(jobs):
                        seen += 1
                        if seen > stop_after:
                            scope.cancel()
            assert scope.cancelled_caught
            assert seen == stop_after + 1
            # Every image a record names was written before it; nothing half-written is left.
            for record in manifest(tmp_path / f"out{stop_after}"):
                for file in record.get("files", []):  # type: ignore[attr-defined]
                    assert (tmp_path / f"out{stop_after}" / file["path"]).is_file()


def test_duplicate_keys_are_generated_once_even_with_odd_keys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Moved from the KeySet tests: dedupe must treat "", lone surrogates and non-ASCII keys
    # as ordinary distinct keys.
    from cometgen._bulk._admission import Admission
    from cometgen._bulk._job import Job, expand
    from cometgen._bulk._stats import BatchStats

    stats = BatchStats()
    admission = Admission(stats, shard=None, retry_failed=False)
    ids = ["a", "\udc80 lone surrogate", "é", "e\u0301", "a"]
    items = [expand(Job(prompt="p", id=i), default_model="m")[0] for i in ids]
    with caplog.at_level("WARNING", logger="cometgen"):
        assert [admission.admit(item) for item in items] == [True, True, True, True, False]
    assert stats.duplicates == 1
    # The warning says what happened to the line: it was not generated.
    assert [r.getMessage() for r in caplog.records] == [
        "duplicate key 'a': skipped, an earlier job has this key"]


def test_now_iso_matches_datetime() -> None:
    import datetime
    import re

    from cometgen._bulk._item_runner import now_iso

    before = datetime.datetime.now(datetime.UTC)
    text = now_iso()
    after = datetime.datetime.now(datetime.UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", text)
    parsed = datetime.datetime.fromisoformat(text)
    assert before - datetime.timedelta(milliseconds=1) <= parsed <= after


def _peak_in_flight(log: list[object], latency: float) -> int:
    """Most requests the mock held at once: each took at least ``latency`` up to its
    logged end time, so [end - latency, end] lies inside its real span (never overcounts)."""
    ends = sorted(r.t for r in log)  # type: ignore[attr-defined]
    return max(sum(1 for e in ends if e - latency <= t <= e) for t in ends)


async def test_batch_runs_at_the_clients_limits_unless_given_its_own() -> None:
    # Issue 15: Batch(client) used to replace a client's Limits(concurrency=64) with 16.
    latency = 0.3
    async with MockServer(latency=latency) as server, cometgen.AsyncClient(
        api_key="k", base_url=server.url, retry=FAST, limits=cometgen.Limits(concurrency=40)
    ) as client:
        async with cometgen.Batch(client) as batch:
            await batch.run_all([cometgen.Job(prompt=f"a{i}") for i in range(40)])
        client_peak = _peak_in_flight(list(server.stats.log), latency)
        server.stats.log.clear()
        async with cometgen.Batch(client, concurrency=5) as batch:
            await batch.run_all([cometgen.Job(prompt=f"b{i}") for i in range(20)])
        given_peak = _peak_in_flight(list(server.stats.log), latency)
    assert client_peak > 16, client_peak
    assert given_peak <= 5, given_peak
    assert client.limits.concurrency == 40  # the caller's client is left as it was


async def test_batch_limits_are_validated_by_limits() -> None:
    async with MockServer() as server, client_for(server) as client:
        with pytest.raises(cometgen.ConfigError, match=r"Limits\.concurrency must be >= 1"):
            cometgen.Batch(client, concurrency=0)
        with pytest.raises(cometgen.ConfigError, match=r"Limits\.rpm must be > 0"):
            cometgen.Batch(client, rpm=-1)


class _CountingLimiter:
    """A user's own ``Limiter``: a ``RateLimiter`` that counts the slots it grants."""

    def __init__(self) -> None:
        self.inner = cometgen.RateLimiter(concurrency=3)
        self.slots = 0

    def slot(self, images: int = 1):  # type: ignore[no-untyped-def]
        self.slots += 1
        return self.inner.slot(images)

    def snapshot(self) -> cometgen.LimiterStats:
        return self.inner.snapshot()


async def test_batch_uses_the_clients_own_limiter() -> None:
    # A client built with limiter= kept it for generate() but Batch made its own from
    # Limits: the user's limiter (a quota shared with other code) was bypassed.
    limiter = _CountingLimiter()
    async with MockServer() as server, cometgen.AsyncClient(
        api_key="k", base_url=server.url, retry=FAST, limiter=limiter
    ) as client:
        async with cometgen.Batch(client) as batch:
            stats = await batch.run_all([cometgen.Job(prompt=f"p{i}") for i in range(7)])
        assert stats.done == 7
        assert limiter.slots == 7
        # Passing a limit option gives the batch its own limiter, as documented.
        async with cometgen.Batch(client, concurrency=2) as batch:
            await batch.run_all([cometgen.Job(prompt=f"q{i}") for i in range(3)])
        assert limiter.slots == 7


async def test_with_options_limiter_replaces_the_limiter() -> None:
    limiter = _CountingLimiter()
    async with MockServer() as server, client_for(server) as client:
        copy = client.with_options(limiter=limiter)
        await copy.generate("a fox")
        await client.generate("a fox")
        assert limiter.slots == 1
        with pytest.raises(cometgen.ConfigError, match="not both"):
            client.with_options(limiter=limiter, limits=cometgen.Limits())


async def test_a_closed_batch_drops_its_per_run_key_set(tmp_path: Path) -> None:
    # One string per item (~90 MB at 1,000,000 items): the CLI reads the folder back after
    # the batch closes, and the two together peaked at 285 MB in the 1M-item scale run.
    async with MockServer() as server, client_for(server) as client:
        async with cometgen.Batch(client, out_dir=tmp_path / "out") as batch:
            async for _ in batch.run(cometgen.Job(prompt=f"k{i}") for i in range(20)):
                pass
            assert len(batch._admission._seen) == 20
        assert not batch._admission._seen
