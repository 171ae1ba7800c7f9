"""``cometgen run --dry-run``: check and count everything a real run would, send nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._bulk._admission import shard_of
from .._bulk._job import expand
from .._bulk._manifest import load_manifest, should_send
from .._exceptions import InputError
from ._checks import check_endpoint, endpoint_for
from ._settings import RunSettings
from ._summary import EXIT_OK, EXIT_USAGE, MAX_PRINTED_ERRORS, err, print_json

__all__ = ["count_lines", "dry_run"]


def count_lines(path: str) -> int:
    """The items a run of ``path`` will likely read: its lines without blank lines, ``#``
    comments (JSONL, text) and a CSV header. An estimate for the progress bar until the input
    ends (a job's ``n``, quoted newlines in CSV); the batch then sets the exact count."""
    csv = path.lower().endswith(".csv")
    count = 0
    with open(path, "rb") as f:
        # Each line is judged by its first 64 KiB, so one huge line never sits in memory.
        while line := f.readline(1 << 16):
            head = line.strip()
            if head and (csv or not head.startswith(b"#")):
                count += 1
            while not line.endswith(b"\n") and (line := f.readline(1 << 16)):
                pass
    return max(0, count - 1) if csv else count


def dry_run(args: argparse.Namespace, settings: RunSettings, shard: tuple[int, int] | None,
             jobs: Any, prices: Any) -> int:
    out = Path(args.out_dir)
    state = load_manifest(out) if (out / "manifest.jsonl").exists() else None
    # As a real run would: a mock folder resumed on a real endpoint (or the reverse) is refused.
    check_endpoint(state, endpoint_for(settings), allow=settings.allow_endpoint_change)
    good = bad = skipped = 0
    items = 0
    cost = 0.0
    unknown_cost = 0
    seen: set[str] = set()
    for entry in jobs:
        if isinstance(entry, InputError):
            bad += 1
            if bad <= MAX_PRINTED_ERRORS:
                err(str(entry))
            continue
        try:
            work = expand(entry, default_model=settings.model,
                          default_aspect_ratio=settings.aspect_ratio,
                          default_image_size=settings.image_size)
        except InputError as exc:
            bad += 1
            if bad <= MAX_PRINTED_ERRORS:
                err(str(exc))
            continue
        good += 1
        for item in work:
            if item.key in seen:
                continue
            seen.add(item.key)
            if shard is not None and shard_of(item.key, shard[1]) != shard[0]:
                continue
            if state is not None and not should_send(state, item.key,
                                                     retry_failed=settings.retry_failed):
                skipped += 1
                continue
            items += 1
            projected = prices.projected_cost(
                item.model, image_size=item.image_size, prompt_chars=len(entry.prompt),
                n_reference_images=len(entry.images), tier=settings.service_tier,
            )
            if projected is None:
                unknown_cost += 1
            else:
                cost += projected
    minutes: float | None = None
    if settings.rpm:
        minutes = items / settings.rpm
    if settings.ipm:
        minutes = max(minutes or 0.0, items / settings.ipm)
    if minutes is None:
        # Without a limit, assume ~15 s per image (Flash at 1K) across the concurrency.
        minutes = items * 15.0 / max(1, settings.concurrency) / 60.0
    summary = {
        "dry_run": True, "valid_lines": good, "invalid_lines": bad, "requests": items,
        "skipped_done": skipped, "projected_cost_usd": round(cost, 4),
        "unpriced_requests": unknown_cost, "projected_minutes": round(minutes, 1),
    }
    if args.json:
        print_json(summary)
    else:
        print(
            f"cometgen: dry run: {good} valid line(s), {bad} invalid; {items} request(s) to "
            f"send ({skipped} already done); projected cost ${cost:.2f}"
            + (f" (+{unknown_cost} unpriced)" if unknown_cost else "")
            + f"; projected time ~{minutes:.1f} min",
            file=sys.stderr, flush=True,
        )
    return EXIT_USAGE if bad else EXIT_OK
