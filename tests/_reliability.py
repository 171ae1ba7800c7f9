"""Shared helpers of the reliability suite: crash torture and fault soak, at any scale.

Imported by the ``tests/test_reliability_*.py`` files (pytest puts ``tests/`` on sys.path)
and by ``python -m tests.torture`` (as ``tests._reliability``) for the long runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cometgen._files import is_temp_name
from cometgen.testing import MockServer, RequestRecord

KEY = "sk-reliability-test-key-0123456789"
IMAGE_SUFFIXES = (".jpg", ".png")
#: Scripted non-done outcomes mixed into the torture input, and the status each ends in.
SCRIPTED = {"block": "blocked", "no_image": "no_image"}
#: Outcomes after which the request may have been generated and billed.
AMBIGUOUS = frozenset({"drop", "truncate", "malformed", "524"})


def cometgen_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cometgen", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMETAPI_", "GEMINI_", "GOOGLE_API"))}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


# --------------------------------------------------------------------------- output checks


@dataclass
class ManifestView:
    records: list[dict[str, Any]]
    corrupt: int  #: lines that are not JSON objects (torn by a kill)
    latest: dict[str, dict[str, Any]]


def read_manifest(out: Path) -> ManifestView:
    path = out / "manifest.jsonl"
    records: list[dict[str, Any]] = []
    corrupt = 0
    if path.exists():
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                corrupt += 1
                continue
            if not isinstance(rec, dict) or "key" not in rec or "status" not in rec:
                corrupt += 1
                continue
            records.append(rec)
    return ManifestView(records, corrupt, {str(r["key"]): r for r in records})


def is_complete_image(data: bytes) -> bool:
    if data[:3] == b"\xff\xd8\xff":
        return data[-2:] == b"\xff\xd9"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND"
    return False


def scan_out_dir(out: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(image files, temp files, anything else that is not a manifest/metadata file)."""
    images, temps, other = [], [], []
    if not out.exists():
        return images, temps, other
    nested = (out / "images").rglob("*") if (out / "images").is_dir() else ()
    for p in [*out.iterdir(), *nested]:
        if p.name in ("manifest.jsonl", "metadata.jsonl", "run.json") or p == out / "images":
            continue
        if p.is_dir() and p.parent.is_relative_to(out / "images"):
            continue  # an image folder: images/<2 hex>/<2 hex>/
        if is_temp_name(p.name):
            temps.append(p)
        elif p.suffix in IMAGE_SUFFIXES and p.is_file():
            images.append(p)
        else:
            other.append(p)
    return images, temps, other


def check_images_complete(out: Path) -> list[str]:
    """Names of files under a final image name that are not a complete image."""
    images, _, _ = scan_out_dir(out)
    return [p.name for p in images if not is_complete_image(p.read_bytes())]


def check_final_state(out: Path, expected: dict[str, str]) -> list[str]:
    """Every promise about a finished output folder; returns the broken ones."""
    problems: list[str] = []
    view = read_manifest(out)
    for key, status in expected.items():
        rec = view.latest.get(key)
        if rec is None:
            problems.append(f"lost: {key} has no record")
        elif rec["status"] != status:
            problems.append(f"{key}: status {rec['status']} ({rec.get('reason')}), "
                            f"expected {status}")
    if extra := set(view.latest) - set(expected):
        problems.append(f"unexpected keys in the manifest: {sorted(extra)[:5]}")
    done_counts = Counter(str(r["key"]) for r in view.records if r["status"] == "done")
    if dupes := [k for k, c in done_counts.items() if c > 1]:
        problems.append(f"{len(dupes)} key(s) recorded done twice: {dupes[:5]}")
    referenced: set[str] = set()
    for rec in view.latest.values():
        for f in rec.get("files", []):
            referenced.add(f["path"])
            path = out / f["path"]
            if not path.is_file():
                problems.append(f"{rec['key']}: missing file {f['path']}")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != f["sha256"]:
                problems.append(f"{rec['key']}: sha256 mismatch for {f['path']}")
    images, temps, other = scan_out_dir(out)
    if temps:
        problems.append(f"temp files left: {[p.name for p in temps][:5]}")
    if other:
        problems.append(f"unexpected files: {[p.name for p in other][:5]}")
    rel = (p.relative_to(out).as_posix() for p in images)
    if orphans := sorted(r for r in rel if r not in referenced):
        problems.append(f"image files no record points at: {orphans[:5]}")
    if bad := check_images_complete(out):
        problems.append(f"incomplete images under a final name: {bad[:5]}")
    return problems


# --------------------------------------------------------------------------- crash torture


def torture_input(path: Path, items: int) -> tuple[dict[str, str], dict[str, str]]:
    """Write the torture input; return (key -> expected final status, key -> prompt)."""
    expected: dict[str, str] = {}
    prompts: dict[str, str] = {}
    with path.open("w") as f:
        for i in range(items):
            key = f"t{i:06d}"
            marker = ""
            if i % 97 == 13:
                marker = " [[mock:block]]"
            elif i % 89 == 7:
                marker = " [[mock:no_image]]"
            prompt = f"torture item {i}{marker}"
            status = SCRIPTED[marker[8:-2]] if marker else "done"
            expected[key], prompts[key] = status, prompt
            f.write(json.dumps({"id": key, "prompt": prompt, "metadata": {"i": i}}) + "\n")
    return expected, prompts


@dataclass
class TortureReport:
    items: int
    kills: int = 0
    runs: int = 0
    seconds: float = 0.0
    requests: int = 0
    billed_total: int = 0
    #: Keys billed more than once (in flight at a kill): allowed, reported.
    billed_twice: list[str] = field(default_factory=list)
    #: Per kill: keys the dead run paid for that it left neither recorded in the manifest
    #: nor as a complete image to adopt (in flight, or answered but not yet flushed). Only
    #: these may be paid for again.
    exposed_per_kill: list[int] = field(default_factory=list)
    #: Keys billed more often than 1 + the kills that left them exposed: must stay empty.
    unexplained_billing: list[str] = field(default_factory=list)
    #: Keys sent again although done in the manifest before the run: must stay empty.
    resent_done: list[str] = field(default_factory=list)
    #: Keys sent again although their image was on disk before the run: must stay empty.
    resent_on_disk: list[str] = field(default_factory=list)
    #: Half-written files seen under a final image name after a kill: must stay empty.
    partial_images: list[str] = field(default_factory=list)
    #: Files other than images, temp files and the manifest after a kill.
    stray_files: list[str] = field(default_factory=list)
    adopted: int = 0
    corrupt_lines: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.problems or self.resent_done or self.resent_on_disk
                    or self.partial_images or self.stray_files or self.unexplained_billing)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("billed_twice", "resent_done", "resent_on_disk", "partial_images",
                     "stray_files", "unexplained_billing", "problems"):
            d[name] = len(d[name]) if name != "problems" else d[name][:20]
        d["lost"] = sum("lost:" in p for p in self.problems)
        d["duplicates"] = sum("recorded done twice" in p for p in self.problems)
        return d


def _count_images(out: Path) -> int:
    # Images live in out/images/<2 hex>/<2 hex>/ (older folders: directly in out).
    return sum(1 for _, _, names in os.walk(out) for n in names if n.endswith(IMAGE_SUFFIXES))


def crash_torture(
    workdir: Path,
    *,
    items: int = 2000,
    kills: int = 10,
    seed: int = 0,
    concurrency: int = 24,
    latency: float = 0.02,
    run_timeout: float = 300.0,
    log: Callable[[str], None] = lambda _: None,
) -> TortureReport:
    """Run ``cometgen run`` on ``items`` prompts, ``kill -9`` it ``kills`` times, rerun to the end.

    A kill lands either at a random time from process start (startup, manifest load) or
    after a random amount of progress plus a random delay, so every kill hits real work.
    """
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "torture.jsonl"
    out = workdir / "out"
    expected, prompts = torture_input(src, items)
    report = TortureReport(items=items)
    exposures: Counter[str] = Counter()
    started = time.monotonic()
    with MockServer(latency=latency, seed=seed).run_in_thread() as server:
        args = cometgen_cmd("run", str(src), "-o", str(out), "--concurrency", str(concurrency),
                            "--quiet", "--base-url", server.url, "--api-key", KEY)
        while True:
            view = read_manifest(out)
            # done, blocked, no_image: final answers, never sent again
            done_before = {k for k, r in view.latest.items() if r["status"] != "failed"}
            on_disk = {p.stem for p in scan_out_dir(out)[0]}
            billed_before = dict(server.stats.billed_by_prompt)
            killing = report.kills < kills
            proc = subprocess.Popen(args, env=clean_env(), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            report.runs += 1
            killed = False
            if killing:
                killed = _kill_at_random_moment(proc, out, rng, items, kills - report.kills)
            if killed:
                report.kills += 1
                proc.stderr.close()  # type: ignore[union-attr]
                _wait_until_quiet(server.stats, latency * 3 + 0.05)  # the dead run's requests
                exposed = _exposed_keys(out, prompts, billed_before,
                                        server.stats.billed_by_prompt)
                exposures.update(exposed)
                report.exposed_per_kill.append(len(exposed))
            else:
                try:
                    _, stderr = proc.communicate(timeout=run_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
                    report.problems.append(f"run {report.runs} hung for {run_timeout}s")
                    break
            for key in done_before | on_disk:
                prompt = prompts[key]
                if server.stats.billed_by_prompt.get(prompt, 0) != billed_before.get(prompt, 0):
                    (report.resent_done if key in done_before
                     else report.resent_on_disk).append(key)
            report.partial_images += check_images_complete(out)
            report.stray_files += [p.name for p in scan_out_dir(out)[2]]
            log(f"run {report.runs}: {'killed' if killed else f'exit {proc.returncode}'}, "
                f"{len(read_manifest(out).latest)}/{items} recorded, "
                f"{server.stats.billed_total} billed")
            if not killed:
                if proc.returncode != 0:
                    report.problems.append(
                        f"final run exited {proc.returncode}: {stderr.decode()[-2000:]}")
                break
        report.requests = server.stats.requests
        report.billed_total = server.stats.billed_total
        report.billed_twice = sorted(
            k for k, p in prompts.items() if server.stats.billed_by_prompt.get(p, 0) > 1
        )
        report.unexplained_billing = sorted(
            k for k, p in prompts.items()
            if server.stats.billed_by_prompt.get(p, 0) > 1 + exposures[k]
        )
    view = read_manifest(out)
    report.corrupt_lines = view.corrupt
    report.adopted = sum(1 for r in view.records if "adopted" in str(r.get("reason", "")))
    report.problems += check_final_state(out, expected)
    if view.corrupt > report.kills:
        report.problems.append(f"{view.corrupt} corrupt manifest lines for {report.kills} kills")
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _wait_until_quiet(stats: Any, quiet: float, limit: float = 10.0) -> None:
    """Wait until the mock has answered nothing for ``quiet`` seconds: every request of a
    killed run has then been answered (and billed), so none is counted in the next run."""
    deadline = time.monotonic() + limit
    seen = stats.requests
    while time.monotonic() < deadline:
        time.sleep(quiet)
        if stats.requests == seen:
            return
        seen = stats.requests


def _exposed_keys(
    out: Path, prompts: dict[str, str], before: dict[str, int], after: dict[str, int]
) -> set[str]:
    """Keys a killed run was billed for that it left neither in the manifest nor as a
    complete image on disk: what the next run may send (and pay for) again."""
    settled = set(read_manifest(out).latest)
    settled |= {p.stem for p in scan_out_dir(out)[0] if is_complete_image(p.read_bytes())}
    return {
        k for k, p in prompts.items()
        if after.get(p, 0) > before.get(p, 0) and k not in settled
    }


def _kill_at_random_moment(
    proc: subprocess.Popen[bytes], out: Path, rng: random.Random, items: int, kills_left: int
) -> bool:
    """SIGKILL ``proc`` at a random moment; False if it finished first."""
    have = _count_images(out)
    # Kill no later than this much progress, so a fast run never finishes before the kill
    # lands and every planned kill happens (a short timed wait can outlast a whole run).
    cap = have + max(1, (items - have) // (kills_left + 1))
    if rng.random() < 0.15:
        deadline = time.monotonic() + rng.uniform(0.0, 1.5)  # may land in start-up
    else:
        target = have + max(1, int((items - have) / (kills_left + 1) * rng.uniform(0.1, 1.0)))
        deadline = time.monotonic() + 120
        while _count_images(out) < target and time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            time.sleep(0.01)
        deadline = time.monotonic() + rng.uniform(0.0, 0.05)
    while time.monotonic() < deadline and _count_images(out) < cap:
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return True


# --------------------------------------------------------------------------- fault soak


def requests_by_prompt(log: Iterable[RequestRecord]) -> dict[str, list[RequestRecord]]:
    by_prompt: dict[str, list[RequestRecord]] = {}
    for rec in sorted(log, key=lambda r: r.t):
        by_prompt.setdefault(rec.prompt, []).append(rec)
    return by_prompt


def retry_delay_violations(
    log: Iterable[RequestRecord], delays: dict[str, float], default_delay: float = 1.5
) -> list[str]:
    """Prompts whose next request came sooner than a Google 429's RetryInfo asked.

    The mock logs a request when its answer is ready, so for a 429 (answered at once) the
    log time precedes the client's receipt: the check is strict.
    """
    bad = []
    for prompt, recs in requests_by_prompt(log).items():
        for prev, nxt in itertools.pairwise(recs):
            if prev.outcome == "429":
                wait = delays.get(prompt, default_delay)
                if nxt.t - prev.t < wait:
                    bad.append(f"{prompt!r}: {nxt.t - prev.t:.3f}s < {wait}s")
    return bad


def ambiguous_resends(log: Iterable[RequestRecord]) -> list[str]:
    """Prompts sent again after an answer that may have been billed (default: never)."""
    bad = []
    for prompt, recs in requests_by_prompt(log).items():
        for i, rec in enumerate(recs[:-1]):
            if rec.outcome in AMBIGUOUS:
                bad.append(f"{prompt!r}: {rec.outcome} then {len(recs) - i - 1} more")
                break
    return bad


def fault_soak_jobs(items: int, seed: int) -> tuple[list[tuple[str, str]], dict[str, float]]:
    """(id, prompt) pairs: mostly plain (random faults), some scripted 429s of both kinds."""
    rng = random.Random(seed)
    jobs: list[tuple[str, str]] = []
    delays: dict[str, float] = {}
    for i in range(items):
        prompt = f"soak item {i}"
        roll = rng.random()
        if roll < 0.05:
            d = round(rng.uniform(0.05, 0.4), 2)
            prompt += f" [[mock:429:{rng.randint(1, 2)}:{d}s]]"
            delays[prompt] = d
        elif roll < 0.10:
            prompt += f" [[mock:429_comet:{rng.randint(1, 2)}]]"
        elif roll < 0.12:
            prompt += " [[mock:slow:1:0.2s]]"
        jobs.append((f"s{i:05d}", prompt))
    return jobs, delays


def json_line(report: dict[str, Any]) -> str:
    return json.dumps(report, sort_keys=True)


async def fault_soak(
    workdir: Path,
    items: int = 200,
    seed: int = 0,
    *,
    fault_rate: float = 0.3,
    latency: float = 0.01,
    concurrency: int = 16,
    timeout: float = 240.0,
) -> dict[str, Any]:
    """Run a Batch through a mock answering ``fault_rate`` of requests with a random fault.

    Returns figures and ``problems`` (broken promises; empty when all held).
    """
    import anyio

    import cometgen

    specs, delays = fault_soak_jobs(items, seed)
    by_key = dict(specs)
    out = workdir / "out"
    policy = cometgen.RetryPolicy(initial_delay=0.02, max_delay=0.2)
    problems: list[str] = []
    async with MockServer(fault_rate=fault_rate, seed=seed, latency=latency) as server:
        client = cometgen.AsyncClient(api_key=KEY, base_url=server.url, retry=policy,
                                      timeout=cometgen.Timeouts(total=20))
        async with client:
            with anyio.fail_after(timeout):  # nothing may hang
                async with cometgen.Batch(client, out_dir=out, concurrency=concurrency) as b:
                    jobs = [cometgen.Job(id=k, prompt=p) for k, p in specs]
                    outcomes = {o.key: o async for o in b.run(jobs)}
                    stats = b.stats.as_dict()
            await anyio.sleep(0.05)
            if client.transport.acquired_connections or client.limiter.in_flight:
                problems.append("connections or limiter slots still held after the run")
        log = list(server.stats.log)
        billed = dict(server.stats.billed_by_prompt)
    view = read_manifest(out)
    per_prompt = requests_by_prompt(log)
    for key, prompt in by_key.items():
        rec = view.latest.get(key)
        if key not in outcomes or rec is None:
            problems.append(f"lost: {key}")
            continue
        if rec["status"] not in ("done", "failed"):
            problems.append(f"{key}: unexpected status {rec['status']}")
        if rec["status"] == "failed" and not rec.get("reason"):
            problems.append(f"{key}: failed without a reason")
        last = per_prompt.get(prompt, [])[-1:]
        if last and last[0].outcome in AMBIGUOUS and not (
            rec["status"] == "failed" and rec.get("maybe_billed") is True
        ):
            problems.append(f"{key}: last answer {last[0].outcome} but record {rec}")
        if billed.get(prompt, 0) > 1:
            problems.append(f"{key}: billed {billed[prompt]} times")
    problems += [f"resent after an ambiguous failure: {x}" for x in ambiguous_resends(log)]
    problems += [f"retried too early: {x}" for x in retry_delay_violations(log, delays)]
    expected = {k: str(r["status"]) for k, r in view.latest.items()}
    problems += check_final_state(out, expected)
    faults = Counter(r.outcome for r in log if r.outcome != "success")
    return {
        "items": items,
        "requests": len(log),
        "faults_injected": sum(faults.values()),
        "faults": dict(sorted(faults.items())),
        "done": stats["done"],
        "failed": stats["failed"],
        "maybe_billed": sum(1 for r in view.latest.values() if r.get("maybe_billed")),
        "retries": stats["retries"],
        "google_429_waits_checked": sum(1 for r in log if r.outcome == "429"),
        "billed_twice": sum(1 for c in billed.values() if c > 1),
        "problems": problems,
    }
