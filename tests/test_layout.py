"""OUTDIR layout: images under ``images/<2 hex>/<2 hex>/``, old flat folders still read."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import datasets
import pytest

import cometgen
from cometgen._bulk._export import export_dataset
from cometgen._bulk._gallery import write_gallery
from cometgen._bulk._merge import merge_outputs
from cometgen._files import cleanup_temp_files, image_file_name, image_path
from cometgen.testing import MockServer

FAST = cometgen.RetryPolicy(initial_delay=0.01, max_delay=0.05)


def records(out: Path) -> dict[str, dict[str, object]]:
    recs = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        recs[rec["key"]] = rec
    return recs


async def run(out: Path, jobs: list[cometgen.Job]) -> int:
    """Run ``jobs`` into ``out`` against a fresh mock; returns the requests it got."""
    async with MockServer() as server, cometgen.AsyncClient(
        api_key="k", base_url=server.url, retry=FAST
    ) as client:
        async with cometgen.Batch(client, out_dir=out, concurrency=4) as batch:
            await batch.run_all(jobs)
        return server.stats.requests


def jobs(n: int) -> list[cometgen.Job]:
    return [cometgen.Job(prompt=f"p{i}", id=f"v1.{i}" if i % 2 else f"img-{i}",
                         metadata={"i": i}) for i in range(n)]


def test_image_path_from_the_line_or_the_key() -> None:
    assert image_path("cat", None, None, "png", 1) == "images/0000/000/cat.png"
    assert image_path("cat", None, None, "png", 123_456) == "images/0001/234/cat.png"
    digest = hashlib.sha256(b"cat").hexdigest()  # no line: jobs built in Python
    assert image_path("cat", None, None, "png") == f"images/h{digest[:2]}/{digest[2:4]}/cat.png"
    assert image_path("Cat", "Cat", 3, "png", 7).endswith(image_file_name("Cat", "Cat", 3, "png"))


@pytest.mark.parametrize("by_line", [True, False])
def test_no_folder_over_10000_files_at_a_million_prompts(by_line: bool) -> None:
    # Worst case by line: every prompt asks for the maximum number of images (n=64).
    n = 64 if by_line else 1
    files = Counter(image_path(f"item-{i}", None, j if n > 1 else None, "png",
                               i + 1 if by_line else None).rsplit("/", 1)[0]
                    for i in range(1_000_000 // n * (n if not by_line else 1))
                    for j in range(n))
    assert max(files.values()) <= 6_400
    folders = Counter(leaf.rsplit("/", 1)[0] for leaf in files)
    assert max(folders.values()) <= 1_000 and len({f.split("/")[1] for f in files}) <= 1_000


@pytest.mark.anyio
async def test_run_writes_nested_images_and_stays_an_imagefolder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert await run(out, jobs(12)) == 12
    assert sorted(p.name for p in out.iterdir()) == ["images", "manifest.jsonl",
                                                     "metadata.jsonl"]
    for rec in records(out).values():
        (file,) = rec["files"]  # type: ignore[misc]
        assert file["path"].startswith("images/h") and file["path"].count("/") == 3
        assert (out / file["path"]).is_file()
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    assert len(ds) == 12 and sorted(ds["i"]) == list(range(12))
    # Resume: nothing sent again; an unrecorded image in the new layout is adopted.
    assert await run(out, jobs(12)) == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    assert await run(out, jobs(12)) == 0
    assert "adopted" in str(records(out)[json.loads(lines[-1])["key"]]["reason"])
    # A temp file left in an image folder by kill -9 is cleaned up.
    leaf = (out / json.loads(lines[0])["files"][0]["path"]).parent
    (leaf / ".x.png.0123456789ab.tmp").write_bytes(b"partial")
    assert cleanup_temp_files(out) == 1


def flatten(out: Path) -> None:
    """Turn a run folder into the layout of earlier versions: images at the top."""
    lines = []
    for line in (out / "manifest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for f in rec.get("files", []):
            name = f["path"].rsplit("/", 1)[1]
            shutil.move(str(out / f["path"]), str(out / name))
            f["path"] = name
        lines.append(json.dumps(rec))
    shutil.rmtree(out / "images")
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.anyio
async def test_old_flat_folders_are_still_read(tmp_path: Path) -> None:
    old = tmp_path / "old"
    await run(old, jobs(8))
    flatten(old)
    lines = (old / "manifest.jsonl").read_text().splitlines()
    (old / "manifest.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # one record lost
    # Resume: nothing paid again; the unrecorded flat image is adopted where it is.
    assert await run(old, jobs(8)) == 0
    lost = json.loads(lines[-1])
    adopted = records(old)[lost["key"]]
    assert "adopted" in str(adopted["reason"])
    assert adopted["files"][0]["path"] == lost["files"][0]["path"]  # type: ignore[index]
    # New items of a resumed old folder go to the new layout; both load as one dataset.
    assert await run(old, jobs(10)) == 2
    ds = datasets.load_dataset("imagefolder", data_dir=str(old), split="train")
    assert len(ds) == 10
    new = tmp_path / "new"
    await run(new, [cometgen.Job(prompt=f"q{i}", id=f"q{i}") for i in range(3)])
    merged = merge_outputs([old, new], tmp_path / "merged")
    assert merged.keys == 13 and merged.missing_files == 0
    assert export_dataset(tmp_path / "merged", tmp_path / "ds", format="parquet").rows == 13
    assert write_gallery(tmp_path / "merged").images == 13
