"""Scripted outcomes: the ``[[mock:OUTCOME[:N[:ARG]]]]`` prompt markers and random faults."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

#: Every outcome the mock can script, with what it answers.
MARKERS: dict[str, str] = {
    "success": "200, a real image (the default)",
    "block": "200, no candidates, promptFeedback.blockReason PROHIBITED_CONTENT",
    "image_safety": "200, candidate with no parts, finishReason IMAGE_SAFETY",
    "image_prohibited": "200, candidate with no parts, finishReason IMAGE_PROHIBITED_CONTENT",
    "safety": "200, candidate with no parts, finishReason SAFETY + blocked safetyRatings",
    "no_image": "200, candidate with no parts, finishReason NO_IMAGE",
    "image_other": '200, content {}, finishReason IMAGE_OTHER, "You will not be charged"',
    "text_only": "200, one text part and no image",
    "429": "Google 429 RESOURCE_EXHAUSTED, per-minute QuotaFailure + RetryInfo (ARG: delay)",
    "429_daily": "Google 429, quotaId GenerateRequestsPerDayPerProjectPerModel (ARG: delay)",
    "429_comet": "429 in CometAPI's envelope, no delay hint, no Retry-After",
    "500": "500 INTERNAL (envelope per error_style)",
    "502_html": "502 with an nginx HTML page (text/html)",
    "503": "503 UNAVAILABLE 'The model is overloaded...' (envelope per error_style)",
    "504": "504 DEADLINE_EXCEEDED (envelope per error_style)",
    "524": "524 in CometAPI's envelope",
    "524_html": "524 with an HTML page (text/html)",
    "drop": "reads the body, then closes the connection without answering",
    "truncate": "200 headers with the full Content-Length, half the body, then close",
    "malformed": "200 application/json whose body is not valid JSON",
    "slow": "200, body sent in small chunks over ARG seconds (default latency or 2)",
}

#: Outcomes the real service would charge for: a generation happened.
BILLED: frozenset[str] = frozenset(
    {
        "success", "image_safety", "image_prohibited", "safety", "no_image", "text_only",
        "drop", "truncate", "malformed", "slow",
    }
)
#: Outcomes that produce an image (counted against ``ipm``).
PRODUCES_IMAGE: frozenset[str] = frozenset({"success", "drop", "truncate", "malformed", "slow"})
#: Outcomes that answer at once, without the configured latency.
IMMEDIATE: frozenset[str] = frozenset({"429", "429_daily", "429_comet"})
#: Faults mixed by ``fault_rate``; overloads and rate limits are the common ones.
RANDOM_FAULTS: tuple[str, ...] = (
    "429", "429", "503", "503", "500", "502_html", "504", "524", "drop", "truncate",
    "malformed", "slow",
)

_MARKER = re.compile(r"\[\[mock:([a-z0-9_]+)(?::(\d*))?(?::([0-9.]+)s?)?\]\]")


@dataclass(frozen=True, slots=True)
class Marker:
    outcome: str
    count: int | None
    arg: float | None


def find_marker(texts: Iterable[str]) -> Marker | None:
    """The first valid marker in the given prompt texts."""
    for text in texts:
        if "[[mock:" not in text:
            continue
        for m in _MARKER.finditer(text):
            if m.group(1) in MARKERS:
                count = int(m.group(2)) if m.group(2) else None
                arg = float(m.group(3)) if m.group(3) else None
                return Marker(m.group(1), count, arg)
    return None


class OutcomePicker:
    """Chooses each request's outcome: marker first, then random faults, else success."""

    def __init__(self, fault_rate: float, seed: int) -> None:
        self.fault_rate = fault_rate
        self._rng = random.Random(seed)
        self._seen: dict[tuple[str, str], int] = {}

    def pick(self, texts: list[str]) -> tuple[str, float | None]:
        marker = find_marker(texts)
        if marker is not None:
            if marker.count is None:
                return marker.outcome, marker.arg
            key = (marker.outcome, "\x00".join(texts))
            seen = self._seen.get(key, 0)
            self._seen[key] = seen + 1
            if seen < marker.count:
                return marker.outcome, marker.arg
            return "success", None
        if self.fault_rate > 0 and self._rng.random() < self.fault_rate:
            return self._rng.choice(RANDOM_FAULTS), None
        return "success", None

    def reset(self) -> None:
        self._seen.clear()
