"""Event loop choice for the CLI: uvloop when installed (``cometgen[speed]``), else asyncio.

uvloop (MagicStack) runs the same asyncio code on libuv with a faster loop and transports;
at thousands of small requests a second the loop itself is a large share of the CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from .._exceptions import ConfigError

__all__ = ["LOOPS", "LOOP_ENV", "add_loop_argument", "want_uvloop"]

LOOP_ENV = "COMETGEN_LOOP"
LOOPS = ("auto", "asyncio", "uvloop")


def add_loop_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loop", choices=LOOPS, default=None,
        help=f"event loop (default ${LOOP_ENV} or auto: uvloop if installed, else asyncio)",
    )


def _uvloop_available() -> bool:
    # uvloop has no Windows build; a stray install there must not be picked.
    return sys.platform != "win32" and importlib.util.find_spec("uvloop") is not None


def want_uvloop(choice: str | None) -> bool:
    """Whether to run on uvloop for ``--loop choice`` (None: the env var, then auto)."""
    choice = choice or os.environ.get(LOOP_ENV) or "auto"
    if choice not in LOOPS:
        raise ConfigError(f"{LOOP_ENV} must be one of {', '.join(LOOPS)}, got {choice!r}")
    if choice == "asyncio":
        return False
    if choice == "uvloop" and not _uvloop_available():
        raise ConfigError("--loop uvloop: uvloop is not installed (pip install 'cometgen[speed]')")
    return _uvloop_available()
