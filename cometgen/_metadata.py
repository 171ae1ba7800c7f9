"""``OUTDIR/metadata.jsonl``: the manifest's done images in Hugging Face imagefolder layout."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

import msgspec
from msgspec import Struct

from ._files import fsync_dir, temp_name_for
from ._manifest import MANIFEST_NAME, METADATA_NAME, STATUS_DONE, _lite_decoder

__all__ = ["write_metadata_jsonl"]


_FIXED_COLUMNS: Final = ("file_name", "prompt", "id", "key", "model")


class _PathOnly(Struct, gc=False):
    path: str


class _Row(Struct):
    # Only the fields metadata.jsonl needs; msgspec skips the rest cheaply.
    key: str
    id: str | None = None
    prompt: str | None = None
    model: str | None = None
    files: list[_PathOnly] = []
    metadata: Any = None


_row_decoder: Final = msgspec.json.Decoder(_Row)
_encoder: Final = msgspec.json.Encoder()


def write_metadata_jsonl(
    out_dir: str | os.PathLike[str], manifest_path: str | os.PathLike[str] | None = None
) -> int:
    """(Re)build ``OUTDIR/metadata.jsonl`` for ``datasets.load_dataset("imagefolder")``.

    One line per image file of every key whose latest record is ``done``:
    ``{"file_name", "prompt", "id", "key", "model", ...metadata}``, ``file_name`` being
    relative to OUTDIR. A dict ``metadata`` is flattened one level into columns (a key
    clashing with a fixed column becomes ``metadata_<key>``); any other non-null value
    becomes a ``metadata`` column. Files that are missing, or whose path is not a plain
    relative path, are skipped. Streams the manifest twice; memory is O(keys). The file
    is replaced atomically. Blocking: from async code run it in a worker thread.
    Returns the number of lines written.
    """
    root = os.fspath(out_dir)
    if manifest_path is None:
        source = os.path.join(root, MANIFEST_NAME)
    else:
        source = os.fspath(manifest_path)
    winners, total = _winning_lines(source)

    final = os.path.join(root, METADATA_NAME)
    tmp = os.path.join(root, temp_name_for(METADATA_NAME))
    written = 0
    listings: dict[str, frozenset[str]] = {}
    try:
        with open(tmp, "xb", buffering=1 << 20) as out:
            if winners:
                written = _write_rows(source, total, winners, root, listings, out.write)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(root)
    return written


def _winning_lines(source: str) -> tuple[set[int], int]:
    """Pass 1: numbers of the lines that are their key's last record and are done."""
    latest: dict[str, int] = {}  # key -> line number, negated (~n) if not done
    total = 0
    if not os.path.exists(source):
        return set(), 0
    decode = _lite_decoder.decode
    with open(source, "rb", buffering=1 << 20) as f:
        for total, line in enumerate(f, 1):
            try:
                rec = decode(line)
            except msgspec.DecodeError:
                continue
            latest[rec.key] = total - 1 if rec.status == STATUS_DONE else ~(total - 1)
    return {n for n in latest.values() if n >= 0}, total


def _write_rows(
    source: str,
    total: int,
    winners: set[int],
    root: str,
    listings: dict[str, frozenset[str]],
    emit: Callable[[bytes], object],
) -> int:
    """Pass 2, up to pass 1's last line (lines appended since are ignored)."""
    written = 0
    with open(source, "rb", buffering=1 << 20) as f:
        for number, line in enumerate(f):
            if number >= total:
                break
            if number not in winners:
                continue
            try:
                record = _row_decoder.decode(line)
            except msgspec.DecodeError:
                continue
            extra = _extra_columns(record.metadata)
            for file in record.files:
                if not _exists(root, file.path, listings):
                    continue
                row: dict[str, Any] = {
                    "file_name": file.path,
                    "prompt": record.prompt,
                    "id": record.id,
                    "key": record.key,
                    "model": record.model,
                }
                if extra:
                    row.update(extra)
                emit(_encoder.encode(row) + b"\n")
                written += 1
    return written


def _extra_columns(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        return {"metadata": metadata}
    extra: dict[str, Any] = {}
    for name, value in metadata.items():
        column = f"metadata_{name}" if name in _FIXED_COLUMNS else name
        extra.setdefault(column, value)
    return extra


def _exists(root: str, path: str, listings: dict[str, frozenset[str]]) -> bool:
    # One scandir per folder instead of one stat per file (1M images: ~10x faster).
    folder, _, name = path.rpartition("/")
    names = listings.get(folder)
    if names is None:
        names = listings[folder] = _list_files(root, folder)
    return name in names


def _list_files(root: str, folder: str) -> frozenset[str]:
    if folder and (
        folder.startswith("/")
        or "\\" in folder
        or "\x00" in folder
        or any(part in ("", ".", "..") for part in folder.split("/"))
    ):
        return frozenset()  # not a plain relative path inside OUTDIR
    try:
        with os.scandir(os.path.join(root, folder)) as it:
            return frozenset(e.name for e in it if e.is_file())
    except OSError:
        return frozenset()
