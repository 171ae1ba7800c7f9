"""``GenerateResult`` and ``Usage``: what one ``generate()`` call returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ._exceptions import GenerationError, ImageSafetyError, NoImageError, PromptBlockedError
from ._image import Image
from ._wire import GenerateContentResponse, UsageMetadata

#: Finish reasons meaning a safety filter withheld the output.
SAFETY_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
    }
)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts from ``usageMetadata`` (thought tokens are billed as output)."""

    prompt_tokens: int = 0
    output_tokens: int = 0
    image_tokens: int = 0
    thought_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_wire(cls, usage: UsageMetadata | None) -> Usage:
        if usage is None:
            return cls()
        return cls(
            prompt_tokens=usage.prompt_token_count,
            output_tokens=usage.candidates_token_count,
            image_tokens=usage.image_tokens(),
            thought_tokens=usage.thoughts_token_count,
            total_tokens=usage.total_token_count,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "image_tokens": self.image_tokens,
            "thought_tokens": self.thought_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class GenerateResult:
    """The outcome of one ``generate()`` call.

    ``images`` is empty when the prompt was blocked (``block_reason``) or the model gave no
    image (``finish_reason``); see ``AsyncClient(on_no_image=...)``.
    """

    images: list[Image]
    text: str | None
    finish_reason: str | None
    finish_message: str | None
    block_reason: str | None
    block_reason_message: str | None
    usage: Usage
    model: str
    model_version: str | None
    response_id: str | None
    #: HTTP attempts made (1 when the first one succeeded).
    attempts: int = 1
    #: True when a failed earlier attempt may have been generated and billed too.
    maybe_billed: bool = False
    #: Seconds from the first attempt to the decoded response.
    latency: float = 0.0
    #: The provider's request id of the successful attempt (``x-request-id`` header).
    request_id: str | None = None
    #: The HTTP response headers of the successful attempt.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: True when the answer came from an ``ImageCache`` (nothing was sent or billed).
    cached: bool = False
    response: GenerateContentResponse = field(default_factory=GenerateContentResponse, repr=False)

    @property
    def ok(self) -> bool:
        """True when at least one image came back."""
        return bool(self.images)

    @property
    def outcome(self) -> str:
        """``done``, ``blocked`` or ``no_image``."""
        if self.images:
            return "done"
        if self.block_reason or self.finish_reason in SAFETY_FINISH_REASONS:
            return "blocked"
        return "no_image"

    @classmethod
    def from_response(
        cls, response: GenerateContentResponse, *, model: str, attempts: int = 1,
        maybe_billed: bool = False, latency: float = 0.0, request_id: str | None = None,
        headers: Mapping[str, str] | None = None, cached: bool = False,
    ) -> GenerateResult:
        candidate = response.candidates[0] if response.candidates else None
        # The final parts are walked once here (image_parts() and text() would each walk
        # them again): this runs once per item.
        images: list[Image] = []
        texts: list[str] = []
        content = candidate.content if candidate is not None else None
        for p in content.parts if content is not None else ():
            if p.thought:
                continue
            if p.text is not None:
                texts.append(p.text)
            inline = p.inline_data
            if inline is not None and inline.mime_type.startswith("image/"):
                images.append(
                    Image(inline.data, inline.mime_type, thought_signature=p.thought_signature)
                )
        feedback = response.prompt_feedback
        return cls(
            images=images,
            text="".join(texts) if texts else None,
            finish_reason=candidate.finish_reason if candidate else None,
            finish_message=candidate.finish_message if candidate else None,
            block_reason=feedback.block_reason if feedback else None,
            block_reason_message=feedback.block_reason_message if feedback else None,
            usage=Usage.from_wire(response.usage_metadata),
            model=model,
            model_version=response.model_version,
            response_id=response.response_id,
            attempts=attempts,
            maybe_billed=maybe_billed,
            latency=latency,
            request_id=request_id,
            headers=headers if headers is not None else {},
            cached=cached,
            response=response,
        )


def no_image_error(result: GenerateResult) -> GenerationError:
    """The exception for a result without images."""
    if result.block_reason:
        detail = f": {result.block_reason_message}" if result.block_reason_message else ""
        return PromptBlockedError(
            f"prompt blocked ({result.block_reason}){detail}", result=result
        )
    reason = result.finish_reason or "no finish reason"
    detail = f": {result.finish_message}" if result.finish_message else ""
    if result.finish_reason in SAFETY_FINISH_REASONS:
        return ImageSafetyError(f"image withheld by a safety filter ({reason}){detail}",
                                result=result)
    if result.text and not detail:
        detail = f"; the model answered with text only: {result.text[:200]!r}"
    return NoImageError(f"no image in the response ({reason}){detail}", result=result)

