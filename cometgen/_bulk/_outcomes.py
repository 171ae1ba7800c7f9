"""Per-item outcomes of a batch: values, never raised."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._image import Image
from .._result import GenerateResult
from ._job import Job
from ._manifest import FileRecord


@dataclass(frozen=True, kw_only=True, slots=True)
class _OutcomeBase:
    #: The item key (the job ``id``, ``id-i`` for n > 1, or a stable request hash).
    key: str
    #: The job this item came from (None for an input line that could not be read).
    job: Job | None
    #: Which of the job's ``n`` images this item is.
    index: int = 0
    model: str | None = None
    attempts: int = 0
    #: True when some attempt may have been generated and billed by the provider.
    maybe_billed: bool = False
    latency: float | None = None
    cost: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Done(_OutcomeBase):
    """Image(s) generated. With ``out_dir`` they are on disk (``files``), else in ``images``."""

    status = "done"
    images: list[Image] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)
    text: str | None = None
    result: GenerateResult | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Blocked(_OutcomeBase):
    """The prompt or the image was blocked by a safety filter. Final: not retried."""

    status = "blocked"
    reason: str = ""
    block_reason: str | None = None
    finish_reason: str | None = None
    result: GenerateResult | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class NoImage(_OutcomeBase):
    """The model answered without an image (``NO_IMAGE``, ``IMAGE_OTHER``, text only)."""

    status = "no_image"
    reason: str = ""
    finish_reason: str | None = None
    text: str | None = None
    result: GenerateResult | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Failed(_OutcomeBase):
    """The item could not be completed; ``reason`` says why, ``error`` is the exception."""

    status = "failed"
    reason: str = ""
    error: BaseException | None = field(default=None, repr=False)
    error_type: str | None = None


Outcome = Done | Blocked | NoImage | Failed


def shed(outcome: Failed, default_tier: str) -> bool:
    """A Flex request the provider shed under load (429/503): counted apart in the stats."""
    tier = (outcome.job.service_tier if outcome.job is not None else None) or default_tier
    return tier == "flex" and getattr(outcome.error, "status_code", None) in (429, 503)
