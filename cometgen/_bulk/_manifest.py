"""The append-only run manifest (``OUTDIR/manifest.jsonl``) and what is built from it.

One JSON object per line, one line per finished item. The last record of a key wins, so a
rerun only appends. A crash (``kill -9``, power loss) can leave at most a torn last line:
``load_manifest`` skips it and the next ``ManifestWriter`` starts on a fresh line.

The writer is ``ManifestWriter`` (``_manifest_writer``); this module holds the records and
the reader used to resume.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from msgspec import Struct

from .._exceptions import OutputLockedError

__all__ = [
    "ADOPTED_REASON",
    "MANIFEST_NAME",
    "METADATA_NAME",
    "NEVER_SENT_ERRORS",
    "STATUSES",
    "STATUS_BLOCKED",
    "STATUS_DONE",
    "STATUS_FAILED",
    "STATUS_NO_IMAGE",
    "FileRecord",
    "ManifestRecord",
    "ManifestState",
    "OutputLockedError",
    "load_manifest",
    "manifest_path",
    "should_send",
    "summarize",
    "utc_now",
]

MANIFEST_NAME: Final = "manifest.jsonl"
METADATA_NAME: Final = "metadata.jsonl"

STATUS_DONE: Final = "done"
STATUS_BLOCKED: Final = "blocked"
STATUS_NO_IMAGE: Final = "no_image"
STATUS_FAILED: Final = "failed"
STATUSES: Final = (STATUS_DONE, STATUS_BLOCKED, STATUS_NO_IMAGE, STATUS_FAILED)
# Decoded status strings are swapped for these constants: 1M keys share 4 str objects.
_INTERN: Final = {s: s for s in STATUSES}
#: ``error_type``s of failures no request left for (the endpoint was never reached): a rerun
#: resends such an item without ``retry_failed``, as nothing was sent or paid.
NEVER_SENT_ERRORS: Final = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})


class FileRecord(Struct, frozen=True, kw_only=True):
    """One image file written for an item."""

    path: str  #: relative to OUTDIR, POSIX separators, e.g. ``images/cat.png``
    sha256: str
    mime_type: str
    bytes: int


#: The ``reason`` of a ``done`` record whose image an interrupted run left on disk unrecorded.
ADOPTED_REASON: Final = "adopted an image written before an interruption (not sent again)"


class ManifestRecord(Struct, kw_only=True, omit_defaults=True):
    """One finished item: a line of ``manifest.jsonl``."""

    key: str
    id: str | None = None
    status: str  #: "done" | "blocked" | "no_image" | "failed"
    reason: str | None = None  #: human reason for a non-done status
    finish_reason: str | None = None
    block_reason: str | None = None
    error_type: str | None = None  #: exception class name
    files: list[FileRecord] = []
    text: list[str] = []
    model: str | None = None
    prompt: str | None = None
    aspect_ratio: str | None = None  #: as sent (the run's default applied)
    image_size: str | None = None
    seed: int | None = None
    index: int = 0
    line: int | None = None
    usage: dict[str, int] | None = None
    cost: float | None = None
    attempts: int = 0
    maybe_billed: bool = False
    #: Answered from the cross-run cache (``--cache``): not sent, cost 0.
    cached: bool = False
    latency: float | None = None
    started_at: str | None = None  #: ISO 8601 UTC
    finished_at: str | None = None  #: ISO 8601 UTC
    metadata: Any = None
    #: Who made the item: "mock" (the built-in mock) or the API base URL.
    endpoint: str | None = None
    #: Hash of what was asked (prompt, model, options, reference images), for items with
    #: an ``id``: a later line reusing the id with a different request is noticed.
    fingerprint: str | None = None


class _Lite(Struct, gc=False):
    # Only what resume needs; msgspec skips the other fields without building them.
    key: str
    status: str
    maybe_billed: bool = False
    error_type: str | None = None
    cost: float | None = None
    endpoint: str | None = None
    fingerprint: str | None = None


_lite_decoder: Final = msgspec.json.Decoder(_Lite)


def utc_now() -> str:
    """The current time as ISO 8601 UTC, e.g. ``2026-01-02T03:04:05.678Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def manifest_path(out_dir: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(out_dir), MANIFEST_NAME)


# --------------------------------------------------------------------------- reader


class ManifestState:
    """What resume needs from a manifest: the latest status of every key.

    Memory is O(keys): a key string plus a shared status string per key.
    """

    __slots__ = (
        "_billed", "corrupt_lines", "endpoints", "fingerprints", "latest", "lines", "never_sent",
        "path", "spent",
    )

    def __init__(self, path: str) -> None:
        self.path = path
        #: key -> status of the key's last record. Treat as read-only.
        self.latest: dict[str, str] = {}
        self._billed: set[str] = set()
        #: lines read, including blank and corrupt ones
        self.lines = 0
        #: lines skipped as torn or invalid (never fatal)
        self.corrupt_lines = 0
        #: US dollars recorded by every line (each record is one paid or unpaid item run)
        self.spent = 0.0
        #: Endpoints that made the records ("mock" or a base URL; older records name none)
        self.endpoints: set[str] = set()
        #: key -> request fingerprint of its last record, for records that carry one
        self.fingerprints: dict[str, str] = {}
        #: Keys whose last record is a failure no request left for (``NEVER_SENT_ERRORS``)
        self.never_sent: set[str] = set()

    def status(self, key: str) -> str | None:
        """The status of ``key``'s last record, or None if the key never finished."""
        return self.latest.get(key)

    @property
    def done_keys(self) -> set[str]:
        """Keys whose last record is ``done`` (a new set, O(keys))."""
        return {k for k, s in self.latest.items() if s == STATUS_DONE}

    @property
    def maybe_billed_keys(self) -> frozenset[str]:
        """Keys whose last record says a failed attempt may have been billed."""
        return frozenset(self._billed)

    def counts(self) -> dict[str, int]:
        """Number of keys per latest status; every known status is present."""
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(Counter(self.latest.values()))
        return counts

    def __len__(self) -> int:
        return len(self.latest)

    def __contains__(self, key: object) -> bool:
        return key in self.latest


def load_manifest(out_dir: str | os.PathLike[str], *, fingerprints: bool = True
                  ) -> ManifestState:
    """Read ``OUTDIR/manifest.jsonl``; a missing file gives an empty state.

    ``fingerprints=False`` leaves ``state.fingerprints`` empty: counting needs only the
    statuses, and a fingerprint string per key is the largest part of a big folder's state.

    Blocking (about 1M lines/s): from async code use
    ``await anyio.to_thread.run_sync(load_manifest, out_dir)``.
    """
    path = manifest_path(out_dir)
    state = ManifestState(path)
    if not os.path.exists(path):
        return state
    latest = state.latest
    billed = state._billed
    never_sent = state.never_sent
    intern = _INTERN.get
    decode = _lite_decoder.decode
    corrupt = lines = 0
    spent = 0.0
    endpoints = state.endpoints
    kept_fingerprints = state.fingerprints if fingerprints else None
    with open(path, "rb", buffering=1 << 20) as f:
        for line in f:
            lines += 1
            try:
                rec = decode(line)
            except msgspec.DecodeError:
                if line.strip():
                    corrupt += 1
                continue
            latest[rec.key] = intern(rec.status, rec.status)
            if rec.maybe_billed:
                billed.add(rec.key)
            elif billed:
                billed.discard(rec.key)
            if rec.error_type in NEVER_SENT_ERRORS and not rec.maybe_billed:
                never_sent.add(rec.key)
            elif never_sent:
                never_sent.discard(rec.key)
            if rec.cost:
                spent += rec.cost
            if rec.endpoint is not None:
                endpoints.add(rec.endpoint)
            if rec.fingerprint is not None and kept_fingerprints is not None:
                kept_fingerprints[rec.key] = rec.fingerprint
    state.spent = spent
    state.lines = lines
    state.corrupt_lines = corrupt
    return state


def should_send(state: ManifestState, key: str, *, retry_failed: bool) -> bool:
    """Whether a run must (re)send ``key``.

    ==============================  =========================
    latest status                   send?
    ==============================  =========================
    none (never finished)           yes
    ``done``                        never
    ``blocked`` / ``no_image``      never: a final answer of the model (possibly billed);
                                    rerun it by removing its lines or using a new OUTDIR
    ``failed``, never sent          yes: no request reached the endpoint (``never_sent``)
    ``failed`` (or unknown status)  only with ``retry_failed``
    ==============================  =========================
    """
    status = state.latest.get(key)
    if status is None:
        return True
    if status in (STATUS_DONE, STATUS_BLOCKED, STATUS_NO_IMAGE):
        return False
    return retry_failed or key in state.never_sent


def summarize(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``cometgen status OUTDIR`` prints, flat so each prints as ``name: value``.

    ``{"total", "done", "blocked", "no_image", "failed", [other statuses],
    "maybe_billed", "corrupt_lines", "cost_usd", "endpoint"}``; the counts are of keys,
    ``endpoint`` is "mock", a base URL, several joined by ", ", or None (older folders).
    """
    state = load_manifest(out_dir, fingerprints=False)
    return {
        "total": len(state),
        **state.counts(),
        "maybe_billed": len(state._billed),
        "corrupt_lines": state.corrupt_lines,
        "cost_usd": round(state.spent, 6),
        "endpoint": ", ".join(sorted(state.endpoints)) or None,
    }
