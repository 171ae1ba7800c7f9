"""Building ``GenerateContentRequest``s for image generation."""

from __future__ import annotations

import os

from . import _wire as wire
from ._exceptions import ConfigError
from ._image import Image

#: A reference image: raw bytes, a file path, or an ``Image``.
ImageInput = bytes | str | os.PathLike[str] | Image


async def image_part(ref: ImageInput) -> wire.Part:
    """A request part for a reference image."""
    if isinstance(ref, Image):
        image = ref
    elif isinstance(ref, bytes | bytearray | memoryview):
        image = Image(bytes(ref))
    elif isinstance(ref, str | os.PathLike):
        image = await Image.from_file(ref)
    else:
        raise ConfigError(f"images must be bytes, paths or cometgen.Image, got {type(ref)!r}")
    return wire.Part(inline_data=wire.InlineData(mime_type=image.mime_type, data=image.data))


def build_request(
    contents: list[wire.Content],
    *,
    aspect_ratio: str | None = None,
    image_size: str | None = None,
    seed: int | None = None,
    temperature: float | None = None,
    include_text: bool = True,
    system_instruction: str | None = None,
    thinking_level: str | None = None,
    google_search: bool = False,
    service_tier: str | None = None,
) -> wire.GenerateContentRequest:
    """Assemble a ``GenerateContentRequest`` for image generation.

    ``service_tier`` "standard" (the default tier) is left out of the body.
    """
    image_config = None
    if aspect_ratio is not None or image_size is not None:
        image_config = wire.ImageConfig(aspect_ratio=aspect_ratio, image_size=image_size)
    thinking = wire.ThinkingConfig(thinking_level=thinking_level) if thinking_level else None
    config = wire.GenerationConfig(
        response_modalities=["TEXT", "IMAGE"] if include_text else ["IMAGE"],
        image_config=image_config,
        thinking_config=thinking,
        seed=seed,
        temperature=temperature,
    )
    return wire.GenerateContentRequest(
        contents=contents,
        system_instruction=(
            wire.Content(parts=[wire.Part(text=system_instruction)])
            if system_instruction
            else None
        ),
        generation_config=config,
        tools=[wire.Tool(google_search=wire.GoogleSearch())] if google_search else None,
        service_tier=None if service_tier in (None, "standard") else service_tier,
    )
