"""``Batch``: run many jobs concurrently, write images and a manifest, resume, never pay twice.

One task group owned by the ``Batch`` context: a producer reads jobs (lazily, in a worker
thread for blocking iterables), filters what is already done, and feeds a bounded stream;
``concurrency`` workers generate, write files atomically, append to the manifest, then hand
the outcome to the caller. Per-item failures are values; cancellation propagates.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import _wire as wire
from ._client import AsyncClient
from ._config import Limits
from ._exceptions import (
    AuthenticationError,
    CometgenError,
    ConfigError,
    InputError,
    PermissionDeniedError,
    QuotaExhaustedError,
)
from ._files import cleanup_temp_files, extension_for, image_file_name, write_atomic
from ._job import Job, WorkItem, expand, image_sha256
from ._manifest import (
    FileRecord,
    ManifestRecord,
    ManifestState,
    ManifestWriter,
    load_manifest,
    should_send,
    write_metadata_jsonl,
)
from ._outcomes import Blocked, Done, Failed, NoImage, Outcome
from ._pricing import PriceTable, load_prices
from ._request import build_request, image_part
from ._result import GenerateResult
from ._stats import BatchStats

__all__ = ["Batch", "JobSource"]

logger = logging.getLogger("cometgen")

#: What ``Batch.run`` accepts: jobs, or ``InputError``s for lines that could not be read.
JobSource = Iterable[Job | InputError] | AsyncIterable[Job | InputError]

#: Errors after which no later item can succeed: stop dispatching.
_FATAL: tuple[type[CometgenError], ...] = (
    QuotaExhaustedError,
    AuthenticationError,
    PermissionDeniedError,
)
_READ_CHUNK = 256


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def shard_of(key: str, count: int) -> int:
    """The shard (0-based) an item key belongs to, stable across machines and runs."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


class Batch:
    """Generate many jobs with bounded concurrency; results stream back as they complete.

    ``async with Batch(client, out_dir="out") as batch: async for o in batch.run(jobs): ...``
    With ``out_dir``, images are written atomically there and every finished item goes to
    ``manifest.jsonl``; re-running on the same folder skips what is done. Without it,
    images stay in memory on the ``Done`` outcomes.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        out_dir: str | os.PathLike[str] | None = None,
        concurrency: int = 16,
        rpm: float | None = None,
        ipm: float | None = None,
        adaptive: bool | None = None,
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | None = None,
        include_text: bool = True,
        retry_failed: bool = False,
        max_cost: float | None = None,
        prices: PriceTable | str | os.PathLike[str] | None = None,
        shard: tuple[int, int] | None = None,
        job_timeout: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency!r}")
        if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
            raise ConfigError(f"shard must be I/N with 0 <= I < N, got {shard[0]}/{shard[1]}")
        if max_cost is not None and max_cost < 0:
            raise ConfigError(f"max_cost must be >= 0, got {max_cost!r}")
        limits = Limits(
            concurrency=concurrency,
            rpm=rpm if rpm is not None else client.limits.rpm,
            ipm=ipm if ipm is not None else client.limits.ipm,
            adaptive=client.limits.adaptive if adaptive is None else adaptive,
        )
        self.client = client.with_options(limits=limits, on_no_image="return")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.concurrency = concurrency
        self.model = model or client.model
        self.aspect_ratio = aspect_ratio
        self.image_size = image_size
        self.include_text = include_text
        self.retry_failed = retry_failed
        self.max_cost = max_cost
        self.prices = prices if isinstance(prices, PriceTable) else load_prices(prices)
        self.shard = shard
        self.job_timeout = job_timeout
        self.stats = BatchStats()
        self._state: ManifestState | None = None
        self._writer: ManifestWriter | None = None
        self._tg: TaskGroup | None = None
        self._stopping = anyio.Event()
        self._seen: set[str] = set()
        self._inflight_projection = 0.0
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Batch:
        if self.out_dir is not None:
            await self._open_out_dir(self.out_dir)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def _open_out_dir(self, out_dir: Path) -> None:
        try:
            await anyio.Path(out_dir).mkdir(parents=True, exist_ok=True)
            probe = out_dir / f".cometgen-write-test-{os.getpid()}"
            await anyio.Path(probe).write_bytes(b"")
            await anyio.Path(probe).unlink()
        except OSError as exc:
            raise ConfigError(
                f"output folder {os.fspath(out_dir)!r} is not writable: {exc.strerror or exc}"
            ) from exc
        removed = await anyio.to_thread.run_sync(cleanup_temp_files, out_dir)
        if removed:
            logger.info("removed %d temp file(s) left by an interrupted run", removed)
        self._state = await anyio.to_thread.run_sync(load_manifest, out_dir)
        if self._state.corrupt_lines:
            logger.warning(
                "ignored %d torn or invalid manifest line(s)", self._state.corrupt_lines
            )
        self._writer = ManifestWriter(out_dir)
        await self._writer.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        tg, self._tg = self._tg, None
        # Leaving early (break, error) abandons the remaining work.
        tg.cancel_scope.cancel()
        try:
            await tg.__aexit__(exc_type, exc, tb)
        finally:
            await self._close_out_dir()
        return None

    async def _close_out_dir(self) -> None:
        # The writer shields its own final flush; its task group must be exited from the
        # scope it was entered in, so no extra scope around it.
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.__aexit__(None, None, None)
        if self.out_dir is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(write_metadata_jsonl, self.out_dir)
                except OSError as exc:
                    logger.error("could not write metadata.jsonl: %s", exc)

    def stop(self, reason: str = "stopped") -> None:
        """Stop dispatching new items; in-flight ones finish and are recorded."""
        if self.stats.stop_reason is None:
            self.stats.stop_reason = reason
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- running ---------------------------------------------------------------------------

    def run(self, jobs: JobSource) -> MemoryObjectReceiveStream[Outcome]:
        """Start processing ``jobs``; iterate the returned stream for outcomes as they finish.

        The stream ends when every job has an outcome (or the batch was stopped).
        """
        if self._tg is None:
            raise RuntimeError("use Batch inside 'async with'")
        if self._started:
            raise RuntimeError("Batch.run() can be called once per Batch")
        self._started = True
        work_send, work_recv = anyio.create_memory_object_stream[WorkItem](self.concurrency)
        out_send, out_recv = anyio.create_memory_object_stream[Outcome](self.concurrency)
        self._tg.start_soon(self._produce, jobs, work_send, out_send.clone())
        for _ in range(self.concurrency):
            self._tg.start_soon(self._work_loop, work_recv.clone(), out_send.clone())
        work_recv.close()
        out_send.close()
        return out_recv

    async def run_all(self, jobs: JobSource) -> BatchStats:
        """Run to completion, discarding outcomes (they are in the manifest); return stats."""
        async with self.run(jobs) as outcomes:
            async for _ in outcomes:
                pass
        return self.stats

    async def _iter_jobs(self, jobs: JobSource) -> AsyncIterable[Job | InputError]:
        if isinstance(jobs, AsyncIterable):
            async for job in jobs:
                yield job
            return
        iterator: Iterator[Job | InputError] = iter(jobs)
        while True:
            # Readers block on disk or stdin: pull chunks in a worker thread.
            chunk = await anyio.to_thread.run_sync(lambda: list(islice(iterator, _READ_CHUNK)))
            if not chunk:
                return
            for job in chunk:
                yield job

    async def _produce(
        self,
        jobs: JobSource,
        work: MemoryObjectSendStream[WorkItem],
        out: MemoryObjectSendStream[Outcome],
    ) -> None:
        async with work, out:
            async for entry in self._iter_jobs(jobs):
                if self._stopping.is_set():
                    break
                if isinstance(entry, InputError):
                    await self._bad_line(entry, None, out)
                    continue
                try:
                    hashes = (
                        await anyio.to_thread.run_sync(_hash_images, entry.images)
                        if entry.images
                        else []
                    )
                    items = expand(
                        entry,
                        default_model=self.model,
                        default_aspect_ratio=self.aspect_ratio,
                        default_image_size=self.image_size,
                        image_hashes=hashes,
                    )
                except InputError as exc:
                    await self._bad_line(exc, entry, out)
                    continue
                for item in items:
                    if not self._admit(item):
                        continue
                    if self._over_budget(item):
                        self.stop("budget")
                        break
                    await work.send(item)
                if self._stopping.is_set():
                    break

    def _admit(self, item: WorkItem) -> bool:
        """Dedupe, shard and resume filters; counts what it drops."""
        key = item.key
        if key in self._seen:
            self.stats.duplicates += 1
            logger.warning("duplicate key %r (line %s): generated once", key, item.job.line)
            return False
        self._seen.add(key)
        if self.shard is not None and shard_of(key, self.shard[1]) != self.shard[0]:
            self.stats.other_shard += 1
            return False
        if self._state is not None and not should_send(
            self._state, key, retry_failed=self.retry_failed
        ):
            self.stats.skipped += 1
            return False
        return True

    def _over_budget(self, item: WorkItem) -> bool:
        if self.max_cost is None:
            return False
        projected = self.prices.projected_cost(
            item.model,
            image_size=item.image_size,
            prompt_chars=len(item.job.prompt),
            n_reference_images=len(item.job.images),
        ) or 0.0
        if self.stats.cost + self._inflight_projection + projected > self.max_cost:
            return True
        self._inflight_projection += projected
        return False

    async def _bad_line(
        self, error: InputError, job: Job | None, out: MemoryObjectSendStream[Outcome]
    ) -> None:
        key = (
            (job.id if job is not None else None) or error.item_id or f"line-{error.line}"
        )
        if key in self._seen:
            return
        self._seen.add(key)
        if self.shard is not None and shard_of(key, self.shard[1]) != self.shard[0]:
            self.stats.other_shard += 1
            return
        if self._state is not None and not should_send(self._state, key, retry_failed=True):
            self.stats.skipped += 1
            return
        outcome = Failed(key=key, job=job, reason=str(error), error=error,
                         error_type="InputError")
        now = _now_iso()
        await self._record(
            outcome,
            ManifestRecord(
                key=key, id=job.id if job else None, status="failed", reason=str(error),
                error_type="InputError", line=error.line, prompt=job.prompt if job else None,
                started_at=now, finished_at=now,
                metadata=job.metadata if job else None,
            ),
            out,
        )

    async def _work_loop(
        self, work: MemoryObjectReceiveStream[WorkItem], out: MemoryObjectSendStream[Outcome]
    ) -> None:
        async with work, out:
            async for item in work:
                await self._process(item, out)

    async def _process(self, item: WorkItem, out: MemoryObjectSendStream[Outcome]) -> None:
        started_at = _now_iso()
        t0 = time.monotonic()
        self.stats.in_flight += 1
        try:
            outcome, record = await self._generate(item, started_at, t0)
        finally:
            self.stats.in_flight -= 1
        # The projection is released only once the real cost is counted, so the budget
        # check never sees an item in neither.
        try:
            await self._record(outcome, record, out)
        finally:
            self._release_projection(item)

    async def _generate(
        self, item: WorkItem, started_at: str, t0: float
    ) -> tuple[Outcome, ManifestRecord]:
        job = item.job
        common: dict[str, Any] = {"key": item.key, "job": job, "index": item.index,
                                  "model": item.model}
        rec: dict[str, Any] = {
            "key": item.key, "id": job.id, "model": item.model, "prompt": job.prompt,
            "index": item.index, "line": job.line, "started_at": started_at,
            "metadata": job.metadata,
        }
        try:
            request = await self._request_for(item)
            result = await self.client.generate_from_request(
                request, model=item.model, timeout=self.job_timeout
            )
        except CometgenError as exc:
            if isinstance(exc, _FATAL):
                self.stop("quota" if isinstance(exc, QuotaExhaustedError) else "auth")
            return self._failed(item, exc, common, rec, t0)
        except Exception as exc:  # a bug must not take the siblings down
            logger.exception("unexpected error on item %r", item.key)
            return self._failed(item, exc, common, rec, t0)
        cost = self.prices.cost_from_usage(item.model, result.response.usage_metadata)
        common.update(attempts=result.attempts, maybe_billed=result.maybe_billed,
                      latency=result.latency, cost=cost)
        rec.update(
            attempts=result.attempts, maybe_billed=result.maybe_billed,
            latency=round(result.latency, 4), cost=cost, usage=result.usage.as_dict(),
            finish_reason=result.finish_reason, block_reason=result.block_reason,
            text=[result.text] if result.text else [],
        )
        status = result.outcome
        if status == "done":
            try:
                files = await self._save(item, result)
            except OSError as exc:
                self.stop("disk")
                reason = f"cannot write image: {exc.strerror or exc}"
                common.update(maybe_billed=True)
                rec.update(maybe_billed=True)
                return (
                    Failed(**common, reason=reason, error=exc, error_type=type(exc).__name__),
                    ManifestRecord(**rec, status="failed", reason=reason,
                                   error_type=type(exc).__name__, finished_at=_now_iso()),
                )
            images = [] if self.out_dir is not None else result.images
            return (
                Done(**common, images=images, files=files, text=result.text,
                     result=None if self.out_dir is not None else result),
                ManifestRecord(**rec, status="done", files=files, finished_at=_now_iso()),
            )
        reason = _reason(result)
        if status == "blocked":
            outcome: Outcome = Blocked(
                **common, reason=reason, block_reason=result.block_reason,
                finish_reason=result.finish_reason, result=result,
            )
        else:
            outcome = NoImage(**common, reason=reason, finish_reason=result.finish_reason,
                              text=result.text, result=result)
        return outcome, ManifestRecord(**rec, status=status, reason=reason,
                                       finished_at=_now_iso())

    def _failed(
        self, item: WorkItem, exc: BaseException, common: dict[str, Any],
        rec: dict[str, Any], t0: float,
    ) -> tuple[Outcome, ManifestRecord]:
        attempts = getattr(exc, "attempts", 0)
        maybe_billed = bool(getattr(exc, "maybe_billed", False))
        latency = time.monotonic() - t0
        reason = f"{type(exc).__name__}: {exc}"
        common.update(attempts=attempts, maybe_billed=maybe_billed, latency=latency)
        rec.update(attempts=attempts, maybe_billed=maybe_billed, latency=round(latency, 4))
        return (
            Failed(**common, reason=reason, error=exc, error_type=type(exc).__name__),
            ManifestRecord(**rec, status="failed", reason=reason,
                           error_type=type(exc).__name__, finished_at=_now_iso()),
        )

    def _release_projection(self, item: WorkItem) -> None:
        if self.max_cost is None:
            return
        projected = self.prices.projected_cost(
            item.model, image_size=item.image_size, prompt_chars=len(item.job.prompt),
            n_reference_images=len(item.job.images),
        ) or 0.0
        self._inflight_projection = max(0.0, self._inflight_projection - projected)

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
        )

    async def _save(self, item: WorkItem, result: GenerateResult) -> list[FileRecord]:
        if self.out_dir is None:
            return []
        files: list[FileRecord] = []
        many = item.job.n > 1 or len(result.images) > 1
        for i, image in enumerate(result.images):
            suffix: int | None = None
            if many:
                suffix = item.index if len(result.images) == 1 else item.index * 100 + i
            name = image_file_name(item.key, item.job.id, suffix, extension_for(image.mime_type))
            sha = await write_atomic(self.out_dir / name, image.data)
            files.append(FileRecord(path=name, sha256=sha, mime_type=image.mime_type,
                                    bytes=len(image.data)))
        return files

    async def _record(
        self, outcome: Outcome, record: ManifestRecord, out: MemoryObjectSendStream[Outcome]
    ) -> None:
        if self._writer is not None:
            try:
                await self._writer.write(record)
            except OSError as exc:
                self.stop("disk")
                logger.error("cannot append to the manifest: %s", exc)
        n_images = len(outcome.files) or len(outcome.images) if isinstance(outcome, Done) else 0
        self.stats.record(
            outcome.status, attempts=outcome.attempts, maybe_billed=outcome.maybe_billed,
            latency=outcome.latency, cost=outcome.cost, images=n_images,
        )
        await out.send(outcome)


def _hash_images(images: tuple[str | bytes, ...]) -> list[str]:
    return [image_sha256(i) for i in images]


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
