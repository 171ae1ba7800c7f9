"""``cometgen gallery OUTDIR [-o DIR]``: a static HTML contact sheet of a run."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._bulk._gallery import write_gallery
from .._exceptions import ConfigError

EXIT_OK = 0
EXIT_USAGE = 2


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "gallery",
        help="write a static HTML contact sheet of a run (opens from file://)",
        description="Paginated thumbnails with prompt, id, model, size, cost and latency; "
        "failed, blocked and no_image items with their reasons; counts, cost and latency "
        "charts. No server and no JavaScript. Thumbnails need Pillow (pip install "
        "'cometgen[datasets]'); without it the pages show the originals.",
    )
    p.add_argument("out_dir", metavar="OUTDIR")
    p.add_argument("-o", "--out", dest="dest", metavar="DIR",
                   help="where to write the pages (default OUTDIR/gallery)")
    p.add_argument("--per-page", type=int, default=200, metavar="N",
                   help="thumbnails per page (default 200)")
    p.add_argument("--no-thumbnails", action="store_true",
                   help="show the original images even when Pillow is installed")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        report = write_gallery(args.out_dir, args.dest, per_page=args.per_page,
                               thumbnails=not args.no_thumbnails)
    except (ConfigError, OSError) as exc:
        print(f"cometgen: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(report.__dict__), flush=True)
    else:
        print(f"cometgen: gallery of {report.images} image(s) and {report.failures} "
              f"failure(s) on {report.pages} page(s): file://{report.index}", file=sys.stderr)
    return EXIT_OK
