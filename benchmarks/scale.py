"""Scale scenario: ``cometgen run`` on N prompts against the mock (zero latency, tiny images).

Samples the CLI process every few seconds: VmRSS, CPU, manifest growth (items done), and
the mock server's CPU; notes when the first image lands on disk.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from _proc import PYTHON, ROOT, Server, cpu_seconds, rss_mb

_IMAGE_EXT = (".jpg", ".png", ".webp")


def write_prompts(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        for start in range(0, n, 10_000):
            f.write("".join(
                f'{{"id":"p{i}","prompt":"a tiny lighthouse on a cliff, number {i}"}}\n'
                for i in range(start, min(n, start + 10_000))
            ))


def _first_image(out: Path, t0: float, stop: threading.Event, found: list[float]) -> None:
    dirs = [out, out / "images"]
    while not stop.is_set():
        for d in dirs:
            try:
                with os.scandir(d) as it:
                    for entry in it:
                        if entry.name.endswith(_IMAGE_EXT) and not entry.name.startswith("."):
                            found.append(time.perf_counter() - t0)
                            return
            except FileNotFoundError:
                continue
        time.sleep(0.005)


def _count_lines(path: Path) -> int:
    count = 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                count += chunk.count(b"\n")
    except FileNotFoundError:
        return 0
    return count


def run_scale(server: Server, n: int, c: int, tmp: Path, *, sample_every: float = 3.0,
              timeout: float = 3600) -> dict[str, Any]:
    """Run the CLI on ``n`` prompts at concurrency ``c``; returns figures and samples."""
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, n)
    out = tmp / "out"
    argv = [PYTHON, "-m", "cometgen", "run", str(prompts), "-o", str(out), "--concurrency",
            str(c), "--quiet", "--json", "--base-url", server.url, "--api-key", "k"]
    manifest = out / "manifest.jsonl"
    srv_cpu0 = server.cpu()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    stop = threading.Event()
    found: list[float] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    watcher = threading.Thread(target=_first_image, args=(out, t0, stop, found), daemon=True)
    watcher.start()
    samples: list[dict[str, Any]] = []
    last_bytes, last_t = 0, t0
    try:
        while proc.poll() is None:
            time.sleep(sample_every)
            now = time.perf_counter()
            rss = rss_mb(proc.pid)
            try:
                cpu = cpu_seconds(proc.pid)
            except (FileNotFoundError, ProcessLookupError):
                break
            size = manifest.stat().st_size if manifest.exists() else 0
            samples.append({"t_s": round(now - t0, 1), "rss_mb": rss and round(rss, 1),
                            "client_cpu_s": round(cpu, 1),
                            "server_cpu_s": round(server.cpu() - srv_cpu0, 1),
                            "manifest_bytes": size,
                            "bytes_per_s": round((size - last_bytes) / (now - last_t))})
            last_bytes, last_t = size, now
            if now - t0 > timeout:
                proc.terminate()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - t0
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (kids1.ru_utime - kids0.ru_utime) + (kids1.ru_stime - kids0.ru_stime)
    srv_cpu = server.cpu() - srv_cpu0
    lines = _count_lines(manifest)
    summary: dict[str, Any] = {}
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            summary = json.loads(line)
            break
    bytes_per_line = (manifest.stat().st_size / lines) if lines else 0.0
    for s in samples:
        s["items_per_s"] = round(s.pop("bytes_per_s") / bytes_per_line) if bytes_per_line else 0
        s["items_done"] = round(s.pop("manifest_bytes") / bytes_per_line) if bytes_per_line else 0
    steady = [s["items_per_s"] for s in samples[1:-1] if s["items_per_s"]]
    rss_values = [s["rss_mb"] for s in samples if s["rss_mb"]]
    done = int(summary.get("done", 0))
    elapsed = float(summary.get("elapsed_s", 0) or 0)
    return {
        "n": n, "c": c, "exit_code": proc.returncode, "manifest_lines": lines,
        "done": done, "failed": summary.get("failed"), "wall_s": round(wall, 1),
        "cli_elapsed_s": elapsed,
        "items_per_s_overall": round(lines / wall, 1) if wall else 0.0,
        "items_per_s_run": round(done / elapsed, 1) if elapsed else 0.0,
        "items_per_s_steady_min": min(steady) if steady else None,
        "items_per_s_steady_median": sorted(steady)[len(steady) // 2] if steady else None,
        "first_image_s": round(found[0], 3) if found else None,
        "max_rss_mb": max(rss_values) if rss_values else None,
        "rss_first_mb": rss_values[0] if rss_values else None,
        "client_cpu_s": round(client_cpu, 1),
        "client_cpu_ms_per_item": round(client_cpu * 1000 / lines, 3) if lines else None,
        "server_cpu_s": round(srv_cpu, 1),
        "server_cpu_ms_per_item": round(srv_cpu * 1000 / lines, 3) if lines else None,
        "stderr_tail": stderr[-1500:] if proc.returncode else "",
        "samples": samples,
    }
