"""``MockTransport``: answer a client's requests in process, no sockets (httpx's model)::

    def handler(request: cometgen.TransportRequest) -> cometgen.TransportResponse:
        return image_response()

    client = cometgen.AsyncClient(api_key="k", transport=MockTransport(handler))
"""

from __future__ import annotations

import base64
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from .._transport import TransportRequest, TransportResponse
from ._images import make_png

__all__ = ["Handler", "MockTransport", "error_response", "image_response"]

#: Sync or async; may raise a ``cometgen.TransportError`` to simulate a network failure.
Handler = Callable[[TransportRequest], TransportResponse | Awaitable[TransportResponse]]

_JSON = {"Content-Type": "application/json"}


class MockTransport:
    """An ``AsyncTransport`` that hands every request to ``handler`` and returns its answer.

    ``requests`` keeps every request sent, in order, for assertions.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[TransportRequest] = []
        self.closed = False

    async def send(self, request: TransportRequest) -> TransportResponse:
        if self.closed:
            raise RuntimeError("MockTransport is closed")
        self.requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if not isinstance(answer, TransportResponse):
            raise TypeError(f"the MockTransport handler returned {type(answer).__name__}, "
                            "not a cometgen.TransportResponse")
        return answer

    async def aclose(self) -> None:
        self.closed = True


def image_response(
    *, width: int = 64, height: int = 64, text: str | None = None, images: int = 1
) -> TransportResponse:
    """A 200 ``generateContent`` answer with ``images`` PNG(s) and an optional text part."""
    png = base64.b64encode(make_png(width, height)).decode()
    parts: list[dict[str, Any]] = [] if text is None else [{"text": text}]
    parts += [{"inlineData": {"mimeType": "image/png", "data": png}}] * images
    body = {
        "candidates": [{"content": {"role": "model", "parts": parts},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 1290 * images,
                          "totalTokenCount": 8 + 1290 * images},
        "modelVersion": "gemini-2.5-flash-image",
    }
    return TransportResponse(200, _JSON, msgspec.json.encode(body))


def error_response(status: int, message: str = "error", *, status_name: str = "UNKNOWN",
                   headers: dict[str, str] | None = None) -> TransportResponse:
    """An error answer in Google's envelope (``{"error": {code, message, status}}``)."""
    body = {"error": {"code": status, "message": message, "status": status_name}}
    return TransportResponse(status, {**_JSON, **(headers or {})}, msgspec.json.encode(body))
