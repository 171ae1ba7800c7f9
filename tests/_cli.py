"""Helpers for the CLI tests: run ``python -m cometgen`` against the mock, read the manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cometgen.testing import ThreadedMockServer

KEY = "sk-cli-test-key-ABCDEF"


def cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cometgen", *args]


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("COMETAPI_")}
    base["NO_PROXY"] = "127.0.0.1,localhost"
    base.update(extra)
    return base


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120,
            **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd(*args), cwd=cwd, env=env(**extra_env), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def records(out: Path) -> list[dict[str, object]]:
    path = out / "manifest.jsonl"
    if not path.exists():
        return []
    result = []
    for line in path.read_text().splitlines():
        try:
            result.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a torn last line after kill -9
    return result


def latest(out: Path) -> dict[str, dict[str, object]]:
    return {str(r["key"]): r for r in records(out)}


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(
        (row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows
    ))
    return path


def remote(server: ThreadedMockServer, key: str = KEY) -> tuple[str, ...]:
    return ("--base-url", server.url, "--api-key", key)
