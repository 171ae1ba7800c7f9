"""``merge``: combine the output folders of sharded runs into one dataset folder.

Each input's manifest is reduced to its latest record per key; the inputs are combined,
image files are hard-linked into the output (copied when linking is impossible, e.g.
across file systems), then ``manifest.jsonl`` and ``metadata.jsonl`` are written
atomically. The same key in two inputs is fine when both say the same thing (same status
and image sha256s); a ``failed`` record loses to any answer; anything else is a conflict,
resolved only by ``prefer="first"|"last"``. Two keys claiming the same file name are a
collision. With unresolved conflicts or collisions nothing is written.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec

from .._exceptions import ConfigError, MergeConflictError
from .._files import atomic_write, fsync_dir, write_atomic_sync
from ._manifest import MANIFEST_NAME, STATUS_DONE, STATUS_FAILED
from ._metadata import write_metadata_jsonl

__all__ = ["MergeReport", "merge_outputs"]

Prefer = Literal["first", "last"]



class _File(msgspec.Struct):
    path: str
    sha256: str = ""


class _Rec(msgspec.Struct):
    # Only what merging needs; the line itself is copied verbatim (unknown fields kept).
    key: str
    status: str
    files: list[_File] = []
    raw: bytes = b""


_decoder: Final = msgspec.json.Decoder(_Rec)


@dataclass
class MergeReport:
    """What ``merge_outputs`` found and did."""

    inputs: list[str]
    keys: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    #: same key in several inputs with the same status and image sha256s
    identical_overlaps: int = 0
    #: same key: a failed record dropped in favour of another input's answer
    superseded_failures: int = 0
    #: keys whose records disagree (resolved when ``prefer`` is set)
    conflicts: list[str] = field(default_factory=list)
    #: output file names claimed by two different keys
    collisions: list[str] = field(default_factory=list)
    linked: int = 0
    copied: int = 0
    #: image files a done record names that are missing from its input folder
    missing_files: int = 0
    corrupt_lines: int = 0
    metadata_lines: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "inputs": self.inputs, "keys": self.keys, **self.counts,
            "identical_overlaps": self.identical_overlaps,
            "superseded_failures": self.superseded_failures,
            "conflicts": len(self.conflicts), "conflict_keys": self.conflicts[:100],
            "collisions": self.collisions[:100], "linked": self.linked, "copied": self.copied,
            "missing_files": self.missing_files, "corrupt_lines": self.corrupt_lines,
            "metadata_lines": self.metadata_lines,
        }


def _latest(folder: str, report: MergeReport) -> dict[str, _Rec]:
    path = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ConfigError(f"{folder}: no {MANIFEST_NAME} here")
    latest: dict[str, _Rec] = {}
    with open(path, "rb", buffering=1 << 20) as f:
        for line in f:
            try:
                rec = _decoder.decode(line)
            except msgspec.DecodeError:
                if line.strip():
                    report.corrupt_lines += 1
                continue
            rec.raw = line.rstrip(b"\r\n") + b"\n"
            latest.pop(rec.key, None)  # re-insert: order follows each key's last record
            latest[rec.key] = rec
    return latest


def _same(a: _Rec, b: _Rec) -> bool:
    return a.status == b.status and [f.sha256 for f in a.files] == [f.sha256 for f in b.files]


def _plain_relative(path: str) -> bool:
    return bool(path) and not path.startswith("/") and "\\" not in path and "\x00" not in path \
        and all(part not in ("", ".", "..") for part in path.split("/"))


def merge_outputs(
    inputs: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    prefer: Prefer | None = None,
    link: bool = True,
) -> MergeReport:
    """Merge the output folders ``inputs`` into ``out_dir`` (new, or without a manifest).

    Raises ``MergeConflictError`` (nothing written) on unresolved conflicts or file-name
    collisions, ``ConfigError`` on unusable folders. Blocking; O(keys) memory.
    """
    if prefer not in (None, "first", "last"):
        raise ConfigError(f"prefer must be 'first' or 'last', got {prefer!r}")
    folders = [os.fspath(p) for p in inputs]
    out = os.fspath(out_dir)
    if not folders:
        raise ConfigError("nothing to merge: give at least one output folder")
    out_real = os.path.realpath(out)
    for folder in folders:
        if os.path.realpath(folder) == out_real:
            raise ConfigError(f"{out}: the merge output cannot be one of its inputs")
    if os.path.exists(os.path.join(out, MANIFEST_NAME)):
        raise ConfigError(f"{out}: already has a {MANIFEST_NAME}; merge into a new folder")
    report = MergeReport(inputs=folders)

    chosen: dict[str, tuple[int, _Rec]] = {}
    for index, folder in enumerate(folders):
        for key, rec in _latest(folder, report).items():
            previous = chosen.get(key)
            if previous is None:
                chosen[key] = (index, rec)
                continue
            old = previous[1]
            if _same(old, rec):
                report.identical_overlaps += 1  # keep the first
            elif rec.status == STATUS_FAILED or old.status == STATUS_FAILED:
                report.superseded_failures += 1
                if old.status == STATUS_FAILED and rec.status != STATUS_FAILED:
                    chosen[key] = (index, rec)
                elif old.status == rec.status:  # both failed: the later input's
                    chosen[key] = (index, rec)
            else:
                report.conflicts.append(key)
                if prefer == "last":
                    chosen[key] = (index, rec)

    owners: dict[str, str] = {}
    for key, (_, rec) in chosen.items():
        if rec.status != STATUS_DONE:
            continue
        for file in rec.files:
            if not _plain_relative(file.path):
                raise ConfigError(f"key {key!r}: unsafe file path {file.path!r} in a manifest")
            other = owners.setdefault(file.path, key)
            if other != key:
                report.collisions.append(file.path)
    report.keys = len(chosen)
    if (report.conflicts and prefer is None) or report.collisions:
        parts = []
        if report.conflicts and prefer is None:
            parts.append(f"{len(report.conflicts)} key(s) differ between inputs (e.g. "
                         f"{report.conflicts[0]!r}); pass --prefer first|last")
        if report.collisions:
            parts.append(f"{len(report.collisions)} file name(s) claimed by two keys (e.g. "
                         f"{report.collisions[0]!r})")
        raise MergeConflictError("; ".join(parts) + "; nothing was written", report=report)

    os.makedirs(out, exist_ok=True)
    counts: dict[str, int] = {}
    made_dirs: set[str] = set()
    records: list[bytes] = []
    for _key, (index, rec) in chosen.items():
        counts[rec.status] = counts.get(rec.status, 0) + 1
        if rec.status == STATUS_DONE:
            for file in rec.files:
                _place(os.path.join(folders[index], file.path), out, file.path, made_dirs,
                       link, report)
        records.append(rec.raw)
    report.counts = counts
    for directory in made_dirs:  # the links and copies made there, before the manifest
        fsync_dir(directory)
    write_atomic_sync(os.path.join(out, MANIFEST_NAME), b"".join(records))
    report.metadata_lines = write_metadata_jsonl(out)
    return report


def _place(src: str, out: str, rel: str, made_dirs: set[str], link: bool,
           report: MergeReport) -> None:
    if not os.path.isfile(src):
        report.missing_files += 1
        return
    dst = os.path.join(out, *rel.split("/"))
    directory = os.path.dirname(dst)
    if directory not in made_dirs:
        os.makedirs(directory, exist_ok=True)
        made_dirs.add(directory)
    if link:
        try:
            _link_into_place(src, dst)
        except OSError:
            pass
        else:
            report.linked += 1
            return
    with open(src, "rb") as source, atomic_write(dst) as copy:
        shutil.copyfileobj(source, copy)
    report.copied += 1


def _link_into_place(src: str, dst: str) -> None:
    """Hard-link ``src`` as ``dst``; a link appears complete or not at all, so no temp file
    is needed. A leftover from an interrupted merge (no manifest yet names it) is replaced."""
    try:
        os.link(src, dst)
    except FileExistsError:
        os.unlink(dst)
        os.link(src, dst)
