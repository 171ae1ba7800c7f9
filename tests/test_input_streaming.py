"""A live input source (a producer piping into ``cometgen run -``, a blocking iterator):
each item starts as soon as it is read, and a stop never waits for the next item."""

from __future__ import annotations

import queue
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import cometgen
from cometgen.testing import MockServer, ThreadedMockServer
from tests._cli import cmd, env, latest, remote

pytestmark = pytest.mark.anyio


def _live(lines: queue.Queue[str | None]) -> Iterator[cometgen.Job]:
    """Jobs from a source that blocks until the test hands it the next prompt."""
    while (prompt := lines.get()) is not None:
        yield cometgen.Job(prompt=prompt, id=prompt)


async def test_each_item_of_a_blocking_source_starts_when_it_arrives() -> None:
    lines: queue.Queue[str | None] = queue.Queue()
    async with MockServer() as server, cometgen.AsyncClient(api_key="k",
                                                            base_url=server.url) as client:
        async with cometgen.Batch(client, concurrency=4) as batch:
            with anyio.fail_after(10):
                async with batch.run(_live(lines)) as outcomes:
                    for prompt in ("first", "second"):
                        lines.put(prompt)  # the source blocks again right after it
                        outcome = await outcomes.receive()
                        assert outcome.key == prompt and isinstance(outcome, cometgen.Done)
                    batch.stop("interrupted")  # the source is blocked: must not be waited for
                    assert [o async for o in outcomes] == []
    assert server.stats.requests == 2


async def test_an_error_raised_by_the_source_reaches_the_caller() -> None:
    def broken() -> Iterator[cometgen.Job]:
        yield cometgen.Job(prompt="ok", id="ok")
        raise OSError("input went away")

    async with MockServer() as server, cometgen.AsyncClient(api_key="k",
                                                            base_url=server.url) as client:
        with pytest.raises(BaseException) as info:
            async with cometgen.Batch(client) as batch:
                async for _ in batch.run(broken()):
                    pass
    error = info.value
    while isinstance(error, BaseExceptionGroup):  # the batch's task group wraps it
        error = error.exceptions[0]
    assert isinstance(error, OSError) and str(error) == "input went away"


def test_stdin_lines_start_as_they_arrive_and_ctrl_c_does_not_wait_for_more(
    tmp_path: Path, mock: ThreadedMockServer
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(cmd("run", "-", "-o", str(out), *remote(mock)), env=env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    proc.stdin.write('{"id": "live1", "prompt": "a lighthouse"}\n')
    proc.stdin.flush()  # and stdin stays open: the producer has more to say later
    deadline = time.monotonic() + 20
    while "live1" not in latest(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert latest(out)["live1"]["status"] == "done"  # before any second line or EOF
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Fatal Python error" not in stderr and "Traceback" not in stderr
    assert mock.stats.requests == 1
