"""A small real run (``cometgen run`` on the built-in mock) shared by the export and
gallery tests: PNG and JPEG answers, ids with dots, metadata, blocked and no_image items,
a prompt carrying ``<script>``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

MODELS = ("gemini-2.5-flash-image", "gemini-3-pro-image-preview")  # PNG, JPEG answers
ITEMS = 24


def env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("COMETAPI_")}
    base["NO_PROXY"] = "127.0.0.1,localhost"
    return base


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cometgen", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def prompts(models: tuple[str, ...] = MODELS) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(ITEMS):
        marker = {5: " [[mock:block]]", 11: " [[mock:no_image]]"}.get(i % 12, "")
        rows.append({
            "id": f"v1.{i}-final" if i % 4 == 0 else f"img-{i:03d}",
            "prompt": f"<script>alert({i})</script> a cat & a dog #{i}{marker}",
            "model": models[i % len(models)],
            "metadata": {"i": i, "style": "sketch" if i % 3 else None, "key": f"user{i}"},
        })
    return rows


def make_run(root: Path, *extra: str, models: tuple[str, ...] = MODELS) -> Path:
    """Run the prompts into ``root/out``; returns OUTDIR."""
    src = root / "prompts.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in prompts(models)))
    proc = cli("run", str(src), "-o", str(root / "out"), "-q", *extra)
    assert proc.returncode == 0, proc.stderr
    return root / "out"


def latest(out: Path) -> dict[str, dict[str, Any]]:
    recs: dict[str, dict[str, Any]] = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        recs[rec["key"]] = rec
    return recs
