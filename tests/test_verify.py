"""``verify_folder``: only the latest ``done`` records count; paths stay inside OUTDIR."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cometgen._bulk._verify import record_broken, verify_folder


def _file(out: Path, rel: str, data: bytes) -> dict[str, object]:
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    (out / rel).write_bytes(data)
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "mime_type": "image/png",
            "bytes": len(data)}


def test_only_latest_done_records_are_checked_and_paths_stay_inside(tmp_path: Path) -> None:
    good = _file(tmp_path, "images/a.png", b"a" * 3000)
    (tmp_path.parent / "outside.png").write_bytes(b"o")
    lines = [
        {"key": "gone", "status": "done", "files": [{**good, "path": "images/gone.png"}]},
        {"key": "gone", "status": "failed", "reason": "later record wins"},
        {"key": "a", "status": "done", "files": [good]},
        {"key": "escape", "status": "done",
         "files": [{**good, "path": "../outside.png", "bytes": 1}]},
        {"key": "blocked", "status": "blocked"},
    ]
    (tmp_path / "manifest.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in lines) + '{"key": "torn", "sta')
    report = verify_folder(tmp_path)
    assert report.files == 2 and report.bytes == 3001
    assert [(p.key, p.problem) for p in report.problems] == [("escape", "missing")]


@pytest.mark.anyio
async def test_record_broken_skips_items_no_longer_done(tmp_path: Path) -> None:
    f = _file(tmp_path, "images/b.png", b"b" * 10)
    (tmp_path / "manifest.jsonl").write_text(
        json.dumps({"key": "b", "status": "done", "files": [f], "cost": 0.1}) + "\n")
    (tmp_path / "images/b.png").write_bytes(b"c" * 10)
    report = verify_folder(tmp_path)
    assert [p.problem for p in report.problems] == ["sha256 differs"]
    with (tmp_path / "manifest.jsonl").open("a") as m:  # meanwhile, something else happened
        m.write(json.dumps({"key": "b", "status": "failed", "reason": "x"}) + "\n")
    assert await record_broken(tmp_path, report) == 0
    assert (tmp_path / "images/b.png").exists()
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 2


def test_progress_reports_the_files_checked_so_far(tmp_path: Path) -> None:
    lines = [{"key": f"k{i}", "status": "done", "files": [_file(tmp_path, f"i/{i}.png", b"%d" % i)]}
             for i in range(600)]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    seen: list[int] = []
    report = verify_folder(tmp_path, progress=lambda so_far: seen.append(so_far.files))
    assert report.ok and report.files == 600 and seen == [256, 512]
