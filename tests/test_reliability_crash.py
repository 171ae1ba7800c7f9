"""Reliability: kill -9 torture, full disks, and a second run on a busy output folder.

Real processes (``python -m cometgen run``) and real HTTP to a threaded mock server. The
long version of the torture is ``python -m tests.torture --kills 100``.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _reliability import (
    KEY,
    check_final_state,
    clean_env,
    cometgen_cmd,
    crash_torture,
    read_manifest,
    scan_out_dir,
    torture_input,
)

import cometgen
from cometgen._bulk._manifest_writer import ManifestWriter
from cometgen._files import temp_name_for
from cometgen.testing import MockServer


def test_kill_9_torture_loses_nothing_and_never_pays_for_done_twice(tmp_path: Path) -> None:
    report = crash_torture(tmp_path, items=2000, kills=10, seed=20240601, concurrency=24,
                           latency=0.02, run_timeout=120)
    print("torture:", report.summary())
    assert report.kills == 10
    assert report.problems == []  # nothing lost, no duplicate done, sha256 ok, no temp files
    assert report.resent_done == []  # done before a kill: never sent again
    assert report.resent_on_disk == []  # image renamed into place: adopted, not re-sent
    assert report.partial_images == []  # never a half-written image under a final name
    assert report.stray_files == []
    assert report.corrupt_lines <= report.kills
    # Paid again: only what a kill left paid but neither recorded nor on disk, counted at
    # each kill from the mock's bills and the folder (in flight or not yet flushed).
    assert len(report.exposed_per_kill) == report.kills
    assert report.unexplained_billing == []
    assert report.billed_total <= report.items + sum(report.exposed_per_kill)
    assert len(report.billed_twice) <= sum(report.exposed_per_kill)


# --------------------------------------------------------------------------- full disks


def _limit_file_size(limit: int) -> None:
    # In the child: writes past `limit` fail with EFBIG instead of killing it (SIGXFSZ).
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _run(args: list[str], *, limit: int | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=clean_env(), capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
        preexec_fn=(lambda: _limit_file_size(limit)) if limit is not None else None,
    )


def _assert_valid_manifest(out: Path) -> None:
    view = read_manifest(out)
    assert view.corrupt == 0  # a failed append is truncated away, never left half-written
    for rec in view.records:
        for f in rec.get("files", []):
            assert (out / f["path"]).is_file()
    assert not scan_out_dir(out)[1], "temp files left behind"


def test_manifest_hits_the_file_size_limit_then_rerun_completes(tmp_path: Path) -> None:
    expected, prompts = torture_input(tmp_path / "in.jsonl", 400)
    out = tmp_path / "out"
    with MockServer(latency=0.005).run_in_thread() as server:
        args = cometgen_cmd("run", str(tmp_path / "in.jsonl"), "-o", str(out),
                            "--concurrency", "8", "--base-url", server.url, "--api-key", KEY)
        full = _run(args, limit=60_000)  # the manifest outgrows it after ~130 records
        assert full.returncode == 1, full.stderr
        assert "Traceback" not in full.stderr
        assert "File too large" in full.stderr and "stopped early: disk" in full.stderr
        _assert_valid_manifest(out)
        assert len(read_manifest(out).latest) < 400
        again = _run(args)
        assert again.returncode == 0, again.stderr
        # Images whose records were lost with the full disk were adopted, not paid again;
        # only a lost no-image answer (no file to adopt) is asked again.
        twice = {k for k, p in prompts.items() if server.stats.billed_by_prompt.get(p, 0) > 1}
        assert {expected[k] for k in twice} <= {"no_image"}, twice
    assert check_final_state(out, expected) == []


@contextlib.contextmanager
def _small_disk(path: Path, size: str, *, try_mount: bool) -> Iterator[bool]:
    """A tmpfs of ``size`` at ``path`` if this machine lets us mount one (root, Linux)."""
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    mounted = try_mount and subprocess.run(mount, capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.parametrize("disk", ["tmpfs", "rlimit"])
def test_image_writes_fail_on_a_full_disk_then_rerun_completes(
    tmp_path: Path, disk: str
) -> None:
    """ENOSPC on a 1 MiB tmpfs (when we may mount one), or EFBIG via RLIMIT_FSIZE."""
    expected, prompts = torture_input(tmp_path / "in.jsonl", 300)
    out = tmp_path / "disk"
    with _small_disk(out, "1m", try_mount=disk == "tmpfs") as mounted, MockServer(
        latency=0.005, image_bytes=None if mounted else 150_000
    ).run_in_thread() as server:
        args = cometgen_cmd("run", str(tmp_path / "in.jsonl"), "-o", str(out),
                            "--concurrency", "8", "--base-url", server.url, "--api-key", KEY)
        full = _run(args, limit=None if mounted else 100_000)
        assert full.returncode == 1, full.stderr
        assert "Traceback" not in full.stderr
        assert "stopped early: disk" in full.stderr
        assert "(not resent)" not in full.stderr  # a lost failed record is resent
        if "may have been billed" in full.stderr:
            assert "a rerun sends again any whose failure could not be recorded" in full.stderr
        _assert_valid_manifest(out)
        view = read_manifest(out)
        on_disk = {p.stem for p in scan_out_dir(out)[0]}
        done = {k for k, r in view.latest.items() if r["status"] == "done"}
        assert len(done) < 300
        for rec in view.latest.values():
            if rec["status"] == "failed":  # its record may itself be lost to the full disk
                assert "cannot write image" in rec["reason"], rec
                assert rec["maybe_billed"] is True  # generated (and paid) but not saved
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(out)], check=True)
        retry = _run([*args, "--retry-failed"])
        assert retry.returncode == 0, retry.stderr
        # Paid twice: only items whose image never reached the disk.
        twice = {k for k, p in prompts.items() if server.stats.billed_by_prompt.get(p, 0) > 1}
        assert not twice & (on_disk | done)
        print(f"full disk ({'tmpfs' if mounted else 'RLIMIT_FSIZE'}): {len(done)} done, "
              f"{len(on_disk)} images on disk, {len(twice)} billed twice")
        assert check_final_state(out, expected) == []


# --------------------------------------------------------------------------- a second run


@pytest.mark.anyio
async def test_a_second_run_on_a_busy_folder_leaves_the_first_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with ManifestWriter(out):  # the first run, holding the folder
        in_progress = out / temp_name_for("img.jpg")  # and writing an image right now
        in_progress.write_bytes(b"\xff\xd8\xff partial")
        client = cometgen.AsyncClient(api_key=KEY, base_url="http://127.0.0.1:9")
        async with client:
            with pytest.raises(cometgen.OutputLockedError):
                async with cometgen.Batch(client, out_dir=out):
                    pass
        assert in_progress.exists(), "the second run deleted the first run's temp file"
        assert [p.name for p in out.iterdir()] != []
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.jsonl", in_progress.name])
