"""A blocking convenience for scripts: ``cometgen.generate(...)``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

from ._client import AsyncClient
from ._request import ImageInput
from ._result import GenerateResult

_T = TypeVar("_T")


def generate(
    prompt: str,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    aspect_ratio: str | None = None,
    image_size: str | None = None,
    images: Sequence[ImageInput] = (),
    **kwargs: Any,
) -> GenerateResult:
    """Generate image(s) for one prompt, blocking until done.

    Works inside a running event loop too (a Jupyter cell): the call then runs in its own
    loop in a worker thread, and blocks the caller's loop meanwhile; in async code prefer
    ``AsyncClient``. Extra keyword arguments go to ``AsyncClient.generate``.
    """

    async def main() -> GenerateResult:
        async with AsyncClient(api_key=api_key, base_url=base_url) as client:
            return await client.generate(
                prompt,
                model=model,
                aspect_ratio=aspect_ratio,
                image_size=image_size,
                images=images,
                **kwargs,
            )

    return run_blocking(main)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_blocking(main: Callable[[], Awaitable[_T]]) -> _T:
    """``anyio.run(main)``, in a worker thread if this thread already runs an event loop."""
    if not _loop_running():
        return anyio.run(main, backend="asyncio")
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            outcome.append(anyio.run(main, backend="asyncio"))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=worker, name="cometgen-generate", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
