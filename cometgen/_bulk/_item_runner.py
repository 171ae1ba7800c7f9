"""Running one work item: adopt a leftover image, or generate, save and describe it."""

from __future__ import annotations

import datetime
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from .. import _wire as wire
from .._client import AsyncClient
from .._exceptions import CometgenError
from .._files import extension_for, image_file_name, image_path, make_dirs, write_atomic
from .._request import build_request, image_part
from .._result import GenerateResult
from ._halt import Halted
from ._job import WorkItem
from ._manifest import ADOPTED_REASON, FileRecord, ManifestRecord
from ._outcomes import Blocked, Done, Failed, NoImage, Outcome
from ._pricing import PriceTable

logger = logging.getLogger("cometgen")

#: Output types an interrupted run may have left on disk (what Gemini models return).
_ADOPTABLE = ("image/jpeg", "image/png")


def now_iso() -> str:
    """The current time, ISO 8601 UTC with milliseconds (``...T03:04:05.678+00:00``)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class ItemRunner:
    """Turns a ``WorkItem`` into an outcome and its manifest record; never raises for it."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        out_dir: Path | None,
        prices: PriceTable,
        include_text: bool,
        job_timeout: float | None,
        stop: Callable[[str], None],
    ) -> None:
        self.client = client
        self.out_dir = out_dir
        self.prices = prices
        self.include_text = include_text
        self.job_timeout = job_timeout
        self._stop = stop
        self._made_dirs: set[str] = set()  # image folders known to exist (<= 65,793)

    async def generate(
        self, item: WorkItem, started_at: str, t0: float
    ) -> tuple[Outcome, ManifestRecord]:
        try:
            request = await self._request_for(item)
            result = await self.client.generate_from_request(
                request, model=item.model, timeout=self.job_timeout,
                cache_variant=str(item.index),  # n images of one job are n answers
            )
        except Halted:
            raise  # the batch is stopping: nothing was sent for this attempt
        except CometgenError as exc:
            # Systemic failures (auth, quota, model) are the batch's to judge (HaltDetector).
            return self._failed(item, exc, started_at, t0)
        except Exception as exc:  # a bug must not take the siblings down
            logger.exception("unexpected error on item %r", item.key)
            return self._failed(item, exc, started_at, t0)
        job = item.job
        cost = 0.0 if result.cached else self.prices.cost_from_usage(
            item.model, result.response.usage_metadata, item.service_tier)
        status = result.outcome
        record = ManifestRecord(
            key=item.key, id=job.id, status=status, model=item.model, prompt=job.prompt,
            aspect_ratio=item.aspect_ratio, image_size=item.image_size, seed=job.seed,
            index=item.index, line=job.line, started_at=started_at, metadata=job.metadata,
            attempts=result.attempts, maybe_billed=result.maybe_billed,
            latency=round(result.latency, 4), cost=cost, usage=result.usage.as_dict(),
            finish_reason=result.finish_reason, block_reason=result.block_reason,
            text=[result.text] if result.text else [], cached=result.cached,
        )
        if status == "done":
            try:
                files = await self._save(item, result)
            except OSError as exc:
                self._stop("disk")
                reason = f"cannot write image: {exc.strerror or exc}"
                record.status, record.reason = "failed", reason
                record.error_type, record.maybe_billed = type(exc).__name__, True
                record.finished_at = now_iso()
                return (
                    Failed(key=item.key, job=job, index=item.index, model=item.model,
                           attempts=result.attempts, maybe_billed=True,
                           latency=result.latency, cost=cost, reason=reason, error=exc,
                           error_type=type(exc).__name__),
                    record,
                )
            record.files = files
            record.finished_at = now_iso()
            kept = self.out_dir is None
            return (
                Done(key=item.key, job=job, index=item.index, model=item.model,
                     attempts=result.attempts, maybe_billed=result.maybe_billed,
                     latency=result.latency, cost=cost,
                     images=result.images if kept else [], files=files, text=result.text,
                     result=result if kept else None),
                record,
            )
        reason = _reason(result)
        record.reason = reason
        record.finished_at = now_iso()
        outcome: Outcome
        if status == "blocked":
            outcome = Blocked(
                key=item.key, job=job, index=item.index, model=item.model,
                attempts=result.attempts, maybe_billed=result.maybe_billed,
                latency=result.latency, cost=cost, reason=reason,
                block_reason=result.block_reason, finish_reason=result.finish_reason,
                result=result,
            )
        else:
            outcome = NoImage(
                key=item.key, job=job, index=item.index, model=item.model,
                attempts=result.attempts, maybe_billed=result.maybe_billed,
                latency=result.latency, cost=cost, reason=reason,
                finish_reason=result.finish_reason, text=result.text, result=result,
            )
        return outcome, record

    async def adopt_existing(
        self, item: WorkItem, started_at: str
    ) -> tuple[Outcome, ManifestRecord] | None:
        """An image already on disk under this item's final name, from an interrupted run."""
        assert self.out_dir is not None
        for mime, name in _adoptable_names(item):
            path = self.out_dir / name
            if not path.is_file():  # a stat: cheap enough to do on the loop
                continue
            data = await anyio.Path(path).read_bytes()
            if not _looks_complete(data, mime):
                # Images are synced per manifest flush, not per file: after a power loss
                # an image without a record may be empty or torn. Generate it again.
                logger.warning("%s: not adopting %s: incomplete image", item.key, name)
                return None
            sha = hashlib.sha256(data).hexdigest()
            files = [FileRecord(path=name, sha256=sha, mime_type=mime, bytes=len(data))]
            logger.info("%s: %s", item.key, ADOPTED_REASON)
            job = item.job
            return (
                Done(key=item.key, job=job, index=item.index, model=item.model,
                     files=files, maybe_billed=True),
                ManifestRecord(
                    key=item.key, id=job.id, status="done", reason=ADOPTED_REASON,
                    files=files, model=item.model, prompt=job.prompt, index=item.index,
                    line=job.line, aspect_ratio=item.aspect_ratio, image_size=item.image_size,
                    seed=job.seed, maybe_billed=True, started_at=started_at, finished_at=now_iso(),
                    metadata=job.metadata,
                ),
            )
        return None

    def _failed(
        self, item: WorkItem, exc: BaseException, started_at: str, t0: float
    ) -> tuple[Outcome, ManifestRecord]:
        job = item.job
        attempts = getattr(exc, "attempts", 0)
        maybe_billed = bool(getattr(exc, "maybe_billed", False))
        latency = time.monotonic() - t0
        reason = f"{type(exc).__name__}: {exc}"
        error_type = type(exc).__name__
        return (
            Failed(key=item.key, job=job, index=item.index, model=item.model,
                   attempts=attempts, maybe_billed=maybe_billed, latency=latency,
                   reason=reason, error=exc, error_type=error_type),
            ManifestRecord(
                key=item.key, id=job.id, status="failed", reason=reason,
                error_type=error_type, model=item.model, prompt=job.prompt,
                aspect_ratio=item.aspect_ratio, image_size=item.image_size, seed=job.seed,
                index=item.index, line=job.line, attempts=attempts,
                maybe_billed=maybe_billed, latency=round(latency, 4),
                started_at=started_at, finished_at=now_iso(), metadata=job.metadata,
            ),
        )

    async def _request_for(self, item: WorkItem) -> wire.GenerateContentRequest:
        parts = [wire.Part(text=item.job.prompt)]
        for ref in item.job.images:
            parts.append(await image_part(ref))
        return build_request(
            [wire.Content(role="user", parts=parts)],
            aspect_ratio=item.aspect_ratio,
            image_size=item.image_size,
            seed=item.job.seed,
            include_text=self.include_text,
            service_tier=item.service_tier,
        )

    async def _save(self, item: WorkItem, result: GenerateResult) -> list[FileRecord]:
        if self.out_dir is None:
            return []
        files: list[FileRecord] = []
        for i, image in enumerate(result.images):
            name = _file_name(item, image.mime_type, i, len(result.images))
            folder = name.rpartition("/")[0]
            if folder not in self._made_dirs:
                await anyio.to_thread.run_sync(make_dirs, self.out_dir, folder)
                self._made_dirs.add(folder)
            # No fsync here (group commit): the manifest writer fsyncs the files its
            # records name before it writes those records; temp + rename still means a
            # final name never holds a partial image after kill -9.
            sha = await write_atomic(self.out_dir / name, image.data, fsync=False)
            files.append(FileRecord(path=name, sha256=sha, mime_type=image.mime_type,
                                    bytes=len(image.data)))
        return files


def _suffix(item: WorkItem, i: int = 0, count: int = 1) -> int | None:
    if item.job.n > 1 or count > 1:
        return item.index if count == 1 else item.index * 100 + i
    return None


def _file_name(item: WorkItem, mime_type: str, i: int = 0, count: int = 1) -> str:
    """The path (relative to OUTDIR) of image ``i`` of the ``count`` an item got back."""
    return image_path(item.key, item.job.id, _suffix(item, i, count), extension_for(mime_type),
                      item.job.line)


def _adoptable_names(item: WorkItem) -> list[tuple[str, str]]:
    """Where an unrecorded image of ``item`` may be: its path, then (a folder written by a
    version before the ``images/`` layout) its name at the top of OUTDIR."""
    names = [(m, _file_name(item, m)) for m in _ADOPTABLE]
    suffix = _suffix(item)
    names += [(m, image_file_name(item.key, item.job.id, suffix, extension_for(m)))
              for m in _ADOPTABLE]
    return names


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _looks_complete(data: bytes, mime: str) -> bool:
    """Starts with the format's signature and ends with its end marker."""
    if mime == "image/png":
        return data.startswith(_PNG_SIGNATURE) and data.endswith(_PNG_END)
    # JPEG: SOI ... EOI; lost blocks read back as zeros, so ignore a zero tail.
    return data.startswith(b"\xff\xd8") and data.rstrip(b"\x00").endswith(b"\xff\xd9")


def _reason(result: GenerateResult) -> str:
    if result.block_reason:
        msg = f": {result.block_reason_message}" if result.block_reason_message else ""
        return f"prompt blocked ({result.block_reason}){msg}"
    reason = result.finish_reason or "no finish reason"
    if result.finish_message:
        return f"{reason}: {result.finish_message}"
    if result.text:
        return f"{reason}: text only: {result.text[:200]}"
    return reason
