"""Smoke test: ``benchmarks/run.py --smoke`` runs end to end and prints its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(90)
def test_benchmark_smoke_prints_a_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stderr
    assert "[throughput]" in table
    for client in ("cometgen", "aiohttp", "genai"):
        assert client in table
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = results["scenarios"]["throughput"]
    assert {r["client"] for r in rows} == {"cometgen", "aiohttp", "genai"}
    for row in rows:
        assert row["images"] == 8 and row["errors"] == 0, row
        assert row["files"] == 8 and row["bytes_written"] > 0
        assert row["cpu_ms_per_image"] > 0 and row["max_rss_mb"] > 0
        assert set(row["lag_ms"]) == {"p50", "p99", "max"}
