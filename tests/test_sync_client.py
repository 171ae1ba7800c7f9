"""Blocking use: ``cometgen.generate`` (also in a running event loop) and ``cometgen.Client``."""

from __future__ import annotations

import asyncio

import pytest

import cometgen
from cometgen.testing import MockServer

KEY = "sk-test-sync-client"


def test_generate_inside_a_running_event_loop() -> None:
    # A Jupyter cell: code that is synchronous, but runs while an event loop is running.
    with MockServer().run_in_thread() as server:

        async def cell() -> cometgen.GenerateResult:
            return cometgen.generate("a fox", api_key=KEY, base_url=server.url)

        result = asyncio.run(cell())
        assert result.ok and result.images[0].data

        async def failing_cell() -> None:
            cometgen.generate("x [[mock:429_daily]]", api_key=KEY, base_url=server.url)

        with pytest.raises(cometgen.QuotaExhaustedError):
            asyncio.run(failing_cell())
