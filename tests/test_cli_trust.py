"""``cometgen run`` in a pipeline: stop means stop, exit codes describe the folder, systemic
failures halt, the budget holds across reruns. Real processes against the mock over HTTP."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from cometgen.testing import MockServer, ThreadedMockServer
from tests._cli import KEY, cmd, env, latest, records, remote, run_cli, write_jsonl
from tests._sockets import closed_port

# -- 1. stop means stop ------------------------------------------------------------------


def test_no_request_after_an_auth_stop(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"a{i}", "prompt": f"p{i}"}
                                              for i in range(300)])
    with MockServer(api_key="the-right-key").run_in_thread() as server:
        proc = run_cli("run", str(src), "-o", str(tmp_path / "out"), "--concurrency", "32",
                       *remote(server))
        # The first answers are 401s: no item taken after them is sent (was 32 + 33).
        assert server.stats.requests <= 32
    assert proc.returncode == 4, proc.stderr
    assert "API key was refused" in proc.stderr
    assert "failed a" not in proc.stderr  # one clear line, not one per item
    assert not [r for r in records(tmp_path / "out") if r["status"] == "failed"]


def test_sigterm_sends_nothing_new_and_the_grace_cut_is_recorded(tmp_path: Path) -> None:
    # Four quick items, then slow ones (3 s answers): the signal comes while slow ones are in
    # flight, and the 0.5 s grace period cuts them.
    rows = [{"id": f"f{i}", "prompt": f"fast {i}"} for i in range(4)] + [
        {"id": f"s{i}", "prompt": f"slow {i} [[mock:slow::3s]]"} for i in range(60)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    cfg = tmp_path / "c.toml"
    cfg.write_text("grace_period = 0.5\n")
    out = tmp_path / "out"
    with MockServer().run_in_thread() as server:
        proc = subprocess.Popen(
            cmd("run", str(src), "-o", str(out), "--concurrency", "4", "--json",
                "--config", str(cfg), *remote(server)),
            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while server.stats.requests < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # the first slow requests are in flight, none answered
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        time.sleep(3.5)  # let the server finish the requests the client gave up on
        assert server.stats.requests <= 8, stderr  # 4 quick + at most 4 cut
    assert proc.returncode == 130, stderr
    summary = json.loads(stdout)
    assert summary["stop_reason"] == "interrupted"
    cut = [r for r in records(out) if str(r["key"]).startswith("s")]
    assert 1 <= len(cut) <= 4
    for rec in cut:
        assert rec["status"] == "failed" and rec["maybe_billed"] is True
        assert rec["reason"] == "interrupted"


def test_first_ctrl_c_lets_in_flight_finish_and_sends_no_queued_item(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"c{i}", "prompt": f"ctrl {i}"}
                                              for i in range(60)])
    out = tmp_path / "out"
    with MockServer(latency=0.8).run_in_thread() as server:
        proc = subprocess.Popen(
            cmd("run", str(src), "-o", str(out), "--concurrency", "4", "--json",
                *remote(server)),
            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while server.stats.requests < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        answered = server.stats.requests
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        # Only what was in flight (at most 4) is answered after the signal.
        assert server.stats.requests <= answered + 4, stderr
        assert proc.returncode == 130, stderr
        assert ("stopped early: interrupted: Ctrl-C or SIGTERM: the items not sent are not "
                "recorded; rerun to do them") in stderr
        recs = latest(out)
        assert all(r["status"] == "done" for r in recs.values())
        assert len(recs) == server.stats.billed_total


def _requests_for(server: ThreadedMockServer, text: str) -> list[int]:
    """The statuses the mock answered to prompts containing ``text`` (0: dropped)."""
    return [r.status for r in list(server.stats.log) if text in r.prompt]


def test_a_retry_refused_by_a_halt_after_an_ambiguous_attempt_is_recorded(tmp_path: Path
                                                                          ) -> None:
    # "amb" is dropped after the mock read it (possibly billed) and may be retried once; the
    # quota halt (an immediate 429) comes first, so its retry is refused by the stop.
    rows = [{"id": "amb", "prompt": "ambiguous [[mock:drop:1]]"},
            {"id": "quota", "prompt": "q [[mock:429_daily]]"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(latency=0.5).run_in_thread() as server:
        proc = run_cli("run", str(src), "-o", str(out), "--concurrency", "2",
                       "--retry-ambiguous", "1", "--json", *remote(server))
        assert _requests_for(server, "ambiguous") == [0], proc.stderr  # no retry left
        assert proc.returncode == 4, proc.stderr
        recs = latest(out)
        assert "quota" not in recs  # systemic: a rerun does it
        amb = recs["amb"]  # was unrecorded: a rerun would have paid again
        assert amb["status"] == "failed" and amb["maybe_billed"] is True
        assert amb["reason"] == "quota" and amb["attempts"] == 1
        summary = json.loads(proc.stdout)
        assert summary["maybe_billed_keys"] == ["amb"] and summary["failed"] == 1
        run_cli("run", str(src), "-o", str(out), *remote(server))
        assert _requests_for(server, "ambiguous") == [0]  # the rerun does not pay again


def test_ctrl_c_before_the_retry_of_an_ambiguous_attempt_records_it_maybe_billed(
    tmp_path: Path
) -> None:
    # "pause" gets a 429 at once that holds every new request for 4 s; "amb" is dropped
    # after 0.5 s and waits behind that pause to be retried. Ctrl-C comes during the pause:
    # the retry is refused when the pause ends, long before the 30 s grace timer.
    rows = [{"id": "amb", "prompt": "ambiguous [[mock:drop:1]]"},
            {"id": "pause", "prompt": "pause [[mock:429:1:4s]]"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(latency=0.5).run_in_thread() as server:
        proc = subprocess.Popen(
            cmd("run", str(src), "-o", str(out), "--concurrency", "2", "--retry-ambiguous",
                "1", "--no-adaptive", "--json", *remote(server)),
            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not _requests_for(server, "ambiguous") and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        assert _requests_for(server, "ambiguous") == [0], stderr  # no retry was sent
        assert _requests_for(server, "pause") == [429], stderr
    assert proc.returncode == 130, stderr
    recs = latest(out)
    assert "pause" not in recs  # nothing billed: a rerun does it
    amb = recs["amb"]
    assert amb["status"] == "failed" and amb["maybe_billed"] is True
    assert amb["reason"] == "interrupted" and amb["error_type"] == "Interrupted"
    summary = json.loads(stdout)
    assert summary["maybe_billed_keys"] == ["amb"] and summary["unsent"] == 1


# -- 3. systemic failures halt the run ---------------------------------------------------


def test_unknown_model_halts_and_a_fixed_rerun_needs_no_retry_failed(
    tmp_path: Path, mock: ThreadedMockServer
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"m{i}"} for i in range(100)])
    out = tmp_path / "out"
    proc = run_cli("run", str(src), "-o", str(out), "--model", "gemini-9-typo-image",
                   "--concurrency", "4", *remote(mock))
    assert proc.returncode == 4, proc.stderr
    assert "does not know the model" in proc.stderr
    assert mock.stats.requests <= 4  # was 100 x 404
    assert not records(out)
    fixed = run_cli("run", str(src), "-o", str(out), "--json", *remote(mock))
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout)["done"] == 100


def test_quota_exhaustion_halts_with_its_own_code(tmp_path: Path, mock: ThreadedMockServer
                                                  ) -> None:
    rows = [{"prompt": "x [[mock:429_daily]]"}] + [{"prompt": f"q{i}"} for i in range(20)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    proc = run_cli("run", str(src), "-o", str(tmp_path / "out"), "--concurrency", "1",
                   "--quiet", *remote(mock))
    assert proc.returncode == 4
    # --quiet still says why it stopped: one line.
    assert proc.stderr.count("\n") == 1 and "quota is exhausted" in proc.stderr


def test_no_network_halts_after_a_few_items(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"n{i}"} for i in range(500)])
    started = time.monotonic()
    proc = run_cli("run", str(src), "-o", str(tmp_path / "out"), "--concurrency", "2",
                   "--json", "--base-url", f"http://127.0.0.1:{port}", "--api-key", KEY)
    assert proc.returncode == 4, proc.stderr
    assert "cannot reach the endpoint" in proc.stderr
    assert time.monotonic() - started < 60
    assert json.loads(proc.stdout)["stop_reason"] == "network"
    assert not [r for r in records(tmp_path / "out") if r["status"] == "failed"]


def test_connect_failures_too_few_to_halt_are_recorded_failed_and_a_rerun_sends_them(
    tmp_path: Path, mock: ThreadedMockServer
) -> None:
    # Two items, nobody listening: fewer than the 3 in a row that halt the run.
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"u{i}", "prompt": f"u{i}"}
                                              for i in range(2)])
    out = tmp_path / "out"
    proc = run_cli("run", str(src), "-o", str(out), "--max-attempts", "1", "--json",
                   "--base-url", f"http://127.0.0.1:{closed_port()}", "--api-key", KEY)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["failed"] == 2 and summary["stop_reason"] is None
    assert summary["folder"]["failed"] == 2  # was 0: exit 1 with nothing in the manifest
    recs = latest(out)
    for key in ("u0", "u1"):
        rec = recs[key]
        assert rec["status"] == "failed" and not rec.get("maybe_billed")
        assert rec["error_type"] == "ConnectError" and "connect" in str(rec["reason"])
    status = run_cli("status", str(out), "--json")
    assert status.returncode == 1 and json.loads(status.stdout)["failed"] == 2
    # Nothing reached the endpoint: a plain rerun sends them, no --retry-failed needed.
    again = run_cli("run", str(src), "-o", str(out), "--json", *remote(mock))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["done"] == 2 and mock.stats.requests == 2
    assert {r["status"] for r in latest(out).values()} == {"done"}


def test_a_connect_failure_between_successes_is_recorded_and_status_agrees(tmp_path: Path
                                                                          ) -> None:
    # --rpm 20 sends a request every 3 s: "a" reaches the mock, "b" finds nobody listening
    # on the port (the mock stopped), "c" reaches the mock started again on the same port.
    port = closed_port()
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"reach {i}"}
                                              for i in ("a", "b", "c")])
    out = tmp_path / "out"
    first = MockServer(port=port).run_in_thread()
    first.start()
    try:
        proc = subprocess.Popen(
            cmd("run", str(src), "-o", str(out), "--concurrency", "1", "--rpm", "20",
                "--max-attempts", "1", "--json", "--base-url", first.url, "--api-key", KEY),
            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while first.stats.requests < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        answered_a = time.monotonic()
    finally:
        first.stop()
    time.sleep(max(0.0, answered_a + 4.5 - time.monotonic()))  # b at +3 s, c at +6 s
    with MockServer(port=port).run_in_thread() as second:
        stdout, stderr = proc.communicate(timeout=30)
        assert second.stats.requests == 1, stderr
    assert proc.returncode == 1, stderr
    recs = latest(out)
    assert recs["a"]["status"] == "done" and recs["c"]["status"] == "done", stderr
    assert recs["b"]["status"] == "failed" and not recs["b"].get("maybe_billed")
    assert recs["b"]["error_type"] == "ConnectError"
    summary = json.loads(stdout)
    assert (summary["done"], summary["failed"], summary["unsent"]) == (2, 1, 0)
    assert "failed b:" in stderr
    assert run_cli("status", str(out)).returncode == 1


# -- 2. exit codes describe the folder ---------------------------------------------------


def test_a_rerun_that_leaves_failed_items_exits_1(tmp_path: Path, mock: ThreadedMockServer
                                                  ) -> None:
    rows = [{"id": "bad", "prompt": "x [[mock:malformed:1]]"}, {"id": "ok", "prompt": "fine"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    assert run_cli("run", str(src), "-o", str(out), *remote(mock)).returncode == 1
    again = run_cli("run", str(src), "-o", str(out), "--json", *remote(mock))
    assert again.returncode == 1, again.stderr  # was 0: the failure counted as "skipped"
    summary = json.loads(again.stdout)
    assert summary["skipped_failed"] == 1 and summary["folder"]["failed"] == 1
    assert "failed earlier" in again.stderr
    assert run_cli("status", str(out)).returncode == 1
    fixed = run_cli("run", str(src), "-o", str(out), "--retry-failed", *remote(mock))
    assert fixed.returncode == 0, fixed.stderr
    status = run_cli("status", str(out), "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["done"] == 2


# -- 5. the budget holds across reruns ---------------------------------------------------


def test_max_cost_caps_the_folder_across_reruns(tmp_path: Path, mock: ThreadedMockServer
                                                ) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"b{i}"} for i in range(30)])
    out = tmp_path / "out"
    spent = []
    for _ in range(2):
        proc = run_cli("run", str(src), "-o", str(out), "--max-cost", "0.5", "--json",
                       "--concurrency", "2", *remote(mock))
        assert proc.returncode == 3, proc.stderr
        summary = json.loads(proc.stdout)
        spent.append(summary["cost_usd"])
        assert summary["folder_cost_usd"] <= 0.5
        assert summary["budget_left_usd"] == pytest.approx(0.5 - summary["folder_cost_usd"])
        assert "of --max-cost left" in proc.stderr
    assert spent[0] > 0 and spent[0] + spent[1] <= 0.5
    folder = json.loads(run_cli("status", str(out), "--json").stdout)
    assert folder["cost_usd"] <= 0.5


# -- 4. run-wide options are checked before any request ----------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--image-size", "8K"), "--image-size"),
        (("--aspect-ratio", "7:3"), "--aspect-ratio"),
        (("--concurrency", "0"), "error: --concurrency must be >= 1, got 0"),
        (("--concurrency", "0", "--dry-run"), "error: --concurrency must be >= 1, got 0"),
        (("--rpm", "0"), "error: --rpm must be > 0, got 0.0"),
        (("--image-size", "8K", "--dry-run"), "--image-size"),
    ],
)
def test_bad_run_wide_options_exit_2_before_any_request(
    tmp_path: Path, mock: ThreadedMockServer, flags: tuple[str, ...], message: str
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p"}])
    proc = run_cli("run", str(src), "-o", str(tmp_path / "out"), *flags, *remote(mock))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert mock.stats.requests == 0 and not records(tmp_path / "out")


def test_dry_run_warns_about_a_model_not_in_the_table(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p"}])
    proc = run_cli("run", str(src), "-o", str(tmp_path / "out"), "--dry-run",
                   "--model", "gemini-9-new-image")
    assert proc.returncode == 0, proc.stderr
    assert "not in cometgen's model table" in proc.stderr
    assert "did you mean" not in proc.stderr  # nothing close: a new model, not a typo


@pytest.mark.parametrize(
    ("key_env", "message"),
    [
        ({}, "--base-url {url} needs an API key: pass --api-key or set COMETAPI_KEY"),
        ({"COMETAPI_KEY": KEY + "\n"},  # as read from a key file
         "the API key (--api-key, $COMETAPI_KEY or config) contains a control character at "
         f"position {len(KEY) + 1} of {len(KEY) + 1} (a trailing newline, as from a file?)"),
    ],
)
def test_a_missing_or_unsendable_key_exits_2_before_any_request(
    tmp_path: Path, mock: ThreadedMockServer, key_env: dict[str, str], message: str
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p"}])
    for extra in ((), ("--dry-run",)):
        proc = run_cli("run", str(src), "-o", str(tmp_path / "out"), "--base-url", mock.url,
                       *extra, **key_env)
        assert proc.returncode == 2, proc.stderr
        assert message.format(url=mock.url) in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and KEY not in proc.stderr
    assert mock.stats.requests == 0


def test_a_typo_in_the_model_name_gets_did_you_mean(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p"}])
    proc = run_cli("run", str(src), "-o", str(tmp_path / "out"), "--dry-run",
                   "--model", "gemini-3-pro-imag")
    assert "(did you mean 'gemini-3-pro-image'?)" in proc.stderr, proc.stderr


# -- 9. progress that tells the truth ------------------------------------------------------

_BAR = re.compile(r"^cometgen: \[[#.]{20}\] +(\d+)% (\d+)/12 \| ")


def test_plain_progress_shows_the_429_pause_counting_down_queued_a_bar_and_an_eta(
    tmp_path: Path
) -> None:
    # The first answer is a 429 asking for 3 s: every new request waits for it, so the
    # workers' items are queued while nothing is in flight, and the pause counts down.
    rows = [{"id": "p0", "prompt": "p0 [[mock:429:1:3s]]"}] + [
        {"id": f"p{i}", "prompt": f"p{i}"} for i in range(1, 12)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    with MockServer(latency=0.3).run_in_thread() as server:
        proc = run_cli("run", str(src), "-o", str(tmp_path / "out"), "--concurrency", "4",
                       "--no-adaptive", "--progress-interval", "0.2", *remote(server))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if _BAR.match(line)]
    assert len(lines) >= 10, proc.stderr  # one every 0.2 s, not every 10 s
    paused = [line for line in lines if "429 pause" in line]
    countdown = [int(m.group(1)) for line in paused
                 if (m := re.search(r"429 pause (\d+)s", line))]
    assert len(set(countdown)) >= 2 and max(countdown) <= 3, proc.stderr
    assert countdown == sorted(countdown, reverse=True), proc.stderr
    # Queued apart from in flight: during the pause no request is out, items wait.
    assert any(re.search(r"in flight 0/4 \| queued [1-4] \|", line) for line in paused)
    assert all("429s 1" in line for line in paused)
    # The bar's percentage follows the items finished; an ETA once some have finished.
    for line in lines:
        m = _BAR.match(line)
        assert m is not None and int(m.group(1)) == round(100 * int(m.group(2)) / 12)
    assert any(re.search(r"ETA \d+:\d\d$", line) for line in paused), proc.stderr
    assert _BAR.match(lines[-1]) and "100% 12/12" in lines[-1]


def test_progress_interval_must_be_positive(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p"}])
    proc = run_cli("run", str(src), "-o", str(tmp_path / "out"), "--progress-interval", "0",
                   "--dry-run")
    assert proc.returncode == 2 and "--progress-interval" in proc.stderr
