"""Large bodies: msgspec decodes them whole, and nothing in them is lost or replaced."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cometgen._exceptions import DecodeError
from cometgen._wire import decode_response

FIXTURES = Path(__file__).parent / "fixtures" / "recorded"
FIXTURE_NAMES = sorted(p.name for p in FIXTURES.glob("*.json"))


def response(parts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": parts},
                            "finishReason": "STOP", "index": 0, **extra}]}


def image_part(size: int = 400_000, signature: str | None = None) -> tuple[dict[str, Any], bytes]:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(size)
    part: dict[str, Any] = {"inlineData": {"mimeType": "image/png",
                                           "data": base64.b64encode(data).decode()}}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part, data


@pytest.mark.parametrize("indent", [None, 2], ids=["compact", "indented"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_recorded_response_keeps_every_image_and_signature(name: str, indent: int | None) -> None:
    # Google answers pretty-printed (`"data": "..."`); proxies may re-encode compactly.
    raw = json.loads((FIXTURES / name).read_text())["response"]
    body = json.dumps(raw, indent=indent).encode()
    resp = decode_response(body)
    for got, want in zip(resp.candidates[0].content.parts,  # type: ignore[union-attr]
                         raw["candidates"][0]["content"]["parts"], strict=True):
        if "inlineData" in want:
            assert got.inline_data is not None
            assert got.inline_data.data == base64.b64decode(want["inlineData"]["data"])
        assert got.thought_signature_text() == want.get("thoughtSignature")


def test_long_base64_under_other_data_keys_comes_back_intact() -> None:
    # The old cutter replaced ANY long base64 `data` value with a 16-character placeholder.
    blob = base64.b64encode(os.urandom(30_000)).decode()  # 40,000 characters
    assert len(blob) == 40_000
    part, data = image_part(signature=base64.b64encode(os.urandom(50_000)).decode())
    grounding = {"searchEntryPoint": {"renderedContent": "<b>x</b>", "data": blob},
                 "groundingChunks": [{"image": {"data": blob, "mimeType": "image/png"}}]}
    doc = response([{"text": "t", "futureField": {"data": blob}}, part],
                   groundingMetadata=grounding)
    body = json.dumps(doc).encode()
    resp = decode_response(body)
    meta = resp.candidates[0].grounding_metadata
    assert meta == grounding
    assert meta is not None and meta["searchEntryPoint"]["data"] == blob
    assert resp.image_parts()[0].inline_data.data == data  # type: ignore[union-attr]


def test_long_data_under_other_keys_survives_the_tolerant_fallback() -> None:
    blob = base64.b64encode(os.urandom(30_000)).decode()
    part, data = image_part()
    part["inlineData"]["data"] = part["inlineData"]["data"].rstrip("=").replace("+", "-")
    body = json.dumps(response([part], groundingMetadata={"x": {"data": blob}})).encode()
    resp = decode_response(body)
    assert resp.candidates[0].grounding_metadata == {"x": {"data": blob}}
    assert resp.image_parts()[0].inline_data.data == data  # type: ignore[union-attr]


def test_a_large_signature_decodes_to_its_text() -> None:
    sig = base64.b64encode(os.urandom(600_000)).decode()
    part, data = image_part(signature=sig)
    body = msgspec.json.encode(response([part]))
    [got] = decode_response(body).candidates[0].content.parts  # type: ignore[union-attr]
    assert got.inline_data is not None and got.inline_data.data == data
    assert got.thought_signature_text() == sig
    assert got.thought_signature == sig


@pytest.mark.parametrize("variant", ["urlsafe", "unpadded", "newlines", "escaped-slashes"])
def test_nonstandard_base64_takes_the_tolerant_path(variant: str) -> None:
    data = b"\xfb\xff" + os.urandom(300_000)  # starts with bytes whose base64 has + and /
    text = base64.b64encode(data).decode()
    if variant == "urlsafe":
        text = text.translate(str.maketrans("+/", "-_"))
    elif variant == "unpadded":
        data = data[:-1]
        text = base64.b64encode(data).decode().rstrip("=")
    elif variant == "newlines":
        text = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    sig = "a/b" * 10_000
    doc = response([{"inlineData": {"mimeType": "image/png", "data": text},
                     "thoughtSignature": sig}])
    body = json.dumps(doc).encode()
    if variant == "escaped-slashes":  # what PHP's json_encode and some gateways emit
        body = body.replace(b"/", b"\\/")
    [got] = decode_response(body).candidates[0].content.parts  # type: ignore[union-attr]
    assert got.inline_data is not None and got.inline_data.data == data
    assert got.thought_signature_text() == sig


def test_invalid_base64_in_a_large_body_names_the_field() -> None:
    body = json.dumps(response([{"text": "x"}, {"inlineData": {
        "mimeType": "image/png", "data": "@" * 300_000}}])).encode()
    with pytest.raises(DecodeError, match=r"candidates\[0\]\.content\.parts\[1\]\.inlineData"):
        decode_response(body)


@pytest.mark.parametrize("cut_at", [0.3, 0.6, 0.999])
def test_truncated_large_body_is_a_decode_error(cut_at: float) -> None:
    part, _ = image_part(signature=base64.b64encode(os.urandom(300_000)).decode())
    body = msgspec.json.encode(response([part]))
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_response(body[: int(len(body) * cut_at)])


def test_bytearray_and_memoryview_bodies_decode_alike() -> None:
    part, data = image_part()
    body = msgspec.json.encode(response([part]))
    for variant in (bytearray(body), memoryview(body)):
        got = decode_response(variant).image_parts()[0]
        assert got.inline_data is not None and got.inline_data.data == data
