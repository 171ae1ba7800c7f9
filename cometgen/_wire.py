"""msgspec models of Gemini ``generateContent`` requests and responses, and their codecs.

Only the fields cometgen uses are modelled; unknown fields are ignored when decoding. Field names
are snake_case in Python and lowerCamelCase on the wire (the proto3 JSON names). Enum-like fields
are plain ``str`` so new values from the API never break decoding.

Error bodies are parsed in ``_wire_errors`` and re-exported here.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from msgspec import Struct

from ._base64 import b64decode_tolerant
from ._exceptions import DecodeError
from ._wire_errors import ErrorInfo, parse_duration, parse_error_body

__all__ = [
    "NO_SIGNATURE",
    "Candidate",
    "Content",
    "ErrorInfo",
    "FileData",
    "GenerateContentRequest",
    "GenerateContentResponse",
    "GenerationConfig",
    "GoogleSearch",
    "ImageConfig",
    "InlineData",
    "ModalityTokenCount",
    "Part",
    "PromptFeedback",
    "SafetyRating",
    "SafetySetting",
    "ThinkingConfig",
    "Tool",
    "UsageMetadata",
    "decode_request",
    "decode_response",
    "encode_request",
    "parse_duration",
    "parse_error_body",
    "signature",
    "signature_text",
]


class _Wire(Struct, rename="camel", omit_defaults=True):
    """Base of every wire model."""


# --- parts and contents -----------------------------------------------------------------------


class InlineData(_Wire):
    """Bytes sent inline; ``data`` holds the decoded bytes (base64 on the wire)."""

    mime_type: str = ""
    data: bytes = b""


class FileData(_Wire):
    """A reference to a file by URI (Files API, GCS or HTTPS)."""

    mime_type: str | None = None
    file_uri: str = ""


#: The value of an absent ``thoughtSignature``.
NO_SIGNATURE: None = None


def signature(text: str) -> str:
    """A ``Part.thought_signature`` value from its base64 text (the text itself)."""
    return text


class Part(_Wire):
    """One part of a turn: text, inline bytes or a file reference, maybe a thought.

    ``thought_signature`` is the base64 text, sent back as it came in multi-turn history.
    It can be ~3 MB: decoded as its own ``str`` (one copy, in C), so no part keeps a view
    into the response body and the body is freed as soon as it is decoded.
    ``decoded_thought_signature()`` gives the bytes.
    """

    text: str | None = None
    inline_data: InlineData | None = None
    file_data: FileData | None = None
    thought: bool | None = None
    thought_signature: str | None = None

    def thought_signature_text(self) -> str | None:
        """The thought signature's base64 text, or ``None`` (same as ``thought_signature``)."""
        return self.thought_signature or None

    def decoded_thought_signature(self) -> bytes | None:
        """The thought signature as bytes, or ``None``; raises ``ValueError`` if not base64."""
        text = self.thought_signature_text()
        return None if text is None else b64decode_tolerant(text)


def signature_text(raw: msgspec.Raw | str | None) -> str | None:
    """The text of a ``thoughtSignature``: a ``str`` passes through, a raw JSON token
    (``msgspec.Raw``, as earlier versions kept it) is decoded; ``DecodeError`` if not text."""
    if raw is None or isinstance(raw, str):
        return raw or None
    if not raw:
        return None
    try:
        return _STR_DECODER.decode(raw)
    except msgspec.MsgspecError as exc:
        raise DecodeError(f"thoughtSignature is not a string: {exc}") from None


class Content(_Wire):
    """A turn: ``role`` is ``"user"`` or ``"model"``. Real responses may carry no parts."""

    role: str | None = None
    parts: list[Part] = []


# --- request ----------------------------------------------------------------------------------


class ImageConfig(_Wire):
    aspect_ratio: str | None = None
    image_size: str | None = None


class ThinkingConfig(_Wire):
    thinking_level: str | None = None
    include_thoughts: bool | None = None
    thinking_budget: int | None = None


class GenerationConfig(_Wire):
    response_modalities: list[str] | None = None
    image_config: ImageConfig | None = None
    thinking_config: ThinkingConfig | None = None
    candidate_count: int | None = None
    seed: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int | None = None


class SafetySetting(_Wire):
    category: str = ""
    threshold: str = ""


class GoogleSearch(_Wire):
    """Search grounding; ``search_types`` is e.g. ``{"webSearch": {}, "imageSearch": {}}``."""

    search_types: dict[str, Any] | None = None


class Tool(_Wire):
    google_search: GoogleSearch | None = None


class GenerateContentRequest(_Wire):
    contents: list[Content] = []
    system_instruction: Content | None = None
    generation_config: GenerationConfig | None = None
    safety_settings: list[SafetySetting] | None = None
    tools: list[Tool] | None = None
    #: "flex" | "priority"; omitted means standard (see docs/wire-notes.md).
    service_tier: str | None = None


# --- response ---------------------------------------------------------------------------------


class SafetyRating(_Wire):
    category: str | None = None
    probability: str | None = None
    blocked: bool | None = None


class Candidate(_Wire):
    content: Content | None = None
    finish_reason: str | None = None
    finish_message: str | None = None
    index: int | None = None
    safety_ratings: list[SafetyRating] | None = None
    # Kept raw: cometgen only passes grounding data through to the caller.
    grounding_metadata: dict[str, Any] | None = None


class PromptFeedback(_Wire):
    block_reason: str | None = None
    block_reason_message: str | None = None
    safety_ratings: list[SafetyRating] | None = None


class ModalityTokenCount(_Wire):
    modality: str = ""
    token_count: int = 0


class UsageMetadata(_Wire):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    total_token_count: int = 0
    thoughts_token_count: int = 0
    cached_content_token_count: int = 0
    tool_use_prompt_token_count: int = 0
    prompt_tokens_details: list[ModalityTokenCount] = []
    candidates_tokens_details: list[ModalityTokenCount] = []
    #: The tier that served the request ("standard", "flex", ...), when the answer says.
    service_tier: str | None = None

    def image_tokens(self) -> int:
        """Output tokens billed for images (``candidatesTokensDetails`` with modality IMAGE)."""
        return sum(d.token_count for d in self.candidates_tokens_details if d.modality == "IMAGE")


class GenerateContentResponse(_Wire):
    candidates: list[Candidate] = []
    prompt_feedback: PromptFeedback | None = None
    usage_metadata: UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None

    def _final_parts(self) -> list[Part]:
        if not self.candidates:
            return []
        content = self.candidates[0].content
        if content is None:
            return []
        return [p for p in content.parts if not p.thought]

    def image_parts(self) -> list[Part]:
        """Final (non-thought) image parts of the first candidate, in order."""
        return [
            p
            for p in self._final_parts()
            if p.inline_data is not None and p.inline_data.mime_type.startswith("image/")
        ]

    def text(self) -> str | None:
        """The non-thought text parts of the first candidate joined, or ``None`` if none."""
        texts = [p.text for p in self._final_parts() if p.text is not None]
        return "".join(texts) if texts else None


_ENCODER = msgspec.json.Encoder()
_RESPONSE_DECODER = msgspec.json.Decoder(GenerateContentResponse)
_ANY_DECODER = msgspec.json.Decoder()
_STR_DECODER = msgspec.json.Decoder(str)


def decode_response(body: bytes | bytearray | memoryview) -> GenerateContentResponse:
    """Decode a ``generateContent`` response body; raise ``DecodeError`` if it is not one.

    msgspec decodes the inline image data to bytes in the same pass (in C). Non-standard
    base64 (URL-safe or unpadded) is accepted through a slower fallback. Nothing decoded
    refers to ``body``: the caller may drop it at once.
    """
    try:
        return _RESPONSE_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        if "base64" not in str(exc):
            raise DecodeError(f"Unexpected generateContent response: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise DecodeError(f"Response body is not valid JSON: {exc}") from exc
    except RecursionError:
        # msgspec's depth guard, hit by deeply nested unknown fields: a hostile body.
        raise DecodeError("Response body is nested too deeply") from None
    # Rare: the generic tree, inline data pre-decoded by the tolerant decoder, then converted.
    return _convert(body, GenerateContentResponse, "response")


def encode_request(request: GenerateContentRequest) -> bytes:
    """Encode a request as compact JSON (camelCase keys, defaults omitted, standard base64)."""
    return _ENCODER.encode(request)


# --- generic decoding: accepts everything a protobuf JSON parser does -------------------------


def _camel(key: str) -> str:
    if "_" not in key:
        return key
    head, *rest = key.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _normalize(node: Any, path: str, what: str, camel: bool, parent_key: str = "") -> Any:
    """Camel-case keys (if ``camel``), pre-decode ``inlineData.data`` (any base64 flavour)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            name = _camel(key) if camel else key
            if parent_key == "inlineData" and name == "data" and isinstance(value, str):
                try:
                    out[name] = b64decode_tolerant(value)
                except ValueError as exc:
                    raise DecodeError(f"{what}: {exc} - at `{path}.{name}`") from None
            else:
                out[name] = _normalize(value, f"{path}.{name}", what, camel, name)
        return out
    if isinstance(node, list):
        return [_normalize(v, f"{path}[{i}]", what, camel, parent_key) for i, v in enumerate(node)]
    return node


_T = TypeVar("_T", bound=Struct)


#: How a bad body is described, by what it should have been.
_INVALID = {"request": "Invalid generateContent request",
            "response": "Unexpected generateContent response"}


def _convert(body: bytes | bytearray | memoryview, cls: type[_T], kind: str) -> _T:
    """Decode to the generic tree, normalize it, convert to ``cls``; ``DecodeError`` if bad."""
    what = _INVALID[kind]
    try:
        tree = _normalize(_ANY_DECODER.decode(body), "$", what, camel=kind == "request")
        return msgspec.convert(tree, cls)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"{kind.capitalize()} body is not valid JSON: {exc}") from exc
    except msgspec.ValidationError as exc:
        raise DecodeError(f"{what}: {exc}") from exc
    except RecursionError:
        raise DecodeError(f"{kind.capitalize()} body is nested too deeply") from None


def decode_request(body: bytes | memoryview) -> GenerateContentRequest:
    """Decode a ``generateContent`` request body; raise ``DecodeError`` if it is not one.

    Like Google's parser, accepts snake_case as well as camelCase field names and standard or
    URL-safe base64 with or without padding (the official SDK sends ``mime_type`` and URL-safe).
    """
    return _convert(body, GenerateContentRequest, "request")
