"""Request parsing the way Google's JSON front end does it.

Keys may be camelCase or snake_case, bytes standard or URL-safe base64 with or without
padding; unknown fields, bad enums and bad image options are 400 INVALID_ARGUMENT.
"""

from __future__ import annotations

import binascii
import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Union

import msgspec

from .._models import SERVICE_TIERS, ModelSpec, check_spec_options
from ._errors import MockHTTPError, field_error, invalid_argument

# A schema maps camelCase field names to: None (scalar or free-form, not walked),
# a nested schema (message), or a one-element list holding one (repeated message).
_Schema = dict[str, Union["_Schema", list["_Schema"], None]]

_BLOB: _Schema = {"mimeType": None, "data": None}
_FILE_DATA: _Schema = {"mimeType": None, "fileUri": None}
_PART: _Schema = {
    "text": None, "inlineData": _BLOB, "fileData": _FILE_DATA, "functionCall": None,
    "functionResponse": None, "executableCode": None, "codeExecutionResult": None,
    "toolCall": None, "toolResponse": None, "thought": None, "thoughtSignature": None,
    "partMetadata": None, "videoMetadata": None, "mediaResolution": None,
}
_CONTENT: _Schema = {"role": None, "parts": [_PART]}
_IMAGE_CONFIG: _Schema = {"aspectRatio": None, "imageSize": None}
_THINKING: _Schema = {"includeThoughts": None, "thinkingBudget": None, "thinkingLevel": None}
_GENERATION_CONFIG: _Schema = {
    "stopSequences": None, "responseMimeType": None, "responseSchema": None,
    "responseJsonSchema": None, "candidateCount": None, "maxOutputTokens": None,
    "temperature": None, "topP": None, "topK": None, "seed": None, "presencePenalty": None,
    "frequencyPenalty": None, "responseLogprobs": None, "logprobs": None,
    "enableEnhancedCivicAnswers": None, "speechConfig": None, "thinkingConfig": _THINKING,
    "imageConfig": _IMAGE_CONFIG, "mediaResolution": None, "responseModalities": None,
    "routingConfig": None, "modelConfig": None, "audioTimestamp": None,
}
_SEARCH_TYPES: _Schema = {"webSearch": None, "imageSearch": None}
_GOOGLE_SEARCH: _Schema = {
    "searchTypes": _SEARCH_TYPES, "timeRangeFilter": None, "excludeDomains": None,
}
_TOOL: _Schema = {
    "functionDeclarations": None, "googleSearchRetrieval": None, "codeExecution": None,
    "googleSearch": _GOOGLE_SEARCH, "urlContext": None, "computerUse": None,
    "fileSearch": None, "googleMaps": None, "mcpServers": None,
}
_SAFETY_SETTING: _Schema = {"category": None, "threshold": None}
_REQUEST: _Schema = {
    "model": None, "contents": [_CONTENT], "systemInstruction": _CONTENT, "tools": [_TOOL],
    "safetySettings": [_SAFETY_SETTING], "generationConfig": _GENERATION_CONFIG,
    # Accepted and ignored: the SDK may send these.
    "toolConfig": None, "cachedContent": None, "store": None, "serviceTier": None,
    "labels": None, "continuationToken": None,
}

INPUT_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")
MODALITIES = ("TEXT", "IMAGE", "AUDIO")
_DATA_KEYS = (
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult", "toolCall", "toolResponse",
)
_SNAKE = re.compile(r"_([a-z0-9])")
_CAMEL = re.compile(r"([A-Z])")
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_decode_json = msgspec.json.Decoder().decode


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What the mock needs from a valid request."""

    prompt: str
    user_texts: list[str]
    text_chars: int
    input_images: int
    aspect_ratio: str | None
    image_size: str | None
    want_text: bool
    want_image: bool
    include_thoughts: bool
    seed: int | None = None
    #: The top-level ``serviceTier`` (lowercase), "standard" when absent.
    service_tier: str = "standard"


# Cached: the same few dozen field names arrive in every request.
@functools.lru_cache(maxsize=1024)
def _camel(key: str) -> str:
    return _SNAKE.sub(lambda m: m.group(1).upper(), key) if "_" in key else key


@functools.lru_cache(maxsize=1024)
def _snake(key: str) -> str:
    return _CAMEL.sub(lambda m: "_" + m.group(1).lower(), key)


def _short(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def _walk(obj: Any, schema: _Schema, path: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise invalid_argument(f"Invalid value at '{path or 'request'}' (message), {_short(obj)}")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = _camel(key)
        if name not in schema:
            where = f" at '{path}'" if path else ""
            raise invalid_argument(
                f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.'
            )
        if value is None:
            continue
        sub = schema[name]
        child = f"{path}.{_snake(name)}" if path else _snake(name)
        if sub is None:
            out[name] = value
        elif isinstance(sub, list):
            if not isinstance(value, list):
                value = [value]  # proto JSON accepts a bare message for a repeated field
            out[name] = [_walk(v, sub[0], f"{child}[{i}]") for i, v in enumerate(value)]
        else:
            out[name] = _walk(value, sub, child)
    return out


def _check_bytes(value: Any, path: str) -> int:
    """Decoded length of a proto ``bytes`` value in any base64 dialect, else 400."""
    try:
        raw = value.encode("ascii").translate(_URLSAFE).rstrip(b"=")
        if len(raw) % 4 == 1:
            raise ValueError
        return len(binascii.a2b_base64(raw + b"=" * (-len(raw) % 4), strict_mode=True))
    except (AttributeError, UnicodeEncodeError, ValueError, binascii.Error):
        raise invalid_argument(
            f"Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for {_short(value)}"
        ) from None


def _check_part(part: dict[str, Any], path: str) -> int:
    """Validate one part; returns the number of input images it carries."""
    if not any(k in part for k in _DATA_KEYS):
        raise field_error(
            f"{path}.data", "required oneof field 'data' must have one initialized field"
        )
    if "text" in part and not isinstance(part["text"], str):
        raise invalid_argument(
            f"Invalid value at '{path}.text' (TYPE_STRING), {_short(part['text'])}"
        )
    if "thoughtSignature" in part:
        _check_bytes(part["thoughtSignature"], f"{path}.thought_signature")
    images = 0
    for key, field in (("inlineData", "inline_data"), ("fileData", "file_data")):
        blob = part.get(key)
        if blob is None:
            continue
        mime = blob.get("mimeType")
        if not mime:
            raise field_error(f"{path}.{field}.mime_type", "mime_type is required.")
        if "/" not in str(mime):
            raise invalid_argument(f"Unsupported MIME type: {mime}")
        if mime not in INPUT_IMAGE_TYPES:
            raise field_error(
                f"{path}.{field}.mime_type",
                "MIME type must be image/png, image/jpeg, image/webp, image/heic, or image/heif.",
            )
        if key == "inlineData":
            if "data" not in blob:
                raise field_error(f"{path}.inline_data.data", "data is required.")
            _check_bytes(blob["data"], f"{path}.inline_data.data")
        elif not blob.get("fileUri"):
            raise field_error(f"{path}.file_data.file_uri", "file_uri is required.")
        images += 1
    return images


def _ratio_key(ratio: str) -> tuple[int, int]:
    a, _, b = ratio.partition(":")
    return int(a), int(b)


def _one_of(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + f", or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def parse_request(body: bytes, model: str, spec: ModelSpec) -> ParsedRequest:
    """Decode and validate a generateContent body; raises MockHTTPError (400) when invalid."""
    try:
        data = _decode_json(body)
    except msgspec.DecodeError:
        raise invalid_argument("Invalid JSON payload received. Unexpected token.") from None
    if not isinstance(data, dict):
        raise invalid_argument(
            'Invalid JSON payload received. Unknown name "": Root element must be a message.'
        )
    req = _walk(data, _REQUEST, "")
    contents = req.get("contents") or []
    if not contents:
        raise field_error("contents", "contents is not specified")

    user_texts: list[str] = []
    text_chars = images = 0
    for i, content in enumerate(contents):
        role = content.get("role", "")
        if role not in ("", "user", "model"):
            raise invalid_argument("Please use a valid role: user, model.")
        parts = content.get("parts") or []
        if not parts:
            raise field_error(f"contents[{i}].parts", "contents.parts must not be empty.")
        for j, part in enumerate(parts):
            images += _check_part(part, f"contents[{i}].parts[{j}]")
            text = part.get("text")
            if text is not None:
                text_chars += len(text)
                if role != "model" and not part.get("thought"):
                    user_texts.append(text)
    system = req.get("systemInstruction")
    if system is not None:
        for j, part in enumerate(system.get("parts") or []):
            _check_part(part, f"system_instruction.parts[{j}]")
            text_chars += len(part.get("text") or "")

    for i, tool in enumerate(req.get("tools") or []):
        if "googleSearch" in tool and not spec.supports_search:
            raise field_error(f"tools[{i}].google_search", "Search Grounding is not supported.")

    config = req.get("generationConfig") or {}
    modalities = config.get("responseModalities")
    if modalities is None:
        modalities = ["TEXT", "IMAGE"]
    if not isinstance(modalities, list):
        modalities = [modalities]
    for k, modality in enumerate(modalities):
        if modality not in MODALITIES:
            raise invalid_argument(
                f"Invalid value at 'generation_config.response_modalities[{k}]' "
                "(type.googleapis.com/google.ai.generativelanguage.v1beta.GenerationConfig."
                f"Modality), {_short(modality)}"
            )
    if "AUDIO" in modalities:
        raise field_error(
            "generation_config.response_modalities",
            "AUDIO is not supported by this model.",
        )
    candidates = config.get("candidateCount", 1)
    if isinstance(candidates, int) and candidates > 1:
        raise invalid_argument(f"Multiple candidates is not enabled for models/{model}")

    image_config = config.get("imageConfig") or {}
    aspect = image_config.get("aspectRatio") or None
    size = image_config.get("imageSize") or None
    problem = check_spec_options(spec, model, aspect, size)
    if problem is not None:
        field = problem[0]
        path = f"generation_config.image_config.{field}"
        if field == "aspect_ratio":
            allowed = tuple(sorted(spec.aspect_ratios, key=_ratio_key))
            raise field_error(path, f"aspect_ratio must be one of {_one_of(allowed)}.")
        if not spec.image_sizes:
            raise field_error(path, "image_size is not supported for this model.")
        raise field_error(path, f"image_size must be one of {_one_of(spec.image_sizes)}.")

    thinking = config.get("thinkingConfig") or {}
    tier = req.get("serviceTier", "standard")
    # Value spelling: lowercase as in real responses' usageMetadata.serviceTier; the SDK's
    # enum names (upper case) are accepted too. Google's exact error text is not known.
    if not isinstance(tier, str) or tier.lower() not in (*SERVICE_TIERS, "unspecified"):
        raise invalid_argument(f"Invalid value at 'service_tier', {_short(tier)}")
    return ParsedRequest(
        prompt=user_texts[0] if user_texts else "",
        user_texts=user_texts,
        text_chars=text_chars,
        input_images=images,
        aspect_ratio=aspect,
        image_size=size,
        want_text="TEXT" in modalities or not modalities,
        want_image="IMAGE" in modalities,
        include_thoughts=bool(thinking.get("includeThoughts")),
        seed=seed if isinstance(seed := config.get("seed"), int) else None,
        service_tier="standard" if tier.lower() == "unspecified" else tier.lower(),
    )


def prompt_tokens(parsed: ParsedRequest) -> tuple[int, int]:
    """(text tokens, image tokens) for usageMetadata: ~4 chars a token, 258 per image."""
    return max(1, math.ceil(parsed.text_chars / 4)), 258 * parsed.input_images


__all__ = ["MockHTTPError", "ParsedRequest", "parse_request", "prompt_tokens"]
