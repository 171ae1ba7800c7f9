"""``Batch``: run many jobs concurrently, write images and a manifest, resume, never pay twice.

One task group owned by the ``Batch`` context: a producer reads jobs (lazily, in a worker
thread for blocking iterables), filters what is already done, and feeds a bounded stream;
``concurrency`` workers generate, write files atomically, append to the manifest, then hand
the outcome to the caller. Per-item failures are values; cancellation propagates.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterable, Iterable
from contextlib import aclosing
from pathlib import Path
from types import TracebackType

import anyio
import msgspec
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._client import AsyncClient
from .._exceptions import ConfigError, InputError
from .._files import cleanup_temp_files, temp_name_for
from .._models import ServiceTier, check_service_tier
from ._admission import Admission, Budget, shard_of
from ._halt import HaltDetector, Halted, current_trace, with_gate
from ._item_runner import ItemRunner, now_iso
from ._job import Job, WorkItem, expand, image_hashes
from ._manifest import ADOPTED_REASON, ManifestRecord, ManifestState, load_manifest
from ._manifest_writer import ManifestWriter
from ._metadata import write_metadata_jsonl
from ._outcomes import Done, Failed, Outcome, shed
from ._pricing import PriceTable, load_prices
from ._provenance import add_provenance, bad_line_result, cut_record, refused_result
from ._stats import BatchStats
from ._streams import drain, iter_jobs

__all__ = ["Batch", "JobSource", "drain", "shard_of"]

logger = logging.getLogger("cometgen")

#: What ``Batch.run`` accepts: jobs, or ``InputError``s for lines that could not be read.
JobSource = Iterable[Job | InputError] | AsyncIterable[Job | InputError]


class Batch:
    """Generate many jobs with bounded concurrency; results stream back as they complete.

    ``async with Batch(client, out_dir="out") as batch: async for o in batch.run(jobs): ...``
    With ``out_dir``, images are written atomically there and every finished item goes to
    ``manifest.jsonl``; re-running on the same folder skips what is done. Without it,
    images stay in memory on the ``Done`` outcomes. ``concurrency``, ``rpm``, ``ipm`` and
    ``adaptive`` default to the client's ``Limits``.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        out_dir: str | os.PathLike[str] | None = None,
        concurrency: int | None = None,
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
        endpoint: str | None = None,
        regenerate_changed: bool = False,
        service_tier: ServiceTier | None = None,
    ) -> None:
        if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
            raise ConfigError(f"shard must be I/N with 0 <= I < N, got {shard[0]}/{shard[1]}")
        if max_cost is not None and max_cost < 0:
            raise ConfigError(f"max_cost must be >= 0, got {max_cost!r}")
        # Only what the caller passed replaces the client's limits; replace() keeps the rest
        # (shared Redis URL, namespace, lease TTL) and Limits validates the new values.
        # Nothing passed: the batch shares the client's own limiter (a custom one too).
        given = {"concurrency": concurrency, "rpm": rpm, "ipm": ipm, "adaptive": adaptive}
        changed = {k: v for k, v in given.items() if v is not None}
        limits = msgspec.structs.replace(client.limits, **changed)
        base = client.with_options(limits=limits if changed else None, on_no_image="return")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.concurrency = limits.concurrency
        self.model = model or client.model
        self.aspect_ratio = aspect_ratio
        self.image_size = image_size
        self.include_text = include_text
        self.retry_failed = retry_failed
        self.max_cost = max_cost
        self.prices = prices if isinstance(prices, PriceTable) else load_prices(prices)
        self.shard = shard
        self.job_timeout = job_timeout
        #: Jobs without their own ``service_tier`` use this one.
        self.service_tier = check_service_tier(service_tier or client.service_tier)
        self.stats = BatchStats()
        #: Recorded on every item: "mock" or the base URL (provenance).
        self.endpoint = endpoint
        self._admission = Admission(self.stats, shard=shard, retry_failed=retry_failed,
                                    regenerate_changed=regenerate_changed)
        self._budget = Budget(self.stats, self.prices, max_cost)
        self._writer: ManifestWriter | None = None
        self._tg: TaskGroup | None = None
        self._stopping = anyio.Event()
        self._started = False
        self._adopt = False
        # Every HTTP attempt passes the gate: none leaves once the batch is stopping.
        self.client, self.gate = with_gate(base, self._stopping.is_set, self.stats.http_time)
        self._halt = HaltDetector()
        self._workers = 0  # work loops still running
        self._runner = ItemRunner(
            self.client, out_dir=self.out_dir, prices=self.prices,
            include_text=include_text, job_timeout=job_timeout, stop=self.stop,
        )

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
            # Shielded, so a cancel cannot leave the probe behind; a temp-pattern name, so
            # the next run's cleanup removes it after a kill -9.
            probe = out_dir / temp_name_for(f"cometgen-write-test-{os.getpid()}")
            with anyio.CancelScope(shield=True):
                await anyio.Path(probe).write_bytes(b"")
                await anyio.Path(probe).unlink(missing_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"output folder {os.fspath(out_dir)!r} is not writable: {exc.strerror or exc}"
            ) from exc
        resuming = (out_dir / "manifest.jsonl").exists()
        # Lock the folder first: the temp cleanup and the manifest read below must not race
        # a run still writing here (its temp files would vanish under it mid-write).
        # sync_files (group commit): the images are written without an fsync each (see
        # ItemRunner._save); each manifest flush fsyncs them before the records naming them.
        writer = ManifestWriter(out_dir, sync_files=True)
        await writer.__aenter__()
        try:
            removed = await anyio.to_thread.run_sync(cleanup_temp_files, out_dir)
            if removed:
                logger.info("removed %d temp file(s) left by an interrupted run", removed)
            state = await anyio.to_thread.run_sync(load_manifest, out_dir)
        except BaseException:
            await writer.__aexit__(None, None, None)
            raise
        self._writer = writer
        self._admission.state = state
        self.stats.prior_cost = state.spent
        if state.corrupt_lines:
            logger.warning("ignored %d torn or invalid manifest line(s)", state.corrupt_lines)
        # A crash can leave images renamed into place whose records were not yet flushed:
        # on a resumed folder, such images are adopted instead of being paid for again.
        self._adopt = resuming

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
            # The body's own exception (not a cancellation) is left to propagate as itself,
            # not wrapped in an ExceptionGroup by the task group.
            own = exc is not None and not isinstance(exc, anyio.get_cancelled_exc_class())
            await tg.__aexit__(*((None, None, None) if own else (exc_type, exc, tb)))
        finally:
            self._admission.forget()  # before the caller reads the folder back, say
            await self._close_out_dir()
        return None

    async def _close_out_dir(self) -> None:
        # Every item task has ended: no image write is pending. The writer shields its own
        # final flush; its task group must be exited from the scope it was entered in, so
        # no extra scope around it.
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                await writer.__aexit__(None, None, None)
            except OSError as exc:
                # Disk full at the last flush: the run already stopped ("disk"); a rerun
                # adopts the images whose records were lost instead of paying again.
                self.stop("disk")
                logger.error("cannot append to the manifest: %s", exc)
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

    @property
    def manifest_state(self) -> ManifestState | None:
        """What the output folder held when the batch opened it (None without one)."""
        return self._admission.state

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
        self._workers = self.concurrency
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

    async def _produce(
        self,
        jobs: JobSource,
        work: MemoryObjectSendStream[WorkItem],
        out: MemoryObjectSendStream[Outcome],
    ) -> None:
        seen = 0  # items read: the exact ``stats.planned`` once the input ends
        async with work, out, aclosing(iter_jobs(jobs, self._stopping)) as entries:
            async for entry in entries:
                if self._stopping.is_set():
                    break
                if isinstance(entry, InputError):
                    seen += 1
                    await self._bad_line(entry, None, out)
                    continue
                try:
                    hashes = (await anyio.to_thread.run_sync(image_hashes, entry.images)
                              if entry.images else [])
                    items = expand(
                        entry,
                        default_model=self.model,
                        default_aspect_ratio=self.aspect_ratio,
                        default_image_size=self.image_size,
                        image_hashes=hashes,
                        default_service_tier=self.service_tier,
                    )
                except InputError as exc:
                    seen += 1
                    await self._bad_line(exc, entry, out)
                    continue
                seen += len(items)
                for item in items:
                    if not self._admission.admit(item):
                        continue
                    if not self._budget.reserve(item):
                        self.stop("budget")
                        break
                    await work.send(item)
                if self._stopping.is_set():
                    break
        if not self._stopping.is_set():
            self.stats.planned = seen

    async def _bad_line(
        self, error: InputError, job: Job | None, out: MemoryObjectSendStream[Outcome]
    ) -> None:
        key = (
            (job.id if job is not None else None) or error.item_id or f"line-{error.line}"
        )
        if not self._admission.admit_bad_line(key):
            return
        await self._record(*bad_line_result(key, error, job), out)

    async def _work_loop(
        self, work: MemoryObjectReceiveStream[WorkItem], out: MemoryObjectSendStream[Outcome]
    ) -> None:
        async with work, out:
            async for item in work:
                if self._stopping.is_set():
                    # Queued before the stop: never sent, not recorded (a rerun does it).
                    self.stats.unsent += 1
                    self._budget.release(item)
                    continue
                await self._process(item, out)
            self._workers -= 1
            if not self._workers:  # the last one: no later item can end a connect streak
                for finished, record in self._halt.release():
                    await self._record(finished, record, out)

    async def _process(self, item: WorkItem, out: MemoryObjectSendStream[Outcome]) -> None:
        started_at = now_iso()
        t0 = time.monotonic()
        trace = current_trace(item.key)
        self.stats.in_flight += 1
        try:
            # A file under this item's name is adopted, unless it was made for another request.
            adopt = self._adopt and not self._admission.regenerating(item)
            adopted = await self._runner.adopt_existing(item, started_at) if adopt else None
            outcome, done_record = adopted or await self._runner.generate(item, started_at, t0)
        except Halted as halted:  # stopped before this attempt left
            try:
                if halted.maybe_billed:
                    # An earlier attempt may have been billed: recorded like a grace-timer
                    # cut, so a rerun does not pay again.
                    await self._record(*refused_result(item, started_at, t0, self.endpoint,
                                                       self.stats.stop_reason, halted), out)
                else:  # nothing was billed: not recorded, a rerun does it
                    self.stats.unsent += 1
            finally:
                self._budget.release(item)
            return
        except anyio.get_cancelled_exc_class():
            # Cut after a stop (the CLI's grace timer, a second Ctrl-C): record the request as
            # possibly billed. A plain cancel leaves it unrecorded, to be sent again.
            if trace.sent and self._stopping.is_set():
                with anyio.CancelScope(shield=True):
                    await self._record(None, cut_record(item, started_at, t0, self.endpoint),
                                       None)
            self._budget.release(item)
            raise
        finally:
            self.stats.in_flight -= 1
        add_provenance(done_record, item, self.endpoint)
        verdict = self._halt.judge(outcome, done_record)
        # The projection is released only once the real cost is counted, so the budget
        # check never sees an item in neither.
        try:
            if verdict.halt is not None:
                if self.stats.stop_reason is None:
                    self.stats.stop_detail = getattr(outcome, "reason", None)
                self.stop(verdict.halt)
            for left in verdict.unrecorded:
                # Systemic, not the item's own failure: not recorded (a rerun does it).
                self.stats.unsent += 1
                await out.send(left)
            for finished, record in verdict.record:
                await self._record(finished, record, out)
        finally:
            self._budget.release(item)

    async def _record(
        self, outcome: Outcome | None, record: ManifestRecord | None,
        out: MemoryObjectSendStream[Outcome] | None,
    ) -> None:
        if outcome is None:  # a cut request: recorded, counted, not handed out
            assert record is not None
            self.stats.record("failed", attempts=record.attempts, maybe_billed=True,
                              latency=record.latency, cost=None, images=0, key=record.key)
        if self._writer is not None and record is not None:
            try:
                await self._writer.write(record)
            except OSError as exc:
                self.stop("disk")
                logger.error("cannot append to the manifest: %s", exc)
        if outcome is None or out is None:
            return
        n_images = (len(outcome.files) or len(outcome.images)) if isinstance(outcome, Done) else 0
        if isinstance(outcome, Failed) and shed(outcome, self.service_tier):
            self.stats.shed += 1
        elif record is not None:  # answered without a request: cached, or adopted
            self.stats.count_unsent(cached=record.cached, adopted=record.reason == ADOPTED_REASON)
        self.stats.record(
            outcome.status, attempts=outcome.attempts, maybe_billed=outcome.maybe_billed,
            latency=outcome.latency, cost=outcome.cost, images=n_images, key=outcome.key,
        )
        await out.send(outcome)
