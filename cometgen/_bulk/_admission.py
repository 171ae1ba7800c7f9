"""Which work items a ``Batch`` sends: dedupe, shard, resume and changed-request filters, and
the budget (the folder's: earlier runs' recorded spend counts)."""

from __future__ import annotations

import hashlib
import logging

from ._job import WorkItem, legacy_first_key
from ._manifest import STATUS_FAILED, ManifestState, should_send
from ._pricing import PriceTable
from ._provenance import changed_request
from ._stats import BatchStats

__all__ = ["Admission", "Budget", "shard_of"]

logger = logging.getLogger("cometgen")


def shard_of(key: str, count: int) -> int:
    """The shard (0-based) an item key belongs to, stable across machines and runs."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


def _where(item: WorkItem) -> str:
    """`` (line N)`` for a job read from an input file, nothing for one built in code."""
    return "" if item.job.line is None else f" (line {item.job.line})"


class Admission:
    """Filters keys: seen before in this run, another shard's, or already finished."""

    def __init__(
        self,
        stats: BatchStats,
        *,
        shard: tuple[int, int] | None,
        retry_failed: bool,
        regenerate_changed: bool = False,
    ) -> None:
        self.stats = stats
        self.shard = shard
        self.retry_failed = retry_failed
        self.regenerate_changed = regenerate_changed
        #: The manifest read at start (set by ``Batch`` when it has an output folder).
        self.state: ManifestState | None = None
        self._seen: set[str] = set()

    def forget(self) -> None:
        """Drop the per-run key set (one string per item: ~80 MB at 1,000,000 items)."""
        self._seen = set()

    def admit(self, item: WorkItem) -> bool:
        """Whether to send ``item``; counts what it drops."""
        if item.key in self._seen:
            self.stats.duplicates += 1
            logger.warning("duplicate key %r%s: skipped, an earlier job has this key",
                           item.key, _where(item))
            return False
        state = self.state
        if state is not None and changed_request(state, item):
            self._seen.add(item.key)
            if self.regenerate_changed:
                return self._first_seen(item.key, retry_failed=True, resend=True)
            self.stats.changed += 1
            logger.warning("%r%s was done for a different request: skipped (pass "
                           "--regenerate-changed to generate it again)", item.key, _where(item))
            return False
        # Folders from before stable keys named the first of n > 1 images "id-0".
        legacy = legacy_first_key(item)
        if state is not None and legacy is not None and not should_send(
            state, legacy, retry_failed=False
        ):
            self._seen.add(item.key)
            self.stats.skipped += 1
            return False
        return self._first_seen(item.key, retry_failed=self.retry_failed)

    def regenerating(self, item: WorkItem) -> bool:
        """``item`` is sent again because its id was done for a different request."""
        return (self.regenerate_changed and self.state is not None
                and changed_request(self.state, item))

    def admit_bad_line(self, key: str) -> bool:
        """Whether to record a line that could not be read as failed (silent on duplicates)."""
        return key not in self._seen and self._first_seen(key, retry_failed=True)

    def _first_seen(self, key: str, *, retry_failed: bool, resend: bool = False) -> bool:
        self._seen.add(key)
        if self.shard is not None and shard_of(key, self.shard[1]) != self.shard[0]:
            self.stats.other_shard += 1
            return False
        if resend or self.state is None:
            return True
        if not should_send(self.state, key, retry_failed=retry_failed):
            if self.state.status(key) == STATUS_FAILED:
                self.stats.skipped_failed += 1  # the folder still holds it failed
            else:
                self.stats.skipped += 1
            return False
        return True


class Budget:
    """``max_cost``: the folder's spend (earlier runs' records, ``stats.prior_cost``, plus this
    run's) and the projected cost of the items in flight."""

    def __init__(self, stats: BatchStats, prices: PriceTable, max_cost: float | None) -> None:
        self.stats = stats
        self.prices = prices
        self.max_cost = max_cost
        self._in_flight = 0.0

    def _projected(self, item: WorkItem) -> float:
        return self.prices.projected_cost(
            item.model,
            image_size=item.image_size,
            prompt_chars=len(item.job.prompt),
            n_reference_images=len(item.job.images),
            tier=item.service_tier,
        ) or 0.0

    def reserve(self, item: WorkItem) -> bool:
        """Reserve ``item``'s projected cost; False (nothing reserved) if over budget."""
        if self.max_cost is None:
            return True
        projected = self._projected(item)
        spent = self.stats.prior_cost + self.stats.cost
        if spent + self._in_flight + projected > self.max_cost:
            return False
        self._in_flight += projected
        return True

    def release(self, item: WorkItem) -> None:
        """Release the reservation, once the item's real cost is counted in the stats."""
        if self.max_cost is not None:
            self._in_flight = max(0.0, self._in_flight - self._projected(item))
