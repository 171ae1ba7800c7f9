"""``cometgen run`` / ``status`` as real processes against the mock server."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cometgen.testing import MockServer, ThreadedMockServer
from tests._cli import KEY, env, latest, records, remote, run_cli, write_jsonl
from tests._cli import cmd as cometgen_cmd

ROOT = Path(__file__).resolve().parent.parent



def test_readme_quick_start_on_embedded_mock(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    proc = run_cli("run", "examples/prompts.jsonl", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "built-in mock server" in proc.stderr
    out = tmp_path / "out"
    recs = latest(out)
    assert len(recs) == 11 and all(r["status"] == "done" for r in recs.values())
    images = sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*")
                    if p.suffix in (".jpg", ".png"))
    assert len(images) == 11
    meta = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert sorted(m["file_name"] for m in meta) == images
    assert {m["style"] for m in meta} >= {"sketch", "photo"}
    # Idempotent rerun: nothing left to do.
    again = run_cli("run", "examples/prompts.jsonl", "-o", "out", "--json", cwd=tmp_path)
    assert again.returncode == 0
    summary = json.loads(again.stdout)
    assert summary["skipped"] == 11 and summary["done"] == 0


def test_resume_reports_adopted_images(tmp_path: Path, mock: ThreadedMockServer) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"a{i}", "prompt": f"p {i}"}
                                              for i in range(3)])
    out = tmp_path / "out"
    assert run_cli("run", str(src), "-o", str(out), *remote(mock)).returncode == 0
    # As after kill -9 between the image's rename and its record's flush.
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:-1]))
    sent = mock.stats.requests
    proc = run_cli("run", str(src), "-o", str(out), "--json", *remote(mock))
    assert proc.returncode == 0, proc.stderr
    assert mock.stats.requests == sent  # nothing paid again
    summary = json.loads(proc.stdout)
    assert (summary["done"], summary["adopted"], summary["skipped"]) == (1, 1, 2)
    assert ("done 1 (1 adopted: images an interrupted run wrote, not sent again), failed 0"
            in proc.stderr)


def test_mixed_input_every_line_accounted(tmp_path: Path, mock: ThreadedMockServer) -> None:
    ref = tmp_path / "ref.png"
    ref.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    rows: list[object] = []
    outcomes = ["block", "image_safety", "no_image", "image_other", "text_only",
                "429:1:0.2s", "429_comet:1", "503:1", "500:1", "502_html:1",
                "drop", "truncate", "malformed"]
    for i in range(200):
        marker = f" [[mock:{outcomes[i % len(outcomes)]}]]" if i % 4 == 0 else ""
        rows.append({"id": f"L{i}", "prompt": f"prompt {i}{marker}", "metadata": {"i": i}})
    bad = [
        "{not json",
        {"id": "nop", "promt": "typo"},
        {"id": "badratio", "prompt": "x", "aspect_ratio": "7:3"},
        {"id": "noref", "prompt": "x", "images": ["missing.png"]},
        {"id": "long", "prompt": "x" * 100_001},
    ]
    rows += bad
    rows.append({"id": "withref", "prompt": "edit this", "images": ["ref.png"]})
    rows.append({"id": "L1", "prompt": "prompt 1"})  # duplicate key
    src = write_jsonl(tmp_path / "mixed.jsonl", rows)
    out = tmp_path / "out"
    proc = run_cli("run", str(src), "-o", str(out), "--concurrency", "16", "--json",
                   *remote(mock))
    assert proc.returncode == 1, proc.stderr
    recs = latest(out)
    for i in range(200):
        assert f"L{i}" in recs, i
    assert recs["line-201"]["status"] == "failed"  # the broken JSON line
    for key in ("nop", "badratio", "noref", "long"):
        assert recs[key]["status"] == "failed", key
    assert "mixed.jsonl:203" in str(recs["badratio"]["reason"])
    assert "aspect_ratio" in str(recs["badratio"]["reason"])
    assert recs["withref"]["status"] == "done"
    expected = {"block": "blocked", "image_safety": "blocked", "no_image": "no_image",
                "image_other": "no_image", "text_only": "no_image", "drop": "failed",
                "truncate": "failed", "malformed": "failed"}
    ambiguous = set()
    for i in range(200):
        marker = outcomes[i % len(outcomes)].split(":")[0] if i % 4 == 0 else ""
        status = expected.get(marker, "done")  # retried faults end done
        assert recs[f"L{i}"]["status"] == status, (i, marker, recs[f"L{i}"])
        if status == "failed":
            assert recs[f"L{i}"]["maybe_billed"] is True
            ambiguous.add(f"L{i}")
    summary = json.loads(proc.stdout)
    assert summary["duplicates"] == 1
    assert "duplicate key 'L1' (line 207): skipped, an earlier job has this key" in proc.stderr
    assert set(summary["maybe_billed_keys"]) >= ambiguous
    assert len(recs) == 200 + len(bad) + 1
    assert "mixed.jsonl:202: field 'promt'" in proc.stderr


def test_kill_9_then_resume_never_resends_done(tmp_path: Path) -> None:
    rng = random.Random(7)
    src = write_jsonl(tmp_path / "in.jsonl",
                      [{"id": f"k{i}", "prompt": f"kill test {i}"} for i in range(300)])
    out = tmp_path / "out"
    with MockServer(latency=0.02).run_in_thread() as server:
        args = cometgen_cmd("run", str(src), "-o", str(out), "--concurrency", "8", "--quiet",
                            *remote(server))
        for _ in range(3):
            done_before = {k for k, r in latest(out).items() if r["status"] == "done"}
            billed_before = dict(server.stats.billed_by_prompt)
            proc = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.8, 2.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            for key in done_before:
                prompt = f"kill test {key[1:]}"
                assert server.stats.billed_by_prompt.get(prompt) == billed_before.get(prompt)
            for image in out.rglob("*.jpg"):  # never a half-written image under a final name
                data = image.read_bytes()
                assert data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9", image
        done_before = {k for k, r in latest(out).items() if r["status"] == "done"}
        billed_before = dict(server.stats.billed_by_prompt)
        final = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr
        for key in done_before:
            prompt = f"kill test {key[1:]}"
            assert server.stats.billed_by_prompt[prompt] == billed_before[prompt]
    recs = latest(out)
    assert len(recs) == 300 and all(r["status"] == "done" for r in recs.values())
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    for r in recs.values():
        for f in r["files"]:  # type: ignore[union-attr]
            data = (out / f["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == f["sha256"]


def test_max_cost_dry_run_and_status(tmp_path: Path, mock: ThreadedMockServer) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(30)])
    out = tmp_path / "out"
    dry = run_cli("run", str(src), "-o", str(out), "--dry-run", "--json", *remote(mock))
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["requests"] == 30 and plan["projected_cost_usd"] > 1.5
    assert mock.stats.requests == 0
    capped = run_cli("run", str(src), "-o", str(out), "--max-cost", "0.5",
                     "--concurrency", "2", "--json", *remote(mock))
    assert capped.returncode == 3, capped.stderr
    summary = json.loads(capped.stdout)
    assert summary["stop_reason"] == "budget" and summary["cost_usd"] <= 0.5
    assert 0 < summary["done"] < 30
    status = run_cli("status", str(out), "--json")
    assert status.returncode == 1  # the budget stop left items of the input unsent
    assert json.loads(status.stdout)["done"] == summary["done"]
    assert json.loads(status.stdout)["last_run"]["stop_reason"] == "budget"


def test_shards_split_the_input(tmp_path: Path, mock: ThreadedMockServer) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(40)])
    keys = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        proc = run_cli("run", str(src), "-o", str(out), "--shard", f"{i}/2", *remote(mock))
        assert proc.returncode == 0, proc.stderr
        assert run_cli("status", str(out)).returncode == 0  # the other shard's lines: not left
        keys.append(set(latest(out)))
    assert keys[0] and keys[1] and not keys[0] & keys[1]
    assert len(keys[0] | keys[1]) == 40


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "nope.jsonl", "-o", "out"), "nope.jsonl"),
        (("run", "in.jsonl", "-o", "in.jsonl/sub"), "not writable"),
        (("run", "in.jsonl", "-o", "out", "--shard", "3/2"), "--shard"),
        (("run", "in.jsonl", "-o", "out", "--config", "bad.toml"), "bad.toml"),
        (("run", "in.xlsx", "-o", "out"), "in.xlsx"),
    ],
)
def test_usage_errors_exit_2_without_traceback(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p"}])
    (tmp_path / "in.xlsx").write_text("x")
    (tmp_path / "bad.toml").write_text("modle = 'x'\n")
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_quota_and_auth_halt_with_exit_4(tmp_path: Path) -> None:
    rows = [{"prompt": "x [[mock:429_daily]]"}] + [{"prompt": f"p{i}"} for i in range(20)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    with MockServer().run_in_thread() as server:
        proc = run_cli("run", str(src), "-o", str(tmp_path / "a"), "--concurrency", "1",
                       *remote(server))
        assert proc.returncode == 4, proc.stderr
        assert "quota" in proc.stderr
    with MockServer(api_key="the-right-key").run_in_thread() as server:
        proc = run_cli("run", str(src), "-o", str(tmp_path / "b"), *remote(server))
        assert proc.returncode == 4, proc.stderr
        assert KEY not in proc.stderr + proc.stdout
        assert KEY not in (tmp_path / "b" / "manifest.jsonl").read_text()


def test_config_file_and_flag_precedence(tmp_path: Path, mock: ThreadedMockServer) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "p"}])
    cfg = tmp_path / "cometgen.toml"
    cfg.write_text('model = "gemini-2.5-flash-image"\naspect_ratio = "16:9"\nconcurrency = 2\n')
    out = tmp_path / "out"
    proc = run_cli("run", str(src), "-o", str(out), "--config", str(cfg),
                   "--aspect-ratio", "3:2", *remote(mock))
    assert proc.returncode == 0, proc.stderr
    rec = latest(out)["a"]
    assert rec["model"] == "gemini-2.5-flash-image"
    assert str(rec["files"][0]["path"]).endswith(".png")  # type: ignore[index]


def _interrupt(tmp_path: Path, signals: int) -> None:
    src = write_jsonl(tmp_path / "in.jsonl",
                      [{"id": f"s{i}", "prompt": f"sig {i}"} for i in range(40)])
    out = tmp_path / "out"
    with MockServer(latency=0.6).run_in_thread() as server:
        args = cometgen_cmd("run", str(src), "-o", str(out), "--concurrency", "4", "--json",
                            *remote(server))
        proc = subprocess.Popen(args, env=env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not records(out) and time.monotonic() < deadline:  # wait for real progress
            time.sleep(0.05)
        for _ in range(signals):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        summary = json.loads(stdout)
        assert summary["stop_reason"] == "interrupted"
        first = latest(out)
        assert 0 < len(first) < 40
        if signals == 1:
            # Graceful: requests in flight finished and were recorded.
            assert all(r["status"] == "done" for r in first.values())
            assert server.stats.billed_total == len(first)
        # Cut requests (second Ctrl-C) are recorded failed, possibly billed: never resent
        # silently.
        cut = [r for r in first.values() if r["status"] != "done"]
        assert all(r["reason"] == "interrupted" and r["maybe_billed"] is True for r in cut)
        billed = dict(server.stats.billed_by_prompt)
        again = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=60)
        # The exit code describes the folder: the cut items stay failed.
        assert again.returncode == (1 if cut else 0), again.stderr
        if cut:
            again = subprocess.run([*args, "--retry-failed"], env=env(), capture_output=True,
                                   text=True, timeout=60)
            assert again.returncode == 0, again.stderr
        for key, rec in first.items():
            if rec["status"] == "done":
                prompt = f"sig {key[1:]}"
                assert server.stats.billed_by_prompt[prompt] == billed[prompt]
    assert len(latest(out)) == 40


def test_ctrl_c_graceful_then_resume(tmp_path: Path) -> None:
    _interrupt(tmp_path, signals=1)


def test_second_ctrl_c_cancels_now_and_stays_resumable(tmp_path: Path) -> None:
    _interrupt(tmp_path, signals=2)


def test_stdin_and_txt_inputs(tmp_path: Path, mock: ThreadedMockServer) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        cometgen_cmd("run", "-", "-o", str(out), *remote(mock)),
        input='{"id": "s1", "prompt": "from stdin"}\n', env=env(), capture_output=True,
        text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert latest(out)["s1"]["status"] == "done"
    txt = tmp_path / "p.txt"
    txt.write_text("one prompt\nanother prompt\n")
    proc = run_cli("run", str(txt), "-o", str(out), *remote(mock))
    assert proc.returncode == 0, proc.stderr
    assert len(latest(out)) == 3


@pytest.mark.parametrize("threshold", [700, 50_000, 0])
def test_run_raises_the_young_gc_threshold_and_restores_it(threshold: int) -> None:
    import gc

    from cometgen._cli._run_cmd import _fewer_gc_passes

    before = gc.get_threshold()
    try:
        gc.set_threshold(threshold, *before[1:])
        with _fewer_gc_passes():
            # Raised, never lowered; 0 (automatic collection off) stays off.
            assert gc.get_threshold()[0] == (max(threshold, 10_000) if threshold else 0)
            assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_threshold() == (threshold, *before[1:])
    finally:
        gc.set_threshold(*before)
