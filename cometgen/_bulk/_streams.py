"""Streams of the batch engine: jobs in (from any iterable), outcomes out."""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from typing import Final, TypeVar

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream

__all__ = ["drain", "iter_jobs"]

T = TypeVar("T")

#: Items read ahead of the batch: enough to keep the workers fed, little memory.
_READ_AHEAD: Final = 1024
#: How often a reader blocked on a full queue looks whether the batch went away.
_PUT_POLL_S: Final = 0.1


class _End:
    """The reader is done: the source ended, raised (``error``), or the batch stopped."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


async def iter_jobs(jobs: Iterable[T] | AsyncIterable[T], stopping: anyio.Event
                    ) -> AsyncGenerator[T, None]:
    """``jobs`` as an async iterator that ends as soon as ``stopping`` is set.

    A blocking iterable (a file, a producer piping into stdin) is read by its own thread,
    which hands each item over as soon as it is read: a line from a slow producer starts at
    once instead of waiting for a chunk to fill, and a stop does not wait for the next line.
    """
    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            yield job
        return
    items: queue.Queue[T | _End] = queue.Queue(_READ_AHEAD)
    done = threading.Event()
    reader = threading.Thread(target=_read, args=(jobs, items, done), daemon=True,
                              name="cometgen-input")
    reader.start()
    try:
        while not stopping.is_set():
            try:
                entry = items.get_nowait()
            except queue.Empty:
                entry = await _wait_for_item(items, stopping)
            if isinstance(entry, _End):
                if entry.error is not None:
                    raise entry.error
                return
            yield entry
    finally:
        done.set()
        # Wake a getter thread abandoned by a stop; the reader sees ``done`` and ends.
        try:
            items.put_nowait(_End())
        except queue.Full:
            pass


async def _wait_for_item(items: queue.Queue[T | _End], stopping: anyio.Event) -> T | _End:
    """The next item, or an ``_End`` when ``stopping`` is set first."""
    got: T | _End = _End()
    async with anyio.create_task_group() as tg:

        async def get() -> None:
            nonlocal got
            # Abandoned on a stop: the thread then takes whatever comes next and drops it.
            got = await anyio.to_thread.run_sync(items.get, abandon_on_cancel=True)
            tg.cancel_scope.cancel()

        async def stop() -> None:
            await stopping.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(get)
        tg.start_soon(stop)
    return got


def _read(jobs: Iterable[T], items: queue.Queue[T | _End], done: threading.Event) -> None:
    iterator = iter(jobs)
    end = _End()
    try:
        for job in iterator:
            if not _put(items, job, done):
                return
    except BaseException as exc:  # handed to the batch, which raises it
        end = _End(exc)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:  # a generator's open file is closed here, in its own thread
            close()
    _put(items, end, done)


def _put(items: queue.Queue[T | _End], value: T | _End, done: threading.Event) -> bool:
    """Put ``value``, waiting while the queue is full; False if the batch went away first."""
    while not done.is_set():
        try:
            items.put(value, timeout=_PUT_POLL_S)
            return True
        except queue.Full:
            continue
    return False


async def drain(stream: MemoryObjectReceiveStream[T]) -> list[T]:
    """The next item of ``stream`` as a one-item list, ``[]`` at its end.

    For ``while received := await drain(outcomes): ...``; ``async for`` does the same.
    """
    try:
        return [await stream.receive()]
    except anyio.EndOfStream:
        return []
