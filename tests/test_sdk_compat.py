"""The official google-genai SDK, unchanged, against the mock server; and the CLI command."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from cometgen.testing import MockServer

FLASH = "gemini-3.1-flash-image-preview"


def client(url: str) -> genai.Client:
    return genai.Client(api_key="k", http_options={"api_version": "v1beta", "base_url": url})


def image_parts(response: types.GenerateContentResponse) -> list[types.Part]:
    assert response.candidates
    content = response.candidates[0].content
    assert content is not None and content.parts
    return [p for p in content.parts if p.inline_data is not None]


def decode(data: bytes | None, fmt: str) -> tuple[int, int]:
    assert data is not None
    im = Image.open(io.BytesIO(data))
    assert im.format == fmt
    im.verify()
    return Image.open(io.BytesIO(data)).size


@pytest.mark.anyio
async def test_async_sdk_gets_a_jpeg() -> None:
    async with MockServer() as server:
        response = await client(server.url).aio.models.generate_content(
            model=FLASH,
            contents="A red fox in the snow",
            config=types.GenerateContentConfig(
                response_modalities=["TEXT", "IMAGE"],
                image_config=types.ImageConfig(aspect_ratio="16:9", image_size="2K"),
            ),
        )
    (part,) = image_parts(response)
    assert part.inline_data is not None and part.inline_data.mime_type == "image/jpeg"
    assert decode(part.inline_data.data, "JPEG") == (172, 96)
    assert part.thought_signature
    assert response.text
    assert response.usage_metadata is not None
    assert response.usage_metadata.candidates_token_count


@pytest.mark.anyio
async def test_reference_image_and_png_model() -> None:
    ref = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(ref, "PNG")
    async with MockServer() as server:
        response = await client(server.url).aio.models.generate_content(
            model="gemini-2.5-flash-image",
            contents=[
                "Make the square blue",
                types.Part.from_bytes(data=ref.getvalue() + b"\xfb\xff", mime_type="image/png"),
            ],
            config=types.GenerateContentConfig(
                response_modalities=["IMAGE"],
                image_config=types.ImageConfig(aspect_ratio="3:2"),
                thinking_config=types.ThinkingConfig(include_thoughts=True),
                safety_settings=[types.SafetySetting(
                    category=types.HarmCategory.HARM_CATEGORY_HARASSMENT,
                    threshold=types.HarmBlockThreshold.BLOCK_NONE,
                )],
            ),
        )
        assert server.stats.billed_by_prompt == {"Make the square blue": 1}
    (part,) = image_parts(response)
    assert part.inline_data is not None and part.inline_data.mime_type == "image/png"
    assert decode(part.inline_data.data, "PNG") == (78, 52)
    assert response.usage_metadata is not None
    details = response.usage_metadata.prompt_tokens_details or []
    assert any(d.token_count == 258 for d in details)


@pytest.mark.anyio
async def test_sdk_sees_block_and_429() -> None:
    async with MockServer() as server:
        sdk = client(server.url)
        blocked = await sdk.aio.models.generate_content(model=FLASH, contents="x [[mock:block]]")
        with pytest.raises(errors.ClientError) as info:
            await sdk.aio.models.generate_content(model=FLASH, contents="y [[mock:429]]")
        with pytest.raises(errors.ServerError) as server_info:
            await sdk.aio.models.generate_content(model=FLASH, contents="z [[mock:503]]")
    assert blocked.candidates is None
    assert blocked.prompt_feedback is not None
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    assert server_info.value.code == 503


def test_sync_sdk_against_threaded_server() -> None:
    with MockServer().run_in_thread() as server:
        sdk = client(server.url)  # keep a reference: the SDK closes its transport on GC
        chat = sdk.chats.create(model="gemini-3-pro-image-preview")
        first = chat.send_message("Draw a mug")
        second = chat.send_message("Now add steam")  # history carries thought signatures back
        assert server.stats.billed_total == 2
    for response in (first, second):
        (part,) = image_parts(response)
        assert part.inline_data is not None
        assert decode(part.inline_data.data, "JPEG") == (64, 64)


def test_cli_mock_server_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cometgen", "mock-server", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("cometgen mock server listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1].strip()
        sdk = client(url)
        response = sdk.models.generate_content(model=FLASH, contents="cli")
        assert image_parts(response)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
