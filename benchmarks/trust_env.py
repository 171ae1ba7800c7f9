"""aiohttp's per-request cost of ``trust_env=True``: CPU per request with it off and on.

``python benchmarks/trust_env.py [N]``. One process holds a tiny in-process aiohttp server and
a ``ClientSession`` (16 in flight); prints CPU per request (client and server together) for
``trust_env=False`` and ``True``, twice each. With ``trust_env=True`` aiohttp looks up
``~/.netrc`` in the loop's default executor (a thread hop per request) and scans the
environment for proxies on every request.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from aiohttp import ClientSession, TCPConnector, web


async def _measure(url: str, n: int, trust: bool) -> float:
    """CPU seconds for ``n`` POSTs, 16 in flight, on a session with ``trust_env=trust``."""
    sem = asyncio.Semaphore(16)
    async with ClientSession(connector=TCPConnector(limit=16), trust_env=trust) as session:

        async def one() -> None:
            async with sem, session.post(url, data=b"{}") as resp:
                await resp.read()

        await asyncio.gather(*(one() for _ in range(50)))  # warm up
        cpu0 = time.process_time()
        await asyncio.gather(*(one() for _ in range(n)))
        return time.process_time() - cpu0


async def main(n: int) -> None:
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=b"{}")

    app = web.Application()
    app.router.add_post("/x", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/x"
    try:
        for trust in (False, True, False, True):
            cpu = await _measure(url, n, trust)
            print(f"trust_env={trust}: {cpu * 1e6 / n:.0f} us CPU per request, "
                  f"{threading.active_count()} threads", flush=True)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
