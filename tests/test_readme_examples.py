"""The README's error-handling examples handle every outcome, run against the mock over HTTP."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import cometgen
from cometgen.testing import MockServer

pytestmark = pytest.mark.anyio

README = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
OUTCOMES = ["", " [[mock:block]]", " [[mock:image_safety]]", " [[mock:no_image]]",
            " [[mock:text_only]]", " [[mock:429_daily]]", " [[mock:malformed]]"]


def _block(marker: str) -> str:
    for block in re.findall(r"```python\n(.*?)```", README, flags=re.S):
        if marker in block:
            return str(block)
    raise AssertionError(f"no README python block with {marker!r}")


async def test_the_try_except_example_handles_every_outcome(capsys: Any) -> None:
    body = _block("except cometgen.PromptBlockedError as exc:\n    print(\"blocked:\"")
    code = "async def attempt(client, prompt):\n" + "".join(
        f"    {line}\n" for line in body.splitlines()
    )
    namespace: dict[str, Any] = {"cometgen": cometgen}
    exec(compile(code, "README.md", "exec"), namespace)
    async with MockServer() as server, cometgen.AsyncClient(
        api_key="k", base_url=server.url, retry=cometgen.RetryPolicy(max_attempts=1)
    ) as client:
        for marker in OUTCOMES:
            await namespace["attempt"](client, "a fox" + marker)  # never raises
    printed = capsys.readouterr().out
    assert "blocked:" in printed and "no image:" in printed and "failed:" in printed


async def test_the_inline_aiohttp_app_answers_every_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = _block("CLIENT = web.AppKey")
    assert 'host="127.0.0.1"' in code  # never 0.0.0.0 by default
    async with MockServer() as mock:
        monkeypatch.setenv("COMETAPI_KEY", "sk-mock")
        monkeypatch.setenv("COMETAPI_BASE_URL", mock.url)
        namespace: dict[str, Any] = {"__name__": "readme_app"}  # not __main__: no run_app
        exec(compile(code, "README.md", "exec"), namespace)
        from aiohttp import web

        runner = web.AppRunner(namespace["app"])
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}/generate"
        try:
            async with aiohttp.ClientSession() as http:
                answers = {}
                for marker in OUTCOMES:
                    async with http.post(url, json={"prompt": "a fox" + marker}) as r:
                        answers[marker] = r.status
                for body in ({}, {"prompt": ""}, "not json", [1]):
                    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
                    async with http.post(url, **kwargs) as r:
                        assert r.status == 400, body
        finally:
            await runner.cleanup()
    assert answers == {"": 200, " [[mock:block]]": 422, " [[mock:image_safety]]": 422,
                       " [[mock:no_image]]": 422, " [[mock:text_only]]": 422,
                       " [[mock:429_daily]]": 502, " [[mock:malformed]]": 502}
