"""Settings for ``cometgen run``: flags override the config file, which overrides env/defaults."""

from __future__ import annotations

import argparse
import difflib
import os
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any

from .._cache import CACHE_ENV
from .._config import API_KEY_ENV, BASE_URL_ENV, DEFAULT_CONCURRENCY
from .._exceptions import ConfigError
from .._models import DEFAULT_MODEL


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Every option of ``cometgen run`` with its default, in one place."""

    model: str = DEFAULT_MODEL
    aspect_ratio: str | None = None
    image_size: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    rpm: float | None = None
    ipm: float | None = None
    adaptive: bool | None = None
    max_cost: float | None = None
    retry_failed: bool = False
    regenerate_changed: bool = False
    allow_endpoint_change: bool = False
    max_attempts: int = 4
    retry_ambiguous: int = 0
    timeout: float | None = None
    job_timeout: float | None = None
    include_text: bool = True
    api_key: str | None = field(default=None, repr=False)  # never shown
    base_url: str | None = None
    auth: str = "bearer"
    prices: str | None = None
    shard: str | None = None
    grace_period: float = 30.0
    shared_limits: str | None = None
    limits_namespace: str | None = None
    models: str | None = None
    service_tier: str = "standard"
    cache: str | None = None
    progress_interval: float | None = None


_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "aspect_ratio": (str,), "image_size": (str,), "concurrency": (int,),
    "rpm": (int, float), "ipm": (int, float), "adaptive": (bool,), "max_cost": (int, float),
    "retry_failed": (bool,), "regenerate_changed": (bool,), "allow_endpoint_change": (bool,),
    "max_attempts": (int,), "retry_ambiguous": (int,),
    "timeout": (int, float), "job_timeout": (int, float), "include_text": (bool,),
    "api_key": (str,), "base_url": (str,), "auth": (str,), "prices": (str,), "shard": (str,),
    "grace_period": (int, float), "shared_limits": (str,), "limits_namespace": (str,),
    "models": (str,), "service_tier": (str,), "cache": (str,),
    "progress_interval": (int, float),
}


def load_config_file(path: str) -> dict[str, Any]:
    """Read a TOML config; keys are option names with ``_`` or ``-``, top level or [run]."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    section = data.get("run", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [run] must be a table")
    known = {f.name for f in fields(RunSettings)}
    out: dict[str, Any] = {}
    for raw_key, value in section.items():
        key = raw_key.replace("-", "_")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown option {raw_key!r}{hint}")
        expected = _TYPES[key]
        if isinstance(value, bool) and bool not in expected:
            raise ConfigError(f"{path}: option {raw_key!r} must be {expected[0].__name__}")
        if not isinstance(value, expected):
            names = " or ".join(t.__name__ for t in expected)
            raise ConfigError(f"{path}: option {raw_key!r} must be {names}, "
                              f"got {type(value).__name__}")
        out[key] = value
    return out


def resolve(args: argparse.Namespace) -> RunSettings:
    """Merge: defaults < environment < config file < command-line flags."""
    values: dict[str, Any] = {}
    if os.environ.get(API_KEY_ENV):
        values["api_key"] = os.environ[API_KEY_ENV]
    if os.environ.get(BASE_URL_ENV):
        values["base_url"] = os.environ[BASE_URL_ENV]
    if os.environ.get(CACHE_ENV):
        values["cache"] = os.environ[CACHE_ENV]
    if args.config:
        values.update(load_config_file(args.config))
    for f in fields(RunSettings):
        flag = getattr(args, f.name, None)
        if flag is not None:
            values[f.name] = flag
    return RunSettings(**values)


def parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), got {value!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard I/N needs 0 <= I < N, got {value!r}")
    return i, n
