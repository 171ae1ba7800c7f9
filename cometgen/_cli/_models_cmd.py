"""``cometgen models``: print the model registry; ``--refresh`` compares it with CometAPI's
public model catalogue (``GET /api/models``), cached in the user's cache directory."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec

from .._bulk._pricing import PriceTable, load_prices
from .._config import BASE_URL_ENV, DEFAULT_BASE_URL, Timeouts
from .._exceptions import ConfigError, TransportError
from .._models import ModelRegistry, ModelSpec, load_models
from .._transport import AiohttpTransport, TransportRequest

CATALOGUE_PATH = "/api/models"
_TIERS = ("standard", "flex", "batch", "priority")


class CatalogueEntry(msgspec.Struct, kw_only=True):
    """One entry of CometAPI's catalogue; the model name's key is assumed to be ``id``
    (``model``/``name`` are accepted too: the notes do not give the exact shape)."""

    id: str | None = None
    model: str | None = None
    name: str | None = None
    model_type: str | None = None
    pricing: dict[str, Any] | None = None
    api_doc_url: str | None = None

    @property
    def model_id(self) -> str:
        return (self.id or self.model or self.name or "").removeprefix("models/")

    @property
    def is_image(self) -> bool:
        kind = (self.model_type or "").lower()
        return "image" in kind if kind else "image" in self.model_id


class _Envelope(msgspec.Struct):
    data: list[CatalogueEntry]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "models",
        help="list the model registry (statuses, sizes, ratios, prices per image)",
        description="Print the model registry. --refresh reads CometAPI's public model "
        "catalogue, caches it, and reports names either side does not know.",
    )
    p.add_argument("--json", action="store_true", help="print JSON on stdout")
    p.add_argument("--models", metavar="FILE", help="TOML file extending the registry")
    p.add_argument("--prices", metavar="FILE", help="TOML price table overriding the registry's")
    p.add_argument("--refresh", action="store_true",
                   help="fetch GET BASE_URL/api/models and compare it with the registry")
    p.add_argument("--base-url", help=f"catalogue host (default ${BASE_URL_ENV} or "
                   f"{DEFAULT_BASE_URL})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        registry = load_models(args.models)
        prices = load_prices(args.prices, models=registry)
        report: dict[str, Any] | None = None
        if args.refresh:
            base = (args.base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL)
            entries = anyio.run(fetch_catalogue, base.rstrip("/"))
            cached = save_catalogue(entries, base)
            report = compare(registry, entries)
            report["cache"] = str(cached)
    except ConfigError as exc:
        print(f"cometgen: error: {exc}", file=sys.stderr)
        return 2
    rows = [describe(spec, prices) for spec in registry]
    if args.json:
        out: Any = {"models": rows, "refresh": report} if report is not None else rows
        print(json.dumps(out, indent=2))
    else:
        for row in rows:
            print(_text_row(row))
        if report is not None:
            print(_text_report(report))
    return 0


def describe(spec: ModelSpec, prices: PriceTable) -> dict[str, Any]:
    """One registry entry as a JSON-able row, with dollars per image by tier and size."""
    sizes = spec.image_sizes or ("",)
    per_image = {
        tier: {size or "1K": _round(prices.per_image(spec.name, size or None, tier))
               for size in sizes}
        for tier in _TIERS
    }
    return {
        "name": spec.name, "status": spec.status, "alias_of": spec.alias_of,
        "released": _date(spec.released), "deprecated": _date(spec.deprecated),
        "retired": _date(spec.retired), "image_sizes": list(spec.image_sizes),
        "default_image_size": spec.default_image_size, "aspect_ratios": list(spec.aspect_ratios),
        "search": spec.search, "thinking": spec.thinking, "flex": spec.flex, "batch": spec.batch,
        "max_reference_images": spec.max_reference_images, "timeout_s": spec.timeout,
        "price_per_image_usd": per_image,
    }


async def fetch_catalogue(base_url: str) -> list[CatalogueEntry]:
    """The catalogue entries at ``base_url``/api/models (no auth); ConfigError on failure."""
    url = base_url + CATALOGUE_PATH
    # The client's own transport: proxies, TLS and error translation as for every call.
    transport = AiohttpTransport(max_connections=1)
    try:
        response = await transport.send(
            TransportRequest("GET", url, {}, b"", Timeouts(total=60.0))
        )
    except TransportError as exc:
        raise ConfigError(f"{url}: cannot fetch the model catalogue: {exc}") from None
    finally:
        await transport.aclose()
    if response.status != 200:
        raise ConfigError(f"{url}: HTTP {response.status}")
    try:
        raw = msgspec.json.decode(response.body)
        if isinstance(raw, list):
            return msgspec.convert(raw, list[CatalogueEntry])
        return msgspec.convert(raw, _Envelope).data
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{url}: unexpected catalogue shape: {exc}") from None


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cometgen`` (default ``~/.cache/cometgen``)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "cometgen"


def save_catalogue(entries: list[CatalogueEntry], base_url: str) -> Path:
    """Write the catalogue with its date to the cache directory, atomically."""
    path = cache_dir() / "catalogue.json"
    doc = {
        "fetched_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "url": base_url.rstrip("/") + CATALOGUE_PATH,
        "models": msgspec.to_builtins(entries),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the catalogue cache: {exc.strerror or exc}"
                          ) from None
    return path


def compare(registry: ModelRegistry, entries: list[CatalogueEntry]) -> dict[str, Any]:
    """Registry names the endpoint does not list, and listed image models the registry
    does not know."""
    listed = {e.model_id for e in entries}
    return {
        "listed": len(entries),
        "not_listed": sorted(s.name for s in registry if s.name not in listed),
        "unknown_image_models": sorted(
            e.model_id for e in entries
            if e.is_image and e.model_id and e.model_id not in registry.specs
        ),
    }


def _text_row(row: dict[str, Any]) -> str:
    when = row["retired"] or row["deprecated"] or row["released"]
    status = row["status"] + (f" {when}" if when else "")
    if row["alias_of"]:
        status += f" (alias of {row['alias_of']})"
    prices = row["price_per_image_usd"]
    per_size = ", ".join(
        f"{size} ${std:.3f}/${prices['flex'][size]:.3f}"
        for size, std in prices["standard"].items() if std is not None
    )
    flags = " ".join(f"{name}:{_flag(row[name])}" for name in ("flex", "batch", "search"))
    return (f"{row['name']}  {status}\n    {len(row['aspect_ratios'])} ratios; "
            f"$/image standard/flex: {per_size or 'unpriced'}; {flags}")


def _flag(value: bool | None) -> str:
    return "?" if value is None else "yes" if value else "no"


def _text_report(report: dict[str, Any]) -> str:
    lines = [f"catalogue: {report['listed']} models listed, cached in {report['cache']}"]
    lines.append("registry models the endpoint does not list: "
                 + (", ".join(report["not_listed"]) or "none"))
    lines.append("listed image models the registry does not know: "
                 + (", ".join(report["unknown_image_models"]) or "none"))
    return "\n".join(lines)


def _date(value: datetime.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
