"""A closed client, or one used from a second event loop, says so with a CometgenError."""

from __future__ import annotations

import gc
import warnings

import anyio
import anyio.from_thread
import pytest

import cometgen
from cometgen.testing import MockServer

KEY = "sk-test-lifecycle"


@pytest.mark.anyio
async def test_a_call_after_aclose_raises_and_opens_no_pool() -> None:
    async with MockServer() as server:
        client = cometgen.AsyncClient(api_key=KEY, base_url=server.url)
        async with client:
            assert (await client.generate("one")).ok
        copy = client.with_options(model="gemini-3-pro-image-preview")
        # Sessions leaked by earlier tests warn when collected: not this test's concern.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gc.collect()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for use in (client, copy):
                with pytest.raises(cometgen.ClientClosedError, match="create a new AsyncClient"):
                    await use.generate("two")
            with pytest.raises(cometgen.ClientClosedError):
                async with client:
                    pass
            gc.collect()
        assert server.stats.requests == 1  # nothing was sent after the close
        assert not [w for w in caught if "Unclosed" in str(w.message)]
        assert client.transport.acquired_connections == 0


@pytest.mark.anyio
async def test_closed_error_is_a_cometgen_and_runtime_error() -> None:
    client = cometgen.AsyncClient(api_key=KEY, base_url="http://127.0.0.1:9")
    await client.aclose()
    with pytest.raises(cometgen.CometgenError) as info:
        await client.generate("x")
    assert isinstance(info.value, RuntimeError)  # what __aenter__ raised before


def test_a_second_event_loop_is_refused_clearly() -> None:
    with MockServer().run_in_thread() as server:
        client = cometgen.AsyncClient(api_key=KEY, base_url=server.url)
        with anyio.from_thread.start_blocking_portal() as first_loop:
            assert first_loop.call(client.generate, "in its own loop").ok

            async def from_another_loop() -> None:
                with pytest.raises(cometgen.WrongEventLoopError, match="one AsyncClient per"):
                    await client.generate("elsewhere")

            anyio.run(from_another_loop)
            assert first_loop.call(client.generate, "still fine at home").ok
            first_loop.call(client.aclose)
        assert server.stats.requests == 2
