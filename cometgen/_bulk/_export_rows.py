"""The rows of a dataset export, streamed from ``OUTDIR/manifest.jsonl``.

Two passes over the manifest, like ``metadata.jsonl``: the first finds the last line of
every key that has several records and the user's metadata columns with their types; the
second yields the latest record of each key, in manifest order. Memory is one int per
key (a hash) plus the keys that have more than one record.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from msgspec import Struct

from ._manifest import MANIFEST_NAME, STATUS_DONE

__all__ = [
    "FIXED_COLUMNS",
    "ColumnTypes",
    "ExportFile",
    "ExportRecord",
    "ManifestScan",
    "iter_latest",
    "metadata_columns",
    "sample_key",
    "scan_manifest",
]

#: Columns of every exported row, in order; user metadata columns follow.
FIXED_COLUMNS: Final = (
    "image", "prompt", "id", "key", "model", "aspect_ratio", "image_size", "seed",
    "mime_type", "sha256", "cost", "usage",
)
#: Extra columns of the failures table.
FAILURE_COLUMNS: Final = (
    "key", "id", "status", "reason", "error_type", "finish_reason", "block_reason",
    "prompt", "model", "attempts", "maybe_billed", "cost", "latency", "finished_at",
)


_TAKEN: Final = frozenset(FIXED_COLUMNS) | frozenset(FAILURE_COLUMNS) | {"file_name"}


class ExportFile(Struct, frozen=True, kw_only=True):
    path: str
    sha256: str = ""
    mime_type: str = ""
    bytes: int = 0


class ExportRecord(Struct, kw_only=True):
    """The fields of a manifest record an export uses (the others are skipped)."""

    key: str
    status: str = ""
    id: str | None = None
    reason: str | None = None
    finish_reason: str | None = None
    block_reason: str | None = None
    error_type: str | None = None
    files: list[ExportFile] = []
    model: str | None = None
    prompt: str | None = None
    aspect_ratio: str | None = None
    image_size: str | None = None
    seed: int | None = None
    usage: dict[str, int] | None = None
    cost: float | None = None
    attempts: int = 0
    maybe_billed: bool = False
    latency: float | None = None
    finished_at: str | None = None
    metadata: Any = None


class _Scan(Struct, gc=False):
    key: str
    status: str = ""
    files: list[ExportFile] = []
    metadata: Any = None


_scan_decoder: Final = msgspec.json.Decoder(_Scan)
_record_decoder: Final = msgspec.json.Decoder(ExportRecord)
_JSON_TYPES: Final = {bool: "bool", int: "int", float: "float", str: "str"}


@dataclass
class ColumnTypes:
    """JSON types seen per user metadata column (``bool``/``int``/``float``/``str``/``json``)."""

    seen: dict[str, set[str]] = field(default_factory=dict)

    def add(self, columns: dict[str, Any]) -> None:
        for name, value in columns.items():
            if value is None:
                self.seen.setdefault(name, set())
            else:
                self.seen.setdefault(name, set()).add(_JSON_TYPES.get(type(value), "json"))

    def resolved(self) -> dict[str, str]:
        """One Arrow-friendly type per column: ``bool``, ``int64``, ``float64`` or ``string``
        (a column of mixed or nested values is stored as JSON text)."""
        out: dict[str, str] = {}
        for name, kinds in self.seen.items():
            if kinds == {"bool"}:
                out[name] = "bool"
            elif kinds == {"int"}:
                out[name] = "int64"
            elif kinds and kinds <= {"int", "float"}:
                out[name] = "float64"
            elif kinds <= {"str"}:
                out[name] = "string"
            else:
                out[name] = "json"
        return out


@dataclass
class ManifestScan:
    """What pass 1 learnt: enough to stream the latest records and fix the schema."""

    source: str
    lines: int = 0
    repeated: dict[str, int] = field(default_factory=dict)  # key -> line of its last record
    done_files: int = 0
    failures: int = 0
    mime_types: set[str] = field(default_factory=set)
    metadata: ColumnTypes = field(default_factory=ColumnTypes)


def metadata_columns(metadata: Any) -> dict[str, Any]:
    """User metadata as columns, as in ``metadata.jsonl``: a dict is flattened one level (a
    name clashing with a column of either table becomes ``metadata_<name>``), another value
    becomes a ``metadata`` column."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        return {"metadata": metadata}
    out: dict[str, Any] = {}
    for name, value in metadata.items():
        column = f"metadata_{name}" if name in _TAKEN else name
        out.setdefault(str(column), value)
    return out


def scan_manifest(out_dir: str | os.PathLike[str]) -> ManifestScan:
    """Pass 1 over ``OUTDIR/manifest.jsonl`` (a missing file is an empty run)."""
    source = os.path.join(os.fspath(out_dir), MANIFEST_NAME)
    scan = ManifestScan(source)
    if not os.path.exists(source):
        return scan
    # hash() is stable within the process; a collision only adds a key to ``repeated``,
    # which maps it to its own last line, so it is harmless.
    seen: set[int] = set()
    repeated = scan.repeated
    decode = _scan_decoder.decode
    with open(source, "rb", buffering=1 << 20) as f:
        for number, line in enumerate(f):
            scan.lines = number + 1
            try:
                rec = decode(line)
            except msgspec.DecodeError:
                continue
            h = hash(rec.key)
            if h in seen:
                repeated[rec.key] = number
            else:
                seen.add(h)
            _count(scan, rec, +1)
    if repeated:
        _uncount_superseded(scan)
    return scan


def _count(scan: ManifestScan, rec: _Scan, sign: int) -> None:
    if rec.status == STATUS_DONE:
        scan.done_files += sign * len(rec.files)
        if sign > 0:
            scan.mime_types.update(f.mime_type for f in rec.files)
    else:
        scan.failures += sign
    if sign > 0:
        scan.metadata.add(metadata_columns(rec.metadata))


def _uncount_superseded(scan: ManifestScan) -> None:
    # Records of repeated keys other than the last were counted: take them back out.
    repeated = scan.repeated
    with open(scan.source, "rb", buffering=1 << 20) as f:
        for number, line in enumerate(f):
            if number >= scan.lines:
                break
            try:
                rec = _scan_decoder.decode(line)
            except msgspec.DecodeError:
                continue
            last = repeated.get(rec.key)
            if last is not None and last != number:
                _count(scan, rec, -1)


def iter_latest(scan: ManifestScan) -> Iterator[ExportRecord]:
    """Pass 2: the latest record of each key, in manifest order, up to pass 1's last line."""
    if not scan.lines:
        return
    repeated = scan.repeated
    decode = _record_decoder.decode
    with open(scan.source, "rb", buffering=1 << 20) as f:
        for number, line in enumerate(f):
            if number >= scan.lines:
                break
            try:
                rec = decode(line)
            except msgspec.DecodeError:
                continue
            last = repeated.get(rec.key)
            if last is None or last == number:
                yield rec


_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_-]+\Z")
_UNSAFE_KEY_CHARS: Final = re.compile(r"[^A-Za-z0-9_-]+")
_KEY_TAIL: Final = re.compile(r"-[0-9a-f]{16}(?:-[0-9]+)?\Z")


def sample_key(key: str, index: int | None) -> str:
    """A WebDataset sample key for image ``index`` of item ``key``: never a dot (readers
    split member names at the first one), unique for distinct ``(key, index)``.

    A plain key (``[A-Za-z0-9_-]``) of a one-image item is kept as is (``cat-001``); any
    other becomes ``<key with runs of other characters as _>-<16 hex of sha256(key)>``,
    plus ``-<index>`` for items with several images (``v1_2-final-<hash>``). A plain key
    that looks like such a tail is hashed too, so the two forms never meet.
    """
    if index is None and _PLAIN_KEY.match(key) and not _KEY_TAIL.search(key):
        return key
    stem = _UNSAFE_KEY_CHARS.sub("_", key)[:80] or "_"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    name = f"{stem}-{digest}"
    return name if index is None else f"{name}-{index}"
