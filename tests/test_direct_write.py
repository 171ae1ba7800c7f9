"""Durable large writes skip the page cache (O_DIRECT), with a buffered fallback."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any

import pytest

from cometgen import _direct_write, _files
from cometgen._config import DIRECT_WRITE_BYTES
from cometgen._direct_write import DIRECT_ALIGN, write_direct_prefix
from cometgen._files import write_atomic

O_DIRECT = getattr(os, "O_DIRECT", 0)


def _fs_allows_direct(directory: Path) -> bool:
    """Probe the file system the way the product does: can O_DIRECT be switched on?"""
    if not O_DIRECT:
        return False
    fd = os.open(directory / ".probe", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | O_DIRECT)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(directory / ".probe")


def _write(path: Path, data: bytes) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        direct = write_direct_prefix(fd, data)
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT, "O_DIRECT left on"
        os.write(fd, data[direct:])
    finally:
        os.close(fd)
    return direct


@pytest.mark.parametrize(
    "size", [0, 1, DIRECT_ALIGN - 1, DIRECT_ALIGN, DIRECT_ALIGN + 1, 1_525_181, 3 << 20]
)
def test_whole_blocks_go_direct_and_the_tail_buffered(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    direct = _write(tmp_path / "a.png", data)
    assert (tmp_path / "a.png").read_bytes() == data
    whole_blocks = size - size % DIRECT_ALIGN
    assert direct == (whole_blocks if _fs_allows_direct(tmp_path) else 0)


def test_file_system_without_direct_io_gets_everything_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fcntl.fcntl

    def refusing(fd: int, cmd: int, arg: int = 0) -> Any:
        if cmd == fcntl.F_SETFL and arg & O_DIRECT:
            raise OSError(errno.EINVAL, "no direct I/O here")
        return real(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", refusing)
    data = os.urandom(1 << 20)
    assert _write(tmp_path / "a.png", data) == 0
    assert (tmp_path / "a.png").read_bytes() == data


@pytest.mark.skipif(not O_DIRECT, reason="no O_DIRECT on this platform")
@pytest.mark.parametrize("code", [errno.EINVAL, errno.EOPNOTSUPP])
def test_write_refused_with_direct_io_gets_everything_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    # EINVAL: the device wants a larger alignment; EOPNOTSUPP: a file system that accepts
    # the flag but not the write.
    real = os.write

    def refusing(fd: int, data: Any) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT:
            raise OSError(code, os.strerror(code))
        return real(fd, data)

    monkeypatch.setattr(os, "write", refusing)
    data = os.urandom((1 << 20) + 5)
    assert _write(tmp_path / "a.png", data) == 0
    assert (tmp_path / "a.png").read_bytes() == data


@pytest.mark.skipif(not O_DIRECT, reason="no O_DIRECT on this platform")
def test_other_write_errors_propagate_with_direct_io_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.write
    seen: list[int] = []

    def full_disk(fd: int, data: Any) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT:
            seen.append(fd)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    if not _fs_allows_direct(tmp_path):
        pytest.skip("this file system has no direct I/O")
    fd = os.open(tmp_path / "a.png", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError) as info:
            write_direct_prefix(fd, os.urandom(1 << 20))
        assert info.value.errno == errno.ENOSPC
        assert seen == [fd]
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT
    finally:
        os.close(fd)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = _files.write_direct_prefix

    def spy(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(_files, "write_direct_prefix", spy)
    return calls


@pytest.mark.anyio
async def test_durable_large_writes_use_direct_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _spy(monkeypatch)
    big = os.urandom(DIRECT_WRITE_BYTES + 123)
    small = os.urandom(DIRECT_WRITE_BYTES - 1)
    await write_atomic(tmp_path / "big.png", big, fsync=True)
    await write_atomic(tmp_path / "small.png", small, fsync=True)
    await write_atomic(tmp_path / "lazy.png", big, fsync=False)  # page cache: not durable
    _files.write_atomic_sync(tmp_path / "sync.png", big, fsync=True)
    assert calls == [len(big), len(big)]
    for name, data in (("big", big), ("small", small), ("lazy", big), ("sync", big)):
        assert (tmp_path / f"{name}.png").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "big.png", "lazy.png", "small.png", "sync.png"
    ]


def test_batch_writes_synced_later_use_direct_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batch's image writer: no fsync now, made durable by the next manifest sync.
    calls = _spy(monkeypatch)
    data = os.urandom(DIRECT_WRITE_BYTES * 2 + 1)
    _files._write_atomic_sync(str(tmp_path / "a.png"), data, False, True, True)
    assert calls == [len(data)]
    assert (tmp_path / "a.png").read_bytes() == data


def test_buffers_are_reused_and_at_most_four_kept() -> None:
    pool = _direct_write._BufferPool()
    first = pool.take(1_500_000)
    assert len(first) % DIRECT_ALIGN == 0 and len(first) >= 1_500_000
    pool.give(first)
    assert pool.take(1_000_000) is first
    taken = [first] + [pool.take(10) for _ in range(4)]
    for buf in taken:
        pool.give(buf)
    assert [buf.closed for buf in taken] == [False] * 4 + [True]
    assert pool.take(10) is first


def test_large_data_goes_through_a_bounded_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A merged manifest can be hundreds of MB: it is copied and written piece by piece.
    sizes: list[int] = []
    real = _direct_write._pool.take

    def spy(size: int) -> Any:
        sizes.append(size)
        return real(size)

    monkeypatch.setattr(_direct_write._pool, "take", spy)
    data = os.urandom(2 * _direct_write._PIECE + 3 * DIRECT_ALIGN + 7)
    direct = _write(tmp_path / "a.jsonl", data)
    assert (tmp_path / "a.jsonl").read_bytes() == data
    if _fs_allows_direct(tmp_path):
        assert direct == len(data) - 7
        assert sizes == [_direct_write._PIECE]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fsync", "synced_later", "direct"),
    [(True, False, True), (False, True, True), (False, False, False)],
)
async def test_streamed_writes_go_direct_chunk_by_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool, synced_later: bool,
    direct: bool,
) -> None:
    # Larger than one worker-thread call: streamed in 1 MiB chunks, each aligned.
    calls = _spy(monkeypatch)
    data = os.urandom(_files.SMALL_WRITE + (3 << 20) + 5)
    await write_atomic(tmp_path / "big.png", data, fsync=fsync, synced_later=synced_later)
    assert (tmp_path / "big.png").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["big.png"]
    # Every whole chunk is tried; the 5-byte last one is too small to bother.
    assert calls == ([1 << 20] * 7 if direct else [])
