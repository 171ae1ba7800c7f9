"""Wire models: every recorded response decodes; base64 variants; requests; error bodies."""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cometgen._base64 import b64decode_tolerant
from cometgen._exceptions import DecodeError
from cometgen._wire import (
    Content,
    FileData,
    GenerateContentRequest,
    GenerationConfig,
    GoogleSearch,
    ImageConfig,
    InlineData,
    Part,
    SafetySetting,
    ThinkingConfig,
    Tool,
    decode_request,
    decode_response,
    encode_request,
    signature,
)

FIXTURES = Path(__file__).parent / "fixtures" / "recorded"
FIXTURE_NAMES = sorted(p.name for p in FIXTURES.glob("*.json"))
MAGIC = {"image/png": b"\x89PNG", "image/jpeg": b"\xff\xd8\xff"}


@functools.cache
def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.json.decode((FIXTURES / name).read_bytes())
    return data


@functools.cache
def response_body(name: str) -> bytes:
    return msgspec.json.encode(load(name)["response"])


def raw_parts(name: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = load(name)["response"]["candidates"][0]["content"]["parts"]
    return parts


def test_all_fixtures_present() -> None:
    assert len(FIXTURE_NAMES) == 9


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_recorded_response_decodes(name: str) -> None:
    raw = load(name)["response"]
    resp = decode_response(response_body(name))

    assert resp.model_version == raw["modelVersion"]
    assert resp.response_id == raw["responseId"]
    assert len(resp.candidates) == len(raw["candidates"]) == 1
    cand, raw_cand = resp.candidates[0], raw["candidates"][0]
    assert cand.finish_reason == raw_cand["finishReason"] == "STOP"
    assert cand.index == raw_cand.get("index")
    assert cand.content is not None and cand.content.role == "model"

    parts = cand.content.parts
    assert len(parts) == len(raw_parts(name))
    for part, raw_part in zip(parts, raw_parts(name), strict=True):
        assert part.text == raw_part.get("text")
        assert part.thought == raw_part.get("thought")
        # Signatures stay the exact base64 text, to be echoed back verbatim.
        assert part.thought_signature_text() == raw_part.get("thoughtSignature")
        if "inlineData" in raw_part:
            assert part.inline_data is not None
            mime = raw_part["inlineData"]["mimeType"]
            assert part.inline_data.mime_type == mime
            assert part.inline_data.data == base64.b64decode(raw_part["inlineData"]["data"])
            assert part.inline_data.data.startswith(MAGIC[mime])
        else:
            assert part.inline_data is None

    usage, raw_usage = resp.usage_metadata, raw["usageMetadata"]
    assert usage is not None
    assert usage.prompt_token_count == raw_usage["promptTokenCount"]
    assert usage.candidates_token_count == raw_usage["candidatesTokenCount"]
    assert usage.total_token_count == raw_usage["totalTokenCount"]
    assert usage.thoughts_token_count == raw_usage.get("thoughtsTokenCount", 0)
    assert [(d.modality, d.token_count) for d in usage.prompt_tokens_details] == [
        (d["modality"], d["tokenCount"]) for d in raw_usage["promptTokensDetails"]
    ]
    assert usage.image_tokens() == sum(
        d["tokenCount"]
        for d in raw_usage.get("candidatesTokensDetails", [])
        if d["modality"] == "IMAGE"
    )


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_convenience_accessors(name: str) -> None:
    resp = decode_response(response_body(name))
    raw = raw_parts(name)
    images = [p for p in raw if "inlineData" in p and not p.get("thought")]
    texts = [p["text"] for p in raw if "text" in p and not p.get("thought")]
    assert [p.inline_data.mime_type for p in resp.image_parts() if p.inline_data] == [
        p["inlineData"]["mimeType"] for p in images
    ]
    assert resp.text() == ("".join(texts) if texts else None)


def test_specific_fixtures() -> None:
    otter = decode_response(response_body("gemini-3-pro-image_sea-otter_image-only.json"))
    assert otter.usage_metadata is not None
    assert otter.usage_metadata.thoughts_token_count == 179
    assert otter.usage_metadata.image_tokens() == 1120
    assert otter.text() is None
    [image] = otter.image_parts()
    assert image.inline_data is not None and image.inline_data.mime_type == "image/jpeg"
    assert image.thought_signature is not None and len(image.thought_signature) > 2_000_000

    text_only = decode_response(response_body("gemini-2.5-flash-image_text-only-no-image.json"))
    assert text_only.image_parts() == []
    assert (text_only.text() or "").startswith("In a hidden cave, a shy axolotl")
    assert text_only.usage_metadata is not None
    assert text_only.usage_metadata.image_tokens() == 0

    grounded = decode_response(
        response_body("gemini-3-pro-image-preview_google-search-grounding.json")
    )
    meta = grounded.candidates[0].grounding_metadata
    assert isinstance(meta, dict)
    assert isinstance(meta["groundingChunks"], list) and meta["groundingChunks"]
    assert grounded.usage_metadata is not None
    assert grounded.usage_metadata.thoughts_token_count == 529

    story = decode_response(
        response_body("gemini-3-pro-image-preview_story-text-and-jpeg_thought-signatures.json")
    )
    assert (story.text() or "").startswith("A little axolotl named Archie")
    assert all(p.thought_signature for p in story.candidates[0].content.parts)  # type: ignore[union-attr]


def test_decode_accepts_memoryview() -> None:
    body = response_body("vertex_gemini-2.5-flash-image_jpeg-output-options.json")
    assert decode_response(memoryview(body)) == decode_response(body)


# --- base64 variants --------------------------------------------------------------------------


def _with_data(name: str, transform: Any) -> bytes:
    raw = msgspec.json.decode(response_body(name))
    for part in raw["candidates"][0]["content"]["parts"]:
        if "inlineData" in part:
            part["inlineData"]["data"] = transform(part["inlineData"]["data"])
    return msgspec.json.encode(raw)


def _urlsafe(s: str) -> str:
    return s.replace("+", "-").replace("/", "_")


@pytest.mark.parametrize(
    "transform",
    [
        _urlsafe,
        lambda s: s.rstrip("="),
        lambda s: _urlsafe(s).rstrip("="),
    ],
    ids=["urlsafe", "unpadded", "urlsafe-unpadded"],
)
@pytest.mark.parametrize(
    "name",
    ["vertex_gemini-2.5-flash-image_jpeg-output-options.json",
     "gemini-2.5-flash-image_text-and-png.json"],
)
def test_nonstandard_base64_decodes_to_same_bytes(name: str, transform: Any) -> None:
    expected = decode_response(response_body(name))
    variant = _with_data(name, transform)
    assert variant != response_body(name)  # the variant really differs
    assert decode_response(variant) == expected


@pytest.mark.parametrize("payload", [b"\xfb\xff\xfe", b"\xfb", b"\xfb\xff", b"", b"\x00" * 7])
def test_tolerant_base64_small(payload: bytes) -> None:
    std = base64.b64encode(payload).decode()
    for text in (std, std.rstrip("="), _urlsafe(std), _urlsafe(std).rstrip("=")):
        assert b64decode_tolerant(text) == payload
        body = msgspec.json.encode(
            {"candidates": [{"content": {"parts": [
                {"inlineData": {"mimeType": "image/png", "data": text}}]}}]}
        )
        [part] = decode_response(body).candidates[0].content.parts  # type: ignore[union-attr]
        assert part.inline_data == InlineData(mime_type="image/png", data=payload)


@pytest.mark.parametrize("bad", ["@@@@", "A", "AAAAA", "AA=A", "é123"])
def test_invalid_base64_raises_decode_error_with_path(bad: str) -> None:
    with pytest.raises(ValueError):
        b64decode_tolerant(bad)
    body = msgspec.json.encode({"candidates": [{"content": {"parts": [
        {"text": "x"}, {"inlineData": {"mimeType": "image/png", "data": bad}}]}}]})
    with pytest.raises(DecodeError, match=r"candidates\[0\]\.content\.parts\[1\]\.inlineData"):
        decode_response(body)


def test_decoded_thought_signature() -> None:
    assert Part().decoded_thought_signature() is None
    assert Part(thought_signature="c2lnQQ==").decoded_thought_signature() == b"sigA"
    assert Part(thought_signature="-_-_").decoded_thought_signature() == b"\xfb\xff\xbf"
    with pytest.raises(ValueError):
        Part(thought_signature="context_engineering_is_the_way_to_go!").decoded_thought_signature()


# --- response shapes from the docs ------------------------------------------------------------

PNG_1PX = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


def test_thought_parts_are_not_final() -> None:
    body = msgspec.json.encode({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "planning", "thought": True},
        {"inlineData": {"mimeType": "image/png", "data": PNG_1PX}, "thought": True},
        {"text": "Here it is.", "thoughtSignature": "EpQB"},
        {"inlineData": {"mimeType": "image/png", "data": PNG_1PX}, "thoughtSignature": "EtAD"},
    ]}, "finishReason": "STOP", "index": 0}]})
    resp = decode_response(body)
    assert resp.text() == "Here it is."
    [image] = resp.image_parts()
    assert image.thought_signature_text() == "EtAD"
    assert image.inline_data is not None and image.inline_data.data.startswith(b"\x89PNG")


def test_unknown_fields_ignored_and_missing_defaults() -> None:
    body = msgspec.json.encode({
        "candidates": [{"content": {}, "finishReason": "IMAGE_OTHER", "avgLogprobs": -0.1,
                        "citationMetadata": {"x": 1}, "finishMessage": "Unable to show"}],
        "usageMetadata": {"promptTokenCount": 13, "serviceTier": "standard",
                          "trafficType": "ON_DEMAND", "cacheTokensDetails": []},
        "createTime": "2025-12-18T00:23:47Z", "someFutureField": {"nested": [1, 2]},
    })
    resp = decode_response(body)
    cand = resp.candidates[0]
    assert cand.content == Content() and cand.content.parts == []
    assert cand.finish_reason == "IMAGE_OTHER" and cand.finish_message == "Unable to show"
    assert resp.usage_metadata is not None and resp.usage_metadata.total_token_count == 0
    assert resp.image_parts() == [] and resp.text() is None


def test_blocked_prompt_has_no_candidates() -> None:
    resp = decode_response(
        b'{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},'
        b' "usageMetadata": {"promptTokenCount": 13, "totalTokenCount": 13}}'
    )
    assert resp.candidates == []
    assert resp.prompt_feedback is not None
    assert resp.prompt_feedback.block_reason == "PROHIBITED_CONTENT"
    assert resp.image_parts() == [] and resp.text() is None


def test_safety_ratings() -> None:
    resp = decode_response(
        b'{"candidates": [{"content": {"role": "model"}, "finishReason": "SAFETY", "safetyRatings":'
        b' [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH",'
        b' "blocked": true}]}]}'
    )
    [rating] = resp.candidates[0].safety_ratings or []
    assert (rating.category, rating.probability, rating.blocked) == (
        "HARM_CATEGORY_DANGEROUS_CONTENT", "HIGH", True)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "not valid JSON"),
        (b"<html>502 Bad Gateway</html>", "not valid JSON"),
        (b'{"candidates": [{"content": {"parts": [{"text": "trunc', "not valid JSON"),
        (b"[1, 2]", r"Expected `object`, got `array`"),
        (b'"hello"', r"Expected `object`, got `str`"),
        (b'{"candidates": {}}', r"\$\.candidates"),
        (b'{"candidates": [{"finishReason": 3}]}', r"\$\.candidates\[0\]\.finishReason"),
        (b'{"usageMetadata": {"totalTokenCount": "x"}}', r"usageMetadata\.totalTokenCount"),
    ],
)
def test_bad_bodies_raise_decode_error(body: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match) as info:
        decode_response(body)
    assert isinstance(info.value.__cause__, msgspec.MsgspecError)


def test_truncated_real_response_raises_decode_error() -> None:
    body = response_body("gemini-2.5-flash-image_text-and-png.json")
    with pytest.raises(DecodeError):
        decode_response(body[: len(body) // 2])


# --- requests ---------------------------------------------------------------------------------


def _full_request() -> GenerateContentRequest:
    return GenerateContentRequest(
        contents=[
            Content(role="user", parts=[
                Part(text="Put this mug on a desk"),
                Part(inline_data=InlineData(mime_type="image/jpeg", data=b"\xff\xd8\xff\xfb")),
                Part(file_data=FileData(mime_type="image/png", file_uri="files/abc")),
            ]),
            Content(role="model", parts=[
                Part(text="Done.", thought_signature=signature("EpQB")),
                Part(inline_data=InlineData(mime_type="image/png", data=b"\x89PNG"),
                     thought_signature=signature("EtAD")),
            ]),
        ],
        system_instruction=Content(role="user", parts=[Part(text="Be brief.")]),
        generation_config=GenerationConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=ImageConfig(aspect_ratio="16:9", image_size="2K"),
            thinking_config=ThinkingConfig(include_thoughts=True, thinking_level="HIGH"),
            candidate_count=1, seed=7, temperature=0.5, top_p=0.9, top_k=40,
            max_output_tokens=32768,
        ),
        safety_settings=[SafetySetting(category="HARM_CATEGORY_HARASSMENT",
                                       threshold="BLOCK_NONE")],
        tools=[Tool(google_search=GoogleSearch())],
    )


def test_encode_request_camel_case_and_omits_defaults() -> None:
    encoded = encode_request(_full_request())
    as_dict = msgspec.json.decode(encoded)
    for key in (b'"generationConfig"', b'"imageConfig"', b'"aspectRatio"', b'"imageSize"',
                b'"inlineData"', b'"mimeType"', b'"thoughtSignature"', b'"systemInstruction"',
                b'"responseModalities"', b'"includeThoughts"', b'"thinkingLevel"',
                b'"safetySettings"', b'"fileUri"', b'"maxOutputTokens"', b'"topP"'):
        assert key in encoded, key
    assert b"_" not in encoded.replace(b"HARM_CATEGORY_HARASSMENT", b"").replace(
        b"BLOCK_NONE", b"")
    assert as_dict["tools"] == [{"googleSearch": {}}]
    assert as_dict["contents"][0]["parts"][0] == {"text": "Put this mug on a desk"}
    assert as_dict["contents"][0]["parts"][1]["inlineData"]["data"] == "/9j/+w=="

    minimal = encode_request(GenerateContentRequest(
        contents=[Content(role="user", parts=[Part(text="a fox")])],
        generation_config=GenerationConfig(image_config=ImageConfig(aspect_ratio="1:1")),
    ))
    assert minimal == (b'{"contents":[{"role":"user","parts":[{"text":"a fox"}]}],'
                       b'"generationConfig":{"imageConfig":{"aspectRatio":"1:1"}}}')


def test_encode_request_round_trips() -> None:
    request = _full_request()
    encoded = encode_request(request)
    assert decode_request(encoded) == request
    assert msgspec.json.decode(encoded, type=GenerateContentRequest) == request


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_decode_request_accepts_recorded_requests(name: str) -> None:
    fixture = load(name)
    assert fixture["uri"].endswith(":generateContent")
    raw = fixture["request"]
    request = decode_request(msgspec.json.encode(raw))
    assert len(request.contents) == len(raw["contents"])
    assert request.contents[0].parts[0].text == raw["contents"][0]["parts"][0]["text"]
    assert request.generation_config == GenerationConfig(
        response_modalities=raw["generationConfig"].get("responseModalities"),
        image_config=ImageConfig() if "imageConfig" in raw["generationConfig"] else None,
    )
    if "systemInstruction" in raw:
        assert request.system_instruction is not None
    if "tools" in raw:
        assert request.tools == [Tool(google_search=GoogleSearch())]
    for part, raw_part in zip(request.contents[0].parts, raw["contents"][0]["parts"], strict=True):
        if "inlineData" in raw_part:
            assert part.inline_data is not None
            # This recorded request (sent by the official SDK) uses URL-safe base64.
            expected = base64.urlsafe_b64decode(raw_part["inlineData"]["data"])
            assert part.inline_data.data == expected
            assert part.inline_data.data.startswith(b"\x89PNG")


def test_decode_request_accepts_sdk_style_body() -> None:
    # The official SDK mixes camelCase and snake_case and sends URL-safe base64 (gemini-wire §7).
    body = (b'{"contents": [{"parts": [{"text": "edit"}, {"inlineData": {"data": "-_-_", '
            b'"mime_type": "image/png"}}, {"fileData": {"file_uri": "files/x", "mime_type": '
            b'"image/png"}}], "role": "user"}], "generation_config": {"responseModalities": '
            b'["IMAGE"], "thinkingConfig": {"include_thoughts": true, "thinking_level": "HIGH"}, '
            b'"image_config": {"aspect_ratio": "1:1"}}, "tools": [{"google_search": '
            b'{"search_types": {"web_search": {}}}}], "serviceTier": "standard", "store": false}')
    request = decode_request(body)
    parts = request.contents[0].parts
    assert parts[1].inline_data == InlineData(mime_type="image/png", data=b"\xfb\xff\xbf")
    assert parts[2].file_data == FileData(mime_type="image/png", file_uri="files/x")
    config = request.generation_config
    assert config == GenerationConfig(
        response_modalities=["IMAGE"],
        thinking_config=ThinkingConfig(include_thoughts=True, thinking_level="HIGH"),
        image_config=ImageConfig(aspect_ratio="1:1"),
    )
    assert request.tools == [Tool(google_search=GoogleSearch(search_types={"webSearch": {}}))]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "Expected `object`"),
        (b'{"contents": [{"parts": [{"text": 1}]}]}', r"\$\.contents\[0\]\.parts\[0\]\.text"),
        (b'{"contents": [{"parts": [{"inlineData": {"data": "@@"}}]}]}',
         r"\$\.contents\[0\]\.parts\[0\]\.inlineData\.data"),
    ],
)
def test_decode_request_errors(body: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_request(body)


def test_thought_signature_is_text_and_round_trips() -> None:
    """The ~3 MB signature decodes to its own str and echoes back verbatim."""
    name = "gemini-3-pro-image_sea-otter_image-only.json"
    body = response_body(name)
    resp = decode_response(body)
    part = resp.candidates[0].content.parts[0]  # type: ignore[union-attr]
    assert isinstance(part.thought_signature, str)
    text = part.thought_signature_text()
    assert text is not None and len(text) > 2_000_000
    assert text == raw_parts(name)[0]["thoughtSignature"]
    history = GenerateContentRequest(contents=[resp.candidates[0].content])  # type: ignore[list-item]
    echoed = msgspec.json.decode(encode_request(history))
    assert echoed["contents"][0]["parts"][0]["thoughtSignature"] == text
    assert Part().thought_signature_text() is None
    assert "thoughtSignature" not in msgspec.json.decode(encode_request(
        GenerateContentRequest(contents=[Content(parts=[Part(text="x")])])))["contents"][0]["parts"][0]


def test_non_string_thought_signature_is_a_clear_error() -> None:
    with pytest.raises(DecodeError, match=r"Expected `str \| null`, got `int`.*thoughtSignature"):
        decode_response(b'{"candidates":[{"content":{"parts":[{"thoughtSignature":5}]}}]}')
