"""The mock Gemini server over real HTTP: validation, outcomes, limits, images, stats."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from PIL import Image

from cometgen.testing import MARKERS, MockServer
from cometgen.testing._images import image_dimensions, make_jpeg, make_png
from cometgen.testing._limits import SlidingWindow

pytestmark = pytest.mark.anyio

FLASH = "gemini-3.1-flash-image-preview"
PRO = "gemini-3-pro-image-preview"
OLD = "gemini-2.5-flash-image"
FIXTURE = (
    Path(__file__).parent / "fixtures" / "recorded" / "gemini-3-pro-image_sea-otter_image-only.json"
)


def body(text: str = "a red fox", **config: Any) -> dict[str, Any]:
    req: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if config:
        req["generationConfig"] = config
    return req


async def post(
    server: MockServer,
    payload: Any = None,
    *,
    model: str = FLASH,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    path: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    url = server.url + (path or f"/v1beta/models/{model}:generateContent")
    data = raw if raw is not None else json.dumps(payload if payload is not None else body())
    hdrs = {"x-goog-api-key": "k", "Content-Type": "application/json"}
    hdrs.update(headers or {})
    hdrs = {k: v for k, v in hdrs.items() if v}
    async with aiohttp.ClientSession() as session, session.post(url, data=data, headers=hdrs) as r:
        return r.status, dict(r.headers), await r.read()


def image_of(resp: dict[str, Any]) -> tuple[str, bytes]:
    part = resp["candidates"][0]["content"]["parts"][-1]
    return part["inlineData"]["mimeType"], base64.b64decode(part["inlineData"]["data"])


def check_image(data: bytes, fmt: str) -> tuple[int, int]:
    im = Image.open(io.BytesIO(data))
    assert im.format == fmt
    im.verify()
    im = Image.open(io.BytesIO(data))
    im.load()
    return im.size


# ------------------------------------------------------------------ success shape


async def test_success_shape_and_headers() -> None:
    async with MockServer() as server:
        status, headers, raw = await post(server)
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=UTF-8"
    resp = json.loads(raw)
    cand = resp["candidates"][0]
    assert cand["finishReason"] == "STOP" and cand["index"] == 0
    parts = cand["content"]["parts"]
    assert cand["content"]["role"] == "model"
    assert "text" in parts[0] and "inlineData" in parts[1]
    assert all(base64.b64decode(p["thoughtSignature"]) for p in parts)
    mime, data = image_of(resp)
    assert mime == "image/jpeg"
    assert check_image(data, "JPEG") == (64, 64)
    usage = resp["usageMetadata"]
    assert usage["candidatesTokensDetails"][-1] == {"modality": "IMAGE", "tokenCount": 1120}
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert resp["modelVersion"] == FLASH
    assert len(resp["responseId"]) == 20


async def test_image_only_modality_and_pro_thoughts() -> None:
    async with MockServer() as server:
        status, _, raw = await post(server, body(responseModalities=["IMAGE"]), model=PRO)
    resp = json.loads(raw)
    assert status == 200
    assert len(resp["candidates"][0]["content"]["parts"]) == 1
    assert resp["usageMetadata"]["thoughtsTokenCount"] > 0


async def test_include_thoughts_adds_a_thought_part() -> None:
    async with MockServer() as server:
        payload = body(thinkingConfig={"includeThoughts": True})
        _, _, raw = await post(server, payload)
    parts = json.loads(raw)["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and "thoughtSignature" not in parts[0]


@pytest.mark.parametrize(
    ("model", "ratio", "size", "fmt", "expected"),
    [
        (FLASH, "16:9", None, "JPEG", (86, 48)),
        (FLASH, "1:8", "512", "JPEG", (12, 96)),
        (FLASH, "1:1", "4K", "JPEG", (256, 256)),
        (PRO, "21:9", "2K", "JPEG", (198, 84)),
        (PRO, "3:4", None, "JPEG", (56, 75)),
        (OLD, "16:9", None, "PNG", (84, 48)),
        (OLD, "9:16", None, "PNG", (48, 84)),
    ],
)
async def test_image_size_and_format(
    model: str, ratio: str, size: str | None, fmt: str, expected: tuple[int, int]
) -> None:
    cfg: dict[str, Any] = {"aspectRatio": ratio}
    if size:
        cfg["imageSize"] = size
    async with MockServer() as server:
        status, _, raw = await post(server, body(imageConfig=cfg), model=model)
    assert status == 200, raw
    mime, data = image_of(json.loads(raw))
    assert mime == f"image/{fmt.lower()}"
    w, h = check_image(data, fmt)
    assert (w, h) == expected
    a, b = (int(x) for x in ratio.split(":"))
    assert abs(w / h - a / b) < 0.1 * a / b


def test_real_sizes_unscaled() -> None:
    assert image_dimensions("gemini-3-pro-image", "16:9", "4K", 1.0) == (5504, 3072)
    assert image_dimensions("gemini-2.5-flash-image", "16:9", None, 1.0) == (1344, 768)
    assert image_dimensions("gemini-3.1-flash-image", "1:1", "512", 1.0) == (512, 512)


@pytest.mark.parametrize("size", [(1, 1), (7, 9), (64, 64), (333, 17)])
def test_encoders_produce_valid_images(size: tuple[int, int]) -> None:
    assert check_image(make_png(*size), "PNG") == size
    assert check_image(make_jpeg(*size), "JPEG") == size


@pytest.mark.parametrize(("fmt", "make"), [("PNG", make_png), ("JPEG", make_jpeg)])
def test_padding_reaches_target(fmt: str, make: Any) -> None:
    data = make(64, 64, 300_000)
    assert abs(len(data) - 300_000) < 8
    assert check_image(data, fmt) == (64, 64)


async def test_image_bytes_option() -> None:
    async with MockServer(image_bytes=150_000) as server:
        _, _, raw = await post(server)
        _, _, raw_png = await post(server, model=OLD)
    _, jpeg = image_of(json.loads(raw))
    _, png = image_of(json.loads(raw_png))
    assert abs(len(jpeg) - 150_000) < 8 and abs(len(png) - 150_000) < 8
    check_image(jpeg, "JPEG")
    check_image(png, "PNG")


# ------------------------------------------------------------------ accepted variants


async def test_paths_prefix_and_v1() -> None:
    async with MockServer() as server:
        s1, _, _ = await post(server, path=f"/v1beta/models/models/{FLASH}:generateContent")
        s2, _, _ = await post(server, path=f"/v1/models/{PRO}:generateContent")
        s3, _, _ = await post(server, model="gemini-3-pro-image")
    assert (s1, s2, s3) == (200, 200, 200)


async def test_snake_case_and_urlsafe_base64_reference() -> None:
    ref = io.BytesIO()
    Image.new("RGB", (20, 10), (255, 200, 0)).save(ref, "PNG")
    data = ref.getvalue() + b"\xfb\xff\xfe"  # forces '-'/'_' in URL-safe base64
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert "-" in urlsafe or "_" in urlsafe
    payload = {
        "contents": [{"role": "user", "parts": [
            {"text": "make it blue"},
            {"inline_data": {"mime_type": "image/png", "data": urlsafe}},
            {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}},
        ]}],
        "generation_config": {"response_modalities": ["IMAGE"],
                              "image_config": {"aspect_ratio": "4:3", "image_size": "1K"},
                              "thinking_config": {"thinking_level": "HIGH"}},
        "system_instruction": {"parts": [{"text": "be nice"}], "role": "user"},
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}],
        "tools": [{"google_search": {}}],
        "store": False, "serviceTier": "standard", "toolConfig": {}, "cachedContent": None,
    }
    async with MockServer() as server:
        status, _, raw = await post(server, payload)
    assert status == 200, raw
    resp = json.loads(raw)
    details = resp["usageMetadata"]["promptTokensDetails"]
    assert {"modality": "IMAGE", "tokenCount": 516} in details
    _, img = image_of(resp)
    assert check_image(img, "JPEG") == (75, 56)


# ------------------------------------------------------------------ validation


def _400(**kw: Any) -> dict[str, Any]:
    return body(**kw)


BAD_REQUESTS: list[tuple[str, Any, str, str]] = [
    ("not json", b"{nope", FLASH, "Invalid JSON payload received"),
    ("array root", [1], FLASH, "Root element must be a message"),
    ("no contents", {}, FLASH, "contents is not specified"),
    ("empty contents", {"contents": []}, FLASH, "contents is not specified"),
    ("unknown top", {**body(), "foo": 1}, FLASH, 'Unknown name "foo": Cannot find field.'),
    ("wrong nesting", _400(aspectRatio="1:1"), FLASH,
     "Unknown name \"aspectRatio\" at 'generation_config': Cannot find field."),
    ("unknown part field", {"contents": [{"parts": [{"text": "x", "txt": 1}]}]}, FLASH,
     "at 'contents[0].parts[0]'"),
    ("bad ratio", _400(imageConfig={"aspectRatio": "1:8"}), PRO,
     "aspect_ratio must be one of '1:1', '2:3', '3:2', '3:4', '4:3', '4:5', '5:4', '9:16', "
     "'16:9', or '21:9'."),
    ("size on 2.5", _400(imageConfig={"imageSize": "1K"}), OLD, "image_size"),
    ("lowercase size", _400(imageConfig={"imageSize": "2k"}), PRO, "image_size must be one of"),
    ("bad base64", {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png",
                                                            "data": "@@@"}}]}]}, FLASH,
     "Base64 decoding failed"),
    ("bad mime", {"contents": [{"parts": [{"inlineData": {"mimeType": "image/gif",
                                                          "data": "AAAA"}}]}]}, FLASH,
     "MIME type must be image/png"),
    ("bare mime", {"contents": [{"parts": [{"inlineData": {"mimeType": "png",
                                                           "data": "AAAA"}}]}]}, FLASH,
     "Unsupported MIME type: png"),
    ("empty part", {"contents": [{"parts": [{}]}]}, FLASH, "required oneof field 'data'"),
    ("no parts", {"contents": [{"role": "user"}]}, FLASH, "must not be empty"),
    ("bad role", {"contents": [{"role": "bot", "parts": [{"text": "x"}]}]}, FLASH, "valid role"),
    ("lowercase modality", _400(responseModalities=["image"]), FLASH, "Modality"),
    ("audio", _400(responseModalities=["AUDIO"]), FLASH, "AUDIO"),
    ("two candidates", _400(candidateCount=2), FLASH, "Multiple candidates"),
    ("search on 2.5", {**body(), "tools": [{"googleSearch": {}}]}, OLD, "Search Grounding"),
    ("vertex-only option", _400(imageConfig={"outputMimeType": "image/png"}), FLASH,
     'Unknown name "outputMimeType"'),
]


@pytest.mark.parametrize(("payload", "model", "needle"), [b[1:] for b in BAD_REQUESTS],
                         ids=[b[0] for b in BAD_REQUESTS])
async def test_validation_errors(payload: Any, model: str, needle: str) -> None:
    raw = payload if isinstance(payload, bytes) else None
    async with MockServer() as server:
        status, headers, resp_raw = await post(server, payload, model=model, raw=raw)
        assert server.stats.billed_total == 0
        assert server.stats.by_status == {400: 1}
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(resp_raw)["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert needle in error["message"], error["message"]


async def test_unknown_model_and_method() -> None:
    async with MockServer() as server:
        s1, _, r1 = await post(server, model="gemini-9-ultra")
        s2, _, _ = await post(server, path=f"/v1beta/models/{FLASH}:countTokens")
    assert s1 == 404 and json.loads(r1)["error"]["status"] == "NOT_FOUND"
    assert "gemini-9-ultra" in json.loads(r1)["error"]["message"]
    assert s2 == 404


# ------------------------------------------------------------------ auth


async def test_auth_variants() -> None:
    async with MockServer(api_key="secret-key") as server:
        missing = await post(server, headers={"x-goog-api-key": ""})
        bearer = await post(server, headers={"x-goog-api-key": "",
                                             "Authorization": "Bearer secret-key"})
        query = await post(server, headers={"x-goog-api-key": ""},
                           path=f"/v1beta/models/{FLASH}:generateContent?key=secret-key")
        wrong = await post(server, headers={"x-goog-api-key": "guess-key"})
    assert missing[0] == 401
    comet = json.loads(missing[2])["error"]
    assert comet["type"] == "comet_api_error" and "request id:" in comet["message"]
    assert bearer[0] == 200 and query[0] == 200
    assert wrong[0] == 400
    err = json.loads(wrong[2])["error"]
    assert err["details"][0]["reason"] == "API_KEY_INVALID"
    assert b"guess-key" not in wrong[2] and b"secret-key" not in wrong[2]


# ------------------------------------------------------------------ scripted outcomes

FINISH = {
    "image_safety": "IMAGE_SAFETY",
    "image_prohibited": "IMAGE_PROHIBITED_CONTENT",
    "safety": "SAFETY",
    "no_image": "NO_IMAGE",
    "image_other": "IMAGE_OTHER",
}


@pytest.mark.parametrize("outcome", sorted(FINISH))
async def test_finish_reason_outcomes(outcome: str) -> None:
    async with MockServer() as server:
        status, _, raw = await post(server, body(f"cat [[mock:{outcome}]]"))
        billed = server.stats.billed_total
    assert status == 200
    cand = json.loads(raw)["candidates"][0]
    assert cand["finishReason"] == FINISH[outcome]
    assert "parts" not in cand["content"]
    if outcome == "image_other":
        assert cand["content"] == {}
        assert "You will not be charged" in cand["finishMessage"]
        assert billed == 0
    else:
        assert cand["content"] == {"role": "model"}
        assert billed == 1


async def test_block_and_text_only() -> None:
    async with MockServer() as server:
        _, _, blocked = await post(server, body("x [[mock:block]]"))
        _, _, text = await post(server, body("y [[mock:text_only]]"))
        assert server.stats.billed_by_prompt == {"y [[mock:text_only]]": 1}
    resp = json.loads(blocked)
    assert "candidates" not in resp
    assert resp["promptFeedback"] == {"blockReason": "PROHIBITED_CONTENT"}
    assert resp["usageMetadata"]["totalTokenCount"] == resp["usageMetadata"]["promptTokenCount"]
    parts = json.loads(text)["candidates"][0]["content"]["parts"]
    assert len(parts) == 1 and "text" in parts[0]


async def test_google_429s() -> None:
    async with MockServer() as server:
        s1, h1, r1 = await post(server, body("a [[mock:429]]"))
        _, _, r2 = await post(server, body("b [[mock:429::0.2s]]"))
        _, _, r3 = await post(server, body("c [[mock:429_daily]]"))
        s4, h4, r4 = await post(server, body("d [[mock:429_comet]]"))
        assert server.stats.billed_total == 0
    assert s1 == 429 and "Retry-After" not in h1
    err = json.loads(r1)["error"]
    assert err["status"] == "RESOURCE_EXHAUSTED"
    kinds = {d["@type"].rsplit(".", 1)[1]: d for d in err["details"]}
    assert kinds["RetryInfo"]["retryDelay"] == "1.5s"
    assert kinds["QuotaFailure"]["violations"][0]["quotaId"] == (
        "GenerateRequestsPerMinutePerProjectPerModel"
    )
    assert json.loads(r2)["error"]["details"][2]["retryDelay"] == "0.2s"
    daily = json.loads(r3)["error"]["details"][1]["violations"][0]
    assert daily["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel"
    assert s4 == 429 and "Retry-After" not in h4
    assert json.loads(r4)["error"]["type"] == "comet_api_error"


@pytest.mark.parametrize(
    ("outcome", "code", "status"),
    [("500", 500, "INTERNAL"), ("503", 503, "UNAVAILABLE"), ("504", 504, "DEADLINE_EXCEEDED")],
)
@pytest.mark.parametrize("style", ["google", "comet"])
async def test_server_errors(outcome: str, code: int, status: str, style: str) -> None:
    async with MockServer(error_style=style) as server:
        got, _, raw = await post(server, body(f"x [[mock:{outcome}]]"))
    assert got == code
    err = json.loads(raw)["error"]
    if style == "google":
        assert err["code"] == code and err["status"] == status
    else:
        assert err["type"] == "comet_api_error"


async def test_html_and_524() -> None:
    async with MockServer() as server:
        s1, h1, r1 = await post(server, body("x [[mock:502_html]]"))
        s2, _, r2 = await post(server, body("x [[mock:524]]"))
        s3, h3, _ = await post(server, body("x [[mock:524_html]]"))
    assert s1 == 502 and h1["Content-Type"].startswith("text/html") and b"<html>" in r1
    assert s2 == 524 and json.loads(r2)["error"]["type"] == "comet_api_error"
    assert s3 == 524 and h3["Content-Type"].startswith("text/html")


async def test_connection_faults_are_billed() -> None:
    async with MockServer() as server:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post(server, body("x [[mock:drop]]"))
        with pytest.raises(aiohttp.ClientPayloadError):
            await post(server, body("x [[mock:truncate]]"))
        status, _, raw = await post(server, body("x [[mock:malformed]]"))
        assert status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw)
        start = time.monotonic()
        status, _, raw = await post(server, body("x [[mock:slow:1:0.3s]]"))
        assert time.monotonic() - start >= 0.25
        assert status == 200 and image_of(json.loads(raw))[0] == "image/jpeg"
        stats = server.stats
        assert stats.billed_total == 4
        assert stats.billed_by_prompt["x [[mock:drop]]"] == 1
        assert stats.log[0].status == 0 and stats.log[0].outcome == "drop"


async def test_counted_marker_then_success() -> None:
    async with MockServer() as server:
        statuses = [(await post(server, body("p [[mock:503:2]]")))[0] for _ in range(4)]
        other = (await post(server, body("q [[mock:503:2]]")))[0]
        assert server.stats.billed_by_prompt == {"p [[mock:503:2]]": 2}
        server.reset()
        assert (await post(server, body("p [[mock:503:2]]")))[0] == 503
        assert server.stats.requests == 1
    assert statuses == [503, 503, 200, 200]
    assert other == 503


async def test_fault_rate_is_seeded() -> None:
    async def run(seed: int) -> list[int]:
        async with MockServer(fault_rate=0.5, seed=seed, latency=0.05) as server:
            out = []
            for i in range(12):
                try:
                    out.append((await post(server, body(f"p{i}")))[0])
                except aiohttp.ClientError:  # drop / truncate
                    out.append(-1)
            return out

    with anyio.fail_after(30):
        first = await run(3)
        assert first == await run(3)
    assert any(s != 200 for s in first) and any(s == 200 for s in first)


# ------------------------------------------------------------------ limits and latency


async def test_rpm_enforced_with_true_wait() -> None:
    async with MockServer(rpm=5) as server:
        statuses = [(await post(server, body(f"p{i}")))[0] for i in range(5)]
        status, headers, raw = await post(server, body("p6"))
        assert server.stats.rate_limited == 1
        assert server.stats.billed_total == 5
    assert statuses == [200] * 5
    assert status == 429 and "Retry-After" not in headers
    details = json.loads(raw)["error"]["details"]
    delay = float(details[2]["retryDelay"].rstrip("s"))
    assert 55 < delay <= 60
    assert details[1]["violations"][0]["quotaValue"] == "5"


async def test_ipm_counts_images_only() -> None:
    async with MockServer(ipm=1) as server:
        s_text = [(await post(server, body(f"t{i} [[mock:text_only]]")))[0] for i in range(3)]
        s_img = [(await post(server, body(f"i{i}")))[0] for i in range(2)]
    assert s_text == [200] * 3
    assert s_img == [200, 429]


def test_sliding_window() -> None:
    w = SlidingWindow(2, window=10.0)
    assert w.wait_time(0.0) == 0.0
    w.add(0.0)
    w.add(4.0)
    assert w.wait_time(5.0) == pytest.approx(5.0)
    assert w.wait_time(10.0) == 0.0
    assert w.wait_time(10.0, n=2) == pytest.approx(4.0)


async def test_latency_overlaps() -> None:
    async with MockServer(latency=0.3) as server:
        start = time.monotonic()
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(post, server, body(f"p{i}"))
        elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 0.9


# ------------------------------------------------------------------ stats, replay, threads


async def test_billed_keyed_by_body_hash() -> None:
    payload = json.dumps(body("same")).encode()
    async with MockServer() as server:
        await post(server, raw=payload)
        await post(server, raw=payload)
        stats = server.stats
        assert stats.billed == {hashlib.sha256(payload).hexdigest(): 2}
        assert stats.billed_by_prompt == {"same": 2}
        assert [r.status for r in stats.log] == [200, 200]
        assert stats.log[0].model == FLASH and stats.log[0].prompt == "same"


async def test_replay_serves_recorded_response() -> None:
    recorded = json.loads(FIXTURE.read_text())["response"]
    async with MockServer(replay=FIXTURE) as server:
        status, _, raw = await post(server, model=PRO)
        s_err, _, _ = await post(server, body("x [[mock:503]]"))
    assert status == 200 and json.loads(raw) == recorded
    assert s_err == 503


async def test_stream_endpoint_sends_sse() -> None:
    async with MockServer() as server:
        status, headers, raw = await post(
            server, path=f"/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"
        )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert raw.startswith(b"data: {") and raw.endswith(b"\r\n\r\n")


def test_threaded_server() -> None:
    with MockServer(rpm=100).run_in_thread() as server:
        req = urllib.request.Request(
            f"{server.url}/v1beta/models/{FLASH}:generateContent",
            data=json.dumps(body("threaded")).encode(),
            headers={"x-goog-api-key": "k", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
            json.loads(r.read())
        assert server.stats.billed_by_prompt == {"threaded": 1}
        server.reset()
        assert server.stats.requests == 0
        url = server.url
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


def test_options_are_validated() -> None:
    for bad in ({"fault_rate": 2.0}, {"latency": -1}, {"rpm": 0}, {"error_style": "x"},
                {"scale": 0}):
        with pytest.raises(ValueError):
            MockServer(**bad)


def test_markers_documented() -> None:
    import cometgen.testing as testing

    assert testing.__doc__ is not None
    for name in MARKERS:
        assert name.split("_")[0] in testing.__doc__
