"""Reliability: a known fake key never shows up in any output, message, repr or file.

Every error path (401, 400 API_KEY_INVALID, 429s, 5xx, drops, timeouts, bad input, bad
config), CLI at ``-vv`` and library at DEBUG logging.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.from_thread
import pytest
from _reliability import KEY, clean_env, cometgen_cmd
from aiohttp import web

import cometgen
from cometgen.testing import MockServer

SECRET = "sk-SECRET-abcdef0123456789-do-not-leak"
MARKERS = ["429:1:0.05s", "429_comet:1", "500:1", "503:1", "504:1", "502_html:1", "524",
           "drop", "truncate", "malformed", "slow:1:0.05s", "429_daily", "block", "no_image"]


def _texts_of(exc: BaseException) -> list[str]:
    """str and repr of an exception, its body, and its whole cause/context chain."""
    texts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        texts += [str(cur), repr(cur), repr(getattr(cur, "body", None)),
                  repr(getattr(cur, "args", None))]
        if (result := getattr(cur, "result", None)) is not None:
            texts.append(repr(result))
        cur = cur.__cause__ or cur.__context__
    return texts


def test_mock_server_binds_loopback_by_default() -> None:
    server = MockServer()
    assert server.options.host == "127.0.0.1"
    with server.run_in_thread() as running:
        assert running.url.startswith("http://127.0.0.1:")


@pytest.mark.anyio
async def test_library_error_paths_never_show_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, aiohttp's included
    texts: list[str] = []
    policy = cometgen.RetryPolicy(initial_delay=0.01, max_delay=0.02)
    async with MockServer(api_key="the-right-key") as server:
        async with cometgen.AsyncClient(api_key=SECRET, base_url=server.url) as client:
            with pytest.raises(cometgen.AuthenticationError) as info:
                await client.generate("x")
            texts += _texts_of(info.value)
            texts += [repr(client), str(client), repr(client.with_options(model="gemini-2.5-"
                      "flash-image", timeout=3, headers={"X-A": "b"})), repr(client.limits),
                      repr(client.timeouts), repr(client._key), str(client._key)]
    async with MockServer(latency=0.01) as server:
        client = cometgen.AsyncClient(api_key=SECRET, base_url=server.url, retry=policy,
                                      auth="x-goog-api-key")
        async with client:
            for marker in MARKERS:
                try:
                    result = await client.generate(f"p [[mock:{marker}]]")
                    texts.append(repr(result))
                except cometgen.CometgenError as exc:
                    texts += _texts_of(exc)
            with pytest.raises(cometgen.ReadTimeout) as timeout:
                await client.generate("slow [[mock:slow::1s]]", timeout=0.2)
            texts += _texts_of(timeout.value)
    dead = cometgen.AsyncClient(api_key=SECRET, base_url="http://127.0.0.1:9", retry=policy)
    async with dead:
        with pytest.raises(cometgen.ConnectError) as refused:
            await dead.generate("x")
        texts += _texts_of(refused.value)
    for bad in ({"base_url": "ftp://x"}, {"auth": "basic"}, {"max_connections": 0}):
        with pytest.raises(cometgen.ConfigError) as config:
            cometgen.AsyncClient(api_key=SECRET, **bad)  # type: ignore[arg-type]
        texts += _texts_of(config.value)
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    assert len(texts) > 60
    leaks = [t for t in texts if SECRET in t]
    assert not leaks, leaks[:3]


def test_cli_at_debug_level_never_shows_the_key(tmp_path: Path) -> None:
    rows = [{"id": f"m{i}", "prompt": f"p{i} [[mock:{m}]]"} for i, m in enumerate(MARKERS)]
    rows += [{"id": "ok", "prompt": "fine"}, {"id": "bad", "prompt": "x", "n": "two"}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    outputs: list[str] = []

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(cometgen_cmd(*args), env=clean_env(**env), capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=tmp_path)
        outputs.extend([proc.stdout, proc.stderr])
        return proc

    with MockServer(latency=0.01).run_in_thread() as server:
        good = run("run", str(src), "-o", "out", "-vv", "--json", "--max-attempts", "2",
                   "--base-url", server.url, "--api-key", SECRET)
        assert good.returncode == 4, good.stderr  # 429_daily halts the run
        assert "DEBUG" in good.stderr or "INFO" in good.stderr
        run("run", str(src), "-o", "out2", "-vv", "--base-url", server.url,
            COMETAPI_KEY=SECRET)
    with MockServer(api_key="the-right-key").run_in_thread() as server:
        wrong = run("run", str(src), "-o", "out3", "-vv", "--base-url", server.url,
                    "--api-key", SECRET)
        assert wrong.returncode == 4, wrong.stderr
        assert "API key not valid" in wrong.stderr
    (tmp_path / "bad.toml").write_text(f'api_key = "{SECRET}"\nconcurrency = "many"\n')
    (tmp_path / "bad2.toml").write_text(f'api_key = "{SECRET}"\nbase_url = "ftp://x"\n')
    usage = [
        run("run", str(src), "-o", "out4", "--config", "bad.toml", "-vv"),
        run("run", str(src), "-o", "out4", "--config", "bad2.toml", "-vv"),
        run("run", str(src), "-o", "out4", "--api-key", SECRET, "--concurrency", "0", "-vv"),
        run("run", "missing.jsonl", "-o", "out4", "--api-key", SECRET, "-vv"),
        run("run", str(src), "-o", "out5", "--api-key", SECRET, "--base-url",
            "http://127.0.0.1:9", "--max-attempts", "1", "-vv"),
    ]
    assert [p.returncode for p in usage[:4]] == [2, 2, 2, 2], [p.stderr for p in usage]
    assert all("Traceback" not in p.stderr for p in usage)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json")]
    assert any(p.name == "metadata.jsonl" for p in files)
    outputs += [p.read_text(errors="replace") for p in files if p.name != "in.jsonl"]
    leaks = [o for o in outputs if SECRET in o]
    assert not leaks, [o[:300] for o in leaks]
    assert KEY not in "".join(outputs)


# --- a gateway that quotes the key back -------------------------------------------------------


def _echo_key_app() -> web.Application:
    """Answers 401 quoting the caller's key, as OpenAI-style gateways do."""

    async def handler(request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return web.json_response(
            {"error": {"message": f"Incorrect API key provided: {key}. See your dashboard.",
                       "type": "invalid_request_error", "code": "invalid_api_key",
                       "param": key}},
            status=401, reason=f"Bad key {key}", headers={"x-request-id": f"req-{key}"},
        )

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    return app


@contextlib.asynccontextmanager
async def _echo_key_server() -> AsyncIterator[str]:
    runner = web.AppRunner(_echo_key_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.anyio
async def test_a_key_quoted_back_by_the_server_is_redacted() -> None:
    async with _echo_key_server() as url, cometgen.AsyncClient(
        api_key=SECRET, base_url=url
    ) as client:
        with pytest.raises(cometgen.AuthenticationError) as info:
            await client.generate("x")
    exc = info.value
    assert "Incorrect API key provided: ***" in str(exc)
    assert exc.request_id == "req-***"
    assert exc.body["error"]["param"] == "***"
    texts = [*_texts_of(exc), repr(exc.__dict__)]
    assert not [t for t in texts if SECRET in t]


def test_a_key_quoted_back_stays_out_of_the_manifest_and_stderr(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "prompt": "x"}\n')
    with anyio.from_thread.start_blocking_portal() as portal:
        cm = portal.wrap_async_context_manager(_echo_key_server())
        with cm as url:
            proc = subprocess.run(
                cometgen_cmd("run", str(src), "-o", "out", "-vv", "--base-url", url,
                             "--api-key", SECRET),
                env=clean_env(), capture_output=True, text=True, timeout=120,
                stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert proc.returncode == 4, proc.stderr  # a refused key halts the run
    assert "Incorrect API key provided: ***" in proc.stderr  # on the halt line, redacted
    path = tmp_path / "out" / "manifest.jsonl"
    manifest = path.read_text() if path.exists() else ""
    # A halted item is not recorded failed: the rerun after fixing the key does it.
    assert '"key":"a"' not in manifest
    for text in (proc.stdout, proc.stderr, manifest):
        assert SECRET not in text
