"""A minimal loopback server answering every POST with one fixed JSON body.

``python benchmarks/server.py --body FILE [--port 0] [--chunked]`` prints
``bench server listening on http://127.0.0.1:PORT`` and serves until SIGTERM. It reads the
request body (like a real server) and does nothing else, so its per-request cost is only
aiohttp's: the benchmark reports its CPU separately. ``--chunked`` sends the body with
``Transfer-Encoding: chunked`` in 64 KiB chunks, as Gemini's recorded answers are framed.
"""

from __future__ import annotations

import argparse
import asyncio
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
    args = parser.parse_args()
    body = Path(args.body).read_bytes()
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            # Python 3.11's asyncio transport keeps unsent data in one bytearray and deletes
            # each sent piece from its front (a memmove of the rest): a client that reads a
            # 4 MB answer slowly made this server spend 6 ms per answer instead of 1.5.
            uvloop.run(_serve(body, args.port, args.chunked))
            return
    asyncio.run(_serve(body, args.port, args.chunked))


async def _serve(body: bytes, port: int, chunked: bool) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        if not chunked:
            return web.Response(body=body, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for start in range(0, len(body), 65536):
            await resp.write(body[start : start + 65536])
        await resp.write_eof()
        return resp

    app = web.Application(client_max_size=100 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
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
