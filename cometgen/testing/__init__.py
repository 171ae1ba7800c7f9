"""A local mock of Gemini's ``generateContent`` endpoint, faithful enough for the official SDK.

It is cometgen's test bed and the default endpoint when no API key is configured::

    async with MockServer(latency=0.5, rpm=60) as server:
        client = genai.Client(api_key="k", http_options={"api_version": "v1beta",
                                                         "base_url": server.url})
    with MockServer(fault_rate=0.1, seed=7).run_in_thread() as server:  # from sync code
        ...

Requests are validated like Google's front end (camelCase or snake_case keys, any base64
dialect, per-model aspect ratios and sizes, unknown fields rejected) and answered with real
JPEG (3.x models) or PNG (2.5) images, scaled down by ``scale`` (1K 1:1 -> 64x64 by default).

Scripted outcomes: put ``[[mock:OUTCOME]]`` in any user text part to get OUTCOME on every
request with that prompt, ``[[mock:OUTCOME:N]]`` for only the first N such requests (then
success), ``[[mock:OUTCOME:N:ARG]]`` / ``[[mock:OUTCOME::ARG]]`` to pass a seconds argument
(``[[mock:429:2:0.2s]]``: two 429s saying "retry in 0.2s"). ``fault_rate`` mixes faults in at
random (seeded). ``billed`` = counted in ``MockStats.billed*``.

================  ======  ===============================================================
outcome           billed  answer
================  ======  ===============================================================
success           yes     200, a real image (the default)
block             no      200, no candidates, ``promptFeedback.blockReason`` PROHIBITED_CONTENT
image_safety      yes     200, candidate without parts, finishReason IMAGE_SAFETY
image_prohibited  yes     200, candidate without parts, finishReason IMAGE_PROHIBITED_CONTENT
safety            yes     200, candidate without parts, finishReason SAFETY, blocked ratings
no_image          yes     200, candidate without parts, finishReason NO_IMAGE
image_other       no      200, ``content: {}``, IMAGE_OTHER, "You will not be charged..."
text_only         yes     200, one text part, no image
429               no      Google 429, QuotaFailure per-minute + RetryInfo (ARG or 1.5s)
429_daily         no      Google 429, quotaId GenerateRequestsPerDayPerProjectPerModel
429_comet         no      429 in CometAPI's envelope; no delay hint, no Retry-After
500/503/504       no      INTERNAL / UNAVAILABLE "The model is overloaded..." / DEADLINE_EXCEEDED
502_html          no      502 nginx HTML page (text/html)
524 / 524_html    no      524 in CometAPI's envelope / as an HTML page
drop              yes     reads the body, closes the connection without an answer
truncate          yes     200 with the full Content-Length, half the body, then close
malformed         yes     200 ``application/json`` that is not valid JSON
slow              yes     200 trickled in 20 chunks over ARG s (default latency or 2 s)
================  ======  ===============================================================

``rpm``/``ipm`` enforce sliding 60 s windows (images counted per image-producing outcome)
and answer the excess with Google's 429 whose ``retryDelay`` is the true wait. ``latency``
delays every answer that reaches the "model" (not 401/400/404/429). ``flex_shed_rate`` sheds
that fraction of ``"serviceTier": "flex"`` requests (503 or 429, counted in ``stats.shed``).
Models and their sizes come from the registry (``models=``); ``GET /api/models`` answers a
CometAPI-style public catalogue made from it.
"""

from ._app import MockOptions
from ._mock_transport import Handler, MockTransport, error_response, image_response
from ._outcomes import MARKERS
from ._server import MockServer, ThreadedMockServer
from ._stats import MockStats, RequestRecord

__all__ = [
    "MARKERS",
    "Handler",
    "MockOptions",
    "MockServer",
    "MockStats",
    "MockTransport",
    "RequestRecord",
    "ThreadedMockServer",
    "error_response",
    "image_response",
]
