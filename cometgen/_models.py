"""The model registry: what each Gemini image model accepts, produces and costs.

The data is ``models.toml`` (shipped in the package, every fact with its source); a user
file of the same shape extends or overrides it (``load_models(path)``). Validation, cost
projection, the mock server and ``cometgen models`` all read one ``ModelRegistry``.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from types import MappingProxyType
from typing import Any, Final, Literal, cast

from ._exceptions import ConfigError

__all__ = [
    "DEFAULT_MODEL", "SERVICE_TIERS", "ModelRegistry", "ModelSpec", "ServiceTier",
    "load_models", "model_spec", "normalize_model", "use_models", "validate_image_options",
]

logger = logging.getLogger("cometgen")

# The GA name: Google shut the preview ID down on 2026-06-25 (GA since 2026-05-28). CometAPI
# still documents the preview names, which stay accepted (with a warning) as --model.
DEFAULT_MODEL = "gemini-3.1-flash-image"

ServiceTier = Literal["standard", "flex", "priority"]
SERVICE_TIERS: Final[tuple[str, ...]] = ("standard", "flex", "priority")
Status = Literal["preview", "ga", "deprecated", "retired"]
_STATUSES: Final = ("preview", "ga", "deprecated", "retired")
_PRICE_KEYS: Final = ("input_per_m", "text_output_per_m", "image_output_per_m")
_BUILTIN_FILE: Final = "cometgen/models.toml"


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One registry entry: capabilities, status and standard-tier prices of a model name."""

    name: str
    #: The canonical name whose capabilities this name shares (itself unless an alias).
    family: str
    status: Status = "ga"
    released: datetime.date | None = None
    deprecated: datetime.date | None = None
    retired: datetime.date | None = None
    alias_of: str | None = None
    aspect_ratios: tuple[str, ...] = ()
    #: Accepted ``imageConfig.imageSize`` values; empty means the field is not accepted.
    image_sizes: tuple[str, ...] = ()
    default_image_size: str | None = None
    #: Output tokens per generated image, by image size ("" when the model has no sizes).
    image_tokens: Mapping[str, int] = field(default_factory=dict)
    #: US dollars per 1M tokens (input, text output, image output), standard tier.
    prices: tuple[float, float, float] | None = None
    mime_type: str = "image/png"
    max_reference_images: int = 14
    reference_image_tokens: int = 258
    expected_thought_tokens: int = 0
    #: Capability flags; None means the registry does not know.
    search: bool | None = None
    thinking: bool | None = None
    flex: bool | None = None
    batch: bool | None = None
    #: Seconds per HTTP attempt this model needs at its largest size.
    timeout: float | None = None

    @property
    def supports_search(self) -> bool:
        return self.search is not False

    def tokens_for(self, image_size: str | None) -> int:
        if not self.image_sizes:
            return self.image_tokens[""]
        return self.image_tokens[image_size or self.default_image_size or "1K"]

    def status_note(self) -> str | None:
        """A one-line warning for a deprecated or retired name, else None."""
        if self.status not in ("deprecated", "retired"):
            return None
        when = self.retired if self.status == "retired" else self.deprecated
        text = f"model {self.name} is {self.status} on Google's endpoint"
        text += f" since {when.isoformat()}" if when else ""
        if self.alias_of:
            text += f" (use {self.alias_of})"
        return text + "; sending it anyway: the endpoint decides"


class ModelRegistry:
    """Model names -> ``ModelSpec``, plus the price multiplier of each service tier."""

    __slots__ = ("_prefixes", "_specs", "_tiers")

    def __init__(self, specs: Mapping[str, ModelSpec], tiers: Mapping[str, float]) -> None:
        self._specs: Mapping[str, ModelSpec] = MappingProxyType(dict(specs))
        self._tiers: Mapping[str, float] = MappingProxyType(dict(tiers))
        # Longest first, so a dated variant finds its most specific entry.
        self._prefixes = sorted(self._specs, key=len, reverse=True)

    @property
    def specs(self) -> Mapping[str, ModelSpec]:
        return self._specs

    @property
    def tiers(self) -> Mapping[str, float]:
        return self._tiers

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"ModelRegistry({sorted(self._specs)!r})"

    def get(self, model: str) -> ModelSpec | None:
        """The entry for ``model`` (``NAME-suffix`` falls back to ``NAME``), or None."""
        name = normalize_model(model)
        found = self._specs.get(name)
        if found is not None:
            return found
        for known in self._prefixes:
            if name.startswith(known + "-"):
                return self._specs[known]
        return None

    def tier_multiplier(self, tier: str | None) -> float:
        return self._tiers.get(tier or "standard", 1.0)


def normalize_model(model: str) -> str:
    """Strip a ``models/`` prefix."""
    return model.removeprefix("models/")


def load_models(path: str | os.PathLike[str] | None = None) -> ModelRegistry:
    """The built-in registry, with the entries of the TOML file at ``path`` laid over it.

    Raises ConfigError naming the file and key on any problem.
    """
    builtin = _builtin()
    if path is None:
        return builtin
    file = os.fspath(path)
    try:
        with open(file, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read model file: {exc.strerror or exc}") from None
    return _parse(data, file, builtin)


_active: ModelRegistry | None = None


def active_models() -> ModelRegistry:
    """The registry in use: the one given to ``use_models``, else the built-in one."""
    return _active or _builtin()


def use_models(
    models: ModelRegistry | str | os.PathLike[str] | None,
) -> ModelRegistry | None:
    """Make ``models`` (a registry, or a file laid over the built-in one) the process-wide
    registry; None restores the built-in one. Returns the previous setting.

    Process-wide like a price list: input validation, cost projection and ``Batch`` read
    it. Set it before starting work, not while requests are in flight.
    """
    global _active
    previous = _active
    if models is not None and not isinstance(models, ModelRegistry):
        models = load_models(models)
    _active = models
    return previous


def model_spec(model: str, registry: ModelRegistry | None = None) -> ModelSpec | None:
    """The entry for a model name in ``registry`` (default: ``active_models()``), or None."""
    return (registry or active_models()).get(model)


def validate_image_options(
    model: str, aspect_ratio: str | None, image_size: str | None,
    registry: ModelRegistry | None = None,
) -> tuple[str, str] | None:
    """Check options against the model's entry.

    Returns ``(field, message)`` for the first bad one, else None. Unknown models pass:
    the provider is the judge of models cometgen has not heard of.
    """
    spec = model_spec(model, registry)
    return None if spec is None else check_spec_options(spec, model, aspect_ratio, image_size)


def check_spec_options(
    spec: ModelSpec, model: str, aspect_ratio: str | None, image_size: str | None
) -> tuple[str, str] | None:
    """``validate_image_options`` against one entry."""
    if aspect_ratio is not None and spec.aspect_ratios and aspect_ratio not in spec.aspect_ratios:
        allowed = ", ".join(spec.aspect_ratios)
        return "aspect_ratio", f"{aspect_ratio!r} is not supported by {model} (one of {allowed})"
    if image_size is not None:
        if not spec.image_sizes:
            return "image_size", f"{model} does not accept image_size (always 1K)"
        if image_size not in spec.image_sizes:
            allowed = ", ".join(spec.image_sizes)
            return "image_size", f"{image_size!r} is not supported by {model} (one of {allowed})"
    return None


def warn_model_status(model: str, registry: ModelRegistry | None, seen: set[str]) -> None:
    """Log the status warning of a deprecated or retired name, once per ``seen`` set."""
    if model in seen:
        return
    seen.add(model)
    spec = model_spec(model, registry)
    note = spec.status_note() if spec is not None else None
    if note is not None:
        logger.warning("%s", note)


def longest_timeout(registry: ModelRegistry | None = None) -> float:
    """The largest per-attempt ``timeout`` of any model (300 s if none sets one)."""
    return max((s.timeout for s in registry or active_models() if s.timeout), default=300.0)


def check_service_tier(tier: str) -> ServiceTier:
    """``tier`` if it is a known service tier, else ConfigError."""
    if tier not in SERVICE_TIERS:
        raise ConfigError(f"service_tier must be one of {', '.join(SERVICE_TIERS)}, "
                          f"got {tier!r}")
    return cast(ServiceTier, tier)


# -- parsing ---------------------------------------------------------------------------------


@functools.cache
def _builtin() -> ModelRegistry:
    text = resources.files("cometgen").joinpath("models.toml").read_text("utf-8")
    return _parse(tomllib.loads(text), _BUILTIN_FILE, ModelRegistry({}, {"standard": 1.0}))


_FIELDS: Final = {f.name for f in fields(ModelSpec)} - {"name", "family"}
_FLAGS, _DATES = ("search", "thinking", "flex", "batch"), ("released", "deprecated", "retired")
_INTS: Final = ("max_reference_images", "reference_image_tokens", "expected_thought_tokens")


def _parse(data: dict[str, Any], file: str, base: ModelRegistry) -> ModelRegistry:
    for key in data:
        if key not in ("models", "tiers"):
            raise ConfigError(f"{file}: {key}: unknown key (expected [tiers] or "
                              "[models.\"<name>\"] tables)")
    tiers = dict(base.tiers)
    for tier, value in _table(data, "tiers", file).items():
        tiers[tier] = _number(value, file, f"tiers.{tier}")
    specs = dict(base.specs)
    raw_models = _table(data, "models", file)
    # Canonical entries first, so an alias added in the same file finds its target.
    for name, entry in sorted(raw_models.items(), key=lambda kv: _is_alias(kv[1])):
        where = f"models.{_toml_key(name)}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{file}: {where}: expected a table")
        specs[name] = _entry(name, entry, file, where, specs)
    return ModelRegistry(specs, tiers)


def _is_alias(entry: object) -> bool:
    return isinstance(entry, dict) and "alias_of" in entry


def _entry(
    name: str, entry: dict[str, Any], file: str, where: str, specs: Mapping[str, ModelSpec]
) -> ModelSpec:
    values: dict[str, Any] = {}
    for key, value in entry.items():
        if key not in _FIELDS:
            raise ConfigError(f"{file}: {where}.{key}: unknown key")
        values[key] = _value(key, value, file, f"{where}.{key}")
    target = values.get("alias_of")
    if target is not None:
        if target not in specs:
            raise ConfigError(f"{file}: {where}.alias_of: unknown model {target!r}")
        base = replace(specs[target], name=name, alias_of=target, family=specs[target].family,
                       released=None, deprecated=None, retired=None, status="ga")
    elif name in specs:
        base = specs[name]
    else:
        for key in ("status", "aspect_ratios", "image_tokens"):
            if key not in values:
                raise ConfigError(f"{file}: {where}.{key}: missing (required for a model "
                                  "the built-in registry does not know)")
        base = ModelSpec(name=name, family=name)
    if "prices" in values:
        values["prices"] = _prices(values["prices"], base.prices, file, f"{where}.prices")
    spec = replace(base, **values)
    sizes = spec.image_sizes or ("",)
    if missing := [s for s in sizes if s not in spec.image_tokens]:
        raise ConfigError(f"{file}: {where}.image_tokens: no token count for size(s) "
                          f"{', '.join(repr(s) for s in missing)}")
    if spec.default_image_size is not None and spec.default_image_size not in spec.image_sizes:
        raise ConfigError(f"{file}: {where}.default_image_size: "
                          f"{spec.default_image_size!r} is not one of image_sizes")
    return spec


def _value(key: str, value: Any, file: str, where: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{file}: {where}: expected {expected}, got {value!r}")

    if key == "status":
        if value not in _STATUSES:
            raise bad(" | ".join(_STATUSES))
        return value
    if key in _DATES:
        if not isinstance(value, datetime.date) or isinstance(value, datetime.datetime):
            raise bad("a date (YYYY-MM-DD, unquoted)")
        return value
    if key in _FLAGS:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key in ("aspect_ratios", "image_sizes"):
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad("a list of strings")
        return tuple(value)
    if key == "image_tokens":
        if not isinstance(value, dict) or not all(
            type(v) is int and v > 0 for v in value.values()
        ):
            raise bad("a table of size = token count (integers > 0)")
        return MappingProxyType(dict(value))
    if key in _INTS:
        if type(value) is not int or value < 0:
            raise bad("an integer >= 0")
        return value
    if key == "timeout":
        return _number(value, file, where, positive=True)
    if key == "prices":
        if not isinstance(value, dict):
            raise bad("a table of " + ", ".join(_PRICE_KEYS))
        return value
    if not isinstance(value, str) or not value:  # alias_of, default_image_size, mime_type
        raise bad("a string")
    return value


def _prices(
    value: dict[str, Any], inherited: tuple[float, float, float] | None, file: str, where: str
) -> tuple[float, float, float]:
    for key in value:
        if key not in _PRICE_KEYS:
            raise ConfigError(f"{file}: {where}.{key}: unknown key (expected one of "
                              f"{', '.join(_PRICE_KEYS)})")
    out: list[float] = []
    for i, key in enumerate(_PRICE_KEYS):
        if key in value:
            out.append(_number(value[key], file, f"{where}.{key}"))
        elif inherited is not None:
            out.append(inherited[i])
        else:
            raise ConfigError(f"{file}: {where}.{key}: missing (no built-in price to keep)")
    return out[0], out[1], out[2]


def _number(value: Any, file: str, where: str, *, positive: bool = False) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value < 0 or (positive and value == 0)):
        raise ConfigError(f"{file}: {where}: expected a number {'>' if positive else '>='} 0, "
                          f"got {value!r}")
    return float(value)


def _table(data: dict[str, Any], key: str, file: str) -> dict[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: {key}: expected a table")
    return table


def _toml_key(name: str) -> str:
    bare = name.replace("-", "").replace("_", "").isalnum() and name.isascii()
    return name if bare else f'"{name}"'


#: Every model name in the built-in registry, preview and GA.
KNOWN_MODELS: Final[tuple[str, ...]] = tuple(sorted(_builtin().specs))
