"""``cometgen mock-server``: run the local mock Gemini endpoint until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from .._exceptions import ConfigError
from ._loop import add_loop_argument, want_uvloop


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "mock-server",
        help="run a local mock of the Gemini generateContent endpoint",
        description=(
            "Serve a local, Google-faithful generateContent endpoint. Put [[mock:OUTCOME]] "
            "in a prompt to script an outcome (see the README)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument("--latency", type=float, default=0.0, metavar="S",
                        help="seconds before each answer")
    parser.add_argument("--rpm", type=int, default=None, metavar="N", help="requests per minute")
    parser.add_argument("--ipm", type=int, default=None, metavar="N", help="images per minute")
    parser.add_argument("--fault-rate", type=float, default=0.0, metavar="F",
                        help="fraction of requests answered with a random fault")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed for faults")
    parser.add_argument("--api-key", default=None, metavar="K",
                        help="accept only this key (default: any non-empty key)")
    parser.add_argument("--scale", type=float, default=None, metavar="X",
                        help="image pixel scale (default 1/16: 1K 1:1 is 64x64)")
    parser.add_argument("--image-bytes", type=int, default=None, metavar="N",
                        help="pad each image to about N bytes")
    parser.add_argument("--replay", default=None, metavar="FILE",
                        help="recorded fixture whose response is every success's body")
    parser.add_argument("--error-style", choices=("google", "comet"), default="google",
                        help="envelope for 5xx errors")
    parser.add_argument("--flex-shed-rate", type=float, default=0.0, metavar="F",
                        help="fraction of serviceTier=flex requests shed (503)")
    parser.add_argument("--models", default=None, metavar="FILE",
                        help="TOML file extending the model registry")
    parser.add_argument("--catalogue", default=None, metavar="FILE",
                        help="JSON file served as GET /api/models")
    add_loop_argument(parser)
    parser.set_defaults(func=run)


async def _serve(args: argparse.Namespace) -> None:
    from .._models import load_models
    from ..testing import MockServer

    extra: dict[str, Any] = {} if args.scale is None else {"scale": args.scale}
    server = MockServer(
        args.host, args.port, latency=args.latency, rpm=args.rpm, ipm=args.ipm,
        fault_rate=args.fault_rate, seed=args.seed, api_key=args.api_key,
        image_bytes=args.image_bytes, replay=args.replay, error_style=args.error_style,
        models=load_models(args.models), flex_shed_rate=args.flex_shed_rate,
        catalogue=args.catalogue, **extra,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        print(f"cometgen mock server listening on {server.url}", flush=True)
        await stop.wait()


def run(args: argparse.Namespace) -> int:
    try:
        factory = None
        if want_uvloop(args.loop):
            import uvloop

            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_serve(args))
    except (ValueError, OSError, ConfigError) as exc:
        print(f"cometgen mock-server: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # signal arrived before the handlers were installed
        pass
    return 0
