"""The same backend on FastAPI: one shared ``cometgen.AsyncClient``, held by the lifespan.

FastAPI is not a cometgen dependency. To run it::

    pip install fastapi uvicorn
    cd examples && uvicorn fastapi_app:app --port 8080      # or: python fastapi_app.py

Request validation, the error mapping and the JSON answer are imported from
``aiohttp_app.py`` next to this file (framework-neutral functions, tested there), so both
backends answer alike: see that file for the endpoint and the status codes. Without
``COMETAPI_KEY`` the client runs against cometgen's built-in mock server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from aiohttp_app import (
    DEFAULT_TIMEOUT,
    BadInput,
    ErrorAnswer,
    bad_request,
    default_client_factory,
    error_answer,
    parse_params,
    result_json,
    turn_away,
)
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

import cometgen

logger = logging.getLogger("fastapi_app")
REQUEST_TIMEOUT = float(os.environ.get("COMETGEN_REQUEST_TIMEOUT", DEFAULT_TIMEOUT))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    # One client for the process: one connection pool, one rate limiter, one 429 gate.
    # The yielded dict is Starlette's lifespan state: ``request.state.client`` in handlers.
    async with default_client_factory()() as client:
        yield {"client": client}


app = FastAPI(lifespan=lifespan)


def _error(answer: ErrorAnswer) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


@app.post("/generate")
async def generate(
    request: Request, fmt: Annotated[str, Query(alias="format")] = "image"
) -> Response:
    if fmt not in ("image", "json"):
        return _error(bad_request("format must be 'image' or 'json'"))
    try:
        params = parse_params(await request.json())
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, BadInput
        return _error(bad_request(str(exc) if isinstance(exc, BadInput) else "invalid JSON"))
    client: cometgen.AsyncClient = request.state.client
    if (turned_away := turn_away(client)) is not None:
        return _error(turned_away)

    # ASGI servers do not cancel a handler whose client went away (aiohttp's
    # handler_cancellation has no twin here), so watch for the disconnect and cancel the
    # upstream call ourselves: it would otherwise hold a connection and a limiter slot.
    result: cometgen.GenerateResult | None = None
    failure: ErrorAnswer | None = None
    async with anyio.create_task_group() as tg:

        async def cancel_on_disconnect() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            logger.info("client went away; upstream call cancelled")
            tg.cancel_scope.cancel()

        tg.start_soon(cancel_on_disconnect)
        try:
            result = await client.generate(
                params.prompt,
                model=params.model,
                aspect_ratio=params.aspect_ratio,
                image_size=params.image_size,
                timeout=REQUEST_TIMEOUT,
            )
        except cometgen.CometgenError as exc:
            failure = error_answer(exc, requested_model=params.model)
            logger.info("generate -> %d: %s", failure.status, exc)
        tg.cancel_scope.cancel()

    if failure is not None:
        return _error(failure)
    if result is None:  # the client disconnected; nobody reads this
        return Response(status_code=499)
    if fmt == "json":
        return JSONResponse(result_json(result))
    image = result.images[0]
    return Response(
        content=image.data,
        media_type=image.mime_type,
        headers={"X-Image-Count": str(len(result.images)), "Cache-Control": "no-store"},
    )


@app.get("/health")
async def health(request: Request) -> dict[str, Any]:
    client: cometgen.AsyncClient = request.state.client
    return {"status": "ok", "model": client.model, "in_flight": client.limiter.in_flight}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"),
                port=int(os.environ.get("PORT", "8080")))
