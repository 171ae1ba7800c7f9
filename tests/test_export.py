"""``cometgen export``: the shards load with the real ``datasets``, images intact."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import datasets
import pytest
from _mock_run import cli, latest, make_run
from PIL import Image

from cometgen._bulk._export import STATE_NAME, export_dataset, parse_size
from cometgen._bulk._export_rows import metadata_columns, sample_key
from cometgen._exceptions import ConfigError

COLUMNS = ["image", "prompt", "id", "key", "model", "aspect_ratio", "image_size", "seed",
           "mime_type", "sha256", "cost", "usage"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


def done_files(out: Path) -> dict[str, dict[str, Any]]:
    """sha256 and record of every image the manifest says is done, by path."""
    files = {}
    for rec in latest(out).values():
        if rec["status"] == "done":
            for f in rec["files"]:
                files[f["path"]] = {"record": rec, **f}
    return files


def load(fmt: str, dest: Path, **kwargs: Any) -> datasets.Dataset:
    ext = "parquet" if fmt == "parquet" else "tar"
    files = sorted(glob.glob(str(dest / "data" / f"*.{ext}")))
    ds = datasets.load_dataset(fmt, data_files=files, split="train", **kwargs)
    assert isinstance(ds, datasets.Dataset)
    return ds


def check_image(data: bytes, expected: dict[str, Any]) -> None:
    assert hashlib.sha256(data).hexdigest() == expected["sha256"]
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.format == {"image/png": "PNG", "image/jpeg": "JPEG"}[expected["mime_type"]]


def test_parquet_loads_every_done_row(run_dir: Path, tmp_path: Path) -> None:
    report = export_dataset(run_dir, tmp_path / "ds", format="parquet", max_per_shard=7)
    expected = done_files(run_dir)
    assert {f["mime_type"] for f in expected.values()} == {"image/png", "image/jpeg"}
    assert all(p.startswith("images/0000/000/") for p in expected)  # lines 1-24: one folder
    assert report.rows == len(expected) == 20 and report.shards == 3
    ds = load("parquet", tmp_path / "ds")
    assert isinstance(ds.features["image"], datasets.Image)  # from the schema metadata
    assert ds.column_names[: len(COLUMNS)] == COLUMNS
    assert {"i", "style", "metadata_key"} <= set(ds.column_names)
    decoded = ds[0]["image"]
    assert isinstance(decoded, Image.Image) and decoded.size == (64, 64)
    raw = ds.cast_column("image", datasets.Image(decode=False))
    seen = set()
    for row in raw:
        want = expected[row["image"]["path"]]
        check_image(row["image"]["bytes"], want)
        rec = want["record"]
        assert (row["key"], row["id"], row["prompt"], row["model"]) == (
            rec["key"], rec["id"], rec["prompt"], rec["model"])
        assert row["sha256"] == want["sha256"] and row["cost"] == pytest.approx(rec["cost"])
        assert row["usage"]["total_tokens"] == rec["usage"]["total_tokens"]
        assert row["i"] == rec["metadata"]["i"] and row["metadata_key"] == rec["metadata"]["key"]
        seen.add(row["key"])
    assert len(seen) == len(expected)
    # The card: load_dataset(DEST) as is, default config = the images.
    card = datasets.load_dataset(str(tmp_path / "ds"), split="train")
    assert len(card) == len(expected) and isinstance(card.features["image"], datasets.Image)


def test_webdataset_loads_mixed_png_and_jpeg(run_dir: Path, tmp_path: Path) -> None:
    report = export_dataset(run_dir, tmp_path / "wds", format="webdataset", max_per_shard=6)
    expected = done_files(run_dir)
    assert report.rows == len(expected) and report.shards == 4
    for shard in glob.glob(str(tmp_path / "wds" / "data" / "*.tar")):
        with tarfile.open(shard) as tar:
            names = tar.getnames()
        keys = [n.split(".", 1)[0] for n in names]  # what WebDataset readers do
        assert len(names) == 2 * len(set(keys))  # one image + one .json per sample
    ds = load("webdataset", tmp_path / "wds")
    assert len(ds) == len(expected)
    keys = ds["__key__"]
    assert len(set(keys)) == len(keys) and not any("." in k for k in keys)
    by_sha = {(f["record"]["key"]): f for f in expected.values()}
    for row in ds:
        meta = row["json"]
        want = by_sha[meta["key"]]
        check_image(row["image"], want)  # mixed formats: one neutral ".image" field
        assert meta["sha256"] == want["sha256"] and meta["prompt"] == want["record"]["prompt"]
        assert set(COLUMNS[1:]) <= set(meta)
    # Through the card the image column gets its Image feature and decodes.
    card = datasets.load_dataset(str(tmp_path / "wds"), split="train")
    assert isinstance(card.features["image"], datasets.Image)
    assert isinstance(card[0]["image"], Image.Image) and len(card) == len(expected)


def test_png_only_run_uses_png_members(tmp_path: Path) -> None:
    out = make_run(tmp_path, models=("gemini-2.5-flash-image",))
    export_dataset(out, tmp_path / "wds", format="webdataset")
    with tarfile.open(tmp_path / "wds" / "data" / "train-00000.tar") as tar:
        assert {n.rsplit(".", 1)[1] for n in tar.getnames()} == {"png", "json"}
    ds = load("webdataset", tmp_path / "wds")  # no card: the extension makes it an Image
    assert isinstance(ds.features["png"], datasets.Image) and len(ds) == 20


def test_include_failed_and_idempotent_rerun(run_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "ds"
    first = export_dataset(run_dir, dest, format="parquet", max_per_shard=5,
                           include_failed=True)
    failed = {k: r for k, r in latest(run_dir).items() if r["status"] != "done"}
    assert first.failures == len(failed) == 4 and first.written == first.shards == 5
    fails = datasets.load_dataset(str(dest), "failures", split="train")
    assert {r["key"]: r["status"] for r in fails} == {k: r["status"] for k, r in failed.items()}
    assert all(r["reason"] or r["block_reason"] or r["finish_reason"] for r in fails)
    stamps = {p: os.stat(p).st_mtime_ns for p in glob.glob(str(dest / "*" / "*.parquet"))}
    again = export_dataset(run_dir, dest, format="parquet", max_per_shard=5,
                           include_failed=True)
    assert (again.written, again.skipped) == (0, 5)
    # A crash while writing shard 2: its file is gone, its state line torn.
    victim = dest / "data" / "train-00002.parquet"
    victim.unlink()
    state = (dest / STATE_NAME).read_bytes()
    (dest / STATE_NAME).write_bytes(state + b'{"name": "data/tr')
    (dest / "data" / ".train-00003.parquet.0123456789ab.tmp").write_bytes(b"partial")
    third = export_dataset(run_dir, dest, format="parquet", max_per_shard=5,
                           include_failed=True)
    assert (third.written, third.skipped) == (1, 4)
    for path, stamp in stamps.items():
        if path != str(victim):
            assert os.stat(path).st_mtime_ns == stamp  # finished shards not rewritten
    assert sorted(os.listdir(dest / "data")) == [f"train-0000{i}.parquet" for i in range(4)]
    # Other options: a different cut, stale shards and the failures table removed.
    fourth = export_dataset(run_dir, dest, format="parquet", max_per_shard=50)
    assert fourth.shards == 1 and fourth.removed == 4 and not (dest / "failures").exists()
    assert len(datasets.load_dataset(str(dest), split="train")) == first.rows


def test_max_shard_size_cuts_shards(run_dir: Path, tmp_path: Path) -> None:
    report = export_dataset(run_dir, tmp_path / "ds", format="webdataset",
                            max_shard_size=parse_size("5kB"))
    assert report.shards > 2 and report.rows == len(done_files(run_dir))


def test_sample_keys_have_no_dot_and_stay_unique() -> None:
    assert sample_key("cat-001", None) == "cat-001"
    keys = {sample_key(k, i) for k in ("v1.2-final", "v1_2-final", "a/b", "a b", "é.x",
                                       "x-0123456789abcdef") for i in (None, 0, 1)}
    assert len(keys) == 18 and not any("." in k for k in keys)
    assert sample_key("v1.2-final", None).startswith("v1_2-final-")


def test_parse_size() -> None:
    assert parse_size("500MB") == 500_000_000 and parse_size("1GiB") == 1 << 30
    assert parse_size("1000") == 1000 and parse_size("1.5 kb") == 1500
    with pytest.raises(ConfigError, match="invalid size"):
        parse_size("lots")


def test_cli_export_and_run_export(tmp_path: Path) -> None:
    out = make_run(tmp_path, "--export", "webdataset", "--max-per-shard", "8")
    assert sorted(os.listdir(tmp_path / "out-webdataset" / "data")) == [
        "train-00000.tar", "train-00001.tar", "train-00002.tar"]
    proc = cli("export", str(out), "-o", str(tmp_path / "pq"), "--format", "parquet",
               "--max-shard-size", "1MB", "--include-failed", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["rows"] == 20 and summary["failures"] == 4 and summary["shards"] == 2
    bad = cli("export", str(tmp_path / "nope"), "-o", str(tmp_path / "x"), "--format",
              "parquet")
    assert bad.returncode == 2 and "no manifest.jsonl" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_missing_pyarrow_says_how_to_install(run_dir: Path, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['pyarrow'] = None; from cometgen._cli import main; "
            f"sys.exit(main(['export', {str(run_dir)!r}, '-o', {str(tmp_path / 'd')!r}, "
            "'--format', 'parquet']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "pip install 'cometgen[datasets]'" in proc.stderr and "Traceback" not in proc.stderr


def test_metadata_names_never_replace_a_column() -> None:
    assert metadata_columns({"reason": 1, "key": 2, "file_name": 3, "x": 4}) == {
        "metadata_reason": 1, "metadata_key": 2, "metadata_file_name": 3, "x": 4}
    assert metadata_columns(["a"]) == {"metadata": ["a"]} and metadata_columns(None) == {}
