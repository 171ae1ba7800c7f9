"""``cometgen run``: provenance, changed requests, stable n, progress, messages, mock images.

Real processes against the mock over HTTP (or the embedded mock of a keyless run).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cometgen.testing import MockServer, ThreadedMockServer
from tests._cli import cmd, env, latest, records, remote, run_cli, write_jsonl

# -- 6. provenance -----------------------------------------------------------------------


def test_mock_folder_refuses_a_real_endpoint_unless_allowed(
    tmp_path: Path, mock: ThreadedMockServer
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "a cat",
                                               "aspect_ratio": "16:9", "seed": 3}])
    out = tmp_path / "out"
    keyless = run_cli("run", str(src), "-o", str(out), "--quiet")
    assert keyless.returncode == 0, keyless.stderr
    assert "MOCK" in keyless.stderr and "built-in mock server" in keyless.stderr  # even -q
    rec = latest(out)["a"]
    assert rec["endpoint"] == "mock"
    assert rec["aspect_ratio"] == "16:9" and rec["seed"] == 3 and rec["image_size"] == "1K"
    status = run_cli("status", str(out))
    assert status.returncode == 0 and "endpoint: mock" in status.stdout
    assert "built-in mock server" in status.stdout
    real = run_cli("run", str(src), "-o", str(out), *remote(mock))
    assert real.returncode == 2, real.stderr
    assert "built-in mock" in real.stderr and "--allow-endpoint-change" in real.stderr
    dry = run_cli("run", str(src), "-o", str(out), "--dry-run", *remote(mock))
    assert dry.returncode == 2 and "--allow-endpoint-change" in dry.stderr
    assert mock.stats.requests == 0
    allowed = run_cli("run", str(src), "-o", str(out), "--allow-endpoint-change", "--json",
                      *remote(mock))
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["skipped"] == 1
    # And the reverse: a real folder, then a keyless run.
    out2 = tmp_path / "out2"
    assert run_cli("run", str(src), "-o", str(out2), *remote(mock)).returncode == 0
    assert latest(out2)["a"]["endpoint"] == mock.url
    back = run_cli("run", str(src), "-o", str(out2))
    assert back.returncode == 2 and "COMETAPI_KEY" in back.stderr


# -- 7. changed requests -----------------------------------------------------------------


def test_an_id_done_for_another_prompt_is_warned_and_skipped(
    tmp_path: Path, mock: ThreadedMockServer
) -> None:
    out = tmp_path / "out"
    first = write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "prompt": "a red fox"}])
    assert run_cli("run", str(first), "-o", str(out), *remote(mock)).returncode == 0
    second = write_jsonl(tmp_path / "b.jsonl", [{"id": "x", "prompt": "a blue whale"}])
    proc = run_cli("run", str(second), "-o", str(out), "--json", *remote(mock))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["changed"] == 1
    assert "'x' (line 1) was done for a different request" in proc.stderr
    assert mock.stats.requests == 1 and latest(out)["x"]["prompt"] == "a red fox"
    redo = run_cli("run", str(second), "-o", str(out), "--regenerate-changed", *remote(mock))
    assert redo.returncode == 0, redo.stderr
    assert mock.stats.requests == 2 and latest(out)["x"]["prompt"] == "a blue whale"


# -- 8. n is stable ----------------------------------------------------------------------


def test_raising_n_generates_only_the_new_images(tmp_path: Path, mock: ThreadedMockServer
                                                 ) -> None:
    out = tmp_path / "out"
    one = write_jsonl(tmp_path / "a.jsonl", [{"id": "cat", "prompt": "a cat", "n": 1}])
    assert run_cli("run", str(one), "-o", str(out), *remote(mock)).returncode == 0
    two = write_jsonl(tmp_path / "b.jsonl", [{"id": "cat", "prompt": "a cat", "n": 2}])
    proc = run_cli("run", str(two), "-o", str(out), "--json", *remote(mock))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["done"] == 1 and summary["skipped"] == 1
    assert mock.stats.billed_total == 2  # not 3: the first image was not paid again
    assert sorted(latest(out)) == ["cat", "cat-1"]


# -- 9. progress -------------------------------------------------------------------------


def test_progress_counts_only_this_runs_work(tmp_path: Path, mock: ThreadedMockServer
                                             ) -> None:
    out = tmp_path / "out"
    half = write_jsonl(tmp_path / "a.jsonl", [{"id": f"p{i}", "prompt": f"p{i}"}
                                              for i in range(5)])
    assert run_cli("run", str(half), "-o", str(out), *remote(mock)).returncode == 0
    full = write_jsonl(tmp_path / "b.jsonl", [{"id": f"p{i}", "prompt": f"p{i}"}
                                              for i in range(10)])
    proc = run_cli("run", str(full), "-o", str(out), *remote(mock))
    assert proc.returncode == 0, proc.stderr
    final = [line for line in proc.stderr.splitlines() if "%" in line][-1]
    assert "100% 5/5" in final  # not 5/10: the done items are not this run's work
    assert "in flight 0" in final and "queued 0" in final


# -- 10. messages ------------------------------------------------------------------------


def test_quiet_still_says_why_a_wrong_key_stopped_the_run(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p"}])
    with MockServer(api_key="right").run_in_thread() as server:
        proc = run_cli("run", str(src), "-o", str(tmp_path / "out"), "--quiet",
                       *remote(server, "wrong"))
    assert proc.returncode == 4
    assert proc.stderr.strip().startswith("cometgen: stopped early: auth: the API key was refused")


def test_json_into_a_closed_pipe_exits_quietly(tmp_path: Path, mock: ThreadedMockServer
                                               ) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p"}])
    proc = subprocess.Popen(cmd("run", str(src), "-o", str(tmp_path / "out"), "--json",
                                "--quiet", *remote(mock)),
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # like `| head -0`
    _, stderr = proc.communicate(timeout=60)
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr
    assert proc.returncode == 0


def test_verbose_retry_lines_name_the_item(tmp_path: Path, mock: ThreadedMockServer) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "flaky", "prompt": "x [[mock:503:1]]"}])
    proc = run_cli("run", str(src), "-o", str(tmp_path / "out"), "-v", *remote(mock))
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("cometgen: INFO: flaky: attempt 1")
               for line in proc.stderr.splitlines()), proc.stderr


@pytest.mark.parametrize("name", ["in.jsonl", "in.csv", "in.txt"])
def test_an_empty_input_behaves_the_same_for_every_format(
    tmp_path: Path, mock: ThreadedMockServer, name: str
) -> None:
    (tmp_path / name).write_text("")
    proc = run_cli("run", str(tmp_path / name), "-o", str(tmp_path / "out"), "--json",
                   *remote(mock))
    assert proc.returncode == 0, proc.stderr
    assert "the input file is empty" in proc.stderr
    assert json.loads(proc.stdout)["done"] == 0


def test_clear_words_for_swapped_paths_and_config_typos(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "in.jsonl").write_text('{"prompt": "p"}\n')
    (tmp_path / "c.toml").write_text("concurency = 4\n")
    folder = run_cli("run", "prompts", "-o", "out", cwd=tmp_path)
    assert folder.returncode == 2 and "prompts: is a directory" in folder.stderr
    file_out = run_cli("run", "in.jsonl", "-o", "in.jsonl", cwd=tmp_path)
    assert file_out.returncode == 2 and "is a file: OUTDIR must be a folder" in file_out.stderr
    typo = run_cli("run", "in.jsonl", "-o", "out", "--config", "c.toml", cwd=tmp_path)
    assert typo.returncode == 2 and "did you mean 'concurrency'?" in typo.stderr


def test_a_mistyped_option_gets_did_you_mean_and_nothing_runs(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"prompt": "p"}\n')
    typo = run_cli("run", "in.jsonl", "-o", "out", "--concurency", "4", "--budget=3",
                   cwd=tmp_path)
    assert typo.returncode == 2
    last = typo.stderr.strip().splitlines()[-1]
    assert last.startswith("cometgen run: error: unrecognized arguments: --concurency 4")
    assert "--concurency: did you mean --concurrency?" in last
    assert "--budget" not in last.split("(", 1)[1]  # nothing close: no guess
    assert not (tmp_path / "out").exists()
    status = run_cli("status", "out", "--jsn", cwd=tmp_path)
    assert status.returncode == 2 and "did you mean --json?" in status.stderr
    top = run_cli("--verison", cwd=tmp_path)
    assert top.returncode == 2 and "did you mean --version?" in top.stderr
    stray = run_cli("run", "in.jsonl", "other.jsonl", "-o", "out", cwd=tmp_path)
    assert stray.returncode == 2 and "unrecognized arguments: other.jsonl" in stray.stderr


# -- 11. mock images differ by prompt ----------------------------------------------------


def test_mock_images_differ_by_prompt_and_repeat_for_the_same_request(tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": "a cat", "seed": 1}, {"id": "b", "prompt": "a dog", "seed": 1},
            {"id": "c", "prompt": "a cat", "seed": 2}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    digests = []
    for out in (tmp_path / "one", tmp_path / "two"):
        assert run_cli("run", str(src), "-o", str(out), "--quiet").returncode == 0
        digests.append({k: r["files"][0]["sha256"]  # type: ignore[index]
                        for k, r in latest(out).items()})
    assert len(set(digests[0].values())) == 3  # prompt and seed change the image
    assert digests[0] == digests[1]  # deterministic
    assert len(records(tmp_path / "one")) == 3
