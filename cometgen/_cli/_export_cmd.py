"""``cometgen export OUTDIR -o DEST --format parquet|webdataset``: Hub-ready shards."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Final

from .._bulk._export import FORMATS, ExportReport, export_dataset, parse_size
from .._exceptions import ConfigError

EXIT_OK = 0
EXIT_USAGE = 2


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_export_options(p: Any) -> None:
    """The shard options, shared with ``run --export``."""
    p.add_argument("--max-shard-size", type=_size, default=500_000_000, metavar="SIZE",
                   help="bytes of images per shard, e.g. 500MB (default), 1GiB")
    p.add_argument("--max-per-shard", type=int, default=10_000, metavar="N",
                   help="images per shard (default 10000)")
    p.add_argument("--include-failed", action="store_true",
                   help="add a 'failures' table: failed, blocked and no_image items with "
                   "their reasons")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "export",
        help="export a run's images as sharded Parquet or WebDataset (Hub-ready)",
        description="Write the done images of OUTDIR as Parquet or WebDataset shards plus a "
        "dataset card (README.md) that datasets.load_dataset(DEST) and the Hugging Face "
        "Hub read. Streaming and idempotent: a rerun skips finished shards. Needs the "
        "datasets extra for Parquet: pip install 'cometgen[datasets]'.",
    )
    p.add_argument("out_dir", metavar="OUTDIR")
    p.add_argument("-o", "--out", dest="dest", required=True, metavar="DEST")
    p.add_argument("--format", choices=FORMATS, required=True)
    add_export_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=run)


def print_report(report: ExportReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_dict()), flush=True)
        return
    failures = f", {report.failures} failure row(s)" if report.failures else ""
    print(f"cometgen: exported {report.rows} image(s){failures} to {report.dest} as "
          f"{report.format}: {report.shards} shard(s), {report.written} written, "
          f"{report.skipped} already complete", file=sys.stderr)
    if report.missing_files:
        print(f"cometgen: warning: {report.missing_files} image file(s) named by the "
              "manifest are missing and were left out", file=sys.stderr)


def export_from_args(out_dir: str, dest: str, fmt: str, args: argparse.Namespace) -> int:
    """Run an export, print its report; returns the exit code (shared with ``run``)."""
    try:
        report = export_dataset(out_dir, dest, format=fmt,  # type: ignore[arg-type]
                                max_shard_size=args.max_shard_size,
                                max_per_shard=args.max_per_shard,
                                include_failed=args.include_failed)
    except (ConfigError, OSError) as exc:
        print(f"cometgen: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    print_report(report, getattr(args, "json", False) and not hasattr(args, "export"))
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return export_from_args(args.out_dir, args.dest, args.format, args)


#: Exit codes of ``run`` after which its output is exported: all done, some failed,
#: stopped early (budget, disk); not a usage error or an interrupt.
_EXPORT_AFTER: Final = (0, 1, 3)


def add_run_export(p: argparse.ArgumentParser) -> None:
    """Give ``cometgen run`` ``--export FORMAT``: export OUTDIR when the run ends."""
    group = p.add_argument_group("export when the run ends")
    group.add_argument("--export", choices=FORMATS, metavar="{parquet,webdataset}",
                       help="export OUTDIR when the run ends (as 'cometgen export' does)")
    group.add_argument("--export-dir", metavar="DEST",
                       help="where to export (default OUTDIR-FORMAT, beside OUTDIR)")
    add_export_options(group)
    inner = p.get_default("func")

    def run_then_export(args: argparse.Namespace) -> int:
        code: int = inner(args)
        if args.export is None or args.dry_run or code not in _EXPORT_AFTER:
            return code
        dest = args.export_dir or f"{args.out_dir.rstrip('/')}-{args.export}"
        exported = export_from_args(args.out_dir, dest, args.export, args)
        return code if exported == EXIT_OK else exported

    p.set_defaults(func=run_then_export)
