"""A blocking convenience for scripts: ``cometgen.generate(...)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from ._client import AsyncClient
from ._request import ImageInput
from ._result import GenerateResult


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
    """Generate image(s) for one prompt, blocking. Not for use inside a running event loop.

    Extra keyword arguments go to ``AsyncClient.generate``.
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

    return anyio.run(main, backend="asyncio")
