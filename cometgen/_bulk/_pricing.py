"""Per-model prices (from the model registry, ``models.toml``) and the cost model on them."""

from __future__ import annotations

import functools
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from .._exceptions import ConfigError
from .._models import ModelRegistry, active_models, normalize_model

__all__ = ["ModelPrice", "PriceTable", "load_prices"]

_PRICE_KEYS: Final = ("input_per_m", "text_output_per_m", "image_output_per_m")
#: Rough tokenizer ratio for projecting prompt tokens from characters.
CHARS_PER_TOKEN: Final = 4
#: Text output tokens expected beside an image (the recorded responses show ~15-660).
EXPECTED_TEXT_TOKENS: Final = 100


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """US dollars per million tokens."""

    input_per_m: float
    text_output_per_m: float
    image_output_per_m: float


class PriceTable:
    """Prices by model family (or exact model name), and the cost arithmetic.

    Prices are the standard tier's; ``tier=`` scales them by the registry's multiplier
    (Flex and Batch half, Priority double).
    """

    __slots__ = ("_models", "_prices")

    def __init__(
        self, prices: Mapping[str, ModelPrice], models: ModelRegistry | None = None
    ) -> None:
        self._prices: Mapping[str, ModelPrice] = MappingProxyType(dict(prices))
        self._models = models or active_models()

    @property
    def prices(self) -> Mapping[str, ModelPrice]:
        """The table: family or model name -> price (read-only)."""
        return self._prices

    @property
    def models(self) -> ModelRegistry:
        """The registry the token counts and tier multipliers come from."""
        return self._models

    def __repr__(self) -> str:
        return f"PriceTable({dict(self._prices)!r})"

    def price(self, model: str, tier: str | None = None) -> ModelPrice | None:
        """The price for ``model`` in ``tier``: an exact-name entry, else its family's."""
        name = normalize_model(model)
        found = self._prices.get(name)
        if found is None:
            spec = self._models.get(name)
            found = self._prices.get(spec.family) if spec is not None else None
        if found is None or tier in (None, "standard"):
            return found
        k = self._models.tier_multiplier(tier)
        return ModelPrice(found.input_per_m * k, found.text_output_per_m * k,
                          found.image_output_per_m * k)

    def cost(
        self, model: str, *, prompt_tokens: int, output_text_tokens: int, thought_tokens: int,
        image_tokens: int, tier: str | None = None,
    ) -> float | None:
        """Dollars for one request's token counts, or None when the model has no price."""
        p = self.price(model, tier)
        if p is None:
            return None
        return (prompt_tokens * p.input_per_m
                + (output_text_tokens + thought_tokens) * p.text_output_per_m
                + image_tokens * p.image_output_per_m) / 1_000_000

    def cost_from_usage(self, model: str, usage: Any, tier: str | None = None) -> float | None:
        """Dollars for a response's ``usageMetadata`` (duck-typed), or None.

        Priced at the tier the usage names (``service_tier``), else ``tier``. Output text
        tokens are ``candidates_token_count`` minus ``image_tokens()``. When the
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
        served = getattr(usage, "service_tier", None)  # the answer's word wins
        tier = served if isinstance(served, str) and served else tier
        return self.cost(model, prompt_tokens=prompt, output_text_tokens=candidates - image,
                         thought_tokens=thoughts, image_tokens=image, tier=tier)

    def projected_cost(
        self, model: str, *, image_size: str | None, prompt_chars: int,
        n_reference_images: int = 0, tier: str | None = None,
    ) -> float | None:
        """Expected dollars for one image request before it is sent, or None if unknown.

        Image tokens come from the registry; prompt tokens are estimated as
        ``prompt_chars / 4`` plus the model's per-reference-image allowance; about 100 text
        tokens (and the model's expected thinking tokens) are added.
        """
        spec = self._models.get(model)
        if spec is None or self.price(model) is None:
            return None
        try:
            image_tokens = spec.tokens_for(image_size)
        except KeyError:
            return None
        prompt_tokens = (math.ceil(prompt_chars / CHARS_PER_TOKEN)
                         + spec.reference_image_tokens * n_reference_images)
        return self.cost(
            model, prompt_tokens=prompt_tokens, output_text_tokens=EXPECTED_TEXT_TOKENS,
            thought_tokens=spec.expected_thought_tokens, image_tokens=image_tokens, tier=tier,
        )

    def per_image(self, model: str, image_size: str | None, tier: str | None = None
                  ) -> float | None:
        """Dollars for one image's output tokens alone (what ``cometgen models`` shows)."""
        spec = self._models.get(model)
        price = self.price(model, tier)
        if spec is None or price is None:
            return None
        try:
            return spec.tokens_for(image_size) * price.image_output_per_m / 1_000_000
        except KeyError:
            return None


def _count(usage: Any, name: str) -> int:
    value = getattr(usage, name, 0)
    return value if isinstance(value, int) and value > 0 else 0


def load_prices(
    path: str | os.PathLike[str] | None = None, *, models: ModelRegistry | None = None
) -> PriceTable:
    """The registry's prices (built-in, or ``models``), with the TOML file at ``path`` over it.

    The file holds ``[models."<family or model>"]`` tables of ``input_per_m``,
    ``text_output_per_m`` and ``image_output_per_m``. An entry for a known family may set
    only some keys; a new model needs all three. Raises ConfigError naming the file and key
    on any problem.
    """
    registry = models or active_models()
    base = _registry_prices(registry)
    if path is None:
        return base
    file = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read price file: {exc.strerror or exc}") from None
    return PriceTable({**base.prices, **_parse(data, file, base.prices, registry)}, registry)


@functools.cache
def _registry_prices(registry: ModelRegistry) -> PriceTable:
    # Canonical entries only: an alias is priced through its family.
    return PriceTable({
        spec.name: ModelPrice(*spec.prices)
        for spec in registry if spec.prices is not None and spec.alias_of is None
    }, registry)


def _parse(
    data: dict[str, Any], file: str, base: Mapping[str, ModelPrice], registry: ModelRegistry
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
        if inherited is None and (spec := registry.get(name)) is not None:
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
