"""``cometgen.Client``: the blocking client for scripts, one pool for many calls.

It owns one event loop, in a daemon thread, where its ``AsyncClient`` lives; every method
runs there through an anyio ``BlockingPortal`` and blocks the caller until it is done.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from . import _wire as wire
from ._chat import AsyncChat
from ._client import AsyncClient
from ._config import OnNoImage
from ._exceptions import ClientClosedError
from ._limits import Limiter
from ._models import ServiceTier
from ._request import ImageInput
from ._result import GenerateResult

__all__ = ["Chat", "Client"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _LoopThread:
    """An event loop in a daemon thread (so a forgotten ``close()`` never blocks exit)."""

    def __init__(self) -> None:
        self.portal: BlockingPortal | None = None
        ready = threading.Event()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                self.portal = portal
                ready.set()
                await portal.sleep_until_stopped()

        self._thread = threading.Thread(
            target=anyio.run, args=(serve,), kwargs={"backend": "asyncio"},
            name="cometgen-client", daemon=True,
        )
        self._thread.start()
        ready.wait()

    def call(self, func: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self.portal is None:
            raise ClientClosedError("this Client is closed; create a new Client")
        return self.portal.call(functools.partial(func, *args, **kwargs))

    def stop(self) -> None:
        portal, self.portal = self.portal, None
        if portal is not None:
            portal.call(portal.stop)
            self._thread.join()


class Client:
    """Blocking client with the options of ``AsyncClient``: ``with cometgen.Client() as c:``.

    One connection pool (and limiter) for every call, in an event loop thread the client
    owns. Safe to call from several threads at once: the calls then run concurrently.
    """

    def __init__(self, api_key: str | None = None, base_url: str | None = None,
                 **options: Any) -> None:
        #: The ``AsyncClient`` doing the work (use it only through this ``Client``).
        self.async_client = AsyncClient(api_key, base_url, **options)
        self._loop = _LoopThread()

    def __enter__(self) -> Client:
        try:
            self._loop.call(self.async_client.__aenter__)
        except BaseException:
            self.close()  # e.g. the shared-limits Redis is down: stop the loop thread too
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool and stop the event loop thread (idempotent)."""
        if self._loop.portal is not None:
            try:
                self._loop.call(self.async_client.aclose)
            finally:
                self._loop.stop()

    def __repr__(self) -> str:
        return repr(self.async_client).replace("AsyncClient(", "Client(", 1)

    @property
    def limiter(self) -> Limiter:
        return self.async_client.limiter

    def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | None = None,
        images: Sequence[ImageInput] = (),
        seed: int | None = None,
        temperature: float | None = None,
        include_text: bool = True,
        system_instruction: str | None = None,
        thinking_level: str | None = None,
        google_search: bool = False,
        service_tier: ServiceTier | None = None,
        timeout: float | None = None,
        on_no_image: OnNoImage | None = None,
    ) -> GenerateResult:
        """``AsyncClient.generate``, blocking."""
        return self._loop.call(
            self.async_client.generate, prompt, model=model, aspect_ratio=aspect_ratio,
            image_size=image_size, images=images, seed=seed, temperature=temperature,
            include_text=include_text, system_instruction=system_instruction,
            thinking_level=thinking_level, google_search=google_search,
            service_tier=service_tier, timeout=timeout, on_no_image=on_no_image,
        )

    def generate_content(self, model: str, request: wire.GenerateContentRequest, *,
                         timeout: float | None = None) -> wire.GenerateContentResponse:
        """``AsyncClient.generate_content``, blocking."""
        return self._loop.call(self.async_client.generate_content, model, request,
                               timeout=timeout)

    def chat(self, *, model: str | None = None, aspect_ratio: str | None = None,
             image_size: str | None = None, include_text: bool = True) -> Chat:
        """A blocking multi-turn editing session (see ``AsyncClient.chat``)."""
        chat = self.async_client.chat(model=model, aspect_ratio=aspect_ratio,
                                      image_size=image_size, include_text=include_text)
        return Chat(chat, self._loop)


class Chat:
    """``AsyncChat``, blocking; from ``Client.chat()``."""

    def __init__(self, chat: AsyncChat, loop: _LoopThread) -> None:
        self._chat = chat
        self._loop = loop

    @property
    def history(self) -> list[wire.Content]:
        return self._chat.history

    def send(self, prompt: str, *, images: Sequence[ImageInput] = (),
             aspect_ratio: str | None = None, image_size: str | None = None,
             timeout: float | None = None) -> GenerateResult:
        """``AsyncChat.send``, blocking."""
        return self._loop.call(self._chat.send, prompt, images=images,
                               aspect_ratio=aspect_ratio, image_size=image_size,
                               timeout=timeout)
