"""``cometgen cache stats|prune``: inspect and trim the cross-run answer cache."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import Any

from .._cache import CACHE_ENV, ImageCache
from .._exceptions import ConfigError

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cache", help="show or trim the cross-run answer cache (--cache DIR)",
                       description="Show or trim the cache that `cometgen run --cache DIR` "
                       "fills (least recently used entries go first).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("stats", "count entries, images and bytes"),
                       ("prune", "evict least recently used entries down to --max-size, "
                                 "drop orphaned images and stale temp files")):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("dir", metavar="DIR", nargs="?", help=f"cache folder (default "
                       f"${CACHE_ENV})")
        a.add_argument("--json", action="store_true", help="print JSON on stdout")
        if name == "prune":
            a.add_argument("--max-size", metavar="SIZE", default=None,
                           help="bytes to keep, e.g. 500M or 20G (default 10G)")
        a.set_defaults(func=run)


def parse_size(text: str) -> int:
    """``"500M"`` -> bytes (K, M, G, T are powers of 1024; a trailing B is allowed)."""
    value = text.strip().upper().removesuffix("B")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    try:
        number = float(value[: len(value) - len(unit)])
    except ValueError:
        raise ConfigError(f"--max-size: expected a size like 500M or 20G, got {text!r}"
                          ) from None
    if number < 0:
        raise ConfigError(f"--max-size must be >= 0, got {text!r}")
    return int(number * _UNITS[unit])


def run(args: argparse.Namespace) -> int:
    try:
        folder = args.dir or os.environ.get(CACHE_ENV)
        if not folder:
            raise ConfigError(f"no cache folder: pass DIR or set ${CACHE_ENV}")
        if not os.path.isdir(folder):
            raise ConfigError(f"{folder}: no such cache folder")
        cache = ImageCache(folder)
        if args.action == "prune":
            cap = parse_size(args.max_size) if args.max_size is not None else None
            stats = cache.prune(cap)
        else:
            stats = cache.stats()
    except (ConfigError, OSError) as exc:
        print(f"cometgen: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(stats)))
    else:
        print(f"{folder}: {stats.entries} entries, {stats.blobs} images, "
              f"{stats.bytes / 1024**2:.1f} MiB, {stats.temp_files} temp files")
    return 0
