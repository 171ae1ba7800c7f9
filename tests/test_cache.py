"""The cross-run answer cache: client level, ``cometgen run --cache``, crash safety under
kill -9, sharing between processes, LRU eviction and ``cometgen cache stats|prune``."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cometgen
from cometgen import _wire as wire
from cometgen._cache import ImageCache, _Entry, _split
from cometgen._exceptions import ServerError
from cometgen._retry import RetryPolicy
from cometgen.testing import MockServer, ThreadedMockServer
from tests._cli import KEY, latest, run_cli

pytestmark = pytest.mark.anyio
FLASH = "gemini-3.1-flash-image"


@pytest.fixture
def mock() -> Iterator[ThreadedMockServer]:
    with MockServer(api_key=KEY).run_in_thread() as server:
        yield server


def _response(data: bytes, text: str = "t") -> wire.GenerateContentResponse:
    parts = [wire.Part(text=text), wire.Part(inline_data=wire.InlineData("image/png", data))]
    return wire.GenerateContentResponse(
        candidates=[wire.Candidate(content=wire.Content(role="model", parts=parts),
                                   finish_reason="STOP")])


async def test_client_cache_answers_repeats_without_sending(tmp_path: Path) -> None:
    async with MockServer() as server:
        async with cometgen.AsyncClient(api_key="k", base_url=server.url, model=FLASH,
                                        cache=tmp_path / "c", on_no_image="return") as client:
            first = await client.generate("a heron", seed=3)
            again = await client.generate("a heron", seed=3)
            other = await client.generate("a heron", seed=4)  # another request
            assert not first.cached and again.cached and not other.cached
            assert again.images[0].data == first.images[0].data and again.attempts == 0
            assert server.stats.billed_total == 2
            # blocked answers are answers: cached too
            blocked = [await client.generate("[[mock:block]] x") for _ in range(2)]
            assert blocked[0].outcome == blocked[1].outcome == "blocked" and blocked[1].cached
            assert server.stats.requests == 3
            # failures are not cached: the next call is sent
            once = client.with_options(retry=RetryPolicy(max_attempts=1))
            with pytest.raises(ServerError):
                await once.generate("[[mock:500:1]] y")
            assert (await once.generate("[[mock:500:1]] y")).ok
            assert server.stats.requests == 5


def test_two_runs_into_two_folders_bill_once(mock: ThreadedMockServer, tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"prompt": "a moth", "id": "m"}\n{"prompt": "a wasp", "n": 2}\n'
                   '{"prompt": "[[mock:no_image]] a void", "id": "v"}\n')
    cache = tmp_path / "cache"
    common = ("--base-url", mock.url, "--api-key", KEY, "--model", FLASH, "--json", "-q")
    first = run_cli("run", str(inp), "-o", str(tmp_path / "a"), "--cache", str(cache), *common)
    assert first.returncode == 0, first.stderr
    assert mock.stats.billed_total == 4  # the two wasps are two generations
    second = run_cli("run", str(inp), "-o", str(tmp_path / "b"), *common,
                     COMETGEN_CACHE=str(cache))
    summary = json.loads(second.stdout)
    assert mock.stats.billed_total == 4 and mock.stats.requests == 4
    assert summary["cached"] == 4 and summary["cost_usd"] == 0 and summary["done"] == 3
    a, b = latest(tmp_path / "a"), latest(tmp_path / "b")
    assert set(a) == set(b)
    for key, rec in b.items():
        assert rec["cached"] is True and rec["cost"] == 0 and rec["status"] == a[key]["status"]
        assert [f["sha256"] for f in rec.get("files", [])] == [
            f["sha256"] for f in a[key].get("files", [])]  # type: ignore[union-attr]
    assert len([r for r in b.values() if r.get("prompt") == "a wasp"]) == 2
    assert b["v"]["status"] == "no_image"  # a no-image answer is an answer: cached too


_INSERTER = textwrap.dedent("""
    import os, sys, anyio
    from cometgen import _wire as wire
    from cometgen._cache import ImageCache, _Entry, _split

    async def main() -> None:
        cache = ImageCache(sys.argv[1])
        i = 0
        while True:
            data = os.urandom(1 << 18) + i.to_bytes(4, "big")
            part = wire.Part(inline_data=wire.InlineData("image/png", data))
            response = wire.GenerateContentResponse(candidates=[wire.Candidate(
                content=wire.Content(role="model", parts=[part]), finish_reason="STOP")])
            await cache.put(f"{os.getpid()}-{i}", "m", response)
            i += 1
            if i == 3:
                print("ready", flush=True)

    anyio.run(main)
""")


def test_kill_9_mid_insert_leaves_the_cache_consistent(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    rng = random.Random(5)
    for _ in range(4):
        # Two inserters at once, like two runs sharing one cache, each killed mid-stream.
        procs = [subprocess.Popen([sys.executable, "-c", _INSERTER, str(folder)],
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.3))
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
    cache = ImageCache(folder)
    entries = list((folder / "entries").rglob("*.json"))
    assert len(entries) >= 24
    for path in entries:
        response = cache.get_sync(path.stem)
        assert response is not None, path  # every entry reads back whole
        content = response.candidates[0].content
        assert content is not None and content.parts[0].inline_data is not None
        assert len(content.parts[0].inline_data.data) == (1 << 18) + 4
    before = cache.stats()
    old = time.time() - 3600  # age everything past the grace period
    for leftover in [*(folder / "tmp").iterdir(), *(folder / "objects").rglob("*")]:
        os.utime(leftover, (old, old))
    after = cache.prune()
    assert after.entries == before.entries and after.temp_files == 0
    assert after.blobs == after.entries  # orphans of killed inserts are gone (or never were)


def test_lru_eviction_and_prune(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "c")
    for i, key in enumerate(("k1", "k2", "k3")):
        cache._put_sync(key, *_entry(os.urandom(100_000)))
        t = time.time() - 100 + i
        os.utime(cache._entry_path(key), (t, t))
    assert cache.get_sync("k1") is not None  # k1 is now the most recently used
    left = cache.prune(250_000)
    assert left.entries == 2 and left.blobs == 2 and left.bytes <= 250_000
    assert cache.get_sync("k2") is None and cache.get_sync("k1") is not None
    # a size cap on the cache itself evicts as inserts go
    small = ImageCache(tmp_path / "s", max_bytes=250_000)
    for key in ("a", "b", "c", "d"):
        small._put_sync(key, *_entry(os.urandom(100_000)))
    assert small.stats().bytes <= 250_000 and small.get_sync("d") is not None


def _entry(data: bytes) -> tuple[_Entry, list[bytes]]:
    return _split("m", _response(data))


def test_equal_images_are_stored_once(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "c")
    data = os.urandom(5000)
    cache._put_sync("x", *_entry(data))
    cache._put_sync("y", *_entry(data))
    assert cache.stats().entries == 2 and cache.stats().blobs == 1


def test_cli_cache_stats_and_prune(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "c")
    for key in ("a", "b"):
        cache._put_sync(key, *_entry(os.urandom(50_000)))
    stats = run_cli("cache", "stats", str(tmp_path / "c"), "--json")
    assert json.loads(stats.stdout)["entries"] == 2
    pruned = run_cli("cache", "prune", "--max-size", "60K", "--json",
                     COMETGEN_CACHE=str(tmp_path / "c"))
    assert json.loads(pruned.stdout)["entries"] == 1
    bad = run_cli("cache", "prune", str(tmp_path / "c"), "--max-size", "lots")
    assert bad.returncode == 2 and "expected a size like 500M" in bad.stderr
    missing = run_cli("cache", "stats", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such cache folder" in missing.stderr


async def test_a_cache_write_error_never_loses_the_answer(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    async with MockServer() as server:
        async with cometgen.AsyncClient(api_key="k", base_url=server.url, model=FLASH,
                                        cache=tmp_path / "c") as client:
            (tmp_path / "c" / "tmp").rmdir()  # every insert now fails to write
            result = await client.generate("a newt")
    assert result.ok and not result.cached
    assert any("cannot add to the cache" in r.getMessage() for r in caplog.records)
