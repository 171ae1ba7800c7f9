"""Nothing decoded keeps the response body alive: a kept ``Image``, result or chat history
holds its own bytes and text only, so each multi-MB body is freed as soon as it is decoded."""

from __future__ import annotations

import base64
import gc
import os
import sys

import msgspec
import pytest

from cometgen._chat import AsyncChat
from cometgen._result import GenerateResult
from cometgen._wire import decode_response

SIGNATURE = base64.b64encode(os.urandom(60_000)).decode()
PIXELS = b"\x89PNG\r\n\x1a\n" + os.urandom(20_000)


def _body() -> bytes:
    return msgspec.json.encode({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "x" * 2_000_000},  # most of the body: what a pinned body would keep alive
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PIXELS).decode()},
         "thoughtSignature": SIGNATURE},
    ]}, "finishReason": "STOP"}]})


def test_neither_the_result_nor_its_images_hold_the_body() -> None:
    body = _body()
    result = GenerateResult.from_response(decode_response(body), model="m")
    gc.collect()
    assert sys.getrefcount(body) == 2  # `body` and getrefcount's argument: nothing else
    images = result.images
    assert images[0].data == PIXELS
    assert images[0].thought_signature == SIGNATURE


def test_reusing_a_bytearray_body_does_not_change_the_image() -> None:
    body = bytearray(_body())
    [image] = GenerateResult.from_response(decode_response(body), model="m").images
    body[:] = b" " * len(body)  # the transport's buffer, reused or freed
    assert image.thought_signature == SIGNATURE
    assert image.data == PIXELS


class _OneAnswer:
    """A chat's client that answers every turn with the same decoded body."""

    on_no_image = "return"

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def generate_from_request(self, request: object, **_: object) -> GenerateResult:
        return GenerateResult.from_response(decode_response(self.body), model="m")


@pytest.mark.anyio
async def test_chat_history_releases_the_bodies() -> None:
    sender = _OneAnswer(_body())
    chat = AsyncChat(sender, model="m", aspect_ratio=None, image_size=None,  # type: ignore[arg-type]
                     include_text=True)
    result = await chat.send("a fox")
    ok = result.ok  # not `assert result.ok`: pytest's rewritten assert would keep `result`
    del result
    assert ok
    gc.collect()
    refs = sys.getrefcount(sender.body)  # outside the assert: rewriting would add a reference
    assert refs == 2  # `sender.body` and getrefcount's argument: the history holds none
    [signed] = [p for p in chat.history[1].parts if p.thought_signature]
    assert signed.thought_signature_text() == SIGNATURE
