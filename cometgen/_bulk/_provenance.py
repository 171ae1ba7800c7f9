"""What each manifest record says about where it came from, and what a rerun compares."""

from __future__ import annotations

import time
from typing import Final

from .._exceptions import InputError
from .._limits import SlotRefused
from ._item_runner import now_iso
from ._job import Job, WorkItem
from ._manifest import STATUS_FAILED, ManifestRecord, ManifestState
from ._outcomes import Failed

__all__ = [
    "INTERRUPTED", "MOCK_ENDPOINT", "add_provenance", "bad_line_result", "changed_request",
    "cut_record", "refused_result",
]

#: The endpoint name recorded for the built-in mock server (its URL changes every run).
MOCK_ENDPOINT: Final = "mock"
#: The reason recorded for a request the grace timer cut.
INTERRUPTED: Final = "interrupted"


def add_provenance(record: ManifestRecord, item: WorkItem, endpoint: str | None) -> None:
    """Fill in the endpoint and the effective request options of ``item``."""
    record.endpoint = endpoint
    record.aspect_ratio = item.aspect_ratio
    record.image_size = item.image_size
    record.seed = item.job.seed
    record.fingerprint = item.fingerprint


def cut_record(
    item: WorkItem, started_at: str, t0: float, endpoint: str | None, *,
    reason: str = INTERRUPTED, attempts: int = 1,
) -> ManifestRecord:
    """The record of an item a stop cut short after it sent a request (the grace timer cut
    it, or its retry was refused): failed, and possibly billed. ``reason``: why it stopped."""
    job = item.job
    record = ManifestRecord(
        key=item.key, id=job.id, status=STATUS_FAILED, reason=reason,
        error_type="Interrupted" if reason == INTERRUPTED else "Halted", model=item.model,
        prompt=job.prompt, index=item.index, line=job.line, attempts=attempts,
        maybe_billed=True,
        latency=round(time.monotonic() - t0, 4), started_at=started_at,
        finished_at=now_iso(), metadata=job.metadata,
    )
    add_provenance(record, item, endpoint)
    return record


def refused_result(
    item: WorkItem, started_at: str, t0: float, endpoint: str | None, stop: str | None,
    error: SlotRefused,
) -> tuple[Failed, ManifestRecord]:
    """An item whose retry a stop refused, after an attempt that may have been billed;
    ``stop``: why the run stopped (the reason recorded)."""
    reason = stop or INTERRUPTED
    record = cut_record(item, started_at, t0, endpoint, reason=reason, attempts=error.attempts)
    return (
        Failed(key=item.key, job=item.job, index=item.index, model=item.model,
               attempts=record.attempts, maybe_billed=True, latency=record.latency,
               reason=reason, error=error, error_type=record.error_type),
        record,
    )


def bad_line_result(
    key: str, error: InputError, job: Job | None
) -> tuple[Failed, ManifestRecord]:
    """The outcome and record of an input line that could not be used."""
    now = now_iso()
    return (
        Failed(key=key, job=job, reason=str(error), error=error, error_type="InputError"),
        ManifestRecord(
            key=key, id=job.id if job else None, status=STATUS_FAILED, reason=str(error),
            error_type="InputError", line=error.line, prompt=job.prompt if job else None,
            started_at=now, finished_at=now, metadata=job.metadata if job else None,
        ),
    )


def changed_request(state: ManifestState, item: WorkItem) -> bool:
    """The folder finished ``item.key`` for a different request (same id, new prompt...)."""
    if item.fingerprint is None:
        return False
    old = state.fingerprints.get(item.key)
    return old is not None and old != item.fingerprint and state.status(item.key) != "failed"
