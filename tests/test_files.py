from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import anyio
import anyio.from_thread
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cometgen import _files
from cometgen._files import (
    atomic_write,
    cleanup_temp_files,
    extension_for,
    image_file_name,
    is_temp_name,
    safe_stem,
    temp_name_for,
    write_atomic,
)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- write_atomic


@pytest.mark.anyio
async def test_write_atomic_writes_data_and_returns_sha(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # several chunks
    digest = await write_atomic(tmp_path / "a.png", data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "a.png").read_bytes() == data
    assert _names(tmp_path) == ["a.png"]


@pytest.mark.anyio
async def test_write_atomic_replaces_existing_and_accepts_str_path(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"old")
    digest = await write_atomic(str(tmp_path / "a.png"), b"new", fsync=False)
    assert digest == hashlib.sha256(b"new").hexdigest()
    assert (tmp_path / "a.png").read_bytes() == b"new"
    assert _names(tmp_path) == ["a.png"]


@pytest.mark.anyio
async def test_write_atomic_empty_data(tmp_path: Path) -> None:
    assert await write_atomic(tmp_path / "e", b"") == hashlib.sha256(b"").hexdigest()
    assert (tmp_path / "e").read_bytes() == b""


@pytest.mark.anyio
async def test_cancel_during_write_finishes_it_then_cancels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write is one worker-thread call, never abandoned: it finishes, then the cancel
    lands."""
    real_fsync = os.fsync
    data = os.urandom(1000)
    with anyio.CancelScope() as scope:

        def cancel_then_fsync(fd: int) -> None:
            anyio.from_thread.run_sync(scope.cancel)
            real_fsync(fd)

        monkeypatch.setattr(_files.os, "fsync", cancel_then_fsync)
        await write_atomic(tmp_path / "small.png", data)
        await anyio.sleep(0)  # the pending cancel is delivered here, after the write
    assert scope.cancelled_caught
    assert _names(tmp_path) == ["small.png"]
    assert (tmp_path / "small.png").read_bytes() == data


@pytest.mark.anyio
async def test_already_cancelled_scope_leaves_nothing(tmp_path: Path) -> None:
    """The temp file is created by a thread; cancellation must not orphan it."""
    with anyio.CancelScope() as scope:
        scope.cancel()
        await write_atomic(tmp_path / "a.png", os.urandom(3 << 20))
    assert scope.cancelled_caught
    await anyio.sleep(0.05)  # would let an orphaned executor thread create the file
    assert _names(tmp_path) == []


@pytest.mark.anyio
async def test_timeout_mid_write_leaves_nothing_or_the_whole_file(tmp_path: Path) -> None:
    data = b"\xab" * (48 << 20)
    with anyio.move_on_after(0.002) as scope:
        await write_atomic(tmp_path / "big.png", data)
    # A stray executor chunk may still be writing to the unlinked temp inode; give it a moment.
    await anyio.sleep(0.05)
    if scope.cancelled_caught:
        assert _names(tmp_path) == []
    else:  # the machine was faster than the deadline
        assert _names(tmp_path) == ["big.png"]
        assert (tmp_path / "big.png").stat().st_size == len(data)


@pytest.mark.anyio
async def test_enospc_propagates_as_oserror_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_files.os, "fsync", disk_full)
    for size in (4, 5 << 20):
        with pytest.raises(OSError) as info:
            await write_atomic(tmp_path / "a.png", b"d" * size)
        assert info.value.errno == errno.ENOSPC
        assert _names(tmp_path) == []


@pytest.mark.anyio
async def test_missing_directory_raises_oserror(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    gone.rmdir()
    with pytest.raises(FileNotFoundError):
        await write_atomic(gone / "a.png", b"data")
    assert _names(tmp_path) == []


@pytest.mark.anyio
async def test_rename_failure_removes_temp_and_keeps_target(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_bytes(b"keep")
    with pytest.raises(OSError):
        await write_atomic(target, b"data")  # cannot replace a non-empty directory
    assert _names(tmp_path) == ["taken"]
    assert (target / "inside").read_bytes() == b"keep"


def test_atomic_write_error_in_the_body_keeps_the_target(tmp_path: Path) -> None:
    """What metadata.jsonl and merge rely on: a failure while streaming leaves the old file."""
    (tmp_path / "m.jsonl").write_bytes(b"old\n")
    with pytest.raises(ValueError), atomic_write(tmp_path / "m.jsonl") as f:
        f.write(b"new, half")
        raise ValueError("boom")
    assert _names(tmp_path) == ["m.jsonl"]
    assert (tmp_path / "m.jsonl").read_bytes() == b"old\n"
    with atomic_write(tmp_path / "m.jsonl") as f:
        for line in (b"a\n", b"b\n"):
            f.write(line)
    assert (tmp_path / "m.jsonl").read_bytes() == b"a\nb\n"


@pytest.mark.parametrize("fsync", [True, False])
def test_atomic_write_fsyncs_file_then_directory_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync_spy(fd: int) -> None:
        events.append("fsync dir" if _is_dir(fd) else "fsync file")
        real_fsync(fd)

    def replace_spy(src: str, dst: str) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync_spy)
    monkeypatch.setattr(os, "replace", replace_spy)
    _files.write_atomic_sync(tmp_path / "a.png", b"data", fsync=fsync)
    assert events == (["fsync file", "rename", "fsync dir"] if fsync else ["rename"])


def _is_dir(fd: int) -> bool:
    import stat

    return stat.S_ISDIR(os.fstat(fd).st_mode)


# --------------------------------------------------------------------------- temp names


def test_temp_names_match_pattern_and_cleanup(tmp_path: Path) -> None:
    name = temp_name_for("cat.png")
    assert name.startswith(".cat.png.") and name.endswith(".tmp")
    assert is_temp_name(name)
    assert not is_temp_name("cat.png")
    assert not is_temp_name(".cat.png.tmp")
    assert not is_temp_name(".hidden")
    (tmp_path / name).write_bytes(b"x")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / temp_name_for("x.jpg")).write_bytes(b"x")
    (tmp_path / "images" / "x.jpg").write_bytes(b"x")
    (tmp_path / "manifest.jsonl").write_bytes(b"")
    assert cleanup_temp_files(tmp_path) == 2
    assert _names(tmp_path) == ["images", "manifest.jsonl"]
    assert _names(tmp_path / "images") == ["x.jpg"]
    assert cleanup_temp_files(tmp_path / "missing") == 0


# --------------------------------------------------------------------------- names

HOSTILE = [
    "../../etc/x",
    "/abs/path",
    "a\\b",
    "C:\\Windows\\system32",
    "CON",
    "con",
    "nul.txt",
    "Com1.tar.gz",
    "LPT9 .png",
    "a\x00b",
    "\x00",
    "x" * 10_000,
    "é" * 10_000,
    "🙂" * 500,
    "",
    ".",
    "..",
    "...",
    " . ",
    ".hidden",
    "trailing. ",
    'a:b*c?d"e<f>g|h',
    "line\nbreak\ttab\x7f",
    "e\u0301",  # NFD
    "\ud800lone",  # lone surrogate
]


def _assert_safe(name: str, out_dir: Path) -> None:
    assert name
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith((".", " "))
    assert not name.endswith((".", " "))
    assert name not in (".", "..")
    assert len(name.encode("utf-8")) <= 255
    resolved = (out_dir / name).resolve()
    assert resolved.parent == out_dir.resolve()


@pytest.mark.parametrize("item_id", HOSTILE)
def test_safe_stem_hostile_ids(item_id: str, tmp_path: Path) -> None:
    stem = safe_stem(item_id)
    _assert_safe(stem, tmp_path)
    assert len(stem) <= 120
    assert stem.split(".")[0].rstrip(" ").upper() not in {"CON", "NUL", "COM1", "LPT9"}
    _assert_safe(image_file_name(item_id, None, 3, "png"), tmp_path)


def test_safe_stem_examples() -> None:
    assert safe_stem("cat") == "cat"
    assert safe_stem("../../etc/x") == "_.._etc_x"
    assert safe_stem("CON") == "CON_"
    assert safe_stem("nul.txt") == "nul_.txt"
    assert safe_stem("") == "_"
    assert safe_stem("..") == "_"
    assert safe_stem("e\u0301") == "\u00e9"
    long_a, long_b = "x" * 200 + "a", "x" * 200 + "b"
    assert len(safe_stem(long_a)) == 120
    assert safe_stem(long_a) != safe_stem(long_b)
    assert safe_stem(long_a).endswith("-" + hashlib.sha256(long_a.encode()).hexdigest()[:8])


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_safe_stem_property(item_id: str) -> None:
    out_dir = Path("/tmp/cometgen-out")
    _assert_safe(safe_stem(item_id), out_dir)
    _assert_safe(image_file_name(item_id, None, None, "png"), out_dir)
    _assert_safe(image_file_name("k", item_id, 2, "jpg"), out_dir)


def test_image_file_name_plain_key() -> None:
    assert image_file_name("cat", None, None, "png") == "cat.png"
    assert image_file_name("img-001", "img-001", None, ".JPG") == "img-001.jpg"
    h = hashlib.sha256(b"cat").hexdigest()[:16]
    assert image_file_name("cat", "cat", 2, "png") == f"cat-{h}-2.png"
    assert image_file_name("Cat", None, None, "png").startswith("Cat-")  # case-insensitive FS
    # A bare key never looks like a hashed name.
    assert image_file_name(f"cat-{h}", None, None, "png") != f"cat-{h}.png"


@pytest.mark.parametrize(
    "keys",
    [
        ["a/b", "a_b", "a\\b", "a:b"],
        ["Cat", "cat", "CAT"],  # case-insensitive file systems
        ["a", "a-1", "a-2"],  # index suffixes
        ["x", "x-" + hashlib.sha256(b"x").hexdigest()[:16]],  # looks hashed
        ["\u00e9", "e\u0301"],  # NFC vs NFD
        ["CON", "CON_"],
        ["x" * 300 + "1", "x" * 300 + "2"],
    ],
)
def test_image_file_name_unique_for_colliding_stems(keys: list[str]) -> None:
    names = [image_file_name(k, None, i, "png") for k in keys for i in (None, 1, 2)]
    assert len({n.casefold() for n in names}) == len(names)


def test_image_file_name_hashes_when_id_differs_from_key() -> None:
    a = image_file_name("row-1", "same", None, "png")
    b = image_file_name("row-2", "same", None, "png")
    assert a != b and a.startswith("same-") and b.startswith("same-")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=2, max_size=30, unique=True))
def test_image_file_name_never_collides(keys: list[str]) -> None:
    names = [image_file_name(k, None, i, "png") for k in keys for i in (None, 0, 1, 12)]
    assert len({n.casefold() for n in names}) == len(names)


def test_image_file_name_rejects_bad_extension() -> None:
    with pytest.raises(ValueError):
        image_file_name("k", None, None, "../png")
    with pytest.raises(ValueError):
        image_file_name("k", None, None, "")
    with pytest.raises(ValueError):
        image_file_name("k", None, -1, "png")


@pytest.mark.parametrize(
    ("mime", "ext"),
    [
        ("image/png", "png"),
        ("image/jpeg", "jpg"),
        ("IMAGE/JPEG; q=1", "jpg"),
        ("image/webp", "webp"),
        ("image/heic", "heic"),
        ("image/heif", "heif"),
        ("image/gif", "gif"),
        ("image/x-unknown", "bin"),
        ("", "bin"),
    ],
)
def test_extension_for(mime: str, ext: str) -> None:
    assert extension_for(mime) == ext


@pytest.mark.anyio
async def test_write_atomic_without_digest_returns_empty(tmp_path: Path) -> None:
    small, big = b"x" * 10, os.urandom(5 << 20)
    assert await write_atomic(tmp_path / "a.png", small, digest=False) == ""
    assert await write_atomic(tmp_path / "b.png", big, digest=False) == ""
    assert (tmp_path / "a.png").read_bytes() == small
    assert (tmp_path / "b.png").read_bytes() == big
