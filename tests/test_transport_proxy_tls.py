"""Proxies (``HTTP_PROXY``/``NO_PROXY`` from the environment, ``proxy=``) and ``verify=``.

The proxy is a tiny in-process aiohttp.web app that receives absolute-URI requests and
forwards them to the mock server; the TLS server uses a test CA made by ``trustme``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from cometgen import AsyncClient, ConfigError, ConnectError, RetryPolicy
from cometgen.testing import MockServer, image_response

pytestmark = pytest.mark.anyio

ONCE = RetryPolicy(max_attempts=1)
PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY",
              "no_proxy", "ALL_PROXY", "all_proxy")


@asynccontextmanager
async def _serve(app: web.Application, ssl_context: ssl.SSLContext | None = None
                 ) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"{'https' if ssl_context else 'http'}://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def forward_proxy() -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP forward proxy; yields its URL and the absolute URIs it was asked for."""
    seen: list[str] = []
    async with aiohttp.ClientSession(trust_env=False) as upstream:

        async def forward(request: web.Request) -> web.Response:
            seen.append(str(request.url))
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() not in ("host", "proxy-connection", "content-length")}
            async with upstream.request(request.method, str(request.url), headers=headers,
                                        data=await request.read()) as resp:
                return web.Response(status=resp.status, body=await resp.read(),
                                    content_type=resp.content_type)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        async with _serve(app) as url:
            yield url, seen


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("how", ["HTTP_PROXY", "proxy="])
async def test_requests_go_through_the_proxy(how: str, clean_env: pytest.MonkeyPatch) -> None:
    async with MockServer() as server, forward_proxy() as (proxy_url, seen):
        if how == "HTTP_PROXY":
            clean_env.setenv("HTTP_PROXY", proxy_url)
        options = {"proxy": proxy_url} if how == "proxy=" else {}
        async with AsyncClient("k", server.url, retry=ONCE, **options) as client:
            result = await client.generate("a fox through the proxy")
    assert result.ok
    assert seen == [f"{server.url}/v1beta/models/{result.model}:generateContent"]
    assert len(server.stats.log) == 1


async def test_no_proxy_match_goes_direct(clean_env: pytest.MonkeyPatch) -> None:
    async with MockServer() as server, forward_proxy() as (proxy_url, seen):
        clean_env.setenv("HTTP_PROXY", proxy_url)
        clean_env.setenv("NO_PROXY", "127.0.0.1")
        async with AsyncClient("k", server.url, retry=ONCE) as client:
            assert (await client.generate("a direct fox")).ok
    assert seen == []
    assert len(server.stats.log) == 1


def test_proxy_must_be_a_url() -> None:
    with pytest.raises(ConfigError, match="proxy must be"):
        AsyncClient("k", proxy="proxy.test:3128")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def https_server(ca: trustme.CA) -> AsyncIterator[str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        reply = image_response()
        return web.Response(status=reply.status, body=reply.body,
                            content_type="application/json")

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    async with _serve(app, context) as url:
        yield url


@pytest.mark.parametrize("verify", ["path", "str", "context"])
async def test_verify_trusts_a_given_ca(verify: str, ca: trustme.CA, tmp_path: Path,
                                        clean_env: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    option: Path | str | ssl.SSLContext = bundle
    if verify == "str":
        option = str(bundle)
    elif verify == "context":
        option = ssl.create_default_context()
        ca.configure_trust(option)
    async with https_server(ca) as url:
        async with AsyncClient("k", url, retry=ONCE, verify=option) as client:
            assert (await client.generate("a fox over TLS")).ok


async def test_unknown_ca_is_refused_unless_verify_is_false(
    ca: trustme.CA, clean_env: pytest.MonkeyPatch
) -> None:
    async with https_server(ca) as url:
        async with AsyncClient("k", url, retry=ONCE) as client:
            with pytest.raises(ConnectError) as info:
                await client.generate("a fox over TLS")
        assert info.value.delivery == "not_sent"
        assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)
        async with AsyncClient("k", url, retry=ONCE, verify=False) as client:
            assert (await client.generate("a fox, unverified")).ok


def test_a_missing_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no CA bundle there"):
        AsyncClient("k", verify=tmp_path / "missing.pem")
