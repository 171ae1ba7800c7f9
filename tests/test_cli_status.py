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
from tests._cli import cmd, env, records, remote, run_cli, write_jsonl


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
