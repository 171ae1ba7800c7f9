"""``cometgen status OUTDIR``: what the folder holds; exit 0 only when nothing is left to do."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._bulk._manifest import summarize
from .._exceptions import CometgenError
from ._run_state import incomplete, read_run_state
from ._summary import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, err, print_json

__all__ = ["add_parser", "status"]


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "status", help="count items in OUTDIR's manifest by status",
        description="Count the items in OUTDIR's manifest by status. Exit 0 when every item "
        "is done, blocked or no_image and the last run finished its input; 1 when some "
        "failed or the last run stopped early; 2 when OUTDIR has no manifest.",
    )
    s.add_argument("out_dir", metavar="OUTDIR")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=status)


def status(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    if not (out / "manifest.jsonl").exists():
        err(f"{args.out_dir}: no manifest.jsonl here")
        return EXIT_USAGE
    try:
        summary = summarize(out)
    except (OSError, CometgenError) as exc:
        err(f"{args.out_dir}: {exc}")
        return EXIT_USAGE
    last_run = read_run_state(out)
    unfinished = incomplete(last_run)
    if args.json:
        print_json({**summary, "last_run": last_run, "incomplete": unfinished})
    else:
        if summary.get("endpoint") == "mock":
            print("note: made on the built-in mock server (synthetic images, nothing billed)")
        for key, value in summary.items():
            print(f"{key}: {value}")
        if unfinished:
            print(f"incomplete: {unfinished}")
    final = sum(summary.get(s, 0) for s in ("done", "blocked", "no_image"))
    return EXIT_OK if final == summary["total"] and not unfinished else EXIT_SOME_FAILED
