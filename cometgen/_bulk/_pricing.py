"""Per-model prices (data in ``prices.toml``) and the cost model built on them."""

from __future__ import annotations

import functools
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

from .._exceptions import ConfigError
from .._models import model_spec, normalize_model

__all__ = ["ModelPrice", "PriceTable", "load_prices"]

_PRICE_KEYS: Final = ("input_per_m", "text_output_per_m", "image_output_per_m")
#: Rough tokenizer ratio for projecting prompt tokens from characters.
CHARS_PER_TOKEN: Final = 4
#: Prompt tokens per reference image, by family. Gemini 3 reads images at high media
#: resolution (1120 tokens) by default; 2.5 uses 258 per small image (more for large, tiled).
REFERENCE_IMAGE_TOKENS: Final[Mapping[str, int]] = MappingProxyType({
    "gemini-2.5-flash-image": 258, "gemini-3-pro-image": 1120, "gemini-3.1-flash-image": 1120,
})
_DEFAULT_REFERENCE_IMAGE_TOKENS: Final = 258
#: Text output tokens expected beside an image (the recorded responses show ~15-660).
EXPECTED_TEXT_TOKENS: Final = 100
#: Thinking tokens expected per request, by family (Pro always thinks: 174-529 recorded).
EXPECTED_THOUGHT_TOKENS: Final[Mapping[str, int]] = MappingProxyType({
    "gemini-3-pro-image": 200,
})


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """US dollars per million tokens."""

    input_per_m: float
    text_output_per_m: float
    image_output_per_m: float


class PriceTable:
    """Prices by model family (or exact model name), and the cost arithmetic."""

    __slots__ = ("_prices",)

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices: Mapping[str, ModelPrice] = MappingProxyType(dict(prices))

    @property
    def prices(self) -> Mapping[str, ModelPrice]:
        """The table: family or model name -> price (read-only)."""
        return self._prices

    def __repr__(self) -> str:
        return f"PriceTable({dict(self._prices)!r})"

    def price(self, model: str) -> ModelPrice | None:
        """The price for ``model``: an exact-name entry, else its family's, else None."""
        name = normalize_model(model)
        if (found := self._prices.get(name)) is not None:
            return found
        spec = model_spec(name)
        return self._prices.get(spec.family) if spec is not None else None

    def cost(
        self, model: str, *, prompt_tokens: int, output_text_tokens: int, thought_tokens: int,
        image_tokens: int,
    ) -> float | None:
        """Dollars for one request's token counts, or None when the model has no price."""
        p = self.price(model)
        if p is None:
            return None
        return (prompt_tokens * p.input_per_m
                + (output_text_tokens + thought_tokens) * p.text_output_per_m
                + image_tokens * p.image_output_per_m) / 1_000_000

    def cost_from_usage(self, model: str, usage: Any) -> float | None:
        """Dollars for a response's ``usageMetadata`` (duck-typed), or None.

        Output text tokens are ``candidates_token_count`` minus ``image_tokens()``. When the
        usage cannot split out image tokens, all candidate tokens are priced as image tokens
        (an upper bound).
        """
        if usage is None:
            return None
        prompt = _count(usage, "prompt_token_count")
        candidates = _count(usage, "candidates_token_count")
        thoughts = _count(usage, "thoughts_token_count")
        image_tokens_fn = getattr(usage, "image_tokens", None)
        image = image_tokens_fn() if callable(image_tokens_fn) else None
        image = candidates if not isinstance(image, int) else min(image, candidates)
        return self.cost(model, prompt_tokens=prompt, output_text_tokens=candidates - image,
                         thought_tokens=thoughts, image_tokens=image)

    def projected_cost(
        self, model: str, *, image_size: str | None, prompt_chars: int,
        n_reference_images: int = 0,
    ) -> float | None:
        """Expected dollars for one image request before it is sent, or None if unknown.

        Image tokens come from the model table; prompt tokens are estimated as
        ``prompt_chars / 4`` plus a per-reference-image allowance; about 100 text tokens
        (and ~200 thinking tokens on Pro) are added.
        """
        spec = model_spec(model)
        if spec is None or self.price(model) is None:
            return None
        try:
            image_tokens = spec.tokens_for(image_size)
        except KeyError:
            return None
        per_image = REFERENCE_IMAGE_TOKENS.get(spec.family, _DEFAULT_REFERENCE_IMAGE_TOKENS)
        prompt_tokens = math.ceil(prompt_chars / CHARS_PER_TOKEN) + per_image * n_reference_images
        return self.cost(
            model, prompt_tokens=prompt_tokens, output_text_tokens=EXPECTED_TEXT_TOKENS,
            thought_tokens=EXPECTED_THOUGHT_TOKENS.get(spec.family, 0),
            image_tokens=image_tokens,
        )


def _count(usage: Any, name: str) -> int:
    value = getattr(usage, name, 0)
    return value if isinstance(value, int) and value > 0 else 0


def load_prices(path: str | os.PathLike[str] | None = None) -> PriceTable:
    """The built-in price table, with entries from the TOML file at ``path`` laid over it.

    The file has the built-in ``prices.toml``'s shape: ``[models."<family or model>"]`` tables
    of ``input_per_m``, ``text_output_per_m`` and ``image_output_per_m``. An entry for a
    known family may set only some keys; a new model needs all three. Raises ConfigError
    naming the file and key on any problem.
    """
    builtin = _builtin_prices()
    if path is None:
        return builtin
    file = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read price file: {exc.strerror or exc}") from None
    return PriceTable({**builtin.prices, **_parse(data, file, builtin.prices)})


@functools.cache
def _builtin_prices() -> PriceTable:
    text = resources.files("cometgen._bulk").joinpath("prices.toml").read_text("utf-8")
    return PriceTable(_parse(tomllib.loads(text), "cometgen/prices.toml", {}))


def _parse(
    data: dict[str, Any], file: str, base: Mapping[str, ModelPrice]
) -> dict[str, ModelPrice]:
    for key in data:
        if key != "models":
            raise ConfigError(f"{file}: {key}: unknown key (expected [models.\"<name>\"] tables)")
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{file}: models: expected a table")
    out: dict[str, ModelPrice] = {}
    for name, entry in models.items():
        where = f"models.{_toml_key(name)}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{file}: {where}: expected a table of prices")
        inherited = base.get(name)
        if inherited is None and (spec := model_spec(name)) is not None:
            inherited = base.get(spec.family)
        values: dict[str, float] = {}
        for key, value in entry.items():
            if key not in _PRICE_KEYS:
                raise ConfigError(f"{file}: {where}.{key}: unknown key (expected one of "
                                  f"{', '.join(_PRICE_KEYS)})")
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or value < 0):
                raise ConfigError(f"{file}: {where}.{key}: expected a number >= 0 "
                                  f"(dollars per million tokens), got {value!r}")
            values[key] = float(value)
        for key in _PRICE_KEYS:
            if key not in values:
                if inherited is None:
                    raise ConfigError(f"{file}: {where}.{key}: missing (required for a "
                                      "model without a built-in price)")
                values[key] = getattr(inherited, key)
        out[name] = ModelPrice(**values)
    return out


def _toml_key(name: str) -> str:
    bare = name.replace("-", "").replace("_", "").isalnum() and name.isascii()
    return name if bare else f'"{name}"'
