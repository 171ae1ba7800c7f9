"""cometgen benchmarks: one entry point.

    python benchmarks/run.py [--quick | --smoke] [--json] [--scenario NAME ...]

Scenarios: ``realistic`` (the recorded Pro answer after 3-9 s, 400 in flight; cometgen vs
google-genai vs a minimal hand-written client, alternating, two rounds), ``throughput``
(zero latency, large recorded bodies and a small one; information), ``scale`` (``cometgen
run`` on many prompts against the mock), ``ratelimit`` (RPM accuracy, known and
adaptive), ``startup`` (import / --help time).
Servers and clients each run in their own process. Prints one table; ``--json`` prints the
results as JSON on stdout instead (the table then goes to stderr). Results are also
written to ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bodies
from _proc import HERE, PYTHON, Server, fixed_server, median_wall, mock_server, run_json
from realistic import run_realistic
from report import bars, render
from scale import run_scale

SCENARIOS = ("realistic", "throughput", "scale", "ratelimit", "startup")
CLIENTS = ("cometgen", "cometgen-batch", "genai", "aiohttp", "minimal")


def _machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {}
    for pkg in ("cometgen", "google-genai", "aiohttp", "msgspec", "anyio", "uvloop"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = "?"
    return out


def throughput(cfg: dict[str, Any], tmp: Path, log: Any) -> list[dict[str, Any]]:
    rows = []
    for body in bodies.prepare(tmp, cfg["bodies"]):
        n = cfg["n_small"] if body.name.startswith("small") else cfg["n"]
        with fixed_server(body.path) as server:
            # Warm the server up (its first answers are slower) with the neutral client, so
            # the first client measured is not the one that pays for it.
            run_json([PYTHON, str(HERE / "client.py"), "--client", "aiohttp", "--url",
                      server.url, "--model", body.model, "--n", "32", "--c", "8",
                      "--tmp", str(tmp)], timeout=cfg["client_timeout"])
            for client in cfg["clients"]:
                log(f"throughput: {body.name} {client} N={n} C={cfg['c']} ...")
                os.sync()  # start every client with no dirty pages from the previous one
                # --keep: images are deleted with tmp when the whole run ends. Deleting them
                # between clients made the next client's file creations scan the just-freed
                # inodes (ext4 without a journal skips inodes deleted in the last 1-6 min,
                # `recently_deleted` in perf profiles): up to ~0.25 ms more per new file here,
                # for every client alike.
                result = run_json(
                    [PYTHON, str(HERE / "client.py"), "--client", client, "--url", server.url,
                     "--model", body.model, "--n", str(n), "--c", str(cfg["c"]),
                     "--tmp", str(tmp), "--server-pid", str(server.pid), "--keep"],
                    timeout=cfg["client_timeout"],
                )
                result.update(body=body.name, body_bytes=body.size, image_bytes=body.image_bytes)
                rows.append(result)
    return rows


def scale(cfg: dict[str, Any], tmp: Path, log: Any) -> dict[str, Any]:
    log(f"scale: cometgen run, {cfg['scale_n']:,} items, C=64, mock (zero latency) ...")
    work = tmp / "scale"
    work.mkdir()
    with mock_server() as server:
        return run_scale(server, cfg["scale_n"], 64, work, sample_every=cfg["sample_every"])


def ratelimit_start(cfg: dict[str, Any], log: Any) -> tuple[list[Server], list[Any]]:
    """Start two mocks (--rpm 600) and the two rate-limit clients; ``ratelimit_finish`` waits."""
    import subprocess

    rpm, latency = 600, cfg["rl_latency"]
    log(f"ratelimit: mock --rpm {rpm} --latency {latency}; known rpm for "
        f"{cfg['rl_rpm_s']}s and adaptive for {cfg['rl_adaptive_s']}s, in parallel ...")
    servers = [mock_server("--rpm", str(rpm), "--latency", str(latency)) for _ in range(2)]
    procs = []
    for server, mode, secs in ((servers[0], "rpm", cfg["rl_rpm_s"]),
                               (servers[1], "adaptive", cfg["rl_adaptive_s"])):
        argv = [PYTHON, str(HERE / "ratelimit_client.py"), "--url", server.url, "--mode",
                mode, "--rpm", str(rpm), "--duration", str(secs), "--c", "64",
                "--grace", str(latency + 15)]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    return servers, procs


def ratelimit_finish(cfg: dict[str, Any], started: tuple[list[Server], list[Any]],
                     overlapped: bool) -> list[dict[str, Any]]:
    servers, procs = started
    rows = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=cfg["rl_adaptive_s"] + 120)
            if proc.returncode != 0:
                raise RuntimeError(f"ratelimit client failed: {stderr[-2000:]}")
            row = json.loads(stdout.strip().splitlines()[-1])
            row["mock_latency_s"] = cfg["rl_latency"]
            row["overlapped_with_scale"] = overlapped
            rows.append(row)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for server in servers:
            server.close()
    return rows


def _finish_overlapped(cfg: dict[str, Any], _tmp: Path, _log: Any, *,
                       started: tuple[list[Server], list[Any]]) -> list[dict[str, Any]]:
    return ratelimit_finish(cfg, started, overlapped=True)


def ratelimit(cfg: dict[str, Any], tmp: Path, log: Any) -> list[dict[str, Any]]:
    return ratelimit_finish(cfg, ratelimit_start(cfg, log), overlapped=False)


def startup(cfg: dict[str, Any], tmp: Path, log: Any) -> list[dict[str, Any]]:
    runs = cfg["startup_runs"]
    log(f"startup: median of {runs} runs each ...")
    cli = str(Path(PYTHON).parent / "cometgen")
    cases = [
        ("python -c pass (baseline)", [PYTHON, "-c", "pass"]),
        ("python -c 'import cometgen'", [PYTHON, "-c", "import cometgen"]),
        ("cometgen --help", [cli, "--help"]),
        ("python -m cometgen --help", [PYTHON, "-m", "cometgen", "--help"]),
        ("python -c 'from google import genai'", [PYTHON, "-c", "from google import genai"]),
    ]
    return [{"command": name, "median_ms": median_wall(argv, runs)} for name, argv in cases]


def _config(args: argparse.Namespace) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "mode": "full", "n": 400, "n_small": 2000, "c": 64, "bodies": None,
        "clients": list(CLIENTS), "client_timeout": 600, "scale_n": 1_000_000,
        "sample_every": 5.0, "rl_latency": 2.0, "rl_rpm_s": 100, "rl_adaptive_s": 180,
        "startup_runs": 10, "real_n": 1500, "real_c": 400, "real_latency_s": [3.0, 9.0],
        "real_seed": 1, "real_rounds": 2, "real_warmup_n": 800,
    }
    if args.quick:
        cfg.update(mode="quick", n=100, n_small=500, scale_n=50_000, sample_every=3.0,
                   rl_rpm_s=20, rl_adaptive_s=60, startup_runs=5, real_n=600, real_rounds=1,
                   real_warmup_n=400)
    if args.smoke:
        cfg.update(mode="smoke", n=8, n_small=8, c=4, bodies=["flash-2MB"],
                   clients=["cometgen", "aiohttp", "genai"], client_timeout=60, startup_runs=1,
                   real_n=8, real_c=4, real_latency_s=[0.05, 0.15], real_rounds=2,
                   real_warmup_n=4)
    if args.n:
        cfg["n"] = args.n
    if args.clients:
        cfg["clients"] = args.clients
    if args.bodies:
        cfg["bodies"] = args.bodies
    if args.rounds:
        cfg["real_rounds"] = args.rounds
    return cfg


def _guarded(fn: Any, cfg: dict[str, Any], tmp: Path, log: Any, name: str) -> Any:
    try:
        return fn(cfg, tmp, log)
    except Exception as exc:
        log(f"{name} FAILED: {exc}")
        return {"error": str(exc)[-3000:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller N (finishes < 5 min)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny throughput run (N=8, C=4, one body) for the test suite")
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="run only this scenario (repeatable)")
    parser.add_argument("--client", dest="clients", action="append", choices=CLIENTS)
    parser.add_argument("--body", dest="bodies", action="append",
                        choices=("pro-4MB", "flash-2MB", "small-2KB"))
    parser.add_argument("--n", type=int, help="override N for the throughput scenario")
    parser.add_argument("--rounds", type=int, help="override the realistic scenario's rounds")
    parser.add_argument("--no-save", action="store_true", help="do not write latest.json")
    args = parser.parse_args(argv)
    cfg = _config(args)
    chosen = args.scenario or (["realistic", "throughput"] if args.smoke else list(SCENARIOS))
    out = sys.stderr if args.json else sys.stdout

    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    started = datetime.datetime.now(datetime.UTC)
    results: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"), "config": cfg,
        "machine": _machine(), "versions": _versions(), "scenarios": {},
    }
    runners = {"realistic": run_realistic, "throughput": throughput, "scale": scale,
               "ratelimit": ratelimit, "startup": startup}
    # --quick overlaps the (light, paced) rate-limit runs with the scale run to stay < 5 min.
    overlap = cfg["mode"] == "quick" and "scale" in chosen and "ratelimit" in chosen
    with tempfile.TemporaryDirectory(prefix="cometgen-bench-") as tmp:
        for name in SCENARIOS:
            if name == "scale" and overlap:
                pending = _guarded(lambda c, _t, lg: ratelimit_start(c, lg), cfg, Path(tmp), log,
                                   "ratelimit")
                results["scenarios"]["scale"] = _guarded(scale, cfg, Path(tmp), log, "scale")
                results["scenarios"]["ratelimit"] = pending if isinstance(pending, dict) else \
                    _guarded(functools.partial(_finish_overlapped, started=pending), cfg,
                             Path(tmp), log, "ratelimit")
                continue
            if name == "ratelimit" and overlap:
                continue
            if name in chosen:
                results["scenarios"][name] = _guarded(runners[name], cfg, Path(tmp), log, name)
    results["elapsed_s"] = round(
        (datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1)
    results["bars"] = bars(results)
    print(render(results), file=out, flush=True)
    if not (args.no_save or args.smoke):
        dest = HERE / "results" / "latest.json"
        dest.parent.mkdir(exist_ok=True)
        dest.write_text(json.dumps(results, indent=1) + "\n")
    if args.json:
        print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
