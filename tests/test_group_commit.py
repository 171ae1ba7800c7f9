"""Batch images are synced per manifest flush (group commit), never after their records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cometgen
from cometgen import _files
from cometgen._bulk import _manifest
from cometgen._bulk._manifest import MANIFEST_NAME, FileRecord, ManifestRecord, ManifestWriter
from cometgen._cli import _loop
from cometgen._cli._loop import want_uvloop
from cometgen._exceptions import ConfigError
from cometgen._files import sync_files, write_atomic
from cometgen.testing import MockServer
from cometgen.testing._images import make_jpeg

FAST = cometgen.RetryPolicy(initial_delay=0.01, max_delay=0.05)


def _done(key: str, *paths: str) -> ManifestRecord:
    files = [FileRecord(path=p, sha256="0" * 64, mime_type="image/png", bytes=1) for p in paths]
    return ManifestRecord(key=key, status="done", files=files)


def _keys(out: Path) -> list[str]:
    text = (out / MANIFEST_NAME).read_text()
    return [json.loads(line)["key"] for line in text.splitlines() if line]


# --------------------------------------------------------------------------- sync_files


def test_sync_files_uses_one_syncfs_on_linux(tmp_path: Path) -> None:
    if _files._load_syncfs() is None:
        pytest.skip("no syncfs here")
    (tmp_path / "a.png").write_bytes(b"a")
    sync_files(tmp_path, ["a.png", "missing.png"])  # names are not opened with syncfs


def test_sync_files_fallback_fsyncs_each_file_and_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.png", "b.png", "sub/c.png"):
        (tmp_path / name).write_bytes(b"x")
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(_files, "_load_syncfs", lambda: None)
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    sync_files(tmp_path, ["a.png", "b.png", "sub/c.png"])
    assert len(synced) == 3 + 2  # three files, two folders
    with pytest.raises(FileNotFoundError):
        sync_files(tmp_path, ["missing.png"])


# --------------------------------------------------------------------------- writer


@pytest.mark.anyio
async def test_flush_syncs_images_before_their_records_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[list[str], list[str]]] = []

    def spy(directory: Any, names: list[str]) -> None:
        # What the manifest holds when the sync runs: none of the records naming these.
        calls.append((list(names), _keys(tmp_path)))

    monkeypatch.setattr(_manifest, "sync_files", spy)
    async with ManifestWriter(tmp_path, batch_size=2, flush_interval=3600,
                              sync_files=True) as writer:
        await write_atomic(tmp_path / "a.png", b"a", fsync=False)
        await writer.write(_done("a", "a.png"))
        await writer.write(ManifestRecord(key="f", status="failed"))
        await writer.write(ManifestRecord(key="g", status="failed"))  # no file: no sync
        await writer.flush()
        await writer.write(_done("b", "b1.png", "b2.png"))
    assert calls == [(["a.png"], []), (["b1.png", "b2.png"], ["a", "f", "g"])]
    assert _keys(tmp_path) == ["a", "f", "g", "b"]


@pytest.mark.anyio
async def test_failed_sync_keeps_records_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail = [True]

    def flaky(directory: Any, names: list[str]) -> None:
        if fail[0]:
            raise OSError(5, "I/O error")

    monkeypatch.setattr(_manifest, "sync_files", flaky)
    async with ManifestWriter(tmp_path, flush_interval=3600, sync_files=True) as writer:
        await writer.write(_done("a", "a.png"))
        with pytest.raises(OSError):
            await writer.flush()
        assert _keys(tmp_path) == []  # the record never got ahead of its image
        fail[0] = False
    assert _keys(tmp_path) == ["a"]


@pytest.mark.anyio
async def test_batch_images_are_synced_by_the_manifest_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = _manifest.sync_files

    def spy(directory: Any, names: list[str]) -> None:
        on_disk = set(_keys(tmp_path)) if (tmp_path / MANIFEST_NAME).exists() else set()
        assert not on_disk & {n.rsplit(".", 1)[0] for n in names}
        synced.extend(names)
        real(directory, names)

    monkeypatch.setattr(_manifest, "sync_files", spy)
    jobs = [cometgen.Job(prompt=f"p {i}", id=f"p{i}") for i in range(20)]
    async with MockServer() as server, cometgen.AsyncClient(
        api_key="k", base_url=server.url, retry=FAST
    ) as client:
        async with cometgen.Batch(client, out_dir=tmp_path, concurrency=8) as batch:
            await batch.run_all(jobs)
    assert sorted(synced) == sorted(f"p{i}.jpg" for i in range(20))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- adoption


@pytest.mark.anyio
async def test_resume_does_not_adopt_an_empty_or_torn_image(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_bytes(b"")  # a resumed folder
    complete = make_jpeg(16, 16)
    (tmp_path / "empty.jpg").write_bytes(b"")  # power loss before the data reached disk
    (tmp_path / "torn.jpg").write_bytes(complete[:40] + bytes(64))
    (tmp_path / "whole.jpg").write_bytes(complete)
    jobs = [cometgen.Job(prompt=k, id=k) for k in ("empty", "torn", "whole")]
    async with MockServer() as server, cometgen.AsyncClient(
        api_key="k", base_url=server.url, retry=FAST
    ) as client:
        async with cometgen.Batch(client, out_dir=tmp_path, concurrency=3) as batch:
            await batch.run_all(jobs)
        assert server.stats.requests == 2
    recs = {r["key"]: r for r in map(json.loads, (tmp_path / MANIFEST_NAME).read_text()
                                      .splitlines())}
    assert "adopted" in recs["whole"]["reason"]
    assert "reason" not in recs["empty"] and "reason" not in recs["torn"]
    for key in ("empty", "torn"):
        data = (tmp_path / f"{key}.jpg").read_bytes()
        assert data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")


# --------------------------------------------------------------------------- --loop


def test_loop_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMETGEN_LOOP", raising=False)
    assert want_uvloop("asyncio") is False
    monkeypatch.setenv("COMETGEN_LOOP", "asyncio")
    assert want_uvloop(None) is False
    monkeypatch.setenv("COMETGEN_LOOP", "fast")
    with pytest.raises(ConfigError):
        want_uvloop(None)
    monkeypatch.setattr(_loop, "_uvloop_available", lambda: False)
    assert want_uvloop("auto") is False
    with pytest.raises(ConfigError, match="cometgen\\[speed\\]"):
        want_uvloop("uvloop")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_cli_run_on_each_loop(tmp_path: Path, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(f'{{"id": "i{i}", "prompt": "p {i}"}}\n' for i in range(5)))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "cometgen", "run", str(prompts), "-o", str(out), "--quiet",
         "--json", "--loop", loop],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("COMETAPI_")},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["done"] == 5
    assert len(list(out.glob("i*.jpg"))) == 5


# --------------------------------------------------------------------------- ImageWriter


@pytest.mark.anyio
async def test_image_writer_writes_atomically_and_reports_errors(tmp_path: Path) -> None:
    import hashlib
    import threading

    import anyio

    from cometgen._image_writer import ImageWriter

    async with ImageWriter() as writer:
        results: dict[int, str] = {}

        async def one(i: int) -> None:
            results[i] = await writer.write(tmp_path / f"{i}.png", b"x" * i)

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
        with pytest.raises(FileNotFoundError):
            await writer.write(tmp_path / "missing" / "a.png", b"a")
    assert results == {i: hashlib.sha256(b"x" * i).hexdigest() for i in range(50)}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{i}.png" for i in range(50)
    )
    assert not [t for t in threading.enumerate() if t.name == "cometgen-image-writer"]


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["scope", "task.cancel"])
async def test_image_writer_cancellation_waits_for_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A cancelled caller gets its cancellation only once the queued write is settled."""
    import asyncio
    import time

    import anyio

    from cometgen import _image_writer
    from cometgen._image_writer import ImageWriter

    real = _image_writer._write_atomic_sync

    def slow_write(path: str, data: bytes, *args: Any) -> str:
        time.sleep(0.3)
        return real(path, data, *args)

    monkeypatch.setattr(_image_writer, "_write_atomic_sync", slow_write)
    target = tmp_path / "a.png"
    async with ImageWriter() as writer:
        started = time.monotonic()
        if how == "scope":
            with anyio.move_on_after(0.05) as scope:
                await writer.write(target, b"png")
            assert scope.cancelled_caught
            # Every cancel request the scope delivered meanwhile was taken back.
            current = asyncio.current_task()
            assert current is not None and current.cancelling() == 0
        else:
            task = asyncio.ensure_future(writer.write(target, b"png"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # The cancellation was held until the image was renamed into place.
        assert target.read_bytes() == b"png"
        assert time.monotonic() - started >= 0.25


# --------------------------------------------------------------------------- early writeback


@pytest.mark.anyio
@pytest.mark.parametrize("direct_io", [True, False])
async def test_image_writer_starts_writeback_of_large_buffered_images_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct_io: bool
) -> None:
    import hashlib

    from cometgen._config import DIRECT_WRITE_BYTES, EARLY_WRITEBACK_BYTES
    from cometgen._image_writer import ImageWriter

    started: list[int] = []
    direct: list[int] = []
    real, real_direct = _files.start_writeback, _files.write_direct_prefix

    def spy(fd: int) -> None:
        started.append(os.fstat(fd).st_size)  # called on the complete, still open temp file
        real(fd)

    def direct_spy(fd: int, data: bytes) -> int:
        # Without direct I/O (a file system refusing O_DIRECT) nothing is written direct.
        written = real_direct(fd, data) if direct_io else 0
        direct.append(written)
        return written

    monkeypatch.setattr(_files, "start_writeback", spy)
    monkeypatch.setattr(_files, "write_direct_prefix", direct_spy)
    size = max(EARLY_WRITEBACK_BYTES, DIRECT_WRITE_BYTES)
    big, small = os.urandom(size), b"\x89PNG" + os.urandom(100)
    async with ImageWriter() as writer:
        assert await writer.write(tmp_path / "big.png", big) == hashlib.sha256(big).hexdigest()
        await writer.write(tmp_path / "small.png", small)
    assert len(direct) == 1  # only the big one is tried
    # An image that went direct has nothing in the page cache to write back.
    assert started == ([] if direct[0] else [len(big)])
    assert (tmp_path / "big.png").read_bytes() == big
    assert (tmp_path / "small.png").read_bytes() == small


def test_start_writeback_is_best_effort(tmp_path: Path) -> None:
    with open(tmp_path / "a.png", "wb") as f:
        f.write(os.urandom(300_000))
        f.flush()
        _files.start_writeback(f.fileno())  # dirty pages: writeback starts, nothing waits
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        _files.start_writeback(fd)  # a directory: the kernel refuses, silently ignored
    finally:
        os.close(fd)
    assert (tmp_path / "a.png").stat().st_size == 300_000
