"""``OUTDIR/run.json``: how the folder's last ``cometgen run`` ended, for ``cometgen status``.

The manifest holds only the items a run recorded. Items a stop left unsent (budget, a halt,
Ctrl-C) and the input lines never read have no record, so the manifest alone would call a
folder whose last run stopped after 4 of 40 items complete. ``run.json`` is written when a
run starts (``state: running``) and again when it ends (``state: finished`` with its stop
reason), atomically; a run killed with ``kill -9`` leaves ``running`` behind.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any, Final

import anyio.to_thread

from .._files import write_atomic_sync

__all__ = ["RUN_FILE", "incomplete", "read_run_state", "write_run_state"]

RUN_FILE: Final = "run.json"


async def write_run_state(out_dir: str, **state: Any) -> None:
    """Replace ``OUTDIR/run.json`` with ``state`` plus the time (atomic, durable).

    Best effort: on a full disk the old state stays, which ``status`` reads as unfinished.
    """
    state["at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    data = (json.dumps(state, indent=1) + "\n").encode()
    path = os.path.join(out_dir, RUN_FILE)
    try:
        await anyio.to_thread.run_sync(lambda: write_atomic_sync(path, data, digest=False))
    except OSError:
        pass


def read_run_state(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last run's state, or None when there is none (a folder made by the library) or it
    cannot be read (written by a later version, say: the manifest is then the only guide)."""
    try:
        with open(os.path.join(out_dir, RUN_FILE), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def incomplete(state: dict[str, Any] | None) -> str | None:
    """Why the last run left the folder incomplete, or None."""
    if state is None:
        return None
    if state.get("state") == "running":
        return ("the last run has not finished: it is still running, or it was killed; rerun "
                "it to finish")
    stop = state.get("stop_reason")
    if stop:
        left = state.get("left")
        what = f"{left} item(s) of its input have" if left else "items of its input may have"
        return f"the last run stopped early ({stop}): {what} no record yet; rerun it to finish"
    return None
