"""Large bodies: the long strings are cut out and put back; the result equals a plain decode."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cometgen._exceptions import DecodeError
from cometgen._spans import MIN_BODY, cut_long_strings
from cometgen._wire import _RESPONSE_DECODER, GenerateContentResponse, decode_response

FIXTURES = Path(__file__).parent / "fixtures" / "recorded"


def _response_size(path: Path) -> int:
    return len(json.dumps(json.loads(path.read_text())["response"]))


LARGE = sorted(p.name for p in FIXTURES.glob("*.json") if _response_size(p) > MIN_BODY)


def plain(body: bytes) -> GenerateContentResponse:
    """The reference: msgspec on the whole body, no cutting."""
    return _RESPONSE_DECODER.decode(body)


def same(a: GenerateContentResponse, b: GenerateContentResponse) -> bool:
    return msgspec.json.encode(a) == msgspec.json.encode(b)


def response(parts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": parts},
                            "finishReason": "STOP", "index": 0}], **extra}


def image_part(size: int = 400_000, signature: str | None = None) -> tuple[dict[str, Any], bytes]:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(size)
    part: dict[str, Any] = {"inlineData": {"mimeType": "image/png",
                                           "data": base64.b64encode(data).decode()}}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part, data


def test_recorded_fixtures_are_large_enough_to_take_the_cut_path() -> None:
    assert len(LARGE) >= 6


@pytest.mark.parametrize("indent", [None, 2], ids=["compact", "indented"])
@pytest.mark.parametrize("name", LARGE)
def test_recorded_response_equals_plain_decode(name: str, indent: int | None) -> None:
    # Google answers pretty-printed (`"data": "..."`); proxies may re-encode compactly.
    raw = json.loads((FIXTURES / name).read_text())["response"]
    body = json.dumps(raw, indent=indent).encode()
    cut = cut_long_strings(body)
    assert cut is not None and cut.data  # the image string really was cut out
    assert len(cut.skeleton) < 64 * 1024
    assert same(decode_response(body), plain(body))


def test_signature_is_a_zero_copy_token_of_the_body() -> None:
    sig = base64.b64encode(os.urandom(600_000)).decode()
    part, data = image_part(signature=sig)
    body = msgspec.json.encode(response([part]))
    [got] = decode_response(body).candidates[0].content.parts  # type: ignore[union-attr]
    assert got.inline_data is not None and got.inline_data.data == data
    assert got.thought_signature_text() == sig
    assert bytes(got.thought_signature) == json.dumps(sig).encode()


def test_several_images_keep_their_order() -> None:
    parts, images = [], []
    for _ in range(3):
        part, data = image_part(200_000, signature=base64.b64encode(os.urandom(50_000)).decode())
        parts += [{"text": "next"}, part]
        images.append(data)
    body = msgspec.json.encode(response(parts))
    resp = decode_response(body)
    assert [p.inline_data.data for p in resp.image_parts()] == images  # type: ignore[union-attr]
    assert same(resp, plain(body))


def test_escaped_quotes_and_lookalike_keys_do_not_confuse_the_walk() -> None:
    part, data = image_part()
    tricky = 'he said \\"data\\": \\"x\\" and \\\\'  # escaped quotes, then an escaped backslash
    body = (
        b'{"candidates":[{"content":{"parts":[{"text":"' + tricky.encode() + b'"},'
        b'{"text":"data"},' + msgspec.json.encode(part) + b']}}],'
        b'"modelVersion":"data"}'
    )
    resp = decode_response(body)
    assert same(resp, plain(body))
    assert resp.image_parts()[0].inline_data.data == data  # type: ignore[union-attr]


def test_escapes_inside_a_signature_keep_the_token_verbatim() -> None:
    sig = "a/b" * 10_000
    part, _ = image_part()
    part["thoughtSignature"] = sig
    body = json.dumps(response([part])).encode().replace(b"a/b", b"a\\/b")  # JSON-escaped '/'
    got = decode_response(body).candidates[0].content.parts[0]  # type: ignore[union-attr]
    assert got.thought_signature_text() == sig


@pytest.mark.parametrize("variant", ["urlsafe", "unpadded", "newlines", "escaped-slashes"])
def test_nonstandard_base64_is_left_to_the_tolerant_path(variant: str) -> None:
    data = b"\xfb\xff" + os.urandom(300_000)  # starts with bytes whose base64 has + and /
    text = base64.b64encode(data).decode()
    if variant == "urlsafe":
        text = text.translate(str.maketrans("+/", "-_"))
    elif variant == "unpadded":
        data = data[:-1]
        text = base64.b64encode(data).decode().rstrip("=")
    elif variant == "newlines":
        text = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    body = json.dumps(response([{"inlineData": {"mimeType": "image/png", "data": text}}])).encode()
    if variant == "escaped-slashes":  # what PHP's json_encode and some gateways emit
        assert b"/" in body
        body = body.replace(b"/", b"\\/")
    [got] = decode_response(body).candidates[0].content.parts  # type: ignore[union-attr]
    assert got.inline_data is not None and got.inline_data.data == data


def test_invalid_base64_in_a_large_body_still_names_the_field() -> None:
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


def test_invalid_json_around_a_cut_string_is_still_an_error() -> None:
    part, _ = image_part()
    body = msgspec.json.encode(response([part])).replace(b'"parts":', b'"parts"', 1)
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_response(body)


def test_a_long_data_string_in_an_unknown_object_is_harmless() -> None:
    part, data = image_part()
    body = msgspec.json.encode(response([part], groundingBlob={"data": "not base64! " * 30_000}))
    resp = decode_response(body)
    assert same(resp, plain(body))
    assert resp.image_parts()[0].inline_data.data == data  # type: ignore[union-attr]


def test_text_heavy_body_is_decoded_whole() -> None:
    words = [{"text": f"w{i}"} for i in range(20_000)]  # many short strings: msgspec is faster
    part, _ = image_part()
    body = msgspec.json.encode(response([*words, part]))
    assert len(body) >= MIN_BODY and cut_long_strings(body) is None
    assert same(decode_response(body), plain(body))


def test_small_and_non_bytes_bodies_skip_the_cut() -> None:
    part, data = image_part()
    body = msgspec.json.encode(response([part]))
    for variant in (bytearray(body), memoryview(body)):
        got = decode_response(variant).image_parts()[0]
        assert got.inline_data is not None and got.inline_data.data == data
    assert cut_long_strings(b'{"candidates":[]}') is None


_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=20),
    st.sampled_from(["data", "thoughtSignature", '"data":"', "\\", '\\"']),
)
_json = st.recursive(
    _json_leaf,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["data", "thoughtSignature", "text", "x", "d\"ata"]),
                      children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(noise=_json, sig_len=st.integers(0, 40_000), indent=st.sampled_from([None, 1]))
def test_any_surrounding_json_decodes_like_msgspec(noise: Any, sig_len: int,
                                                   indent: int | None) -> None:
    part, _ = image_part(300_000, signature="A" * sig_len if sig_len else None)
    doc = response([{"text": "t", "extra": noise}, part], extra=noise)
    body = json.dumps(doc, indent=indent).encode()
    assert same(decode_response(body), plain(body))
