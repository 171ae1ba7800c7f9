"""What each Gemini image model accepts and produces: one table, used for validation,
cost projection and by the mock server."""

from __future__ import annotations

from dataclasses import dataclass, field

BASE_ASPECT_RATIOS: tuple[str, ...] = (
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
)
EXTREME_ASPECT_RATIOS: tuple[str, ...] = ("1:4", "4:1", "1:8", "8:1")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Capabilities of one image model family."""

    family: str
    aspect_ratios: tuple[str, ...]
    #: Accepted ``imageConfig.imageSize`` values; empty means the field is not accepted.
    image_sizes: tuple[str, ...]
    default_image_size: str | None
    #: Output tokens per generated image, by image size ("" when the model has no sizes).
    image_tokens: dict[str, int] = field(default_factory=dict)
    #: Output MIME type the real model returns.
    mime_type: str = "image/png"
    max_reference_images: int = 14
    supports_search: bool = True
    #: Long side in pixels at 1K (scaled by size).
    base_pixels: int = 1024

    def tokens_for(self, image_size: str | None) -> int:
        if not self.image_sizes:
            return self.image_tokens[""]
        return self.image_tokens[image_size or self.default_image_size or "1K"]


GEMINI_25_FLASH_IMAGE = ModelSpec(
    family="gemini-2.5-flash-image",
    aspect_ratios=BASE_ASPECT_RATIOS,
    image_sizes=(),
    default_image_size=None,
    image_tokens={"": 1290},
    mime_type="image/png",
    max_reference_images=3,
    supports_search=False,
)
GEMINI_3_PRO_IMAGE = ModelSpec(
    family="gemini-3-pro-image",
    aspect_ratios=BASE_ASPECT_RATIOS,
    image_sizes=("1K", "2K", "4K"),
    default_image_size="1K",
    image_tokens={"1K": 1120, "2K": 1120, "4K": 2000},
    mime_type="image/jpeg",
)
GEMINI_31_FLASH_IMAGE = ModelSpec(
    family="gemini-3.1-flash-image",
    aspect_ratios=BASE_ASPECT_RATIOS + EXTREME_ASPECT_RATIOS,
    image_sizes=("512", "1K", "2K", "4K"),
    default_image_size="1K",
    image_tokens={"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
    mime_type="image/jpeg",
)

_FAMILIES = (GEMINI_25_FLASH_IMAGE, GEMINI_3_PRO_IMAGE, GEMINI_31_FLASH_IMAGE)

#: Every model name cometgen knows, preview and GA.
KNOWN_MODELS: tuple[str, ...] = (
    "gemini-2.5-flash-image",
    "gemini-2.5-flash-image-preview",
    "gemini-3-pro-image",
    "gemini-3-pro-image-preview",
    "gemini-3.1-flash-image",
    "gemini-3.1-flash-image-preview",
)

DEFAULT_MODEL = "gemini-3.1-flash-image-preview"


def normalize_model(model: str) -> str:
    """Strip a ``models/`` prefix."""
    return model.removeprefix("models/")


def model_spec(model: str) -> ModelSpec | None:
    """The spec for a model name (preview or GA, with or without ``models/``), or None."""
    name = normalize_model(model)
    for spec in _FAMILIES:
        if name == spec.family or name.startswith(spec.family + "-"):
            return spec
    return None


def validate_image_options(
    model: str, aspect_ratio: str | None, image_size: str | None
) -> tuple[str, str] | None:
    """Check options against the model's table.

    Returns ``(field, message)`` for the first bad one, else None. Unknown models pass:
    the provider is the judge of models cometgen has not heard of.
    """
    spec = model_spec(model)
    if spec is None:
        return None
    if aspect_ratio is not None and aspect_ratio not in spec.aspect_ratios:
        allowed = ", ".join(spec.aspect_ratios)
        return "aspect_ratio", f"{aspect_ratio!r} is not supported by {model} (one of {allowed})"
    if image_size is not None:
        if not spec.image_sizes:
            return "image_size", f"{model} does not accept image_size (always 1K)"
        if image_size not in spec.image_sizes:
            allowed = ", ".join(spec.image_sizes)
            return "image_size", f"{image_size!r} is not supported by {model} (one of {allowed})"
    return None
