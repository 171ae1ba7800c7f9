"""Command-line entry point: ``cometgen COMMAND ...``.

Each command lives in its own module exposing ``add_parser(subparsers)``, which registers
the sub-command and sets ``func`` (``(argparse.Namespace) -> int``) as a parser default.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence

from .._version import __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``cometgen`` parser with every sub-command registered."""
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
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
    return parser, sub.choices


def _unrecognized(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """argparse's message for ``extra``, with a "did you mean" for each mistyped option."""
    # The parser's own help lists its options (argparse has no public API for them).
    known = {name[2:] for name in re.findall(r"(?<![\w-])--[a-z][\w-]*", parser.format_help())}
    hints = []
    for arg in extra:
        name = arg.split("=", 1)[0]
        if name.startswith("--"):
            # Compared without the dashes, which every option shares.
            close = difflib.get_close_matches(name[2:], sorted(known), n=1)
            if close:
                hints.append(f"{name}: did you mean --{close[0]}?")
    message = "unrecognized arguments: " + " ".join(extra)
    return f"{message} ({'; '.join(hints)})" if hints else message


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser, commands = _build()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Reported by the sub-command's parser: its usage line, and its options to suggest.
        target = commands.get(getattr(args, "command", None) or "", parser)
        target.error(_unrecognized(target, extra))
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    code: int = func(args)
    return code


def console_main() -> None:  # pragma: no cover - thin wrapper for the console script
    sys.exit(main())
