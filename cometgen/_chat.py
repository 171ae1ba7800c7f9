"""Multi-turn image editing: every turn resends the whole history, model turns verbatim."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from . import _wire as wire
from ._config import OnNoImage
from ._request import ImageInput, build_request, image_part
from ._result import GenerateResult, no_image_error


class _Sender(Protocol):
    """What a chat needs of its client (``AsyncClient``); a protocol, so that ``_chat`` does
    not import ``_client``, which imports it."""

    @property
    def on_no_image(self) -> OnNoImage: ...

    async def generate_from_request(
        self,
        request: wire.GenerateContentRequest,
        *,
        model: str,
        timeout: float | None,
        on_no_image: OnNoImage,
    ) -> GenerateResult: ...


class AsyncChat:
    """A conversation with an image model, from ``client.chat(model=...)``.

    The model's previous turn is sent back exactly as received, every part and
    ``thoughtSignature`` included, as Gemini 3 image models require. Blocked or empty
    replies are not added to the history, so the next turn can rephrase.
    """

    def __init__(
        self,
        client: _Sender,
        *,
        model: str,
        aspect_ratio: str | None,
        image_size: str | None,
        include_text: bool,
    ) -> None:
        self._client = client
        self.model = model
        self.aspect_ratio = aspect_ratio
        self.image_size = image_size
        self.include_text = include_text
        #: The conversation so far, as wire ``Content`` turns.
        self.history: list[wire.Content] = []

    async def send(
        self,
        prompt: str,
        *,
        images: Sequence[ImageInput] = (),
        aspect_ratio: str | None = None,
        image_size: str | None = None,
        timeout: float | None = None,
    ) -> GenerateResult:
        """Send the next user turn; returns the model's result (raising like ``generate``)."""
        parts = [wire.Part(text=prompt)]
        for ref in images:
            parts.append(await image_part(ref))
        user_turn = wire.Content(role="user", parts=parts)
        request = build_request(
            [*self.history, user_turn],
            aspect_ratio=aspect_ratio or self.aspect_ratio,
            image_size=image_size or self.image_size,
            include_text=self.include_text,
        )
        result = await self._client.generate_from_request(
            request, model=self.model, timeout=timeout, on_no_image="return"
        )
        candidate = result.response.candidates[0] if result.response.candidates else None
        if result.ok and candidate is not None and candidate.content is not None:
            model_turn = wire.Content(role=candidate.content.role or "model",
                                      parts=candidate.content.parts)
            self.history.extend([user_turn, model_turn])
        if not result.ok and self._client.on_no_image == "raise":
            raise no_image_error(result)
        return result
