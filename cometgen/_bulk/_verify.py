"""Checking a folder's images against its manifest: each file there, of its size and sha256.

A run only records an image after it is durably in place, so a problem found here happened
afterwards: a file deleted, truncated or edited by hand, a copy that went wrong.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

import anyio
import anyio.to_thread
import msgspec

from .._files import is_relative_inside
from ._export_rows import iter_latest, scan_manifest
from ._manifest import (
    STATUS_DONE,
    STATUS_FAILED,
    ManifestRecord,
    manifest_path,
    utc_now,
)
from ._manifest_writer import ManifestWriter
from ._metadata import write_metadata_jsonl

__all__ = ["BROKEN_REASON", "FileProblem", "VerifyReport", "record_broken", "verify_folder"]

#: The reason of the ``failed`` record that ``record_broken`` appends for an item.
BROKEN_REASON: Final = "image file missing or damaged (found by cometgen status --verify)"

#: Files hashed at once: hashlib releases the GIL on large buffers, so reads and hashing of
#: a few files overlap on several cores and on the disk's queue.
_WORKERS: Final = 4
#: Files handed to the pool per round: bounds the futures held for a million-image folder.
_ROUND: Final = 256
_CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class FileProblem:
    """One image file of a ``done`` item that is not what its manifest record says."""

    key: str
    path: str  #: relative to OUTDIR, as recorded
    problem: str  #: "missing", "size N, recorded M" or "sha256 differs"


@dataclass
class VerifyReport:
    """What ``verify_folder`` found; ``ok`` when every recorded image checked out."""

    files: int = 0  #: image files checked
    bytes: int = 0  #: their recorded size, summed
    problems: list[FileProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def broken_keys(self) -> list[str]:
        """Keys with at least one problem file, in manifest order, each once."""
        return list(dict.fromkeys(p.key for p in self.problems))

    @property
    def missing(self) -> int:
        """Problem files that are not there."""
        return sum(p.problem == "missing" for p in self.problems)

    @property
    def damaged(self) -> int:
        """Problem files that are there but not as recorded (size, sha256, unreadable)."""
        return len(self.problems) - self.missing


def verify_folder(
    out_dir: str | os.PathLike[str], *, progress: Callable[[VerifyReport], None] | None = None
) -> VerifyReport:
    """Check every image file named by a ``done`` record (the latest of its key) in
    ``OUTDIR/manifest.jsonl``: present, of the recorded size, with the recorded sha256.

    Streams the manifest and hashes a few files at once; memory is the manifest scan's
    (the keys that have several records) plus the problems found. ``progress`` is called
    with the report so far after every few hundred files. Blocking.
    """
    root = os.fspath(out_dir)
    report = VerifyReport()
    with concurrent.futures.ThreadPoolExecutor(_WORKERS) as pool:
        batch: list[tuple[str, str, int, str]] = []
        for entry in _recorded_files(root):
            batch.append(entry)
            if len(batch) >= _ROUND:
                _check(pool, root, batch, report)
                batch = []
                if progress is not None:
                    progress(report)
        _check(pool, root, batch, report)
    return report


def _recorded_files(root: str) -> Iterator[tuple[str, str, int, str]]:
    """(key, path, bytes, sha256) of each image file of each latest ``done`` record."""
    for rec in iter_latest(scan_manifest(root)):
        if rec.status == STATUS_DONE:
            for file in rec.files:
                yield rec.key, file.path, file.bytes, file.sha256


def _check(pool: concurrent.futures.ThreadPoolExecutor, root: str,
           batch: list[tuple[str, str, int, str]], report: VerifyReport) -> None:
    problems = pool.map(lambda entry: _problem(root, *entry[1:]), batch)
    for (key, path, size, _), problem in zip(batch, problems, strict=True):
        report.files += 1
        report.bytes += size
        if problem is not None:
            report.problems.append(FileProblem(key, path, problem))


def _problem(root: str, path: str, size: int, sha256: str) -> str | None:
    if not is_relative_inside(path):
        return "missing"  # a path outside OUTDIR names no image of this folder
    full = os.path.join(root, path)
    try:
        actual = os.stat(full).st_size
        if actual != size:
            return f"size {actual}, recorded {size}"
        digest = hashlib.sha256()
        with open(full, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return "missing"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if sha256 and digest.hexdigest() != sha256:
        return "sha256 differs"
    return None


async def record_broken(out_dir: str | os.PathLike[str], report: VerifyReport) -> int:
    """Remove the image files of each item of ``report`` whose latest record is still
    ``done`` and append a ``failed`` record for it (``BROKEN_REASON``, not billed, no cost),
    then rebuild ``metadata.jsonl``; a rerun with ``retry_failed`` generates those items
    again. Returns how many were recorded.

    The files go first: a resumed run adopts an unrecorded image found under an item's name,
    and a damaged one must not be adopted back. Holds the folder's lock while it writes
    (``OutputLockedError`` if a run holds it).
    """
    root = os.fspath(out_dir)
    broken = report.broken_keys
    if not broken:
        return 0
    recorded = 0
    async with ManifestWriter(root) as writer:
        # Read under the lock: only what is still done is marked.
        latest = await anyio.to_thread.run_sync(_latest_records, root, set(broken))
        now = utc_now()
        for key in broken:
            rec = latest.get(key)
            if rec is None or rec.status != STATUS_DONE:
                continue
            await anyio.to_thread.run_sync(_remove_files, root, rec)
            await writer.write(msgspec.structs.replace(
                rec, status=STATUS_FAILED, reason=BROKEN_REASON, error_type="VerifyError",
                finish_reason=None, files=[], text=[], usage=None, cost=None, attempts=0,
                maybe_billed=False, cached=False, latency=None, started_at=now,
                finished_at=now,
            ))
            recorded += 1
    await anyio.to_thread.run_sync(write_metadata_jsonl, root)
    return recorded


_record_decoder: Final = msgspec.json.Decoder(ManifestRecord)


def _remove_files(root: str, rec: ManifestRecord) -> None:
    for file in rec.files:
        if is_relative_inside(file.path):
            try:
                os.unlink(os.path.join(root, file.path))
            except FileNotFoundError:
                pass


def _latest_records(root: str, keys: set[str]) -> dict[str, ManifestRecord]:
    found: dict[str, ManifestRecord] = {}
    with open(manifest_path(root), "rb", buffering=1 << 20) as f:
        for line in f:
            try:
                rec = _record_decoder.decode(line)
            except msgspec.DecodeError:
                continue  # a torn or foreign line: load_manifest skips it too
            if rec.key in keys:
                found[rec.key] = rec
    return found
