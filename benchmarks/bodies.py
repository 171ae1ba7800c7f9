"""The response bodies served in the throughput scenario, written to files for the server."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from _proc import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "recorded"


@dataclass(frozen=True)
class Body:
    name: str
    model: str  # the model named in the request URL
    path: Path
    size: int
    image_bytes: int


def _from_fixture(name: str, fixture: str, model: str, out: Path) -> Body:
    data = json.loads((FIXTURES / fixture).read_text(encoding="utf-8"))
    response = data["response"]
    raw = json.dumps(response, separators=(",", ":")).encode()
    path = out / f"{name}.json"
    path.write_bytes(raw)
    parts = response["candidates"][0]["content"]["parts"]
    image = sum(len(base64.b64decode(p["inlineData"]["data"])) for p in parts if "inlineData" in p)
    return Body(name, model, path, len(raw), image)


def _synthetic(name: str, model: str, image_size: int, out: Path) -> Body:
    image = b"\x89PNG\r\n\x1a\n" + os.urandom(image_size - 8)
    response = {
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"inlineData": {"mimeType": "image/png",
                                "data": base64.b64encode(image).decode()}},
            ]},
            "finishReason": "STOP", "index": 0,
        }],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 1290,
                          "totalTokenCount": 1297},
        "modelVersion": model, "responseId": "benchmarkbodyresponseid",
    }
    raw = json.dumps(response, separators=(",", ":")).encode()
    path = out / f"{name}.json"
    path.write_bytes(raw)
    return Body(name, model, path, len(raw), len(image))


def prepare(out: Path, names: list[str] | None = None) -> list[Body]:
    """Write the bodies into ``out``: pro (4.15 MB), flash (2.0 MB), small (~2 KB image)."""
    makers = {
        "pro-4MB": lambda: _from_fixture(
            "pro-4MB", "gemini-3-pro-image_sea-otter_image-only.json",
            "gemini-3-pro-image-preview", out),
        "flash-2MB": lambda: _from_fixture(
            "flash-2MB", "gemini-2.5-flash-image_text-and-png.json", "gemini-2.5-flash-image",
            out),
        "small-2KB": lambda: _synthetic("small-2KB", "gemini-2.5-flash-image", 2048, out),
    }
    return [makers[n]() for n in (names or list(makers))]
