"""``OUTDIR/metadata.jsonl``: the manifest's done images in Hugging Face imagefolder layout."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

import msgspec
from msgspec import Struct

from .._files import atomic_write, is_relative_inside
from ._manifest import MANIFEST_NAME, METADATA_NAME, STATUS_DONE, _lite_decoder

__all__ = ["write_metadata_jsonl"]


_FIXED_COLUMNS: Final = ("file_name", "prompt", "id", "key", "model")


class _PathOnly(Struct, gc=False):
    path: str


class _Row(Struct):
    # Only the fields metadata.jsonl needs; msgspec skips the rest cheaply.
    key: str
    status: str = ""
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
    relative path, are skipped. Streams the manifest twice; memory is a set of the keys, plus
    the line numbers of keys that have more than one record. The file
    is replaced atomically. Blocking: from async code run it in a worker thread.
    Returns the number of lines written.
    """
    root = os.fspath(out_dir)
    if manifest_path is None:
        source = os.path.join(root, MANIFEST_NAME)
    else:
        source = os.fspath(manifest_path)
    repeated, total = _repeated_keys(source)

    written = 0
    with atomic_write(os.path.join(root, METADATA_NAME)) as out:
        if total:
            written = _write_rows(source, total, repeated, root, out.write)
    return written


def _repeated_keys(source: str) -> tuple[dict[str, int], int]:
    """Pass 1: for keys with several records, the line of the last one (negated, ``~n``, if
    it is not done); and the number of lines. A key with one record needs no entry: its
    record wins if done, so this keeps a set of keys, not a dict of every record."""
    seen: set[str] = set()
    repeated: dict[str, int] = {}
    total = 0
    if not os.path.exists(source):
        return repeated, 0
    decode = _lite_decoder.decode
    with open(source, "rb", buffering=1 << 20) as f:
        for total, line in enumerate(f, 1):
            try:
                rec = decode(line)
            except msgspec.DecodeError:
                continue
            if rec.key not in seen:
                seen.add(rec.key)
            else:  # a second (or later) record of this key
                repeated[rec.key] = total - 1 if rec.status == STATUS_DONE else ~(total - 1)
    return repeated, total


def _write_rows(
    source: str,
    total: int,
    repeated: dict[str, int],
    root: str,
    emit: Callable[[bytes], object],
) -> int:
    """Pass 2, up to pass 1's last line (lines appended since are ignored)."""
    written = 0
    with open(source, "rb", buffering=1 << 20) as f:
        for number, line in enumerate(f):
            if number >= total:
                break
            try:
                record = _row_decoder.decode(line)
            except msgspec.DecodeError:
                continue
            last = repeated.get(record.key)
            if last is None:
                if record.status != STATUS_DONE:
                    continue
            elif last != number:  # not the key's last record, or that one is not done
                continue
            extra = _extra_columns(record.metadata)
            for file in record.files:
                if not _exists(root, file.path):
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


def _exists(root: str, path: str) -> bool:
    # A stat per file: about as fast as listing each folder once, without holding a
    # million names in memory at the end of a big run.
    return is_relative_inside(path) and os.path.isfile(os.path.join(root, path))
