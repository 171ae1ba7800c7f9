"""``cometgen merge OUTDIR... -o MERGED``: one dataset folder from sharded runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._bulk._merge import MergeReport, merge_outputs
from .._exceptions import ConfigError, MergeConflictError

EXIT_OK = 0
EXIT_CONFLICT = 1
EXIT_USAGE = 2


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "merge",
        help="merge the output folders of sharded runs into one dataset folder",
        description="Combine manifests (latest record per key), hard-link (or copy) the "
        "images and rebuild metadata.jsonl in MERGED. The same key in two inputs must agree "
        "(same status and image sha256s) unless --prefer is given.",
    )
    p.add_argument("inputs", nargs="+", metavar="OUTDIR")
    p.add_argument("-o", "--out", dest="out_dir", required=True, metavar="MERGED")
    p.add_argument("--prefer", choices=("first", "last"),
                   help="on a conflict keep the record of the first/last input listed")
    p.add_argument("--copy", action="store_true", help="copy images instead of hard-linking")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=run)


def _print(report: MergeReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_dict()), flush=True)
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
    print(f"cometgen: merged {report.keys} key(s) from {len(report.inputs)} folder(s)"
          + (f": {counts}" if counts else ""), file=sys.stderr)
    print(f"cometgen: {report.linked} image(s) linked, {report.copied} copied, "
          f"{report.missing_files} missing; {report.metadata_lines} metadata.jsonl line(s); "
          f"{report.identical_overlaps} identical overlap(s), "
          f"{report.superseded_failures} superseded failure(s)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    try:
        report = merge_outputs(args.inputs, args.out_dir, prefer=args.prefer,
                               link=not args.copy)
    except MergeConflictError as exc:
        for key in exc.report.conflicts[:20]:
            print(f"cometgen: conflict: key {key!r} differs between inputs", file=sys.stderr)
        for path in exc.report.collisions[:20]:
            print(f"cometgen: collision: {path!r} is claimed by two keys", file=sys.stderr)
        print(f"cometgen: error: {exc}", file=sys.stderr, flush=True)
        if args.json:
            print(json.dumps(exc.report.as_dict()), flush=True)
        return EXIT_CONFLICT
    except (ConfigError, OSError) as exc:
        print(f"cometgen: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    if report.conflicts:
        print(f"cometgen: {len(report.conflicts)} conflict(s) resolved with --prefer "
              f"{args.prefer}", file=sys.stderr)
    _print(report, args.json)
    return EXIT_OK
