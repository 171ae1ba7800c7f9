"""AiohttpTransport reads large answers into one buffer; every framing still yields the body.

A large 200 answer is read chunk by chunk into one ``bytearray`` (preallocated with a plain
Content-Length, grown for gzip and chunked framing, where the size is unknown); error
statuses take aiohttp's own ``read()``. The body must come out byte-identical either way,
and a short body must be a dropped connection.
"""

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
from cometgen._exceptions import ConnectionDroppedError
from cometgen._pacing import BodyPacer
from cometgen._transport import AiohttpTransport

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


async def _post(url: str) -> tuple[int, bytes | bytearray]:
    transport = AiohttpTransport(
        max_connections=2, connect_timeout=None, pool_timeout=None, total_timeout=30.0
    )
    try:
        raw = await transport.post(url, {"Content-Type": "application/json"}, b"{}")
        return raw.status, raw.body
    finally:
        await transport.aclose()


@pytest.mark.parametrize("body", [PRO, FLASH], ids=["pro-4MB", "flash-2MB"])
@pytest.mark.parametrize("framing", ["length", "gzip", "chunked"])
async def test_every_framing_yields_the_same_body(body: bytes, framing: str) -> None:
    async with _serve(body, framing) as url:
        status, got = await _post(url)
    assert status == 200
    assert got == body
    # Every large 200 answer is read into the client's own buffer (preallocated when the
    # size is known, grown otherwise), never through aiohttp's double-joining read().
    assert isinstance(got, bytearray)


async def test_owned_buffer_decodes_like_bytes() -> None:
    async with _serve(PRO, "length") as url:
        _, got = await _post(url)
    assert isinstance(got, bytearray)
    from_buffer = _wire.decode_response(got)
    from_bytes = _wire.decode_response(PRO)
    parts = from_buffer.candidates[0].content.parts  # type: ignore[union-attr]
    expected = from_bytes.candidates[0].content.parts  # type: ignore[union-attr]
    assert [p.inline_data.data for p in parts if p.inline_data] == [
        p.inline_data.data for p in expected if p.inline_data
    ]
    assert [_wire.signature_text(p.thought_signature) for p in parts] == [
        _wire.signature_text(p.thought_signature) for p in expected
    ]
    assert from_buffer.usage_metadata == from_bytes.usage_metadata


async def test_large_error_body_stays_bytes() -> None:
    async with _serve(FLASH, "length", status=500) as url:
        status, got = await _post(url)
    assert (status, type(got)) == (500, bytes)
    assert got == FLASH


@pytest.mark.parametrize("framing", ["truncated", "chunked-truncated"])
async def test_short_large_body_is_a_dropped_connection(framing: str) -> None:
    async with _serve(PRO, framing) as url:
        with pytest.raises(ConnectionDroppedError) as info:
            await _post(url)
    assert info.value.delivery != "not_sent"


@pytest.mark.parametrize("framing", ["length", "headers-first", "gzip", "chunked"])
async def test_concurrent_large_bodies_waiting_for_a_reader_slot_all_complete(
    framing: str,
) -> None:
    # One reader slot: the other answers are paused on arrival and resumed in turn; a
    # resume that went missing would hang here instead of completing.
    transport = AiohttpTransport(
        max_connections=8, connect_timeout=None, pool_timeout=None, total_timeout=30.0,
        pacer=BodyPacer(readers=1, patience=30.0),
    )
    try:
        async with _serve(FLASH, framing) as url:
            results: list[bytes | bytearray] = []

            async def one() -> None:
                raw = await transport.post(url, {"Content-Type": "application/json"}, b"{}")
                results.append(raw.body)

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for _ in range(8):
                        tg.start_soon(one)
    finally:
        await transport.aclose()
    assert len(results) == 8
    assert all(body == FLASH for body in results)
    # A chunked answer still arriving is paced like a large one: its size is unknown.
    assert transport.pacer.large_reads == 8
    assert transport.pacer.impatient_reads == 0


@pytest.mark.parametrize("framing", ["length", "chunked", "gzip"])
async def test_small_answers_in_every_framing(framing: str) -> None:
    small = _body("gemini-2.5-flash-image_text-only-no-image.json")
    async with _serve(small, framing) as url:
        status, got = await _post(url)
    assert (status, bytes(got)) == (200, small)
