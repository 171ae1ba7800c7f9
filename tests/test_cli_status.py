"""``cometgen status`` tells a complete folder from one whose last run stopped early or died:
items a stop left unsent have no manifest record, so the manifest alone cannot tell.
Real processes against the mock over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from cometgen.testing import MockServer, ThreadedMockServer
from tests._cli import cmd, env, latest, records, remote, run_cli, write_jsonl


def test_a_budget_stop_leaves_the_folder_incomplete_until_a_rerun_finishes_it(
    tmp_path: Path, mock: ThreadedMockServer
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"s{i}"} for i in range(20)])
    out = tmp_path / "out"
    stopped = run_cli("run", str(src), "-o", str(out), "--max-cost", "0.2",
                      "--concurrency", "2", *remote(mock))
    assert stopped.returncode == 3, stopped.stderr
    recorded = len(records(out))
    assert 0 < recorded < 20 and all(r["status"] == "done" for r in records(out))

    status = run_cli("status", str(out))
    assert status.returncode == 1, status.stdout  # every record is done, but 20 - n are not
    assert (f"incomplete: the last run stopped early (budget): {20 - recorded} item(s) of "
            "its input have no record yet; rerun it to finish") in status.stdout
    last = json.loads(run_cli("status", str(out), "--json").stdout)["last_run"]
    assert last["state"] == "finished" and last["stop_reason"] == "budget"

    finished = run_cli("run", str(src), "-o", str(out), *remote(mock))
    assert finished.returncode == 0, finished.stderr
    status = run_cli("status", str(out))
    assert status.returncode == 0 and "incomplete" not in status.stdout


def test_a_run_killed_mid_way_leaves_the_folder_incomplete(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"k{i}"} for i in range(40)])
    out = tmp_path / "out"
    with MockServer(latency=0.5).run_in_thread() as server:
        proc = subprocess.Popen(
            cmd("run", str(src), "-o", str(out), "--concurrency", "2", *remote(server)),
            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while len(records(out)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        status = run_cli("status", str(out))
        assert status.returncode == 1, status.stdout
        assert "incomplete: the last run has not finished" in status.stdout
        assert run_cli("run", str(src), "-o", str(out), *remote(server)).returncode == 0
    assert run_cli("status", str(out)).returncode == 0


def test_verify_finds_missing_and_damaged_images_and_fix_lets_a_rerun_redo_only_them(
    tmp_path: Path, mock: ThreadedMockServer
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"v{i}", "prompt": f"v{i}"}
                                              for i in range(6)])
    out = tmp_path / "out"
    assert run_cli("run", str(src), "-o", str(out), *remote(mock)).returncode == 0
    clean = run_cli("status", str(out), "--verify")
    assert clean.returncode == 0, clean.stdout
    assert "verified: 6 image file(s)" in clean.stdout and "0 missing, 0 damaged" in clean.stdout

    files = {str(r["id"]): out / str(r["files"][0]["path"])  # type: ignore[index]
             for r in records(out)}
    size = files["v1"].stat().st_size
    files["v0"].unlink()
    with files["v1"].open("ab") as f:
        f.write(b"x")  # longer than recorded
    data = bytearray(files["v2"].read_bytes())
    data[-3] ^= 0xFF  # same size, other bytes
    files["v2"].write_bytes(bytes(data))

    found = run_cli("status", str(out), "--verify", "--json")
    assert found.returncode == 1, found.stderr
    report = json.loads(found.stdout)["verify"]
    assert (report["files"], report["missing"], report["damaged"], report["fixed"]) == (6, 1, 2, 0)
    problems = {p["key"]: p["problem"] for p in report["problems"]}
    assert problems == {"v0": "missing", "v1": f"size {size + 1}, recorded {size}",
                        "v2": "sha256 differs"}
    assert all(r["status"] == "done" for r in records(out))  # --verify alone writes nothing

    assert run_cli("status", str(out), "--fix").returncode == 2  # needs --verify
    fixed = run_cli("status", str(out), "--verify", "--fix")
    assert fixed.returncode == 1 and "fixed: 3 item(s) recorded failed" in fixed.stdout
    broken = {k: r for k, r in latest(out).items() if r["status"] == "failed"}
    assert set(broken) == {"v0", "v1", "v2"}
    assert all(r["error_type"] == "VerifyError" and not r.get("cost") for r in broken.values())
    assert not files["v1"].exists() and not files["v2"].exists()  # never adopted back
    metadata = (out / "metadata.jsonl").read_text().splitlines()
    assert {json.loads(line)["id"] for line in metadata} == {"v3", "v4", "v5"}

    before = mock.stats.requests
    assert run_cli("run", str(src), "-o", str(out), *remote(mock)).returncode == 1
    assert mock.stats.requests == before  # failed: not resent without --retry-failed
    redo = run_cli("run", str(src), "-o", str(out), "--retry-failed", *remote(mock))
    assert redo.returncode == 0, redo.stderr
    assert mock.stats.requests == before + 3
    again = run_cli("status", str(out), "--verify")
    assert again.returncode == 0 and "0 missing, 0 damaged" in again.stdout
