"""``cometgen status OUTDIR``: what the folder holds; exit 0 only when nothing is left to do."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Final

import anyio

from .._bulk._manifest import summarize
from .._bulk._verify import VerifyReport, record_broken, verify_folder
from .._exceptions import CometgenError
from ._run_state import incomplete, read_run_state
from ._summary import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, err, print_json

__all__ = ["add_parser", "status"]


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "status", help="count items in OUTDIR's manifest by status",
        description="Count the items in OUTDIR's manifest by status. Exit 0 when every item "
        "is done, blocked or no_image and the last run finished its input (and, with "
        "--verify, every image checks out); 1 when some failed, the last run stopped early "
        "or an image is missing or damaged; 2 when OUTDIR has no manifest.",
    )
    s.add_argument("out_dir", metavar="OUTDIR")
    s.add_argument("--json", action="store_true")
    s.add_argument("--verify", action="store_true",
                   help="also check every image of a done item: present, of the recorded "
                   "size and sha256 (reads every image)")
    s.add_argument("--fix", action="store_true",
                   help="with --verify: remove the images of the items found missing or "
                   "damaged and record those items as failed, so 'cometgen run ... "
                   "--retry-failed' generates them again (paid again)")
    s.set_defaults(func=status)


#: Problem files listed one per line (all of them are in ``--json``).
_LISTED: Final = 10


def status(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    if args.fix and not args.verify:
        err("--fix needs --verify")
        return EXIT_USAGE
    if not (out / "manifest.jsonl").exists():
        err(f"{args.out_dir}: no manifest.jsonl here")
        return EXIT_USAGE
    try:
        report = verify_folder(out, progress=_Progress()) if args.verify else None
        fixed = anyio.run(record_broken, out, report) if report and args.fix else 0
        summary = summarize(out)
    except (OSError, CometgenError) as exc:
        err(f"{args.out_dir}: {exc}")
        return EXIT_USAGE
    last_run = read_run_state(out)
    unfinished = incomplete(last_run)
    if args.json:
        extra = {} if report is None else {"verify": _verify_json(report, fixed)}
        print_json({**summary, "last_run": last_run, "incomplete": unfinished, **extra})
    else:
        if summary.get("endpoint") == "mock":
            print("note: made on the built-in mock server (synthetic images, nothing billed)")
        for key, value in summary.items():
            print(f"{key}: {value}")
        if unfinished:
            print(f"incomplete: {unfinished}")
        if report is not None:
            _print_verify(report, fixed)
    final = sum(summary.get(s, 0) for s in ("done", "blocked", "no_image"))
    sound = report is None or report.ok
    return EXIT_OK if final == summary["total"] and not unfinished and sound \
        else EXIT_SOME_FAILED


class _Progress:
    """A line on stderr every ``_EVERY_S`` while a long verify runs (silent when short)."""

    _EVERY_S: Final = 10.0

    def __init__(self) -> None:
        self._next = time.monotonic() + self._EVERY_S

    def __call__(self, report: VerifyReport) -> None:
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self._EVERY_S
            print(f"cometgen: verifying: {report.files} image file(s) checked, "
                  f"{len(report.problems)} problem(s) so far", file=sys.stderr, flush=True)


def _print_verify(report: VerifyReport, fixed: int) -> None:
    print(f"verified: {report.files} image file(s), {report.bytes / 1e6:.1f} MB: "
          f"{report.missing} missing, {report.damaged} damaged")
    for problem in report.problems[:_LISTED]:
        print(f"  {problem.path}: {problem.problem} (item {problem.key})")
    if len(report.problems) > _LISTED:
        print(f"  ... and {len(report.problems) - _LISTED} more (--json lists them all)")
    if fixed:
        print(f"fixed: {fixed} item(s) recorded failed, their image files removed; 'cometgen "
              "run INPUT -o OUTDIR --retry-failed' generates them again (paid again)")
    elif report.problems:
        print("to generate them again: rerun status with --verify --fix, then "
              "'cometgen run INPUT -o OUTDIR --retry-failed'")


def _verify_json(report: VerifyReport, fixed: int) -> dict[str, Any]:
    return {
        "files": report.files, "bytes": report.bytes, "ok": report.ok,
        "missing": report.missing, "damaged": report.damaged,
        "problems": [{"key": p.key, "path": p.path, "problem": p.problem}
                     for p in report.problems],
        "fixed": fixed,
    }
