from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from cometgen._bulk import _manifest_writer
from cometgen._bulk._manifest import (
    MANIFEST_NAME,
    METADATA_NAME,
    FileRecord,
    ManifestRecord,
    ManifestState,
    OutputLockedError,
    load_manifest,
    should_send,
    summarize,
    utc_now,
)
from cometgen._bulk._manifest_writer import ManifestWriter
from cometgen._bulk._metadata import write_metadata_jsonl
from cometgen._files import cleanup_temp_files, image_file_name, write_atomic


def _lines(out: Path) -> list[dict[str, Any]]:
    text = (out / MANIFEST_NAME).read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def _rec(key: str, status: str = "done", **kw: Any) -> ManifestRecord:
    return ManifestRecord(key=key, status=status, **kw)


@pytest.mark.anyio
async def test_round_trip(tmp_path: Path) -> None:
    rec = ManifestRecord(
        key="k1",
        id="cat",
        status="done",
        files=[FileRecord(path="images/cat.png", sha256="ab" * 32, mime_type="image/png", bytes=3)],
        text=["here you go"],
        model="gemini-2.5-flash-image",
        prompt="a cat",
        usage={"totalTokenCount": 1300},
        cost=0.039,
        attempts=2,
        maybe_billed=True,
        latency=1.5,
        started_at=utc_now(),
        finished_at=utc_now(),
        metadata={"style": "noir"},
    )
    async with ManifestWriter(tmp_path) as writer:
        await writer.write(rec)
        await writer.write(_rec("k2", "failed", reason="HTTP 503", error_type="ServerError"))
    raw = (tmp_path / MANIFEST_NAME).read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 2
    decoded = [msgspec.json.decode(line, type=ManifestRecord) for line in raw.splitlines()]
    assert decoded[0] == rec
    assert decoded[1].reason == "HTTP 503"
    assert "files" not in _lines(tmp_path)[1]  # omit_defaults keeps lines small
    state = load_manifest(tmp_path)
    assert state.status("k1") == "done" and state.status("k2") == "failed"
    assert state.status("nope") is None
    assert state.done_keys == {"k1"}
    assert state.maybe_billed_keys == {"k1"}
    assert state.counts() == {"done": 1, "blocked": 0, "no_image": 0, "failed": 1}
    assert len(state) == 2 and "k1" in state and state.corrupt_lines == 0
    assert utc_now().endswith("Z")


def test_missing_manifest_is_empty_state(tmp_path: Path) -> None:
    state = load_manifest(tmp_path / "new")
    assert len(state) == 0 and state.lines == 0
    assert summarize(tmp_path)["total"] == 0


@pytest.mark.anyio
async def test_last_record_per_key_wins(tmp_path: Path) -> None:
    async with ManifestWriter(tmp_path) as writer:
        await writer.write(_rec("a", "failed", maybe_billed=True))
        await writer.write(_rec("b", "done"))
        await writer.write(_rec("a", "done"))
        await writer.write(_rec("b", "blocked"))
        await writer.write(_rec("c", "failed"))
        await writer.write(_rec("c", "failed", maybe_billed=True))
    state = load_manifest(tmp_path)
    assert state.latest == {"a": "done", "b": "blocked", "c": "failed"}
    assert state.maybe_billed_keys == {"c"}
    assert state.lines == 6


@pytest.mark.anyio
async def test_counting_leaves_the_fingerprints_out(tmp_path: Path) -> None:
    # A fingerprint string per key was most of a 1M-key folder's state (198 against 92 MB
    # read back); counts (the run's summary, ``status``) do not need them.
    async with ManifestWriter(tmp_path) as writer:
        await writer.write(_rec("a", "done", fingerprint="f" * 20, cost=0.5))
        await writer.write(_rec("b", "failed", fingerprint="e" * 20, maybe_billed=True))
    full, lean = load_manifest(tmp_path), load_manifest(tmp_path, fingerprints=False)
    assert full.fingerprints == {"a": "f" * 20, "b": "e" * 20}
    assert lean.fingerprints == {}
    assert lean.latest == full.latest and lean.maybe_billed_keys == full.maybe_billed_keys
    assert lean.spent == full.spent == 0.5
    summary = summarize(tmp_path)
    assert summary["total"] == 2 and summary["done"] == 1 and summary["failed"] == 1
    assert summary["maybe_billed"] == 1 and summary["cost_usd"] == 0.5


@pytest.mark.anyio
async def test_torn_last_line_is_skipped_and_fixed_by_next_writer(tmp_path: Path) -> None:
    async with ManifestWriter(tmp_path) as writer:
        await writer.write(_rec("a"))
    with open(tmp_path / MANIFEST_NAME, "ab") as f:
        f.write(b'{"key":"b","stat')  # kill -9 mid-line
    state = load_manifest(tmp_path)
    assert state.latest == {"a": "done"} and state.corrupt_lines == 1

    async with ManifestWriter(tmp_path) as writer:
        await writer.write(_rec("c"))
    raw = (tmp_path / MANIFEST_NAME).read_bytes()
    assert raw.endswith(b'{"key":"b","stat\n{"key":"c","status":"done"}\n')
    state = load_manifest(tmp_path)
    assert state.latest == {"a": "done", "c": "done"} and state.corrupt_lines == 1


def test_invalid_lines_are_never_fatal(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_bytes(
        b'{"key":"a","status":"done"}\n'
        b"\n"
        b"not json\n"
        b'{"key":1,"status":"done"}\n'
        b'{"status":"done"}\n'
        b"\xff\xfe\n"
        b'{"key":"b","status":"failed","extra":{"x":[1,2]}}\n'
    )
    state = load_manifest(tmp_path)
    assert state.latest == {"a": "done", "b": "failed"}
    assert state.corrupt_lines == 4  # the blank line is not counted
    assert summarize(tmp_path)["corrupt_lines"] == 4


@pytest.mark.parametrize(
    ("status", "retry_failed", "expected"),
    [
        (None, False, True),
        (None, True, True),
        ("done", False, False),
        ("done", True, False),
        ("blocked", False, False),
        ("blocked", True, False),
        ("no_image", False, False),
        ("no_image", True, False),
        ("failed", False, False),
        ("failed", True, True),
        ("from_the_future", False, False),
        ("from_the_future", True, True),
    ],
)
def test_should_send(status: str | None, retry_failed: bool, expected: bool) -> None:
    state = ManifestState("unused")
    if status is not None:
        state.latest["k"] = status
    assert should_send(state, "k", retry_failed=retry_failed) is expected


@pytest.mark.anyio
async def test_batches_flush_on_size_and_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    async with ManifestWriter(tmp_path, batch_size=3, flush_interval=3600) as writer:
        await writer.write(_rec("a"))
        await writer.write(_rec("b"))
        assert (tmp_path / MANIFEST_NAME).read_bytes() == b""
        fsyncs.clear()
        await writer.write(_rec("c"))
        assert [r["key"] for r in _lines(tmp_path)] == ["a", "b", "c"]
        assert fsyncs  # one batch, one fsync
        await writer.write(_rec("d"))
        await writer.flush()
        assert len(_lines(tmp_path)) == 4
        await writer.write(_rec("e"))
    assert [r["key"] for r in _lines(tmp_path)] == ["a", "b", "c", "d", "e"]


@pytest.mark.anyio
async def test_flush_interval_flushes_in_background(tmp_path: Path) -> None:
    async with ManifestWriter(tmp_path, batch_size=1000, flush_interval=0.02) as writer:
        await writer.write(_rec("a"))
        with anyio.fail_after(5):
            while not (tmp_path / MANIFEST_NAME).read_bytes():
                await anyio.sleep(0.01)
        assert _lines(tmp_path) == [{"key": "a", "status": "done"}]


@pytest.mark.anyio
async def test_cancellation_still_flushes_buffered_records(tmp_path: Path) -> None:
    with anyio.CancelScope() as scope:
        async with ManifestWriter(tmp_path, flush_interval=3600) as writer:
            await writer.write(_rec("a"))
            await writer.write(_rec("b"))
            scope.cancel()
            await anyio.sleep(1)
    assert scope.cancelled_caught
    assert [r["key"] for r in _lines(tmp_path)] == ["a", "b"]


@pytest.mark.anyio
async def test_caller_exception_propagates_unwrapped(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        async with ManifestWriter(tmp_path) as writer:
            await writer.write(_rec("a"))
            raise KeyError("boom")
    assert [r["key"] for r in _lines(tmp_path)] == ["a"]


@pytest.mark.anyio
async def test_second_writer_is_locked_out(tmp_path: Path) -> None:
    async with ManifestWriter(tmp_path):
        with pytest.raises(OutputLockedError):
            async with ManifestWriter(tmp_path):
                pass
    async with ManifestWriter(tmp_path):  # released on close
        pass


@pytest.mark.anyio
async def test_partial_append_is_rolled_back_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_all = _manifest_writer._write_all
    calls = {"n": 0}

    def half_then_enospc(fd: int, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            real_write_all(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, data)

    async with ManifestWriter(tmp_path, flush_interval=3600) as writer:
        await writer.write(_rec("a"))
        await writer.flush()
        monkeypatch.setattr(_manifest_writer, "_write_all", half_then_enospc)
        await writer.write(_rec("b"))
        with pytest.raises(OSError) as info:
            await writer.flush()
        assert info.value.errno == errno.ENOSPC
        assert [r["key"] for r in _lines(tmp_path)] == ["a"]  # no torn half line
        await writer.flush()  # space is back: the buffered line is retried
    assert [r["key"] for r in _lines(tmp_path)] == ["a", "b"]


@pytest.mark.anyio
async def test_background_flush_error_surfaces_on_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: ManifestWriter, fd: int, data: bytes) -> None:
        raise OSError(errno.EIO, "I/O error")

    writer = ManifestWriter(tmp_path, batch_size=1000, flush_interval=0.01)
    async with writer:
        monkeypatch.setattr(ManifestWriter, "_append", broken)
        await writer.write(_rec("a"))
        with anyio.fail_after(5):
            while writer._error is None:
                await anyio.sleep(0.01)
        with pytest.raises(OSError):
            await writer.write(_rec("b"))
        monkeypatch.undo()
    assert [r["key"] for r in _lines(tmp_path)] == ["a"]  # kept and written on close


def test_writer_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ManifestWriter(tmp_path, batch_size=0)
    with pytest.raises(ValueError):
        ManifestWriter(tmp_path, flush_interval=0)


# --------------------------------------------------------------------------- metadata.jsonl


async def _finish(
    out: Path,
    writer: ManifestWriter,
    key: str,
    n: int = 1,
    status: str = "done",
    **kw: Any,
) -> None:
    files = []
    for i in range(n if status == "done" else 0):
        name = image_file_name(key, kw.get("id"), i if n > 1 else None, "png")
        data = f"{key}-{i}".encode()
        digest = await write_atomic(out / name, data, fsync=False)
        files.append(FileRecord(path=name, sha256=digest, mime_type="image/png", bytes=len(data)))
    # The record is written only after the files are in place.
    await writer.write(ManifestRecord(key=key, status=status, files=files, **kw))


@pytest.mark.anyio
async def test_metadata_jsonl_imagefolder_layout(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "in-sub.png").write_bytes(b"x")
    async with ManifestWriter(tmp_path) as writer:
        await _finish(
            tmp_path,
            writer,
            "cat",
            prompt="a cat",
            model="m",
            id="cat",
            metadata={"style": "noir", "id": "user-id", "seed": 7},
        )
        await _finish(tmp_path, writer, "dogs", n=2, prompt="dogs", metadata=["x", 1])
        await _finish(tmp_path, writer, "a/b", prompt="slash")
        await _finish(tmp_path, writer, "bad", status="blocked", prompt="nope")
        await _finish(tmp_path, writer, "flip", prompt="done then failed")
        await writer.write(_rec("flip", "failed"))
        await writer.write(_rec("late", "failed"))
        await _finish(tmp_path, writer, "late", prompt="failed then done")
        await writer.write(
            _rec(
                "ghost",
                files=[FileRecord(path="gone.png", sha256="", mime_type="", bytes=0)],
            )
        )
        await writer.write(
            _rec("sub", files=[FileRecord(path="sub/in-sub.png", sha256="", mime_type="", bytes=1)])
        )
        await writer.write(
            _rec("evil", files=[FileRecord(path="../x.png", sha256="", mime_type="", bytes=0)])
        )
    with open(tmp_path / MANIFEST_NAME, "ab") as f:
        f.write(b'{"key":"torn"')

    count = write_metadata_jsonl(tmp_path)
    rows = [json.loads(x) for x in (tmp_path / METADATA_NAME).read_text().splitlines()]
    assert count == len(rows) == 6
    assert sorted(r["key"] for r in rows) == ["a/b", "cat", "dogs", "dogs", "late", "sub"]
    for row in rows:
        assert not os.path.isabs(row["file_name"]) and "\\" not in row["file_name"]
        assert (tmp_path / row["file_name"]).is_file()
        assert {"file_name", "prompt", "id", "key", "model"} <= row.keys()
    assert len({r["file_name"] for r in rows}) == 6
    assert next(r for r in rows if r["key"] == "cat")["file_name"] == "cat.png"
    cat = next(r for r in rows if r["key"] == "cat")
    assert cat["id"] == "cat" and cat["model"] == "m" and cat["prompt"] == "a cat"
    assert cat["style"] == "noir" and cat["seed"] == 7 and cat["metadata_id"] == "user-id"
    dog = next(r for r in rows if r["key"] == "dogs")
    assert dog["metadata"] == ["x", 1] and dog["id"] is None
    # Rebuilding replaces the file atomically and leaves no temp file.
    assert write_metadata_jsonl(tmp_path) == 6
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert summarize(tmp_path) == {
        "total": 9,
        "done": 7,
        "blocked": 1,
        "no_image": 0,
        "failed": 1,
        "maybe_billed": 0,
        "corrupt_lines": 1,
        "cost_usd": 0.0,
        "endpoint": None,
    }


def test_metadata_jsonl_without_manifest_is_empty(tmp_path: Path) -> None:
    assert write_metadata_jsonl(tmp_path) == 0
    assert (tmp_path / METADATA_NAME).read_bytes() == b""


@pytest.mark.anyio
async def test_metadata_jsonl_from_explicit_manifest_path(tmp_path: Path) -> None:
    async with ManifestWriter(tmp_path) as writer:
        await _finish(tmp_path, writer, "one", prompt="p")
    other = tmp_path / "copy.jsonl"
    other.write_bytes((tmp_path / MANIFEST_NAME).read_bytes())
    (tmp_path / MANIFEST_NAME).unlink()
    assert write_metadata_jsonl(tmp_path, other) == 1


_CRASH_CHILD = """
import os, sys, anyio
from cometgen._files import cleanup_temp_files, image_file_name, write_atomic
from cometgen._bulk._manifest import FileRecord, ManifestRecord
from cometgen._bulk._manifest_writer import ManifestWriter

async def main(out):
    async with ManifestWriter(out, batch_size=4, flush_interval=0.01) as writer:
        i = 0
        while True:
            key = f"k{i}"
            name = image_file_name(key, None, None, "png")
            data = os.urandom(200_000)
            sha = await write_atomic(os.path.join(out, name), data)
            await writer.write(ManifestRecord(key=key, status="done", files=[
                FileRecord(path=name, sha256=sha, mime_type="image/png", bytes=len(data))]))
            i += 1

anyio.run(main, sys.argv[1])
"""


@pytest.mark.anyio
async def test_kill_9_leaves_a_consistent_folder(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _CRASH_CHILD, str(tmp_path)])
    try:
        with anyio.fail_after(30):
            while len(load_manifest(tmp_path)) < 20:
                await anyio.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    state = load_manifest(tmp_path)
    assert state.corrupt_lines <= 1
    for line in (tmp_path / MANIFEST_NAME).read_bytes().splitlines():
        try:
            rec = msgspec.json.decode(line, type=ManifestRecord)
        except msgspec.DecodeError:
            continue
        for f in rec.files:  # every recorded image is complete
            assert hashlib.sha256((tmp_path / f.path).read_bytes()).hexdigest() == f.sha256
    cleanup_temp_files(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    async with ManifestWriter(tmp_path) as writer:  # resumes on a fresh line
        await writer.write(_rec("after"))
    assert load_manifest(tmp_path).status("after") == "done"


def test_a_failure_no_request_left_for_is_resent_without_retry_failed(tmp_path: Path) -> None:
    lines = [
        {"key": "conn", "status": "failed", "error_type": "ConnectError"},
        {"key": "pool", "status": "failed", "error_type": "PoolTimeout"},
        # Sent and maybe billed before the connect failure: only with retry_failed.
        {"key": "billed", "status": "failed", "error_type": "ConnectError",
         "maybe_billed": True},
        {"key": "http", "status": "failed", "error_type": "ServerError"},
        {"key": "later", "status": "failed", "error_type": "ConnectError"},
        {"key": "later", "status": "failed", "error_type": "ReadTimeout"},
        {"key": "fixed", "status": "failed", "error_type": "ConnectTimeout"},
        {"key": "fixed", "status": "done"},
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    state = load_manifest(tmp_path)
    assert state.never_sent == {"conn", "pool"}
    sent = {k for k in state.latest if should_send(state, k, retry_failed=False)}
    assert sent == {"conn", "pool"}
    assert {k for k in state.latest if should_send(state, k, retry_failed=True)} == {
        "conn", "pool", "billed", "http", "later"}
