"""Crash-safe file output: atomic writes, group commit, safe file names, stale temp cleanup.

Every file cometgen writes (images, ``metadata.jsonl``, a merged ``manifest.jsonl``) goes
through ``atomic_write``: the bytes go to a temp file in the same directory as the final
name, ``.{final_name}.{12 hex}.tmp``, which is then renamed into place with ``os.replace``.
A reader (or a resumed run) sees either no file or the complete file, never a truncated
one. Temp files left behind by ``kill -9`` are removed by ``cleanup_temp_files``.

Durability: with ``fsync=True`` the file and then its directory are fsynced before the
call returns. With ``fsync=False`` the caller makes the files durable later, many at once,
with ``sync_files`` (``Batch``'s group commit: once per manifest flush, before the records
naming the files are written).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import BinaryIO, Final, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

__all__ = [
    "IMAGES_DIR",
    "LINES_PER_FOLDER",
    "TEMP_PATTERN",
    "atomic_write",
    "cleanup_temp_files",
    "extension_for",
    "fsync_dir",
    "image_file_name",
    "image_path",
    "in_write_thread",
    "is_relative_inside",
    "is_temp_name",
    "make_dirs",
    "safe_stem",
    "sync_files",
    "temp_name_for",
    "write_atomic",
    "write_atomic_sync",
]

T = TypeVar("T")

#: Name of an in-progress atomic write: ``.{final_name}.{12 lowercase hex}.tmp``.
TEMP_PATTERN: Final = re.compile(r"\A\..+\.[0-9a-f]{12}\.tmp\Z", re.DOTALL)

#: Worker threads writing files at once, per event loop. A write thread spends most of its
#: time waiting to take the GIL back between syscalls, not on the disk: with 4, images queued
#: ~140 ms for a thread in bulk runs and 16 made them ~20 % faster (benchmarks/README.md,
#: "Session 9"); dozens would only add threads contending for one disk.
_WRITE_THREADS: Final = 16
_BUFFER: Final = 1 << 20
#: fsyncs in flight at once in a group commit (``sync_files``).
_SYNC_THREADS: Final = 8
# Most file systems cap a name at 255 bytes; leave room for the suffixes added below.
_MAX_STEM_BYTES: Final = 200
_KEY_HASH_LEN: Final = 16  # 64 bits: no birthday collision even for 1M ids sharing a stem

_UNSAFE_CHARS: Final = frozenset('/\\:*?"<>|')
_RESERVED: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{p}{d}" for p in ("COM", "LPT") for d in "0123456789¹²³"}
)
# Ids that are already safe stems as they are (ASCII, no dot, no leading space).
_PLAIN: Final = re.compile(r"[A-Za-z0-9_-]+\Z")
# The tail of a hashed name; a bare key must not look like one.
_HASH_TAIL: Final = re.compile(rf"-[0-9a-f]{{{_KEY_HASH_LEN}}}(?:-[0-9]+)?\Z")
# Fewer digits than the hash, so "-<hash>-<i>" parses unambiguously from the end.
_MAX_INDEX_SUFFIX: Final = 10**12

_EXTENSIONS: Final = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/pjpeg": "jpg",
    "image/webp": "webp",
    "image/heic": "heic",
    "image/heif": "heif",
    "image/gif": "gif",
}

# Per event loop: a limiter belongs to the loop it was made in.
_LIMITER: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("write_limiter")


def _write_limiter() -> anyio.CapacityLimiter:
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(_WRITE_THREADS)
        _LIMITER.set(limiter)
        return limiter


def temp_name_for(final_name: str) -> str:
    """A fresh temp file name for an atomic write of ``final_name`` (same directory)."""
    return f".{final_name}.{secrets.token_hex(6)}.tmp"


def is_temp_name(name: str) -> bool:
    """True if ``name`` (a base name) matches ``TEMP_PATTERN``."""
    return TEMP_PATTERN.match(name) is not None


@contextmanager
def atomic_write(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[BinaryIO]:
    """Yield a buffered binary file that replaces ``path`` atomically on a clean exit.

    The temp file sits next to ``path`` and is created with ``"xb"`` (never clobbers
    anything; honours the umask). On any error the temp file is removed, ``path`` is left
    untouched and the exception propagates (``OSError`` such as ENOSPC as it is). With
    ``fsync`` the file is fsynced before the rename and its directory after. Blocking.
    """
    final = os.fspath(path)
    directory, name = os.path.split(final)
    tmp = os.path.join(directory, temp_name_for(name))
    try:
        with open(tmp, "xb", buffering=_BUFFER) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        fsync_dir(directory or ".")


def write_atomic_sync(
    path: str | os.PathLike[str], data: bytes, *, fsync: bool = True, digest: bool = True
) -> str:
    """Write ``data`` to ``path`` with ``atomic_write``; its sha256 hex (``""`` without
    ``digest``). Blocking."""
    with atomic_write(path, fsync=fsync) as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest() if digest else ""


async def write_atomic(
    path: str | os.PathLike[str], data: bytes, *, fsync: bool = True, digest: bool = True
) -> str:
    """``write_atomic_sync`` in a worker thread (at most ``_WRITE_THREADS`` per event loop).

    Plain anyio worker threads rather than aiofiles: the whole write (create, write, fsync,
    rename) is one thread call, which anyio does not abandon on cancellation. So a
    cancelled write still ends with the file in place or its temp file removed, never a
    stray thread touching the file later; the cancellation is delivered right after.
    """
    return await in_write_thread(
        functools.partial(write_atomic_sync, path, data, fsync=fsync, digest=digest)
    )


async def in_write_thread(write: Callable[[], T]) -> T:
    """Run the blocking ``write`` in a worker thread, at most ``_WRITE_THREADS`` per event
    loop, and never abandoned on cancellation (see above)."""
    return await anyio.to_thread.run_sync(write, limiter=_write_limiter())


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Persist a rename in ``directory``; best effort (not possible on every OS/FS)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sync_files(directory: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Make files under ``directory`` (written with ``fsync=False``) and their renames durable.

    ``names`` are paths relative to ``directory``: each file is fsynced, then each of their
    folders once. Blocking; raises ``OSError`` if the kernel reports a write error (or a
    file is missing).
    """
    root = os.fspath(directory)
    paths = [os.path.join(root, name) for name in names]
    if len(paths) > 1:
        # Several fsyncs in flight let the device and the file system batch their flushes
        # (one at a time, each waits for its own); all finish before the folders' fsyncs.
        with concurrent.futures.ThreadPoolExecutor(_SYNC_THREADS) as pool:
            for _ in pool.map(_fsync_file, paths):
                pass
    elif paths:
        _fsync_file(paths[0])
    for folder in dict.fromkeys(os.path.dirname(p) or "." for p in paths):
        fsync_dir(folder)


def _fsync_file(path: str) -> None:
    # Windows flushes a handle only if it was opened for writing.
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_unsafe(ch: str) -> bool:
    # Cc: control chars incl. NUL; Cs: lone surrogates, which cannot be encoded as a name.
    return ch in _UNSAFE_CHARS or unicodedata.category(ch) in ("Cc", "Cs")


def safe_stem(item_id: str, *, max_len: int = 120) -> str:
    """A file name stem for ``item_id`` that can never escape the output folder.

    The result has no path separator, NUL or control character, does not start with a dot
    or a space, is not empty, ``.`` or ``..``, is not a Windows reserved device name, and is
    at most ``max_len`` characters (and 200 UTF-8 bytes). A longer id is truncated to
    ``stem[:max_len - 9] + "-" + sha256(id)[:8]`` so distinct long ids stay distinct.
    """
    if max_len < 16:
        raise ValueError("max_len must be at least 16")
    if (
        len(item_id) <= min(max_len, _MAX_STEM_BYTES)
        and _PLAIN.match(item_id) is not None
        and item_id.upper() not in _RESERVED
    ):
        return item_id  # the common case, without a per-character scan
    text = unicodedata.normalize("NFC", item_id)
    stem = "".join("_" if _is_unsafe(ch) else ch for ch in text).strip(". ")
    if not stem:
        return "_"
    base = stem.split(".", 1)[0].rstrip(" ")
    if base.upper() in _RESERVED:
        stem = base + "_" + stem[len(base) :]
    if len(stem) > max_len or len(stem.encode("utf-8", "surrogatepass")) > _MAX_STEM_BYTES:
        head = stem[: max_len - 9]
        while len(head.encode("utf-8")) > _MAX_STEM_BYTES - 9:
            head = head[:-1]
        # head keeps stem's first char, which is neither a dot nor a space.
        stem = f"{head}-{_short_hash(item_id, 8)}"
    return stem


def _short_hash(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def image_file_name(key: str, id: str | None, index_suffix: int | None, extension: str) -> str:
    """The file name (no directory) of one image of the item ``key``.

    ``<key>.<ext>`` when ``key`` is already a safe, all-lower-case name (``cat.png``,
    ``img-001.png``); otherwise ``<safe_stem(id or key)>-<16 hex of sha256(key)>.<ext>``.
    With ``index_suffix`` (a prompt asking for n>1 images) the name is always hashed and
    ends in ``-<i>``: ``cat-<hash>-2.png``. Distinct keys (or suffixes) therefore never
    share a name, even on case-insensitive or normalising file systems (macOS, Windows).
    """
    ext = extension.lstrip(".").lower()
    if not ext or _is_bad_extension(ext):
        raise ValueError(f"invalid file extension: {extension!r}")
    stem = safe_stem(key if id is None else id)
    if (
        index_suffix is not None
        or stem != key
        or stem.casefold() != stem
        or _HASH_TAIL.search(stem)
    ):
        stem = f"{stem}-{_short_hash(key, _KEY_HASH_LEN)}"
    if index_suffix is not None:
        if not 0 <= index_suffix < _MAX_INDEX_SUFFIX:
            raise ValueError(f"index_suffix must be in [0, {_MAX_INDEX_SUFFIX})")
        stem = f"{stem}-{index_suffix}"
    return f"{stem}.{ext}"


#: Folder of OUTDIR holding the images, two folder levels deep (see ``image_path``).
IMAGES_DIR: Final = "images"
#: Input lines per leaf folder: with at most 64 images a line, at most 6,400 files.
LINES_PER_FOLDER: Final = 100


def image_path(
    key: str, id: str | None, index_suffix: int | None, extension: str, line: int | None = None
) -> str:
    """The path, relative to OUTDIR with ``/`` separators, of one image of item ``key``.

    ``images/<line // 100000:04>/<line // 100 % 1000:03>/<image_file_name(...)>`` for an
    item read from input line ``line``: neighbouring lines finish together, so a manifest
    flush syncs one or two folders, not one per image. Without a line (jobs built in
    Python) ``images/h<2 hex>/<2 hex>/``, from ``sha256(key)``. Either way the path
    follows from the item alone (a resumed run adopts an image written before a crash),
    no folder holds more than 1,000 folders, and a leaf at most 6,400 files (the Hugging
    Face Hub refuses folders of more than 10,000) at any realistic run size.
    """
    name = image_file_name(key, id, index_suffix, extension)
    if line is not None and line >= 0:
        folder = f"{line // (LINES_PER_FOLDER * 1000):04d}/{line // LINES_PER_FOLDER % 1000:03d}"
    else:
        bucket = _short_hash(key, 4)
        folder = f"h{bucket[:2]}/{bucket[2:]}"
    return f"{IMAGES_DIR}/{folder}/{name}"


def is_relative_inside(path: str) -> bool:
    """Whether ``path`` (as a manifest records it) is a plain relative ``/`` path that stays
    inside OUTDIR: no leading ``/``, backslash, NUL, empty, ``.`` or ``..`` part."""
    return bool(path) and not path.startswith("/") and "\\" not in path and "\x00" not in path \
        and all(part not in ("", ".", "..") for part in path.split("/"))


def make_dirs(root: str | os.PathLike[str], rel_dir: str) -> None:
    """Create ``root/rel_dir`` and any missing parents, each new entry made durable (its
    parent fsynced) before returning, so a file later synced there cannot lose its path
    in a power loss. Blocking."""
    base = os.fspath(root)
    path = base
    for part in rel_dir.split("/"):
        parent, path = path, os.path.join(path, part)
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        fsync_dir(parent)


def _is_bad_extension(ext: str) -> bool:
    return "." in ext or any(_is_unsafe(ch) or ch == " " for ch in ext)


def extension_for(mime_type: str) -> str:
    """File extension (no dot) for an image MIME type; ``bin`` when unknown."""
    essence = mime_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(essence, "bin")


def cleanup_temp_files(out_dir: str | os.PathLike[str]) -> int:
    """Remove stale atomic-write temp files in ``out_dir``, its direct subfolders and the
    image folders (``images/*/*``).

    Call at run start, before any write of this run begins (an in-flight write of a
    concurrent run would lose its temp file). Blocking: from async code use
    ``await anyio.to_thread.run_sync(cleanup_temp_files, out_dir)``. Returns the count.
    """
    removed = 0
    root = os.fspath(out_dir)
    if not os.path.isdir(root):
        return 0
    dirs = [root]
    with os.scandir(root) as it:
        dirs.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
    images = os.path.join(root, IMAGES_DIR)
    if os.path.isdir(images):
        for parent in _subdirs(images):
            dirs.extend(_subdirs(parent))
    for directory in dirs:
        with os.scandir(directory) as it:
            stale = [
                e.path for e in it if is_temp_name(e.name) and e.is_file(follow_symlinks=False)
            ]
        for path in stale:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed += 1
    return removed


def _subdirs(path: str) -> list[str]:
    with os.scandir(path) as it:
        return [e.path for e in it if e.is_dir(follow_symlinks=False)]
