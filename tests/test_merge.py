"""``cometgen merge``: overlaps, conflicts, collisions, links vs copies, atomic output."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from cometgen import MergeConflictError, merge_outputs
from cometgen._cli import main


def _out(folder: Path, items: dict[str, tuple[str, bytes | None]], name: str = "") -> Path:
    """A fake run folder: key -> (status, image bytes or None)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, (status, data) in items.items():
        rec: dict[str, object] = {"key": key, "id": key, "status": status, "prompt": f"p {key}",
                                  "extra_field": 1}
        if data is not None:
            file = name or f"{key}.png"
            (folder / file).write_bytes(data)
            rec["files"] = [{"path": file, "sha256": hashlib.sha256(data).hexdigest(),
                             "mime_type": "image/png", "bytes": len(data)}]
        lines.append(json.dumps(rec))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n{torn")
    return folder


def _keys(folder: Path) -> dict[str, str]:
    return {json.loads(line)["key"]: json.loads(line)["status"]
            for line in (folder / "manifest.jsonl").read_text().splitlines()}


def test_identical_overlap_and_superseded_failure(tmp_path: Path) -> None:
    a = _out(tmp_path / "a", {"x": ("done", b"X"), "y": ("failed", None)})
    b = _out(tmp_path / "b", {"x": ("done", b"X"), "y": ("done", b"Y"), "z": ("blocked", None)})
    report = merge_outputs([a, b], tmp_path / "m")
    assert report.identical_overlaps == 1 and report.superseded_failures == 1
    assert report.corrupt_lines == 2 and report.linked == 2 and report.metadata_lines == 2
    assert _keys(tmp_path / "m") == {"x": "done", "y": "done", "z": "blocked"}
    assert os.path.samefile(tmp_path / "m" / "y.png", b / "y.png")  # hard link
    assert '"extra_field": 1' in (tmp_path / "m" / "manifest.jsonl").read_text()


def test_conflict_writes_nothing_unless_prefer(tmp_path: Path) -> None:
    a = _out(tmp_path / "a", {"x": ("done", b"one")})
    b = _out(tmp_path / "b", {"x": ("done", b"two")})
    with pytest.raises(MergeConflictError) as info:
        merge_outputs([a, b], tmp_path / "m")
    assert info.value.report.conflicts == ["x"]
    assert not (tmp_path / "m").exists()
    assert main(["merge", str(a), str(b), "-o", str(tmp_path / "m")]) == 1
    assert main(["merge", str(a), str(b), "-o", str(tmp_path / "m"), "--prefer", "last",
                 "--copy"]) == 0
    assert (tmp_path / "m" / "x.png").read_bytes() == b"two"
    assert not os.path.samefile(tmp_path / "m" / "x.png", b / "x.png")  # copied
    assert main(["merge", str(a), "-o", str(tmp_path / "m")]) == 2  # has a manifest already


def test_file_name_collision_is_reported(tmp_path: Path) -> None:
    a = _out(tmp_path / "a", {"x": ("done", b"one")}, name="same.png")
    b = _out(tmp_path / "b", {"y": ("done", b"two")}, name="same.png")
    with pytest.raises(MergeConflictError) as info:
        merge_outputs([a, b], tmp_path / "m", prefer="first")
    assert info.value.report.collisions == ["same.png"]


def test_missing_manifest_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["merge", str(tmp_path / "empty"), "-o", str(tmp_path / "m")]) == 2
