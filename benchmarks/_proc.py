"""Process helpers shared by the benchmark harness: start servers, read /proc, stats."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_URL_RE = re.compile(r"listening on (http://[0-9.]+:\d+)")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its own threads, not its children), from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode()
    fields = raw[raw.rindex(")") + 2 :].split()
    # Fields after the command: state is index 0, utime 11, stime 12.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def busy_seconds() -> float:
    """CPU time all processes spent busy since boot (every core), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def rss_mb(pid: int) -> float | None:
    """Current VmRSS of a process in MB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set (VmHWM) of a process in MB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class Server:
    """A server subprocess that prints ``... listening on http://HOST:PORT``."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = _URL_RE.search(line)
        if match is None:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r} {err[-2000:]}")
        self.url = match.group(1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fixed_server(body_file: Path, *args: str) -> Server:
    return Server([PYTHON, str(HERE / "server.py"), "--body", str(body_file), "--port", "0",
                   *args])


def get_json(url: str) -> dict[str, object]:
    """GET ``url`` and decode its JSON answer (the bench server's control endpoints)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        result: dict[str, object] = json.loads(resp.read())
    return result


def mock_server(*args: str) -> Server:
    return Server([PYTHON, "-m", "cometgen", "mock-server", "--port", "0", *args])


def run_json(argv: list[str], *, timeout: float) -> dict[str, object]:
    """Run a client script; its last stdout line is a JSON object."""
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:3])} failed ({proc.returncode}): "
                           f"{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    result: dict[str, object] = json.loads(lines[-1])
    return result


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p99/max of ``values`` (seconds) in milliseconds, rounded."""
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": round(pick(0.50) * 1000, 2), "p99": round(pick(0.99) * 1000, 2),
            "max": round(ordered[-1] * 1000, 2)}


def median_wall(argv: list[str], runs: int) -> float:
    """Median wall time in ms of running ``argv`` ``runs`` times (after one warm-up)."""
    subprocess.run(argv, capture_output=True, cwd=ROOT, check=True)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, cwd=ROOT, check=True)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 1)
