"""``ImageCache``: a content-addressed store of answers, shared across runs and processes.

Layout under the cache folder::

    objects/ab/<sha256>     image bytes, named by their sha256 (shared by equal images)
    entries/cd/<key>.json   one answer: the response with image data cut out, and its blobs
    tmp/                    files being written; renamed into place when complete

An insert writes and fsyncs the blobs first, then the entry, each to ``tmp/`` and renamed
into place: a kill -9 at any point leaves only temp files or unreferenced blobs, never an
entry naming a missing or torn blob. Several processes may share one folder (renames are
atomic; the last writer of a key wins with an equally valid entry). An entry's mtime is
its last use: ``prune`` evicts the least recently used entries beyond ``max_bytes``, then
blobs no entry names (old enough not to belong to an insert in progress) and stale temp
files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import msgspec

from . import _wire as wire
from ._exceptions import ConfigError

__all__ = ["CACHE_ENV", "CacheStats", "ImageCache", "open_cache"]

logger = logging.getLogger("cometgen")
CACHE_ENV: Final = "COMETGEN_CACHE"
DEFAULT_MAX_BYTES: Final = 10 * 1024**3
#: Unreferenced blobs and temp files younger than this may belong to an insert in progress.
GRACE_SECONDS: Final = 600.0
_FORMAT: Final = 1


class _Entry(msgspec.Struct, kw_only=True):
    v: int = _FORMAT
    model: str
    #: sha256 hex of each inline image, in the order they appear in the response.
    blobs: list[str]
    response: msgspec.Raw


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What a cache folder holds."""

    entries: int
    blobs: int
    bytes: int
    temp_files: int


class ImageCache:
    """Answers (images, blocked and no-image results) keyed by the effective request."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES
                 ) -> None:
        if max_bytes < 0:
            raise ConfigError(f"cache max_bytes must be >= 0, got {max_bytes!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        try:
            for sub in ("objects", "entries", "tmp"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cache folder {os.fspath(path)!r} is not usable: "
                              f"{exc.strerror or exc}") from None
        #: Bytes this process believes the folder holds (None until first counted).
        self._size: int | None = None

    def __repr__(self) -> str:
        return f"ImageCache({os.fspath(self.path)!r})"

    @staticmethod
    def key(model: str, body: bytes, variant: str = "") -> str:
        """The key of a request: its model and exact body (prompt, options, reference
        images, seed, tier), plus ``variant`` (a batch item's image index)."""
        h = hashlib.sha256(model.encode())
        h.update(b"\0" + variant.encode() + b"\0")
        h.update(body)
        return h.hexdigest()

    # -- async API -------------------------------------------------------------------------

    async def get(self, key: str) -> wire.GenerateContentResponse | None:
        return await anyio.to_thread.run_sync(self.get_sync, key)

    async def lookup(
        self, model: str, body: bytes, variant: str = ""
    ) -> tuple[wire.GenerateContentResponse | None, str]:
        """``(cached answer or None, key)`` for a request."""
        key = self.key(model, body, variant)
        return await self.get(key), key

    async def put(self, key: str, model: str, response: wire.GenerateContentResponse) -> None:
        """Store an answer. A write error (disk full) is logged, never raised: the answer
        was paid for and the caller must get it."""
        # Encoded on the loop (the response is not shared across threads), written in one.
        entry, blobs = _split(model, response)
        try:
            await anyio.to_thread.run_sync(self._put_sync, key, entry, blobs)
        except OSError as exc:
            logger.warning("cannot add to the cache %s: %s", self.path, exc.strerror or exc)

    # -- blocking API ----------------------------------------------------------------------

    def get_sync(self, key: str) -> wire.GenerateContentResponse | None:
        """The cached answer for ``key`` (its images read back), or None; marks it used."""
        path = self._entry_path(key)
        try:
            entry = msgspec.json.decode(path.read_bytes(), type=_Entry)
            blobs = [self._blob_path(b).read_bytes() for b in entry.blobs]
            response = wire.decode_response(bytes(entry.response))
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None  # unreadable: a miss (``prune`` removes what is broken)
        if any(hashlib.sha256(b).hexdigest() != d for b, d in zip(blobs, entry.blobs,
                                                                    strict=True)):
            return None
        _refill(response, blobs)
        try:
            os.utime(path)  # least-recently-used order
        except OSError:
            pass
        return response

    def _put_sync(self, key: str, entry: _Entry, blobs: list[bytes]) -> None:
        added = 0
        for digest, data in zip(entry.blobs, blobs, strict=True):
            final = self._blob_path(digest)
            if final.exists():
                os.utime(final)  # keep it out of prune's grace window
                continue
            final.parent.mkdir(exist_ok=True)
            self._write(final, data)
            added += len(data)
        body = msgspec.json.encode(entry)
        path = self._entry_path(key)
        path.parent.mkdir(exist_ok=True)
        self._write(path, body)
        added += len(body)
        if self._size is None:
            self._size = self.stats().bytes
        else:
            self._size += added
        if self._size > self.max_bytes:
            self.prune(int(self.max_bytes * 0.9))

    def _write(self, final: Path, data: bytes) -> None:
        tmp = self.path / "tmp" / f"{final.name}.{secrets.token_hex(6)}.tmp"
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def stats(self) -> CacheStats:
        entries = sum(1 for _ in self._entries())
        blobs = total = 0
        for _, size, _ in self._blobs():
            blobs += 1
            total += size
        total += sum(size for _, size, _ in self._entries())
        temp = sum(1 for _ in (self.path / "tmp").iterdir())
        return CacheStats(entries=entries, blobs=blobs, bytes=total, temp_files=temp)

    def prune(self, max_bytes: int | None = None) -> CacheStats:
        """Evict least recently used entries until the folder holds at most ``max_bytes``
        (default: the cache's cap); remove orphaned blobs, broken entries, stale temp files.
        Returns what is left."""
        cap = self.max_bytes if max_bytes is None else max_bytes
        now = time.time()
        for path in (self.path / "tmp").iterdir():
            _unlink_if_older(path, now - GRACE_SECONDS)
        entries: list[tuple[float, Path, int, list[str]]] = []
        for path, size, mtime in self._entries():
            try:
                blobs = msgspec.json.decode(path.read_bytes(), type=_Entry).blobs
            except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                path.unlink(missing_ok=True)
                continue
            entries.append((mtime, path, size, blobs))
        blob_sizes = {p.name: size for p, size, _ in self._blobs()}
        used: dict[str, int] = {}
        for _, _, _, blobs in entries:
            for b in blobs:
                used[b] = used.get(b, 0) + 1
        total = sum(e[2] for e in entries) + sum(blob_sizes.get(b, 0) for b in used)
        freed: set[str] = set()
        for _, path, size, blobs in sorted(entries, key=lambda e: e[0]):
            if total <= cap:
                break
            path.unlink(missing_ok=True)
            total -= size
            for b in blobs:
                used[b] -= 1
                if used[b] == 0:
                    total -= blob_sizes.get(b, 0)
                    freed.add(b)
        # An unreferenced young blob may belong to an insert whose entry is not written yet.
        # (Should an insert reuse a blob evicted here, its entry reads as a miss: never a
        # wrong answer.)
        for path, _, mtime in self._blobs():
            if used.get(path.name, 0) == 0 and (path.name in freed
                                                or mtime < now - GRACE_SECONDS):
                path.unlink(missing_ok=True)
        left = self.stats()
        self._size = left.bytes
        return left

    # -- paths -----------------------------------------------------------------------------

    def _entry_path(self, key: str) -> Path:
        return self.path / "entries" / key[:2] / f"{key}.json"

    def _blob_path(self, digest: str) -> Path:
        return self.path / "objects" / digest[:2] / digest

    def _entries(self) -> list[tuple[Path, int, float]]:
        return _files_under(self.path / "entries")

    def _blobs(self) -> list[tuple[Path, int, float]]:
        return _files_under(self.path / "objects")


def open_cache(cache: ImageCache | str | os.PathLike[str] | None) -> ImageCache | None:
    """An ``ImageCache`` for a folder path (None stays None)."""
    if cache is None or isinstance(cache, ImageCache):
        return cache
    return ImageCache(cache)


def _split(model: str, response: wire.GenerateContentResponse) -> tuple[_Entry, list[bytes]]:
    """The entry (the response with inline image data emptied) and the image bytes."""
    parts = _inline_parts(response)
    blobs = [p.data for p in parts]
    try:
        for p in parts:
            p.data = b""
        encoded = msgspec.json.encode(response)
    finally:
        for p, data in zip(parts, blobs, strict=True):
            p.data = data
    digests = [hashlib.sha256(b).hexdigest() for b in blobs]
    return _Entry(model=model, blobs=digests, response=msgspec.Raw(encoded)), blobs


def _refill(response: wire.GenerateContentResponse, blobs: list[bytes]) -> None:
    for part, data in zip(_inline_parts(response), blobs, strict=True):
        part.data = data


def _inline_parts(response: wire.GenerateContentResponse) -> list[wire.InlineData]:
    out: list[wire.InlineData] = []
    for candidate in response.candidates:
        content = candidate.content
        for part in content.parts if content is not None else ():
            if part.inline_data is not None:
                out.append(part.inline_data)
    return out


def _files_under(root: Path) -> list[tuple[Path, int, float]]:
    out: list[tuple[Path, int, float]] = []
    for sub in root.iterdir():
        if not sub.is_dir():
            continue
        for path in sub.iterdir():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            out.append((path, st.st_size, st.st_mtime))
    return out


def _unlink_if_older(path: Path, cutoff: float) -> None:
    try:
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
