"""``Image.save``: atomic, into a file or a directory, nothing left behind on failure."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from cometgen import Image

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(5000)
pytestmark = pytest.mark.anyio


async def test_save_to_a_file_path(tmp_path: Path) -> None:
    saved = await Image(PNG).save(tmp_path / "cat.png")
    assert saved == tmp_path / "cat.png" and saved.read_bytes() == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.png"]  # no temp file left


async def test_save_to_a_directory_names_the_file(tmp_path: Path) -> None:
    saved = await Image(b"\xff\xd8\xff" + PNG[8:]).save(tmp_path)
    assert saved == tmp_path / "image.jpg" and saved.read_bytes().startswith(b"\xff\xd8\xff")


async def test_save_replaces_an_existing_file_atomically(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"old")
    await Image(PNG).save(str(tmp_path / "a.png"))
    assert (tmp_path / "a.png").read_bytes() == PNG


async def test_save_into_a_missing_folder_raises_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await Image(PNG).save(tmp_path / "missing" / "a.png")
    assert list(tmp_path.iterdir()) == []


async def test_cancelled_save_leaves_a_complete_file_or_none(tmp_path: Path) -> None:
    big = b"\x89PNG\r\n\x1a\n" + os.urandom(3 << 20)
    for i in range(5):
        with anyio.move_on_after(0.0005 * i):
            await Image(big).save(tmp_path / f"{i}.png")
    for path in tmp_path.iterdir():
        assert not path.name.startswith(".") and path.read_bytes() == big


async def test_concurrent_saves_use_a_few_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from cometgen import _files

    active = peak = 0
    lock = threading.Lock()
    image = Image(PNG)
    original = _files.write_atomic_sync

    def spy(*args: object, **kwargs: object) -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            return original(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                active -= 1

    from cometgen import _image

    monkeypatch.setattr(_files, "write_atomic_sync", spy)
    monkeypatch.setattr(_image, "write_atomic_sync", spy)
    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(image.save, tmp_path / f"{i}.png")
    assert len(list(tmp_path.iterdir())) == 40
    assert 1 <= peak <= _files._WRITE_THREADS


@pytest.mark.parametrize("durable", [True, False])
@pytest.mark.parametrize("size", [5000, (4 << 20) + 10], ids=["small", "large"])
async def test_durable_controls_the_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           durable: bool, size: int) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    data = PNG + os.urandom(size)
    saved = await Image(data).save(tmp_path / "a.png", durable=durable)
    assert saved.read_bytes() == data
    assert len(synced) == (2 if durable else 0)  # the file, then its directory
