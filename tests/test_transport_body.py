"""AiohttpTransport: every framing (length, gzip, chunked) yields the body byte for byte,
and a short body is a dropped connection (maybe sent), never a short success."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from cometgen import _wire
from cometgen._config import Timeouts
from cometgen._exceptions import ConnectionDroppedError
from cometgen._transport import AiohttpTransport, TransportRequest

pytestmark = pytest.mark.anyio

RECORDED = Path(__file__).parent / "fixtures" / "recorded"


def _body(name: str) -> bytes:
    data = json.loads((RECORDED / name).read_text(encoding="utf-8"))
    return json.dumps(data["response"], separators=(",", ":")).encode()


PRO = _body("gemini-3-pro-image_sea-otter_image-only.json")
FLASH = _body("gemini-2.5-flash-image_text-and-png.json")


@asynccontextmanager
async def _serve(body: bytes, framing: str, status: int = 200) -> AsyncIterator[str]:
    """Answer every request with ``body``, framed as asked, in small writes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        headers = [f"HTTP/1.1 {status} X", "Content-Type: application/json"]
        payload = body
        if framing == "gzip":
            payload = gzip.compress(body, compresslevel=1)
            headers.append("Content-Encoding: gzip")
        if framing.startswith("chunked"):
            headers.append("Transfer-Encoding: chunked")
            writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
            truncated = framing == "chunked-truncated"
            if truncated:
                payload = payload[: len(payload) // 2]
            for start in range(0, len(payload), 100_000):
                piece = payload[start : start + 100_000]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            if not truncated:
                writer.write(b"0\r\n\r\n")
        else:
            headers.append(f"Content-Length: {len(payload)}")
            writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
            if framing == "headers-first":
                await writer.drain()
                await asyncio.sleep(0.05)  # the client has the headers and no body yet
            if framing == "truncated":
                payload = payload[: len(payload) // 2]
            for start in range(0, len(payload), 100_000):
                writer.write(payload[start : start + 100_000])
                await writer.drain()
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1beta/models/m:generateContent"
    finally:
        server.close()


def _request(url: str) -> TransportRequest:
    return TransportRequest("POST", url, {"Content-Type": "application/json"}, b"{}",
                            Timeouts(total=30.0))


async def _post(url: str) -> tuple[int, bytes]:
    transport = AiohttpTransport(max_connections=2)
    try:
        raw = await transport.send(_request(url))
        return raw.status, raw.body
    finally:
        await transport.aclose()


@pytest.mark.parametrize("body", [PRO, FLASH], ids=["pro-4MB", "flash-2MB"])
@pytest.mark.parametrize("framing", ["length", "headers-first", "gzip", "chunked"])
async def test_every_framing_yields_the_same_body(body: bytes, framing: str) -> None:
    async with _serve(body, framing) as url:
        status, got = await _post(url)
    assert status == 200
    assert got == body
    assert _wire.decode_response(got).candidates


async def test_error_body_is_returned_whole() -> None:
    async with _serve(FLASH, "length", status=500) as url:
        status, got = await _post(url)
    assert (status, got) == (500, FLASH)


@pytest.mark.parametrize("framing", ["truncated", "chunked-truncated"])
async def test_short_body_is_a_dropped_connection(framing: str) -> None:
    async with _serve(PRO, framing) as url:
        with pytest.raises(ConnectionDroppedError) as info:
            await _post(url)
    assert info.value.delivery == "ambiguous"


@pytest.mark.parametrize("framing", ["length", "chunked", "gzip"])
async def test_concurrent_answers_all_complete(framing: str) -> None:
    transport = AiohttpTransport(max_connections=8)
    try:
        async with _serve(FLASH, framing) as url:
            results: list[bytes] = []

            async def one() -> None:
                results.append((await transport.send(_request(url))).body)

            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(one)
    finally:
        await transport.aclose()
    assert results == [FLASH] * 8
    assert transport.acquired_connections == 0


@pytest.mark.parametrize("framing", ["length", "chunked", "gzip"])
async def test_small_answers_in_every_framing(framing: str) -> None:
    small = _body("gemini-2.5-flash-image_text-only-no-image.json")
    async with _serve(small, framing) as url:
        status, got = await _post(url)
    assert (status, got) == (200, small)
