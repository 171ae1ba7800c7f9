from __future__ import annotations

from collections.abc import Iterator

import pytest

from cometgen.testing import MockServer, ThreadedMockServer


@pytest.fixture
def anyio_backend() -> str:
    # aiohttp runs on asyncio only.
    return "asyncio"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a real key or endpoint from the environment."""
    for var in ("COMETAPI_KEY", "COMETAPI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def mock() -> Iterator[ThreadedMockServer]:
    """The mock server on a loopback port, in a thread (for CLI runs in subprocesses)."""
    with MockServer().run_in_thread() as server:
        yield server
