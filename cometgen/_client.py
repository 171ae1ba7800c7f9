"""``AsyncClient``: one pooled session, typed errors, retries that never pay twice, limits."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import nullcontext
from types import TracebackType
from typing import Any

import anyio

from . import _models as models
from . import _wire as wire
from ._cache import ImageCache, open_cache
from ._call_errors import deadline_error, status_error
from ._chat import AsyncChat
from ._config import (
    DEFAULT_API_VERSION,
    DEFAULT_MAX_CONNECTIONS,
    AuthStyle,
    Limits,
    OnNoImage,
    Secret,
    Timeouts,
    coerce_timeouts,
    resolve_api_key,
    resolve_base_url,
)
from ._exceptions import CometgenError, ConfigError, RateLimitError
from ._hooks import AttemptRecord, EventHooks, Hooks, RequestEvent, request_id_of
from ._lifecycle import SharedState
from ._limits import Limiter, Slot, SlotRefused
from ._models import DEFAULT_MODEL, ServiceTier, normalize_model
from ._redis_limits import RedisLimiter
from ._request import ImageInput, build_request, image_part
from ._result import GenerateResult, no_image_error
from ._retry import RetryPolicy, RetryState
from ._transport import AsyncTransport, TransportRequest, Verify, make_transport
from ._version import __version__

__all__ = ["AsyncClient"]

logger = logging.getLogger("cometgen")

_UNSET: Any = object()


class AsyncClient:
    """Async client for Gemini image models behind CometAPI (or Google, or the mock).

    Use as ``async with cometgen.AsyncClient() as client:``; share one client per process.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        model: str = DEFAULT_MODEL,
        auth: AuthStyle = "bearer",
        api_version: str = DEFAULT_API_VERSION,
        timeout: Timeouts | float | None = None,
        retry: RetryPolicy | None = None,
        limits: Limits | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        on_no_image: OnNoImage = "raise",
        headers: Mapping[str, str] | None = None,
        limiter: Limiter | None = None,
        event_hooks: EventHooks | None = None,
        transport: AsyncTransport | None = None,
        proxy: str | None = None,
        verify: Verify = True,
        service_tier: ServiceTier = "standard",
        cache: ImageCache | str | os.PathLike[str] | None = None,
        _clock: Callable[[], float] = time.monotonic,
        _sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if auth not in ("bearer", "x-goog-api-key"):
            raise ConfigError(f"auth must be 'bearer' or 'x-goog-api-key', got {auth!r}")
        if on_no_image not in ("raise", "return"):
            raise ConfigError(f"on_no_image must be 'raise' or 'return', got {on_no_image!r}")
        if max_connections < 1:
            raise ConfigError(f"max_connections must be >= 1, got {max_connections!r}")
        self._key: Secret = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.model = normalize_model(model)
        self.auth: AuthStyle = auth
        self.api_version = api_version
        self.timeouts = coerce_timeouts(timeout)
        self.retry = retry or RetryPolicy()
        self.limits = limits or Limits()
        self.on_no_image: OnNoImage = on_no_image
        self._extra_headers = dict(headers or {})
        self.service_tier = models.check_service_tier(service_tier)
        self.cache = open_cache(cache)  # answers kept across runs
        self._warned_models: set[str] = set()  # shared with copies: once per run
        self._clock = _clock
        self._sleep = _sleep
        self._hooks = Hooks(event_hooks)
        if limiter is not None and (limits is not None or not isinstance(limiter, Limiter)):
            raise ConfigError("limiter= takes an object with the Limiter protocol (slot(), "
                              "snapshot()), in place of limits=; not both")
        self._shared = SharedState(make_transport(
            transport, max_connections=max(max_connections, self.limits.concurrency),
            proxy=proxy, verify=verify,
        ))
        self._limiter = limiter if limiter is not None else self._shared.make_limiter(
            self.limits, self._key, self.base_url, clock=_clock, sleep=_sleep)
        self._headers = self._build_headers()

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        self._shared.check()
        if isinstance(self._limiter, RedisLimiter):
            await self._limiter.open()  # fail fast when the shared-limits Redis is down
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (shielded from cancellation)."""
        self._shared.closed = True
        for limiter in self._shared.redis_limiters:
            await limiter.aclose()
        await self._shared.transport.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={self.base_url!r}, model={self.model!r}, api_key='***')"

    # -- configuration ---------------------------------------------------------------------

    def with_options(
        self,
        *,
        model: str | None = None,
        timeout: Timeouts | float | None = None,
        retry: RetryPolicy | None = None,
        limits: Limits | None = None,
        on_no_image: OnNoImage | None = None,
        headers: Mapping[str, str] | None = None,
        limiter: Limiter | None = None,
        service_tier: ServiceTier | None = None,
    ) -> AsyncClient:
        """A copy with some options changed, sharing this client's connection pool.

        The copy shares the rate limiter too, unless ``limits`` gives it its own or
        ``limiter`` replaces it (not both).
        """
        if limiter is not None and (limits is not None or not isinstance(limiter, Limiter)):
            raise ConfigError("limiter= takes an object with the Limiter protocol (slot(), "
                              "snapshot()), in place of limits=; not both")
        clone = object.__new__(AsyncClient)
        clone.__dict__.update(self.__dict__)
        if model is not None:
            clone.model = normalize_model(model)
        if timeout is not None:
            clone.timeouts = coerce_timeouts(timeout)
        if retry is not None:
            clone.retry = retry
        if limits is not None:
            clone.limits = limits
            clone._limiter = self._shared.make_limiter(limits, self._key, self.base_url,
                                                       clock=self._clock, sleep=self._sleep)
        if limiter is not None:
            clone._limiter = limiter
        if on_no_image is not None:
            if on_no_image not in ("raise", "return"):
                raise ConfigError(f"on_no_image must be 'raise' or 'return', got {on_no_image!r}")
            clone.on_no_image = on_no_image
        if service_tier is not None:
            clone.service_tier = models.check_service_tier(service_tier)
        if headers is not None:
            clone._extra_headers = {**self._extra_headers, **headers}
            clone._headers = clone._build_headers()
        return clone

    @property
    def limiter(self) -> Limiter:
        """The rate limiter (a ``RateLimiter``'s ``window`` shows the adaptive concurrency)."""
        return self._limiter

    @property
    def transport(self) -> AsyncTransport:
        return self._shared.transport

    def _build_headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"cometgen/{__version__}",
        }
        key = self._key.reveal()
        if self.auth == "bearer":
            headers["Authorization"] = f"Bearer {key}"
        else:
            headers["x-goog-api-key"] = key
        headers.update(self._extra_headers)
        return headers

    def _url(self, model: str) -> str:
        return f"{self.base_url}/{self.api_version}/models/{normalize_model(model)}:generateContent"

    # -- requests --------------------------------------------------------------------------

    async def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | None = None,
        images: Sequence[ImageInput] = (),
        seed: int | None = None,
        temperature: float | None = None,
        include_text: bool = True,
        system_instruction: str | None = None,
        thinking_level: str | None = None,
        google_search: bool = False,
        service_tier: ServiceTier | None = None,
        timeout: float | None = None,
        on_no_image: OnNoImage | None = None,
    ) -> GenerateResult:
        """Generate image(s) for one prompt, with optional reference images.

        ``timeout`` is a deadline for the whole call, retries included. When no image comes
        back, raises ``PromptBlockedError``/``ImageSafetyError``/``NoImageError``, or returns
        the result (``result.ok`` False) with ``on_no_image="return"``.
        """
        parts = [wire.Part(text=prompt)]
        for ref in images:
            parts.append(await image_part(ref))
        request = build_request(
            [wire.Content(role="user", parts=parts)],
            aspect_ratio=aspect_ratio,
            image_size=image_size,
            seed=seed,
            temperature=temperature,
            include_text=include_text,
            system_instruction=system_instruction,
            thinking_level=thinking_level,
            google_search=google_search,
            service_tier=models.check_service_tier(service_tier or self.service_tier),
        )
        return await self.generate_from_request(
            request, model=model, timeout=timeout, on_no_image=on_no_image
        )

    async def generate_from_request(
        self,
        request: wire.GenerateContentRequest,
        *,
        model: str | None = None,
        timeout: float | None = None,
        on_no_image: OnNoImage | None = None,
        images: int = 1,
        cache_variant: str = "",
    ) -> GenerateResult:
        """Send a prepared wire request and interpret the answer as an image result.

        With a ``cache``, an answer cached for the same model, body and ``cache_variant``
        is returned (``result.cached``) without sending; new answers are cached.
        """
        use_model = normalize_model(model or self.model)
        models.warn_model_status(use_model, None, self._warned_models)
        started, body = self._clock(), wire.encode_request(request)
        hit, key = await self.cache.lookup(use_model, body, cache_variant) if self.cache else (
            None, "")
        if hit is not None:
            result = GenerateResult.from_response(hit, model=use_model, attempts=0, cached=True)
        else:
            response, state, last = await self._send_with_retries(
                use_model, body, timeout=timeout, images=images
            )
            if self.cache is not None:  # blocked and no-image answers too: they are answers
                await self.cache.put(key, use_model, response)
            result = GenerateResult.from_response(
                response, model=use_model, attempts=state.attempts,
                maybe_billed=state.maybe_billed, latency=self._clock() - started,
                headers=last.headers, request_id=request_id_of(last.headers),
            )
        if not result.images and (on_no_image or self.on_no_image) == "raise":
            raise no_image_error(result)
        return result

    async def generate_content(
        self,
        model: str,
        request: wire.GenerateContentRequest,
        *,
        timeout: float | None = None,
    ) -> wire.GenerateContentResponse:
        """The raw call: a wire request in, the decoded wire response out (retries apply)."""
        response, _, _ = await self._send_with_retries(
            normalize_model(model), wire.encode_request(request), timeout=timeout, images=1
        )
        return response

    def chat(
        self,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | None = None,
        include_text: bool = True,
    ) -> AsyncChat:
        """A multi-turn editing session that sends the whole history back each turn."""
        return AsyncChat(
            self,
            model=normalize_model(model or self.model),
            aspect_ratio=aspect_ratio,
            image_size=image_size,
            include_text=include_text,
        )

    async def _send_with_retries(
        self, model: str, body: bytes, *, timeout: float | None, images: int
    ) -> tuple[wire.GenerateContentResponse, RetryState, AttemptRecord]:
        self._shared.check()
        state = RetryState()
        url = self._url(model)
        hooks = self._hooks
        try:
            # No deadline, no cancel scope: a scope per call costs ~6% CPU at small bodies.
            with anyio.fail_after(timeout) if timeout is not None else nullcontext():
                while True:
                    rec = AttemptRecord()
                    if hooks.request:
                        await hooks.emit(hooks.request, RequestEvent(model, state.attempts + 1))
                    try:
                        response = await self._attempt(url, body, images, state, rec)
                    except CometgenError as exc:
                        decision = state.failed(exc, self.retry)
                        if hooks.response:
                            event = rec.event(model, state.attempts, self._clock(), exc, decision)
                            await hooks.emit(hooks.response, event)
                        if not decision.retry:
                            state.annotate(exc)
                            raise
                        logger.info(
                            "attempt %d for %s failed (%s); retrying in %.2fs",
                            state.attempts, model, decision.reason, decision.delay,
                        )
                        await self._sleep(decision.delay)
                        continue
                    state.succeeded()
                    if hooks.response:
                        await hooks.emit(hooks.response,
                                         rec.event(model, state.attempts, self._clock()))
                    return response, state, rec
        except SlotRefused as refused:
            refused.attempts, refused.maybe_billed = state.attempts, state.maybe_billed
            raise
        except TimeoutError:
            raise deadline_error(timeout, state) from None

    async def _attempt(
        self, url: str, body: bytes, images: int, state: RetryState, rec: AttemptRecord
    ) -> wire.GenerateContentResponse:
        async with self._limiter.slot(images=images) as slot:
            state.in_flight = True
            rec.started = self._clock()
            try:
                response = await self._exchange(url, body, slot, rec)
            except CometgenError:
                state.in_flight = False
                raise
            # Not in a ``finally``: a deadline's cancellation must leave it True.
            state.in_flight = False
            return response

    async def _exchange(
        self, url: str, body: bytes, slot: Slot, rec: AttemptRecord
    ) -> wire.GenerateContentResponse:
        """One POST and its answer, decoded; the outcome is reported to the limiter slot."""
        raw = await self._shared.transport.send(
            TransportRequest("POST", url, self._headers, body, self.timeouts)
        )
        rec.status, rec.headers, rec.size = raw.status, raw.headers, len(raw.body)
        if raw.status != 200:
            error = status_error(raw, self._key.reveal())
            if isinstance(error, RateLimitError):
                slot.rate_limited(
                    error.retry_delay if error.retry_delay is not None else error.retry_after
                )
            raise error
        response = wire.decode_response(raw.body)
        slot.succeeded()
        return response

