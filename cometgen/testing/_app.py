"""The aiohttp application: routing, auth, outcome choice, rate limits and answers."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
from aiohttp import web

from .._models import ModelRegistry, ModelSpec, active_models, normalize_model
from . import _errors as err
from ._catalogue import catalogue
from ._errors import JSON_TYPE, MockHTTPError
from ._images import DEFAULT_SCALE, image_b64, image_dimensions, palette
from ._limits import SlidingWindow
from ._outcomes import BILLED, IMMEDIATE, PRODUCES_IMAGE, OutcomePicker
from ._stats import MockStats, RequestRecord
from ._validate import ParsedRequest, parse_request, prompt_tokens

_encode = msgspec.json.Encoder().encode
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
_MAX_BODY = 100 * 1024 * 1024
#: Above this many pixels (or with padding), images come in a few cached looks: fast enough.
_SMALL_PIXELS = 256 * 256
_IMAGE_OTHER_MESSAGE = (
    "Unable to show the generated image. The model could not generate the image based on the "
    "prompt provided. You will not be charged for this request. Try rephrasing the prompt."
)
_FINISH: dict[str, tuple[str, str]] = {
    "image_safety": (
        "IMAGE_SAFETY",
        "Unable to show the generated image. The generated image was blocked due to safety "
        "policy violation. Try rephrasing the prompt.",
    ),
    "image_prohibited": (
        "IMAGE_PROHIBITED_CONTENT",
        "Unable to show the generated image. The generated image was blocked because it "
        "contains prohibited content. Try rephrasing the prompt.",
    ),
    "safety": ("SAFETY", "The response was blocked due to safety reasons."),
    "no_image": (
        "NO_IMAGE",
        "Unable to show the generated image. The model did not generate an image. Try "
        "rephrasing the prompt.",
    ),
}


@dataclass(slots=True)
class _Pending:
    """The record of a request being handled, filled in as it goes."""

    model: str
    prompt: str = ""
    status: int = 0
    outcome: str = "error"


@dataclass(frozen=True, kw_only=True)
class MockOptions:
    """Validated mock server settings (see ``MockServer`` for their meaning)."""

    host: str = "127.0.0.1"
    port: int = 0
    latency: float = 0.0
    rpm: int | None = None
    ipm: int | None = None
    fault_rate: float = 0.0
    seed: int = 0
    api_key: str | None = None
    scale: float = DEFAULT_SCALE
    image_bytes: int | None = None
    replay: str | os.PathLike[str] | None = None
    error_style: str = "google"
    #: The registry the mock validates and answers by (default: the active one).
    models: ModelRegistry | None = None
    #: Fraction of ``serviceTier: "flex"`` requests shed (seeded), answered ``flex_shed_status``.
    flex_shed_rate: float = 0.0
    flex_shed_status: int = 503
    #: A JSON file served as ``GET /api/models`` (default: made from the registry).
    catalogue: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if self.latency < 0:
            raise ValueError("latency must be >= 0")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        if self.scale <= 0:
            raise ValueError("scale must be > 0")
        for name in ("rpm", "ipm", "image_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0.0 <= self.flex_shed_rate <= 1.0:
            raise ValueError("flex_shed_rate must be between 0 and 1")
        if self.flex_shed_status not in (429, 503):
            raise ValueError("flex_shed_status must be 429 or 503")
        if self.error_style not in ("google", "comet"):
            raise ValueError("error_style must be 'google' or 'comet'")


def load_replay(path: str | os.PathLike[str]) -> bytes:
    """The ``response`` of a recorded fixture file (or the whole file), as JSON bytes."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and "response" in data:
        data = data["response"]
    return _encode(data)


def _extract_key(request: web.Request) -> str | None:
    key = request.headers.get("x-goog-api-key")
    if key:
        return key
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.query.get("key") or None


class MockApp:
    """Per-server state and the request handler."""

    def __init__(self, options: MockOptions) -> None:
        self.options = options
        self.stats = MockStats()
        self.picker = OutcomePicker(options.fault_rate, options.seed)
        self.rpm = SlidingWindow(options.rpm) if options.rpm else None
        self.ipm = SlidingWindow(options.ipm) if options.ipm else None
        self.replay = load_replay(options.replay) if options.replay is not None else None
        self._rng = random.Random(options.seed + 1)
        self._shed_rng = random.Random(options.seed + 2)
        self.models = options.models or active_models()

    def build(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post("/{version:v1beta|v1|v1alpha}/models/{tail:.+}", self.handle)
        app.router.add_get("/api/models", self.handle_catalogue)
        return app

    def reset(self) -> None:
        self.stats.reset()
        self.picker.reset()
        for window in (self.rpm, self.ipm):
            if window is not None:
                window.clear()

    # ------------------------------------------------------------------ ids

    def _response_id(self) -> str:
        return "".join(self._rng.choices(_ID_CHARS, k=20))

    def _signature(self) -> str:
        return base64.b64encode(self._rng.randbytes(24)).decode("ascii")

    # ------------------------------------------------------------------ handler

    async def handle(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["tail"].rpartition(":")
        model = normalize_model(model)
        record = _Pending(model)
        try:
            response = await self._handle(request, model, method, record)
            record.status = response.status if response is not None else 0
        except MockHTTPError as exc:
            record.status = exc.status
            response = web.Response(
                status=exc.status, body=exc.body, headers={"Content-Type": exc.content_type}
            )
        finally:
            self.stats.record(
                RequestRecord(time.monotonic(), record.model, record.prompt, record.status,
                              record.outcome)
            )
        if response is None:  # dropped: nothing may be written
            return web.Response()
        return response

    async def handle_catalogue(self, request: web.Request) -> web.Response:
        body = catalogue(self.models, self.options.catalogue)
        return web.Response(body=body, headers={"Content-Type": JSON_TYPE})

    async def _handle(
        self, request: web.Request, model: str, method: str, record: _Pending
    ) -> web.StreamResponse | None:
        if method not in ("generateContent", "streamGenerateContent"):
            raise err.google_error(404, "NOT_FOUND", f"Method not found: {method or '(none)'}.")
        key = _extract_key(request)
        if key is None:
            raise err.comet_error(401, "Invalid token: no API key was provided", "")
        if self.options.api_key is not None and key != self.options.api_key:
            raise err.api_key_invalid()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise err.invalid_argument(
                f"Request payload size exceeds the limit: {_MAX_BODY} bytes."
            ) from None
        spec = self.models.get(model)
        if spec is None:
            raise err.model_not_found(model, request.match_info["version"])
        parsed = parse_request(body, model, spec)
        record.prompt = parsed.prompt

        outcome, arg = self.picker.pick(parsed.user_texts)
        if not parsed.want_image and outcome == "success":
            outcome = "text_only"
        record.outcome = outcome
        if outcome == "429":
            raise err.quota_error(
                model, quota_id=err.PER_MINUTE, metric=err.REQUESTS_METRIC,
                limit=self.options.rpm or 20, delay=1.5 if arg is None else arg,
            )
        if outcome == "429_daily":
            raise err.quota_error(
                model, quota_id=err.PER_DAY, metric=err.REQUESTS_METRIC,
                limit=250, delay=1.5 if arg is None else arg,
            )
        if outcome == "429_comet":
            raise err.comet_error(429, "Rate limit reached for requests, please try again later")
        self._check_limits(model, outcome, record)
        if (parsed.service_tier == "flex" and self.options.flex_shed_rate
                and self._shed_rng.random() < self.options.flex_shed_rate):
            # Flex capacity "may be shed under load" (ai.google.dev flex-inference); the
            # answer's exact body is not documented in the notes: Google's 503/429 shapes.
            self.stats.count_shed()
            record.outcome = "shed"
            status = self.options.flex_shed_status
            if status == 503:
                raise err.server_error(503, self.options.error_style)
            raise err.google_error(429, "RESOURCE_EXHAUSTED",
                                   "Flex capacity is exhausted. Please retry later.")

        if outcome != "slow" and outcome not in IMMEDIATE and self.options.latency > 0:
            await anyio.sleep(self.options.latency)
        if outcome in ("500", "503", "504"):
            raise err.server_error(int(outcome), self.options.error_style)
        if outcome == "524":
            raise err.server_error(524, "comet")
        if outcome in ("502_html", "524_html"):
            code = int(outcome[:3])
            raise err.html_error(code, "Bad Gateway" if code == 502 else "A timeout occurred")

        payload = self._payload(outcome, model, spec, parsed)
        stream = method == "streamGenerateContent"
        if stream:
            payload = b"data: " + payload + b"\r\n\r\n"
        if outcome in BILLED:
            self.stats.bill(hashlib.sha256(body).hexdigest(), parsed.prompt)
        content_type = "text/event-stream" if stream else JSON_TYPE
        return await self._send(request, outcome, payload, content_type, arg)

    def _check_limits(self, model: str, outcome: str, record: _Pending) -> None:
        now = time.monotonic()
        checks: list[tuple[SlidingWindow, str, str]] = []
        if self.rpm is not None:
            checks.append((self.rpm, err.PER_MINUTE, err.REQUESTS_METRIC))
        if self.ipm is not None and outcome in PRODUCES_IMAGE:
            checks.append((self.ipm, err.IMAGES_PER_MINUTE, err.IMAGES_METRIC))
        for window, quota_id, metric in checks:
            wait = window.wait_time(now)
            if wait > 0:
                self.stats.count_rate_limited()
                record.outcome = "rate_limited"
                raise err.quota_error(
                    model, quota_id=quota_id, metric=metric, limit=window.limit, delay=wait
                )
        for window, _, _ in checks:
            window.add(now)

    async def _send(
        self, request: web.Request, outcome: str, payload: bytes, content_type: str,
        arg: float | None,
    ) -> web.StreamResponse | None:
        headers = {"Content-Type": content_type}
        if outcome == "drop":
            if request.transport is not None:
                request.transport.close()
            return None
        if outcome not in ("truncate", "slow"):
            return web.Response(status=200, body=payload, headers=headers)
        response = web.StreamResponse(status=200, headers=headers)
        response.content_length = len(payload)
        await response.prepare(request)
        if outcome == "truncate":
            await response.write(payload[: len(payload) // 2])
            if request.transport is not None:
                request.transport.close()
            return response
        duration = arg if arg is not None else (self.options.latency or 2.0)
        pieces = 20
        step = math.ceil(len(payload) / pieces)
        try:
            for i in range(0, len(payload), step):
                await response.write(payload[i : i + step])
                await anyio.sleep(duration / pieces)
            await response.write_eof()
        except ConnectionResetError:
            # The client went away mid-body (a cancelled call): nothing to report.
            return None
        return response

    # ------------------------------------------------------------------ bodies

    def _payload(self, outcome: str, model: str, spec: ModelSpec, parsed: ParsedRequest) -> bytes:
        if outcome == "malformed":
            return b'{"candidates": [{"content": {"role": "model", "parts": [{"inlineData": {"mi'
        if self.replay is not None and outcome in ("success", "drop", "truncate", "slow"):
            return self.replay
        text_tokens, image_tokens = prompt_tokens(parsed)
        prompt_total = text_tokens + image_tokens
        prompt_details = [{"modality": "TEXT", "tokenCount": text_tokens}]
        if image_tokens:
            prompt_details.append({"modality": "IMAGE", "tokenCount": image_tokens})
        usage: dict[str, Any] = {"promptTokenCount": prompt_total}
        body: dict[str, Any] = {}
        # From the request, not a shared RNG: the same request costs the same in every run,
        # whatever order concurrent requests arrive in.
        thoughts = _thought_tokens(parsed) if spec.expected_thought_tokens else 0

        if outcome == "block":
            body["promptFeedback"] = {"blockReason": "PROHIBITED_CONTENT"}
            thoughts = 0
        elif outcome in _FINISH or outcome == "image_other":
            reason, message = _FINISH.get(outcome, ("IMAGE_OTHER", _IMAGE_OTHER_MESSAGE))
            candidate: dict[str, Any] = {
                "content": {} if outcome == "image_other" else {"role": "model"},
                "finishReason": reason,
                "index": 0,
                "finishMessage": message,
            }
            if outcome == "safety":
                candidate["safetyRatings"] = [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH",
                     "blocked": True}
                ]
            body["candidates"] = [candidate]
        else:
            parts: list[dict[str, Any]] = []
            if parsed.include_thoughts:
                parts.append({"text": "**Composing the scene**\n\nSetting up light and framing.",
                              "thought": True})
            out_details: list[dict[str, Any]] = []
            candidates_tokens = 0
            if parsed.want_text or outcome == "text_only":
                text = (
                    "Here is the image you asked for."
                    if outcome != "text_only"
                    else "I can describe this scene, but I did not draw an image this time."
                )
                parts.append({"text": text, "thoughtSignature": self._signature()})
                candidates_tokens += max(1, len(text) // 4)
                out_details.append({"modality": "TEXT", "tokenCount": candidates_tokens})
            if outcome != "text_only":
                w, h = image_dimensions(
                    spec.family, parsed.aspect_ratio, parsed.image_size, self.options.scale
                )
                look = palette(parsed.prompt, parsed.seed, parsed.image_size,
                               large=w * h > _SMALL_PIXELS or self.options.image_bytes is not None)
                data = image_b64(spec.mime_type, w, h, self.options.image_bytes, look)
                parts.append({"inlineData": {"mimeType": spec.mime_type, "data": data},
                              "thoughtSignature": self._signature()})
                tokens = spec.tokens_for(parsed.image_size)
                candidates_tokens += tokens
                out_details.append({"modality": "IMAGE", "tokenCount": tokens})
            body["candidates"] = [{"content": {"role": "model", "parts": parts},
                                   "finishReason": "STOP", "index": 0}]
            usage["candidatesTokenCount"] = candidates_tokens
            usage["candidatesTokensDetails"] = out_details
            prompt_total += candidates_tokens
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        usage["totalTokenCount"] = prompt_total + thoughts
        usage["promptTokensDetails"] = prompt_details
        usage["serviceTier"] = parsed.service_tier
        body["usageMetadata"] = usage
        body["modelVersion"] = model
        body["responseId"] = self._response_id()
        return _encode(body)


def _thought_tokens(parsed: ParsedRequest) -> int:
    """150-300 thinking tokens, a deterministic function of the prompt and seed."""
    digest = hashlib.sha256(f"{parsed.seed}|{parsed.prompt}".encode("utf-8", "surrogatepass"))
    return 150 + int.from_bytes(digest.digest()[:4], "big") % 151
