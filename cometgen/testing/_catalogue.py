"""The mock's answer to ``GET /api/models``: CometAPI's public model catalogue, made up from
the registry.

Known from CometAPI's docs (apidoc.cometapi.com/api/text, guides/how-to-list-available-
models): the route needs no auth and its entries carry ``pricing{currency, input, output,
per_request, per_second}``, ``model_type`` and ``api_doc_url``. Assumed, because the notes
do not give it: the envelope ``{"success": true, "data": [...]}``, the ``id`` key for the
model name, ``model_type`` "image" for image models, and prices in dollars per 1M tokens
(input, and image output as ``output``). ``cometgen models --refresh`` reads this shape and
also a bare list.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._models import ModelRegistry

#: Listed besides the registry's names, so a refresh has something it does not know: a
#: third-party-reported image model, and a text model (not an image model: not reported).
EXTRA_ENTRIES: tuple[dict[str, Any], ...] = (
    {"id": "gemini-nano-banana-2.1", "model_type": "image",
     "pricing": {"currency": "USD", "input": 0.5, "output": 60.0, "per_request": None,
                 "per_second": None},
     "api_doc_url": "https://apidoc.cometapi.com/quickstarts/image/gemini-image-api"},
    {"id": "gpt-5-mini", "model_type": "text",
     "pricing": {"currency": "USD", "input": 0.25, "output": 2.0, "per_request": None,
                 "per_second": None},
     "api_doc_url": "https://apidoc.cometapi.com/api/text"},
)


def catalogue(models: ModelRegistry, path: str | os.PathLike[str] | None = None) -> bytes:
    """The catalogue as JSON bytes: the file at ``path`` verbatim, else every registry name
    not retired on Google's endpoint (retired ones are left out, as a provider would drop
    them) plus ``EXTRA_ENTRIES``."""
    if path is not None:
        return Path(path).read_bytes()
    data: list[dict[str, Any]] = []
    for spec in models:
        if spec.status == "retired":
            continue
        pricing: dict[str, Any] = {"currency": "USD", "input": None, "output": None,
                                   "per_request": None, "per_second": None}
        if spec.prices is not None:
            pricing["input"], pricing["output"] = spec.prices[0], spec.prices[2]
        data.append({
            "id": spec.name, "model_type": "image", "pricing": pricing,
            "api_doc_url": "https://apidoc.cometapi.com/quickstarts/image/gemini-image-api",
        })
    data.extend(EXTRA_ENTRIES)
    return json.dumps({"success": True, "data": data}).encode()
