"""``ManifestWriter``: appends records to ``OUTDIR/manifest.jsonl``, with group commit.

Ordering duty of the caller: write an item's record only after its image files were
renamed into place (``write_atomic`` returned). Then a ``done`` record always points at
complete files, and an image whose record was lost is simply generated again. With
``ManifestWriter(sync_files=True)`` the images may be written without an fsync each: every
flush fsyncs the files its records name (and their folders) before it appends the records.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Final, Self

import anyio
import anyio.to_thread
import msgspec
from anyio.abc import TaskGroup

from .._exceptions import OutputLockedError
from .._files import fsync_dir, sync_files
from ._manifest import ManifestRecord, manifest_path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["ManifestWriter"]

_encoder: Final = msgspec.json.Encoder()
# Buffered batches past which write() waits for the running flush.
_BACKLOG: Final = 16


class ManifestWriter:
    """Append records to ``OUTDIR/manifest.jsonl`` in batches, off the event loop.

    ``await write(record)`` buffers; the buffer is flushed (one ``write()`` of whole lines,
    then fsync, in a worker thread) every ``batch_size`` records, ``flush_interval`` seconds
    after the first buffered record, on ``flush()`` and on exit (shielded from
    cancellation). With ``sync_files=True`` each flush first makes the files named by its
    records durable (``sync_files``), so a record never reaches the disk before its images
    (group commit: one sync per flush instead of one per image). With ``lock=True`` an
    exclusive advisory lock (POSIX ``flock``) is held
    while open, so a second run on the same OUTDIR fails fast with ``OutputLockedError``
    instead of paying for the same items twice: enter the writer before sending anything.
    A failed background flush is raised by the next ``write()``/``flush()``/exit.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        batch_size: int = 64,
        flush_interval: float = 0.5,
        fsync: bool = True,
        lock: bool = True,
        sync_files: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if flush_interval <= 0:
            raise ValueError("flush_interval must be > 0")
        self._out_dir = os.fspath(out_dir)
        self._path = manifest_path(out_dir)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._fsync = fsync
        self._lock_file = lock
        self._sync_files = sync_files and fsync
        self._buffer: list[bytes] = []
        self._names: list[str] = []  # files named by the buffered records
        self._fd: int | None = None
        self._torn = False  # a failed append may have left a partial line
        self._error: Exception | None = None
        self._flush_lock = anyio.Lock()
        self._pending = anyio.Event()
        self._tg: TaskGroup | None = None

    @property
    def path(self) -> str:
        return self._path

    async def __aenter__(self) -> Self:
        if self._fd is not None:
            raise RuntimeError("ManifestWriter is already open")
        self._fd = await anyio.to_thread.run_sync(self._open)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._flush_loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                # None: never wrap the caller's exception in an ExceptionGroup.
                await tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._flush()
                finally:
                    fd, self._fd = self._fd, None
                    if fd is not None:
                        await anyio.to_thread.run_sync(os.close, fd)

    async def write(self, record: ManifestRecord) -> None:
        """Buffer ``record``; flushes when ``batch_size`` records are buffered."""
        if self._fd is None:
            raise RuntimeError("ManifestWriter is not open")
        if self._error is not None:
            self._raise_stored_error()
        buffer = self._buffer
        buffer.append(_encoder.encode(record) + b"\n")
        if self._sync_files and record.files:
            self._names.extend(f.path for f in record.files)
        buffered = len(buffer)
        if buffered == 1:
            # The buffer was empty, so the flush loop's event is a fresh one (a flush that
            # empties the buffer replaces it); while records are buffered it stays set.
            self._pending.set()
        # While a flush runs, callers keep buffering instead of queueing on its lock (which
        # stalled every worker for a whole sync); far past a batch, they wait (backpressure).
        if buffered >= self._batch_size and (
            not self._flush_lock.locked() or buffered >= _BACKLOG * self._batch_size
        ):
            await self._flush()

    async def flush(self) -> None:
        """Append every buffered record to the file and fsync it."""
        if self._fd is None:
            raise RuntimeError("ManifestWriter is not open")
        self._raise_stored_error()
        await self._flush()

    def _raise_stored_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def _flush(self) -> None:
        # Shielded: once lines leave the buffer they must reach the file.
        with anyio.CancelScope(shield=True):
            async with self._flush_lock:
                count = len(self._buffer)
                if not count or self._fd is None:
                    return
                data = b"".join(self._buffer[:count])
                names = self._names[:]
                await anyio.to_thread.run_sync(self._sync_and_append, self._fd, data, names)
                # write() may have buffered more lines while the thread ran.
                del self._buffer[:count]
                del self._names[: len(names)]
                if not self._buffer:
                    self._pending = anyio.Event()

    async def _flush_loop(self) -> None:
        while True:
            await self._pending.wait()
            await anyio.sleep(self._flush_interval)
            try:
                await self._flush()
            except Exception as exc:  # surfaced by the next write()/flush()/exit
                self._error = exc

    def _open(self) -> int:
        os.makedirs(self._out_dir, exist_ok=True)
        created = not os.path.exists(self._path)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self._path, flags, 0o644)
        try:
            if self._lock_file and fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise OutputLockedError(
                        f"{self._path} is in use by another cometgen run"
                    ) from None
            size = os.fstat(fd).st_size
            if size and _read_last_byte(fd, size) != b"\n":
                # Torn last line from a crash: new records start on a fresh line.
                _write_all(fd, b"\n")
                if self._fsync:
                    os.fsync(fd)
            if created and self._fsync:
                fsync_dir(self._out_dir)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _sync_and_append(self, fd: int, data: bytes, names: list[str]) -> None:
        if names:
            sync_files(self._out_dir, names)
        self._append(fd, data)

    def _append(self, fd: int, data: bytes) -> None:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, b"\n" + data if self._torn else data)
            if self._fsync:
                os.fsync(fd)
        except OSError:
            # Undo a partial append so it cannot merge with the next line; the lines
            # stay buffered and are retried by the next flush.
            try:
                os.ftruncate(fd, size)
                self._torn = False
            except OSError:
                self._torn = True
            raise
        self._torn = False


def _read_last_byte(fd: int, size: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, 1, size - 1)
    os.lseek(fd, size - 1, os.SEEK_SET)  # pragma: no cover - Windows
    return os.read(fd, 1)  # pragma: no cover


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
