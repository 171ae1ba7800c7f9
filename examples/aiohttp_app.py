"""A web backend on aiohttp.web that shares ONE ``cometgen.AsyncClient`` across all requests.

Run it::

    python examples/aiohttp_app.py                       # no key: uses the built-in mock
    COMETAPI_KEY=sk-... python examples/aiohttp_app.py --port 8080

Try it::

    curl -s localhost:8080/generate -d '{"prompt": "a red fox"}' -o fox.jpg
    curl -s 'localhost:8080/generate?format=json' \\
         -d '{"prompt": "a red fox", "aspect_ratio": "16:9", "image_size": "2K"}'
    curl -s localhost:8080/health

``POST /generate`` takes ``{"prompt", "aspect_ratio"?, "image_size"?, "model"?}`` and answers
the image bytes (``Content-Type`` from the image), or ``{"images": [{"mime_type", "data"}], ...}``
with base64 data when called with ``?format=json``. Failures are JSON
``{"error": CODE, "message": ..., ...}``; see ``error_answer`` for the status codes.

Settings: ``--host``/``HOST`` (127.0.0.1), ``--port``/``PORT`` (8080), ``--timeout``/
``COMETGEN_REQUEST_TIMEOUT`` (120 s per request, retries included), ``--concurrency`` (32
upstream calls at once for the whole process), ``COMETAPI_KEY``, ``COMETAPI_BASE_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import math
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

import cometgen
from cometgen.testing import MockServer

logger = logging.getLogger("aiohttp_app")

ClientFactory = Callable[[], AbstractAsyncContextManager[cometgen.AsyncClient]]

#: The one client of the process; set while the app runs (see ``create_app``).
CLIENT = web.AppKey("cometgen_client", cometgen.AsyncClient)
#: Deadline of one ``POST /generate``, upstream retries included.
REQUEST_TIMEOUT = web.AppKey("request_timeout", float)

#: Upstream "retry in N s" waits up to this long are absorbed here (the client waits and
#: retries); longer ones are passed on to the caller as 429 + Retry-After at once.
MAX_SERVER_WAIT = 5.0
#: An interactive caller is waiting: few attempts, and no multi-minute sleeps.
BACKEND_RETRY = cometgen.RetryPolicy(max_attempts=3, max_server_delay=MAX_SERVER_WAIT)
DEFAULT_TIMEOUT = 120.0
DEFAULT_CONCURRENCY = 32

_FIELDS = frozenset({"prompt", "aspect_ratio", "image_size", "model"})
_KEY_LIKE = re.compile(r"(?:sk-|AIza)[\w-]{8,}")


# -- the shared client ---------------------------------------------------------------------


def default_client_factory(
    *, concurrency: int = DEFAULT_CONCURRENCY, mock_latency: float = 0.5
) -> ClientFactory:
    """The client from ``COMETAPI_KEY``/``COMETAPI_BASE_URL``, or one on the built-in mock."""
    limits = cometgen.Limits(concurrency=concurrency)

    @asynccontextmanager
    async def factory() -> AsyncIterator[cometgen.AsyncClient]:
        if os.environ.get("COMETAPI_KEY"):
            async with cometgen.AsyncClient(limits=limits, retry=BACKEND_RETRY) as client:
                yield client
            return
        async with MockServer(latency=mock_latency) as mock:
            print(f"COMETAPI_KEY is not set: serving images from cometgen's mock at {mock.url}",
                  flush=True)
            async with cometgen.AsyncClient(
                api_key="mock", base_url=mock.url, limits=limits, retry=BACKEND_RETRY
            ) as client:
                yield client

    return factory


def create_app(
    client_factory: ClientFactory | None = None, *, request_timeout: float = DEFAULT_TIMEOUT
) -> web.Application:
    """The application. ``client_factory()`` gives an async context manager of the client,
    entered once at startup and exited at cleanup (an ``AsyncClient`` itself will do)."""
    factory = client_factory or default_client_factory()
    app = web.Application()
    app[REQUEST_TIMEOUT] = request_timeout

    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        # One client = one connection pool, one rate limiter and one 429 gate for the whole
        # process. A client per request would reconnect (TLS) every time and let concurrent
        # requests ignore each other's rate limits.
        async with factory() as client:
            app[CLIENT] = client
            yield

    app.cleanup_ctx.append(client_ctx)
    app.router.add_post("/generate", handle_generate)
    app.router.add_get("/health", handle_health)
    return app


async def start_server(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve ``app``; returns the runner (``await runner.cleanup()`` to stop) and base URL."""
    # aiohttp (since 3.7) lets a handler run on after its client has disconnected. Here that
    # would hold a pooled connection and a limiter slot until the image arrives, for nobody.
    # With handler_cancellation the handler, and so the upstream call, is cancelled at once:
    # calls still queued for a slot are never sent (never billed); sent ones free their slot.
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}"


# -- requests ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Params:
    """A validated ``POST /generate`` body."""

    prompt: str
    aspect_ratio: str | None = None
    image_size: str | None = None
    model: str | None = None


class BadInput(ValueError):
    """The caller's request is malformed (answered with 400)."""


def parse_params(body: object) -> Params:
    """Validate a decoded JSON body; raises ``BadInput``."""
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    if unknown := sorted(set(body) - _FIELDS):
        raise BadInput(f"unknown field(s): {', '.join(map(str, unknown))}")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadInput("'prompt' must be a non-empty string")
    options: dict[str, str | None] = {}
    for name in ("aspect_ratio", "image_size", "model"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise BadInput(f"{name!r} must be a non-empty string")
        options[name] = value
    return Params(prompt=prompt, **options)


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """An HTTP error answer, framework-neutral: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _scrub(text: str | None) -> str | None:
    """Belt and braces: cometgen never puts the key in a message, but upstream text might."""
    if text is None:
        return None
    key = os.environ.get("COMETAPI_KEY")
    if key:
        text = text.replace(key, "***")
    return _KEY_LIKE.sub("***", text).strip()


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _answer(
    status: int, code: str, message: str | None, headers: dict[str, str] | None = None,
    **extra: Any,
) -> ErrorAnswer:
    return ErrorAnswer(status, {"error": code, "message": _scrub(message), **extra}, headers or {})


def error_answer(exc: cometgen.CometgenError, *, requested_model: str | None = None) -> ErrorAnswer:
    """Map a cometgen error to what the caller of this backend should see.

    The backend's own problems (bad key, quota, upstream down) are never blamed on the caller,
    and upstream auth messages are not forwarded at all.
    """
    if isinstance(exc, cometgen.PromptBlockedError):
        r = exc.result
        return _answer(422, "prompt_blocked", r.block_reason_message or exc.message,
                       reason=r.block_reason)
    if isinstance(exc, cometgen.ImageSafetyError):
        r = exc.result
        return _answer(422, "image_safety", r.finish_message or exc.message,
                       reason=r.finish_reason)
    if isinstance(exc, cometgen.NoImageError):
        r = exc.result
        return _answer(422, "no_image", r.finish_message or exc.message,
                       reason=r.finish_reason, text=_scrub(r.text))
    if isinstance(exc, cometgen.QuotaExhaustedError):
        # A per-day quota or an empty CometAPI balance: when it resets is not known here.
        return _answer(429, "quota_exhausted", "the image service's quota is used up")
    if isinstance(exc, cometgen.RateLimitError):
        delay = exc.retry_delay if exc.retry_delay is not None else exc.retry_after
        return _answer(429, "rate_limited", "too many requests; retry later",
                       _retry_after(1.0 if delay is None else delay))
    if isinstance(exc, cometgen.AuthenticationError | cometgen.PermissionDeniedError):
        return _answer(502, "upstream_auth", "the image service rejected this server's key")
    if isinstance(exc, cometgen.NotFoundError) and requested_model is not None:
        return _answer(400, "unknown_model", f"no model {requested_model!r}")
    if isinstance(exc, cometgen.BadRequestError | cometgen.ConfigError):
        return _answer(400, "bad_request", exc.message)
    if isinstance(exc, cometgen.TimeoutException):
        return _answer(504, "upstream_timeout", exc.message)
    extra: dict[str, Any] = {}
    if isinstance(exc, cometgen.APIStatusError):
        extra["upstream_status"] = exc.status_code
        if exc.request_id:
            extra["request_id"] = exc.request_id
    return _answer(502, "upstream_error", "the image service failed; try again", **extra)


def bad_request(message: str) -> ErrorAnswer:
    return _answer(400, "bad_request", message)


def turn_away(client: cometgen.AsyncClient) -> ErrorAnswer | None:
    """A 429 while an upstream 429 pauses the shared client for long: calls would only queue."""
    # The limiter's clock is time.monotonic unless the client was built with another.
    paused_for = client.limiter.paused_until - time.monotonic()
    if paused_for > MAX_SERVER_WAIT:
        return _answer(429, "rate_limited", "too many requests; retry later",
                       _retry_after(paused_for))
    return None


def result_json(result: cometgen.GenerateResult) -> dict[str, Any]:
    """The ``?format=json`` answer."""
    return {
        "model": result.model,
        "images": [
            {"mime_type": image.mime_type, "data": base64.b64encode(image.data).decode("ascii")}
            for image in result.images
        ],
        "text": result.text,
        "finish_reason": result.finish_reason,
        "usage": result.usage.as_dict(),
        "attempts": result.attempts,
    }


def _error(answer: ErrorAnswer) -> web.Response:
    return web.json_response(answer.body, status=answer.status, headers=answer.headers)


async def handle_generate(request: web.Request) -> web.StreamResponse:
    fmt = request.query.get("format", "image")
    if fmt not in ("image", "json"):
        return _error(bad_request("format must be 'image' or 'json'"))
    try:
        params = parse_params(await request.json())
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, BadInput
        message = str(exc) if isinstance(exc, BadInput) else "the body is not valid JSON"
        return _error(bad_request(message))

    client = request.app[CLIENT]
    if (turned_away := turn_away(client)) is not None:
        return _error(turned_away)
    try:
        result = await client.generate(
            params.prompt,
            model=params.model,
            aspect_ratio=params.aspect_ratio,
            image_size=params.image_size,
            timeout=request.app[REQUEST_TIMEOUT],
        )
    except cometgen.CometgenError as exc:
        answer = error_answer(exc, requested_model=params.model)
        level = logging.WARNING if answer.status >= 500 else logging.INFO
        logger.log(level, "generate -> %d: %s", answer.status, exc)
        return _error(answer)
    except asyncio.CancelledError:
        logger.info("client went away; upstream call cancelled")
        raise

    if fmt == "json":
        return web.json_response(result_json(result))
    image = result.images[0]
    return web.Response(
        body=image.data,
        content_type=image.mime_type,
        headers={"X-Image-Count": str(len(result.images)), "Cache-Control": "no-store"},
    )


async def handle_health(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    return web.json_response(
        {"status": "ok", "model": client.model, "in_flight": client.limiter.in_flight}
    )


# -- command line --------------------------------------------------------------------------


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully (client closed last)."""
    runner, url = await start_server(app, host, port)
    print(f"listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="cometgen image backend (aiohttp.web)")
    parser.add_argument("--host", default=env("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("PORT", "8080")))
    parser.add_argument("--timeout", type=float,
                        default=float(env("COMETGEN_REQUEST_TIMEOUT", str(DEFAULT_TIMEOUT))),
                        help="deadline of one request in seconds, retries included")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help="upstream calls in flight at once, for the whole process")
    parser.add_argument("--mock-latency", type=float, default=0.5,
                        help="seconds per image on the built-in mock (no COMETAPI_KEY)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    factory = default_client_factory(concurrency=args.concurrency, mock_latency=args.mock_latency)
    app = create_app(factory, request_timeout=args.timeout)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(app, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
