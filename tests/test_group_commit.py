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
from cometgen._bulk import _manifest_writer
from cometgen._bulk._manifest import MANIFEST_NAME, FileRecord, ManifestRecord
from cometgen._bulk._manifest_writer import ManifestWriter
from cometgen._cli import _loop
from cometgen._cli._loop import want_uvloop
from cometgen._exceptions import ConfigError
from cometgen._files import image_path, sync_files, write_atomic
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


def test_sync_files_fsyncs_each_file_and_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.png", "b.png", "sub/c.png"):
        (tmp_path / name).write_bytes(b"x")
    synced: list[int] = []
    real_fsync = os.fsync
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

    monkeypatch.setattr(_manifest_writer, "sync_files", spy)
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

    monkeypatch.setattr(_manifest_writer, "sync_files", flaky)
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
    real = _manifest_writer.sync_files

    def spy(directory: Any, names: list[str]) -> None:
        on_disk = set(_keys(tmp_path)) if (tmp_path / MANIFEST_NAME).exists() else set()
        assert not on_disk & {n.rsplit("/", 1)[-1].rsplit(".", 1)[0] for n in names}
        synced.extend(n.rsplit("/", 1)[-1] for n in names)
        real(directory, names)

    monkeypatch.setattr(_manifest_writer, "sync_files", spy)
    jobs = [cometgen.Job(prompt=f"p {i}", id=f"p{i}") for i in range(20)]
    async with MockServer() as server, cometgen.AsyncClient(
        api_key="k", base_url=server.url, retry=FAST
    ) as client:
        async with cometgen.Batch(client, out_dir=tmp_path, concurrency=8) as batch:
            await batch.run_all(jobs)
    assert sorted(synced) == sorted(f"p{i}.jpg" for i in range(20))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.anyio
async def test_batch_fsyncs_images_and_folder_before_appending_their_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group-commit order, seen at the system calls of a real run over HTTP.

    Every ``os.fsync`` is logged with the inode it syncs; every manifest append with the
    keys it writes. An image keeps its inode through the rename, so after the run each
    record can be matched to the fsync of its image file and of the output folder."""
    events: list[tuple[str, Any]] = []
    real_fsync, real_write_all = os.fsync, _manifest_writer._write_all

    def fsync_spy(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def append_spy(fd: int, data: bytes) -> None:
        keys = [json.loads(line)["key"] for line in data.splitlines() if line.strip()]
        events.append(("append", keys))
        real_write_all(fd, data)

    monkeypatch.setattr(os, "fsync", fsync_spy)
    monkeypatch.setattr(_manifest_writer, "_write_all", append_spy)
    out = tmp_path / "out"
    jobs = [cometgen.Job(prompt=f"p {i} [[mock:slow:1:0.0{i % 5}s]]", id=f"p{i}")
            for i in range(40)]
    async with MockServer() as server, cometgen.AsyncClient(
        api_key="k", base_url=server.url, retry=FAST
    ) as client:
        async with cometgen.Batch(client, out_dir=out, concurrency=8) as batch:
            await batch.run_all(jobs)
    assert batch.stats.done == 40
    paths = {f"p{i}": out / image_path(f"p{i}", f"p{i}", None, "jpg") for i in range(40)}
    image_inode = {key: path.stat().st_ino for key, path in paths.items()}
    appended: set[str] = set()
    for position, (kind, value) in enumerate(events):
        if kind != "append":
            continue
        before = events[:position]
        for key in value:
            inode = image_inode[key]
            synced_at = max(i for i, e in enumerate(before) if e == ("fsync", inode))
            # ...and its folder (the rename) after the image, still before the record.
            folder = paths[key].parent.stat().st_ino
            assert ("fsync", folder) in before[synced_at:], key
            appended.add(key)
    assert appended == set(image_inode)


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
        assert (batch.stats.adopted, batch.stats.done) == (1, 3)
    recs = {r["key"]: r for r in map(json.loads, (tmp_path / MANIFEST_NAME).read_text()
                                      .splitlines())}
    assert "adopted" in recs["whole"]["reason"]
    assert "reason" not in recs["empty"] and "reason" not in recs["torn"]
    for key in ("empty", "torn"):  # generated again, into the images/ layout
        data = (tmp_path / recs[key]["files"][0]["path"]).read_bytes()
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
    assert len(list(out.rglob("i*.jpg"))) == 5
