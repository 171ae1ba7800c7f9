"""AiohttpTransport: which phase a failure happened in decides whether it may have been sent.

A failure before a connection was obtained (pool wait, connect) is safely retryable; from
the moment a connection is handed over, the provider may have received (and billed) the
request, so the failure must be classed as ambiguous.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import pytest

from cometgen import _transport
from cometgen._exceptions import (
    ConnectError,
    ConnectionDroppedError,
    ConnectTimeout,
    PoolTimeout,
    ReadTimeout,
    TransportError,
)
from cometgen._transport import AiohttpTransport
from cometgen.testing import MockServer

pytestmark = pytest.mark.anyio

HEADERS = {"Content-Type": "application/json"}


def _transport_for(**kwargs: Any) -> AiohttpTransport:
    options: dict[str, Any] = {
        "max_connections": 4, "connect_timeout": None, "pool_timeout": None,
        "total_timeout": 10.0,
    }
    options.update(kwargs)
    return AiohttpTransport(**options)


@asynccontextmanager
async def _raw_server(mode: str) -> AsyncIterator[str]:
    """A server that reads one request, then hangs (``hang``) or closes (``drop``)."""
    hang = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if mode == "drop":
            writer.close()
            return
        await hang.wait()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        hang.set()
        server.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _not_sent(exc: TransportError) -> bool:
    return exc.delivery == "not_sent"


async def test_success_and_no_phase_left_behind() -> None:
    async with MockServer() as server:
        transport = _transport_for()
        try:
            raw = await transport.post(
                f"{server.url}/v1beta/models/gemini-2.5-flash-image:generateContent",
                {**HEADERS, "Authorization": "Bearer k"},
                b'{"contents":[{"role":"user","parts":[{"text":"a fox"}]}]}',
            )
        finally:
            await transport.aclose()
    assert raw.status == 200 and raw.body
    assert _transport._current_phase.get() is None


async def test_refused_connection_is_not_sent() -> None:
    transport = _transport_for()
    try:
        with pytest.raises(ConnectError) as info:
            await transport.post(f"http://127.0.0.1:{_closed_port()}/v1", HEADERS, b"{}")
    finally:
        await transport.aclose()
    assert _not_sent(info.value)


@contextmanager
def _unanswered_port() -> Iterator[int]:
    """A local port whose connects hang: its listen queue is full and nobody accepts.

    Linux drops the SYNs of a listener whose accept queue is full, so the client keeps
    retrying the handshake: a real hanging connect, without touching aiohttp.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(3):  # fill the accept queue
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        time.sleep(0.05)
        yield port


async def test_hanging_connect_is_a_connect_timeout() -> None:
    transport = _transport_for(total_timeout=0.3)
    try:
        with _unanswered_port() as port:
            with pytest.raises(ConnectTimeout) as info:
                await transport.post(f"http://127.0.0.1:{port}/v1", HEADERS, b"{}")
    finally:
        await transport.aclose()
    assert _not_sent(info.value)


@pytest.mark.parametrize("pool_timeout", [0.2, None])
async def test_waiting_for_a_pooled_connection_is_not_sent(pool_timeout: float | None) -> None:
    """Timed out in the pool wait, by ``pool_timeout`` or by the attempt's own timeout."""
    async with _raw_server("hang") as url:
        transport = _transport_for(max_connections=1, pool_timeout=pool_timeout,
                                   total_timeout=0.3)
        try:
            async with anyio.create_task_group() as tg:
                # Holds the only connection until cancelled.
                tg.start_soon(lambda: transport.post(url, HEADERS, b"{}", timeout=None))
                await anyio.sleep(0.1)
                with pytest.raises(PoolTimeout) as info:
                    await transport.post(url, HEADERS, b"{}")
                tg.cancel_scope.cancel()
        finally:
            await transport.aclose()
    assert _not_sent(info.value)


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [("hang", ReadTimeout), ("drop", ConnectionDroppedError)],
    ids=["no-answer-read-timeout", "dropped-after-sending"],
)
async def test_failure_after_sending_is_ambiguous(behaviour: str,
                                                  error: type[TransportError]) -> None:
    async with _raw_server(behaviour) as url:
        transport = _transport_for(total_timeout=0.3)
        try:
            with pytest.raises(error) as info:
                await transport.post(url, HEADERS, b"{}")
        finally:
            await transport.aclose()
    assert info.value.delivery == "ambiguous"


async def test_a_burst_opens_at_most_two_connections_per_loop_iteration() -> None:
    from collections import Counter

    from _loop_iterations import LoopIterations

    from cometgen._config import CONNECTS_PER_ITERATION

    async with MockServer() as server:
        transport = _transport_for(max_connections=16)
        gate = transport._open().connector._connect_gate  # type: ignore[union-attr]
        opened: list[int] = []
        real_wait = gate.wait
        try:
            with LoopIterations() as iterations:

                async def recording_wait() -> None:
                    await real_wait()
                    opened.append(iterations.count)

                gate.wait = recording_wait  # type: ignore[method-assign]
                async with anyio.create_task_group() as tg:
                    for i in range(16):
                        tg.start_soon(
                            transport.post,
                            f"{server.url}/v1beta/models/gemini-2.5-flash-image:generateContent",
                            {**HEADERS, "Authorization": "Bearer k"},
                            b'{"contents":[{"role":"user","parts":[{"text":"fox %d"}]}]}' % i,
                        )
        finally:
            await transport.aclose()
    assert len(opened) == 16  # one new connection per concurrent request
    assert max(Counter(opened).values()) <= CONNECTS_PER_ITERATION
    assert len(set(opened)) >= 16 // CONNECTS_PER_ITERATION
