"""Command-line entry point: ``cometgen COMMAND ...``.

Each command lives in its own module exposing ``add_parser(subparsers)``, which registers
the sub-command and sets ``func`` (``(argparse.Namespace) -> int``) as a parser default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cometgen",
        description="Bulk image generation with Gemini image models through CometAPI.",
    )
    parser.add_argument("--version", action="version", version=f"cometgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from ._cache_cmd import add_parser as add_cache
    from ._export_cmd import add_parser as add_export
    from ._export_cmd import add_run_export
    from ._gallery_cmd import add_parser as add_gallery
    from ._merge_cmd import add_parser as add_merge
    from ._mock_server_cmd import add_parser as add_mock_server
    from ._models_cmd import add_parser as add_models
    from ._run_cmd import add_parser as add_run

    add_run(sub)
    add_run_export(sub.choices["run"])
    add_mock_server(sub)
    add_merge(sub)
    add_export(sub)
    add_gallery(sub)
    add_models(sub)
    add_cache(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    code: int = func(args)
    return code


def console_main() -> None:  # pragma: no cover - thin wrapper for the console script
    sys.exit(main())
