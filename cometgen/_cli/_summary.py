"""Exit codes and the end-of-run summary of ``cometgen run``.

The exit code describes the folder after the run, not what this invocation happened to do:
0 only when every item of the input is in a final state (done, blocked, no_image).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Final, TextIO

from .._bulk._halt import HALT_MESSAGES

EXIT_OK: Final = 0
EXIT_SOME_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_BUDGET: Final = 3
EXIT_HALTED: Final = 4
EXIT_INTERRUPTED: Final = 130

#: Stop reasons that mean "something outside the input is wrong": fix it and rerun.
HALT_REASONS: Final = frozenset({"auth", "model", "quota", "network"})

MAX_PRINTED_ERRORS: Final = 50


def err(message: str) -> None:
    print(f"cometgen: error: {message}", file=sys.stderr, flush=True)


def exit_code(summary: dict[str, Any], *, interrupted: bool) -> int:
    """The exit code for a run's summary (see the README's table)."""
    stop = summary.get("stop_reason")
    if interrupted or stop == "interrupted":
        return EXIT_INTERRUPTED
    if stop in HALT_REASONS:
        return EXIT_HALTED
    if stop == "budget":
        return EXIT_BUDGET
    folder = summary.get("folder") or {}
    if (
        summary["failed"] or summary["unsent"] or summary["skipped_failed"]
        or folder.get("failed") or stop == "disk"
    ):
        return EXIT_SOME_FAILED
    return EXIT_OK


def print_json(value: Any, stream: TextIO | None = None) -> None:
    """One JSON line on stdout; a closed pipe (``| head``) is not an error."""
    out = stream or sys.stdout
    try:
        print(json.dumps(value), file=out, flush=True)
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's exit flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)


def stop_line(stop: str | None, summary: dict[str, Any]) -> str | None:
    """The one line saying why a run stopped early, or None."""
    if stop is None:
        return None
    why = HALT_MESSAGES.get(stop, stop)
    if summary.get("stop_detail"):
        detail = " ".join(str(summary["stop_detail"]).split())  # one line
        why += f" [{detail[:300]}]"
    left = "" if stop in ("interrupted", "disk") else (
        "; the items not done are not recorded failed: a rerun does them")
    return f"cometgen: stopped early: {stop}: {why}{left}"


def finish(
    args: Any, summary: dict[str, Any], *, out_dir: str, printed: int, interrupted: bool,
    maybe_billed_keys: list[str], max_cost: float | None, endpoint: str,
) -> int:
    maybe_billed = sorted(maybe_billed_keys)
    summary["maybe_billed_keys"] = maybe_billed
    summary["manifest"] = os.path.join(out_dir, "manifest.jsonl")
    summary["endpoint"] = endpoint
    if max_cost is not None:
        summary["budget_left_usd"] = round(max(0.0, max_cost - summary["folder_cost_usd"]), 6)
    stop = summary.get("stop_reason")
    code = exit_code(summary, interrupted=interrupted)
    summary["exit_code"] = code
    if args.json:
        print_json(summary)
    lines: list[str] = []
    if not args.quiet:
        folder = summary.get("folder") or {}
        lines += [
            f"cometgen: done {summary['done']}"
            + (f" ({summary['adopted']} adopted: images an interrupted run wrote, not sent "
               "again)" if summary.get("adopted") else "")
            + f", failed {summary['failed']}, "
            f"blocked {summary['blocked']}, no image {summary['no_image']}"
            + (f", skipped {summary['skipped']} (done earlier)" if summary["skipped"] else "")
            + (f", skipped {summary['skipped_failed']} (failed earlier; --retry-failed "
               "resends them)" if summary["skipped_failed"] else "")
            + (f", changed {summary['changed']} (done for another request; "
               "--regenerate-changed)" if summary["changed"] else "")
            + (f", duplicates {summary['duplicates']}" if summary["duplicates"] else ""),
            f"cometgen: {summary['images']} images, spent ${summary['cost_usd']:.4f} "
            f"(folder total ${summary['folder_cost_usd']:.4f}"
            + (f", ${summary['budget_left_usd']:.4f} of --max-cost left"
               if max_cost is not None else "")
            + f"), {summary['elapsed_s']:.1f}s, {summary['retries']} retries; "
            f"manifest {summary['manifest']}",
        ]
        finished = sum(summary[k] for k in ("done", "failed", "blocked", "no_image"))
        if folder and folder.get("total", 0) != finished:  # earlier runs left items too
            lines.append(
                f"cometgen: folder: {folder.get('total', 0)} items: done {folder.get('done', 0)}"
                f", failed {folder.get('failed', 0)}, blocked {folder.get('blocked', 0)}, "
                f"no image {folder.get('no_image', 0)}"
            )
        if printed > MAX_PRINTED_ERRORS:
            lines.append(f"cometgen: {printed - MAX_PRINTED_ERRORS} more failures: see the "
                         "manifest")
        if maybe_billed:
            shown = ", ".join(maybe_billed[:10]) + (" ..." if len(maybe_billed) > 10 else "")
            # A full disk may also have kept their failed records from the manifest, and an
            # item without a record is sent again: "not resent" would then be untrue.
            after = ("the disk filled: a rerun sends again any whose failure could not be "
                     "recorded" if stop == "disk" else "not resent")
            lines.append(f"cometgen: {len(maybe_billed)} item(s) may have been billed without "
                         f"a result ({after}): {shown}")
    # Even with --quiet: a pipeline must be able to tell why a run stopped.
    line = stop_line(stop, summary)
    if line is not None:
        lines.append(line)
    if lines:
        print("\n".join(lines), file=sys.stderr, flush=True)
    return code
