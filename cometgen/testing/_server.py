"""``MockServer``: the mock on a real 127.0.0.1 socket, async or in a background thread."""

from __future__ import annotations

import asyncio
import os
import threading
from types import TracebackType

from aiohttp import web

from .._models import ModelRegistry
from ._app import MockApp, MockOptions
from ._images import DEFAULT_SCALE
from ._stats import MockStats


class MockServer:
    """A local, Google-faithful ``generateContent`` endpoint.

    ``async with MockServer() as server:`` then point a client at ``server.url``; or
    ``with MockServer().run_in_thread() as server:`` from synchronous code.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        rpm: int | None = None,
        ipm: int | None = None,
        fault_rate: float = 0.0,
        seed: int = 0,
        api_key: str | None = None,
        scale: float = DEFAULT_SCALE,
        image_bytes: int | None = None,
        replay: str | os.PathLike[str] | None = None,
        error_style: str = "google",
        models: ModelRegistry | None = None,
        flex_shed_rate: float = 0.0,
        flex_shed_status: int = 503,
        catalogue: str | os.PathLike[str] | None = None,
    ) -> None:
        self.options = MockOptions(
            host=host, port=port, latency=latency, rpm=rpm, ipm=ipm, fault_rate=fault_rate,
            seed=seed, api_key=api_key, scale=scale, image_bytes=image_bytes, replay=replay,
            error_style=error_style, models=models, flex_shed_rate=flex_shed_rate,
            flex_shed_status=flex_shed_status, catalogue=catalogue,
        )
        self._app = MockApp(self.options)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def stats(self) -> MockStats:
        return self._app.stats

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123`` (pass as the client's base_url)."""
        if self._url is None:
            raise RuntimeError("the mock server is not running")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def reset(self) -> None:
        """Zero the stats, the marker counts and the rate-limit windows."""
        self._app.reset()

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the mock server is already running")
        runner = web.AppRunner(self._app.build(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.options.host, self.options.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        host, port = runner.addresses[0][:2]
        self._runner = runner
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> MockServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def run_in_thread(self) -> ThreadedMockServer:
        """A context manager running this server on its own loop in a daemon thread."""
        return ThreadedMockServer(self)


class ThreadedMockServer:
    """Runs a ``MockServer`` in a daemon thread; ``url`` and ``stats`` work from any thread."""

    def __init__(self, server: MockServer) -> None:
        self.server = server
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def stats(self) -> MockStats:
        return self.server.stats

    def reset(self) -> None:
        loop = self._loop
        if loop is None:
            self.server.reset()
            return
        done = threading.Event()

        def _reset() -> None:
            self.server.reset()
            done.set()

        loop.call_soon_threadsafe(_reset)
        done.wait(10)

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="cometgen-mock", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the mock server did not start in time")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to the starting thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with self.server:
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._stop.wait()

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # loop already closed
                pass
        if thread is not None:
            thread.join(timeout)
        self._loop = None

    def __enter__(self) -> ThreadedMockServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
