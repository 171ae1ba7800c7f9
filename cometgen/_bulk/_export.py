"""``export``: a run folder as sharded Parquet or WebDataset, ready for the Hub.

Streaming: the manifest is read twice (``_export_rows``), rows are cut into shards of at
most ``max_per_shard`` images and ``max_shard_size`` bytes, and each shard's images are
read while the shard is written, so memory is bounded by one shard's rows (one Parquet
row group of images). Idempotent: the shard cut depends only on the manifest and the
options, every finished shard is renamed into place and its fingerprint appended to
``DEST/.cometgen-export.jsonl``; a rerun recomputes the fingerprints and skips the
shards whose file is already there with the same fingerprint (a crash costs at most the
shard being written). Stale shards of an earlier export are removed at the end, then
the dataset card ``README.md`` is written.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final, Literal

import msgspec

from .._exceptions import ConfigError
from .._files import (
    atomic_write,
    cleanup_temp_files,
    extension_for,
    is_relative_inside,
    write_atomic_sync,
)
from ._dataset_card import card_text
from ._export_formats import (
    USAGE_FIELDS,
    Row,
    hf_features,
    require_pyarrow,
    write_parquet,
    write_tar,
)
from ._export_rows import (
    ExportRecord,
    iter_latest,
    metadata_columns,
    sample_key,
    scan_manifest,
)
from ._manifest import MANIFEST_NAME, STATUS_DONE

__all__ = ["FORMATS", "ExportReport", "export_dataset", "parse_size"]

Format = Literal["parquet", "webdataset"]
FORMATS: Final = ("parquet", "webdataset")
STATE_NAME: Final = ".cometgen-export.jsonl"
_VERSION: Final = 1  # bump when the bytes of a shard would change for the same rows
_SAMPLE_OVERHEAD: Final = 1024  # json + tar headers, per sample, in the size estimate
_SHARD_NAME: Final = re.compile(r"\A(?:train|failures)-[0-9]{5}\.(?:parquet|tar)\Z")
_DONE_TYPES: Final = {
    "prompt": "string", "id": "string", "key": "string", "model": "string",
    "aspect_ratio": "string", "image_size": "string", "seed": "int64",
    "mime_type": "string", "sha256": "string", "cost": "float64", "usage": "usage",
}
_FAILURE_TYPES: Final = {
    "key": "string", "id": "string", "status": "string", "reason": "string",
    "error_type": "string", "finish_reason": "string", "block_reason": "string",
    "prompt": "string", "model": "string", "attempts": "int64", "maybe_billed": "bool",
    "cost": "float64", "latency": "float64", "finished_at": "string",
}
_encoder: Final = msgspec.json.Encoder()


class _Done(msgspec.Struct):
    name: str
    fingerprint: str
    rows: int


@dataclass
class ExportReport:
    """What ``export_dataset`` wrote."""

    dest: str
    format: str
    rows: int = 0  #: image rows exported
    failures: int = 0  #: rows of the failures table (with ``include_failed``)
    shards: int = 0
    written: int = 0  #: shards written by this call
    skipped: int = 0  #: shards already complete from an earlier call
    missing_files: int = 0  #: images named by the manifest but not on disk
    removed: int = 0  #: stale shards of an earlier export removed
    shard_names: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "shard_names"}


def parse_size(text: str) -> int:
    """``500MB``, ``1.5GiB``, ``2000000`` -> bytes (decimal SI and binary units)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]i?)?b?\s*", text.lower())
    if match is None:
        raise ConfigError(f"invalid size {text!r}: expected e.g. 500MB, 2GiB or 1000000")
    number, unit = float(match.group(1)), match.group(2) or ""
    scale = 1024 if unit.endswith("i") else 1000
    power = " kmgt".index(unit[:1]) if unit else 0
    return int(number * scale**power)


class _Sharder:
    """Cuts rows into shards and writes (or skips) each one."""

    def __init__(self, dest: str, folder: str, prefix: str, ext: str, base: bytes,
                 max_rows: int, max_bytes: int, done: dict[str, _Done],
                 write: Callable[[BinaryIO, list[Row]], None], state: Any) -> None:
        self.dir = os.path.join(dest, folder)
        self.folder, self.prefix, self.ext, self.base = folder, prefix, ext, base
        self.max_rows, self.max_bytes = max_rows, max_bytes
        self.done, self.write, self.state = done, write, state
        self.rows: list[Row] = []
        self.size = 0
        self.index = 0
        self.total = 0
        self.written = self.skipped = 0
        self.names: list[str] = []
        os.makedirs(self.dir, exist_ok=True)

    def add(self, row: Row) -> None:
        cost = row.size + _SAMPLE_OVERHEAD
        if self.rows and (len(self.rows) >= self.max_rows or self.size + cost > self.max_bytes):
            self.flush()
        self.rows.append(row)
        self.size += cost

    def flush(self, *, force: bool = False) -> None:
        if not self.rows and not force:
            return
        name = f"{self.prefix}-{self.index:05d}.{self.ext}"
        digest = hashlib.sha256(self.base)
        for row in self.rows:
            digest.update(row.path.encode() + b"\0" + row.sample.encode() + b"\0")
            digest.update(_encoder.encode(row.columns))
        fingerprint = digest.hexdigest()
        final = os.path.join(self.dir, name)
        previous = self.done.get(f"{self.folder}/{name}")
        if previous is not None and previous.fingerprint == fingerprint and os.path.isfile(final):
            self.skipped += 1
        else:
            with atomic_write(final) as out:
                self.write(out, self.rows)
            self.state.write(_encoder.encode(
                _Done(f"{self.folder}/{name}", fingerprint, len(self.rows))) + b"\n")
            self.state.flush()
            os.fsync(self.state.fileno())
            self.written += 1
        self.names.append(name)
        self.total += len(self.rows)
        self.index += 1
        self.rows, self.size = [], 0

    def remove_stale(self) -> int:
        keep = set(self.names)
        removed = 0
        for entry in os.scandir(self.dir):
            if _SHARD_NAME.match(entry.name) and entry.name not in keep:
                os.unlink(entry.path)
                removed += 1
        return removed


def _load_state(path: str) -> dict[str, _Done]:
    done: dict[str, _Done] = {}
    if os.path.exists(path):
        decoder = msgspec.json.Decoder(_Done)
        with open(path, "rb") as f:
            for line in f:
                try:
                    entry = decoder.decode(line)
                except msgspec.DecodeError:
                    continue  # a torn last line
                done[entry.name] = entry
    return done


def _meta_values(metadata: Any, types: dict[str, str]) -> dict[str, Any]:
    values = metadata_columns(metadata)
    out: dict[str, Any] = {}
    for name, dtype in types.items():
        value = values.get(name)
        if dtype == "json" and value is not None:
            value = _encoder.encode(value).decode()
        elif dtype == "float64" and value is not None:
            value = float(value)
        out[name] = value
    return out


def _done_columns(rec: ExportRecord, file: Any, meta: dict[str, Any]) -> dict[str, Any]:
    usage = None if rec.usage is None else {f: rec.usage.get(f, 0) for f in USAGE_FIELDS}
    return {
        "prompt": rec.prompt, "id": rec.id, "key": rec.key, "model": rec.model,
        "aspect_ratio": rec.aspect_ratio, "image_size": rec.image_size, "seed": rec.seed,
        "mime_type": file.mime_type, "sha256": file.sha256, "cost": rec.cost,
        "usage": usage, **meta,
    }


def _failure_columns(rec: ExportRecord, meta: dict[str, Any]) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in _FAILURE_TYPES} | meta


def export_dataset(
    out_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    format: Format = "parquet",
    max_shard_size: int = 500_000_000,
    max_per_shard: int = 10_000,
    include_failed: bool = False,
) -> ExportReport:
    """Export the ``done`` images of the run in ``out_dir`` to ``dest`` (see the module
    docstring). Blocking: from async code run it in a worker thread."""
    root, target = os.fspath(out_dir), os.fspath(dest)
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}: expected one of {FORMATS}")
    if max_per_shard < 1 or max_shard_size < 1:
        raise ConfigError("--max-per-shard and --max-shard-size must be positive")
    if not os.path.isfile(os.path.join(root, MANIFEST_NAME)):
        raise ConfigError(f"{root}: no {MANIFEST_NAME}, not a cometgen output folder")
    if os.path.exists(target) and os.path.samefile(root, target):
        raise ConfigError("the export destination must not be the run folder itself")
    if format == "parquet":
        require_pyarrow()
    scan = scan_manifest(root)
    meta_types = scan.metadata.resolved()
    done_types = {**_DONE_TYPES, **meta_types}
    fail_types = {**_FAILURE_TYPES, **meta_types}
    # One image member name for the whole dataset: readers take a sample's fields from
    # the first samples, so a run mixing PNG and JPEG uses the neutral ".image" member
    # (its Image feature comes from the card).
    exts = {extension_for(m) for m in scan.mime_types}
    image_ext = exts.pop() if len(exts) == 1 else "image"
    ext = "parquet" if format == "parquet" else "tar"
    os.makedirs(target, exist_ok=True)
    cleanup_temp_files(target)
    report = ExportReport(dest=target, format=format)
    base = _encoder.encode([_VERSION, format, image_ext, max_per_shard, max_shard_size,
                            done_types, fail_types])

    def read(path: str) -> bytes:
        with open(os.path.join(root, path), "rb") as f:
            return f.read()

    def write_done(out: BinaryIO, rows: list[Row]) -> None:
        if format == "parquet":
            write_parquet(out, rows, done_types, read)
        else:
            write_tar(out, rows, image_ext, read)

    def write_failed(out: BinaryIO, rows: list[Row]) -> None:
        if format == "parquet":
            write_parquet(out, rows, fail_types, None)
        else:
            write_tar(out, rows, None, None)

    state_path = os.path.join(target, STATE_NAME)
    done = _load_state(state_path)
    with open(state_path, "ab") as state:
        data = _Sharder(target, "data", "train", ext, base, max_per_shard, max_shard_size,
                        done, write_done, state)
        fails = _Sharder(target, "failures", "failures", ext, base, max_per_shard,
                         max_shard_size, done, write_failed, state)
        for rec in iter_latest(scan):
            meta = _meta_values(rec.metadata, meta_types)
            if rec.status != STATUS_DONE:
                if include_failed:
                    fails.add(Row(_failure_columns(rec, meta), sample=sample_key(rec.key, None)))
                continue
            several = len(rec.files) > 1
            for i, file in enumerate(rec.files):
                path = os.path.join(root, file.path)
                if not is_relative_inside(file.path) or not os.path.isfile(path):
                    report.missing_files += 1
                    continue
                data.add(Row(_done_columns(rec, file, meta), path=file.path,
                             sample=sample_key(rec.key, i if several else None),
                             size=file.bytes))
        data.flush(force=not data.names)  # an empty run still gets one (empty) shard
        if include_failed:
            fails.flush(force=not fails.names)
    report.removed = data.remove_stale() + fails.remove_stale()
    if not include_failed:
        try:
            os.rmdir(fails.dir)
        except OSError:
            pass  # not empty: files that are not ours
    report.rows, report.failures = data.total, fails.total
    report.shards = len(data.names) + len(fails.names)
    report.written, report.skipped = data.written + fails.written, data.skipped + fails.skipped
    report.shard_names = [f"data/{n}" for n in data.names] + [f"failures/{n}" for n in fails.names]
    _write_card(target, format, image_ext, done_types, fail_types, report, include_failed)
    return report


def _write_card(target: str, fmt: str, image_ext: str, done_types: dict[str, str],
                fail_types: dict[str, str], report: ExportReport, failures: bool) -> None:
    ext = "parquet" if fmt == "parquet" else "tar"
    if fmt == "parquet":
        done_features = hf_features(done_types, image="image")
        fail_features = hf_features(fail_types, image=None)
    else:
        wds = {"__key__": {"dtype": "string", "_type": "Value"},
               "__url__": {"dtype": "string", "_type": "Value"}}
        done_features = {image_ext: {"_type": "Image"}, "json": hf_features(done_types,
                                                                          image=None), **wds}
        fail_features = {"json": hf_features(fail_types, image=None), **wds}
    tables: list[tuple[str, str, dict[str, Any]]] = [
        ("default", f"data/train-*.{ext}", done_features)]
    if failures:
        tables.append(("failures", f"failures/failures-*.{ext}", fail_features))
    summary = {"images": report.rows, "shards": report.shards, "format": fmt}
    if failures:
        summary["failed, blocked or no_image items"] = report.failures
    text = card_text(fmt=fmt, tables=tables, summary=summary)
    write_atomic_sync(os.path.join(target, "README.md"), text.encode(), digest=False)
