"""AiohttpTransport over real sockets: which phase a failure happened in decides whether it
may have been sent, and every timeout field bounds its own phase.

A failure before a connection is held (pool wait, connect) is safely retryable; from the
moment a connection is held, the provider may have received (and billed) the request, so
the failure must be classed as ambiguous.
"""

from __future__ import annotations

import time

import anyio
import pytest
from _sockets import closed_port, raw_server, unanswered_port

from cometgen._config import Timeouts
from cometgen._exceptions import (
    ConnectError,
    ConnectionDroppedError,
    ConnectTimeout,
    PoolTimeout,
    ReadTimeout,
    TransportError,
)
from cometgen._transport import AiohttpTransport, TransportRequest
from cometgen.testing import MockServer

pytestmark = pytest.mark.anyio

HEADERS = {"Content-Type": "application/json"}
GOOD_BODY = b'{"contents":[{"role":"user","parts":[{"text":"a fox"}]}]}'
NO_LIMITS = Timeouts(connect=None, pool=None, total=None)


def _req(url: str, timeouts: Timeouts = NO_LIMITS, body: bytes = b"{}") -> TransportRequest:
    return TransportRequest("POST", url, {**HEADERS, "Authorization": "Bearer k"}, body,
                            timeouts)


async def test_success_and_no_connection_left_held() -> None:
    async with MockServer() as server:
        transport = AiohttpTransport(max_connections=4)
        try:
            url = f"{server.url}/v1beta/models/gemini-2.5-flash-image:generateContent"
            raw = await transport.send(_req(url, body=GOOD_BODY))
            again = await transport.send(_req(url, body=GOOD_BODY))  # a reused connection
        finally:
            await transport.aclose()
    assert raw.status == again.status == 200 and raw.body
    assert raw.headers.get("content-type", "").startswith("application/json")
    assert transport.acquired_connections == 0


async def test_refused_connection_is_not_sent() -> None:
    transport = AiohttpTransport()
    try:
        with pytest.raises(ConnectError) as info:
            await transport.send(_req(f"http://127.0.0.1:{closed_port()}/v1"))
    finally:
        await transport.aclose()
    assert info.value.delivery == "not_sent"
    assert info.value.__cause__ is not None  # translated once, from aiohttp's error


@pytest.mark.parametrize(
    "timeouts",
    [Timeouts(connect=0.3, total=None), Timeouts(connect=None, total=0.3),
     Timeouts(connect=0.3, pool=0.01, total=30)],
    ids=["by-connect", "by-total", "pool-limit-not-applied-to-connect"],
)
async def test_hanging_connect_is_a_connect_timeout(timeouts: Timeouts) -> None:
    transport = AiohttpTransport()
    try:
        with unanswered_port() as port:
            started = time.monotonic()
            with pytest.raises(ConnectTimeout) as info:
                await transport.send(_req(f"http://127.0.0.1:{port}/v1", timeouts))
            elapsed = time.monotonic() - started
    finally:
        await transport.aclose()
    assert info.value.delivery == "not_sent"
    assert 0.25 < elapsed < 2.0


@pytest.mark.parametrize(
    "timeouts",
    [Timeouts(connect=None, pool=0.2, total=None), Timeouts(connect=None, total=0.3)],
    ids=["by-pool", "by-total"],
)
async def test_waiting_for_a_pooled_connection_is_not_sent(timeouts: Timeouts) -> None:
    async with raw_server("hang") as url:
        transport = AiohttpTransport(max_connections=1)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(transport.send, _req(url))  # holds the only connection
                await anyio.sleep(0.1)
                assert transport.acquired_connections == 1
                started = time.monotonic()
                with pytest.raises(PoolTimeout) as info:
                    await transport.send(_req(url, timeouts))
                elapsed = time.monotonic() - started
                tg.cancel_scope.cancel()
        finally:
            await transport.aclose()
    assert info.value.delivery == "not_sent"
    assert 0.15 < elapsed < 2.0
    assert transport.acquired_connections == 0


async def test_pool_limit_does_not_bound_a_sent_request() -> None:
    # The pool deadline ends when a connection is held: a slow answer is read in full.
    async with MockServer(latency=0.4) as server:
        transport = AiohttpTransport()
        try:
            url = f"{server.url}/v1beta/models/gemini-2.5-flash-image:generateContent"
            raw = await transport.send(_req(url, Timeouts(connect=0.1, pool=0.1, total=5),
                                            GOOD_BODY))
        finally:
            await transport.aclose()
    assert raw.status == 200


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [("hang", ReadTimeout), ("drop", ConnectionDroppedError)],
    ids=["no-answer-read-timeout", "dropped-after-sending"],
)
async def test_failure_after_sending_is_ambiguous(behaviour: str,
                                                  error: type[TransportError]) -> None:
    async with raw_server(behaviour) as url:
        transport = AiohttpTransport()
        try:
            with pytest.raises(error) as info:
                await transport.send(_req(url, Timeouts(connect=5, total=0.3)))
        finally:
            await transport.aclose()
    assert info.value.delivery == "ambiguous"
    assert transport.acquired_connections == 0


async def test_cancelled_send_releases_its_connection() -> None:
    async with raw_server("hang") as url:
        transport = AiohttpTransport()
        try:
            with anyio.move_on_after(0.2):
                await transport.send(_req(url))
            assert transport.acquired_connections == 0
        finally:
            await transport.aclose()
