"""The Gemini ``generateContent`` wire models, for ``AsyncClient.generate_content``.

msgspec Structs named after the API's objects; field names are snake_case in Python and
camelCase on the wire.
"""

from ._wire import (
    Candidate,
    Content,
    FileData,
    GenerateContentRequest,
    GenerateContentResponse,
    GenerationConfig,
    GoogleSearch,
    ImageConfig,
    InlineData,
    ModalityTokenCount,
    Part,
    PromptFeedback,
    SafetyRating,
    SafetySetting,
    ThinkingConfig,
    Tool,
    UsageMetadata,
    decode_request,
    decode_response,
    encode_request,
    signature,
)

__all__ = [
    "Candidate",
    "Content",
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
    "signature",
]
