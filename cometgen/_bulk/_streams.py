"""Streams of the batch engine: jobs in (from any iterable), outcomes out."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from itertools import islice
from typing import TypeVar

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream

__all__ = ["drain", "iter_jobs"]

T = TypeVar("T")
_READ_CHUNK = 256


async def iter_jobs(jobs: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """``jobs`` as an async iterator; a blocking iterable is read in chunks in a thread."""
    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            yield job
        return
    iterator: Iterator[T] = iter(jobs)
    while True:
        # Readers block on disk or stdin: pull chunks in a worker thread.
        chunk = await anyio.to_thread.run_sync(lambda: list(islice(iterator, _READ_CHUNK)))
        if not chunk:
            return
        for job in chunk:
            yield job


async def drain(stream: MemoryObjectReceiveStream[T]) -> list[T]:
    """The next item of ``stream`` as a one-item list, ``[]`` at its end.

    For ``while received := await drain(outcomes): ...``; ``async for`` does the same.
    """
    try:
        return [await stream.receive()]
    except anyio.EndOfStream:
        return []
