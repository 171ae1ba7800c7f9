"""A minimal loopback server answering every POST with one fixed JSON body.

``python benchmarks/server.py --body FILE [--port 0] [--chunked] [--latency 3 9 --seed 1]``
prints ``bench server listening on http://127.0.0.1:PORT`` and serves until SIGTERM. It reads
the request body (like a real server) and does nothing else, so its per-request cost is only
aiohttp's: the benchmark reports its CPU separately. ``--chunked`` sends the body with
``Transfer-Encoding: chunked`` in 64 KiB chunks, as Gemini's recorded answers are framed.

``--latency LO HI`` waits uniform(LO, HI) seconds before each answer, drawn from a
``random.Random(seed)``: the k-th request received gets the k-th draw, so every client run
after a reset sees the same sequence of latencies. ``GET /_bench/reset`` re-seeds and zeroes
the counters; ``GET /_bench/stats`` returns ``{"requests", "in_flight", "max_in_flight"}``
(the harness checks that the client really kept its requests in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
from pathlib import Path

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--body", required=True, help="file whose bytes are every answer")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunked", action="store_true", help="no Content-Length")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="uvloop (default, when installed) or the standard asyncio loop")
    parser.add_argument("--latency", type=float, nargs=2, metavar=("LO", "HI"),
                        help="answer after uniform(LO, HI) seconds (default: at once)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the latency draws")
    args = parser.parse_args()
    if args.latency and not 0 <= args.latency[0] <= args.latency[1]:
        parser.error("--latency needs 0 <= LO <= HI")
    serve = _serve(Path(args.body).read_bytes(), args)
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            # Python 3.11's asyncio transport keeps unsent data in one bytearray and deletes
            # each sent piece from its front (a memmove of the rest): a client that reads a
            # 4 MB answer slowly made this server spend 6 ms per answer instead of 1.5.
            uvloop.run(serve)
            return
    asyncio.run(serve)


class _Latency:
    """The seeded latency draws and the request counters."""

    def __init__(self, bounds: tuple[float, float] | None, seed: int) -> None:
        self.bounds, self.seed = bounds, seed
        self.reset()

    def reset(self) -> None:
        self.rng = random.Random(self.seed)
        self.requests = self.in_flight = self.max_in_flight = 0

    def next(self) -> float:
        return self.rng.uniform(*self.bounds) if self.bounds else 0.0

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight}


async def _serve(body: bytes, args: argparse.Namespace) -> None:
    latency = _Latency(tuple(args.latency) if args.latency else None, args.seed)

    async def handle(request: web.Request) -> web.StreamResponse:
        latency.requests += 1
        latency.in_flight += 1
        latency.max_in_flight = max(latency.max_in_flight, latency.in_flight)
        try:
            await request.read()
            delay = latency.next()
            if delay:
                await asyncio.sleep(delay)
            if not args.chunked:
                return web.Response(body=body, content_type="application/json")
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for start in range(0, len(body), 65536):
                await resp.write(body[start : start + 65536])
            await resp.write_eof()
            return resp
        finally:
            latency.in_flight -= 1

    async def reset(_request: web.Request) -> web.Response:
        latency.reset()
        return web.json_response(latency.stats())

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(latency.stats())

    app = web.Application(client_max_size=100 * 1024 * 1024)
    app.router.add_get("/_bench/reset", reset)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024)
    await site.start()
    host, real_port = runner.addresses[0][:2]
    print(f"bench server listening on http://{host}:{real_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    main()
