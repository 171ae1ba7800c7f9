"""Smoke test: ``benchmarks/run.py --smoke`` runs end to end and prints its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke() -> tuple[str, dict[str, Any]]:
    """One ``--smoke --json`` run (both scenarios, ~12 s): its table and its results."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(120)
def test_benchmark_smoke_prints_a_table(smoke: tuple[str, dict[str, Any]]) -> None:
    table, results = smoke
    assert "[throughput]" in table and "[realistic]" in table and "[bars]" in table
    rows = results["scenarios"]["throughput"]
    assert {r["client"] for r in rows} == {"cometgen", "aiohttp", "genai"}
    for row in rows:
        assert row["images"] == 8 and row["errors"] == 0, row
        assert row["files"] == 8 and row["bytes_written"] > 0
        assert row["cpu_ms_per_image"] > 0 and row["max_rss_mb"] > 0
        assert set(row["lag_ms"]) == {"p50", "p99", "max"}


@pytest.mark.timeout(120)
def test_realistic_smoke_alternates_clients_against_a_slow_server(
    smoke: tuple[str, dict[str, Any]],
) -> None:
    _, results = smoke
    real = results["scenarios"]["realistic"]
    assert "error" not in real, real
    rows = real["rows"]
    # A B C A B C: every client once per round, in the same order, against one server.
    assert [(r["round"], r["client"]) for r in rows] == [
        (rnd, c) for rnd in (1, 2) for c in ("cometgen", "genai", "minimal")]
    for row in rows:
        assert row["images"] == 8 and row["errors"] == 0, row
        assert row["files"] == 8 and row["bytes_written"] == 8 * row["image_bytes"]
        # The server saw every request, and the client kept C of them in flight at once
        # (the latency keeps them waiting there).
        assert row["server_requests"] == 8 and row["server_max_in_flight"] == 4, row
        assert row["wall_s"] >= 2 * 0.05  # two waves of at least the minimum latency
        assert row["proc_cpu_s"] >= 0 and row["peak_rss_mb"] > 0
    totals = real["totals"]
    assert set(totals) == {"cometgen", "genai", "minimal"}
    assert all(t["images"] == 16 and t["errors"] == 0 for t in totals.values())
    names = {b["bar"] for b in results["bars"]}
    assert {"realistic cometgen: CPU/image vs genai", "realistic cometgen: CPU/image vs minimal",
            "realistic cometgen: peak RSS vs genai"} <= names
