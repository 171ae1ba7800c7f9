"""One benchmark client, run in its own process; prints one JSON line of figures.

``python benchmarks/client.py --client NAME --url URL --model M --n N --c C``

NAME is ``cometgen`` (``AsyncClient.generate`` + ``image.save``), ``cometgen-batch``
(``cometgen.Batch`` with an ``out_dir``), ``genai`` (google-genai on its aiohttp transport),
``aiohttp`` (hand-written aiohttp + json + base64, blocking write) or ``minimal`` (the least
code doing cometgen's work: one aiohttp session, msgspec decoding, and the durable write of
``Image.save`` in a worker thread). Every client makes N calls with at most C in flight and
writes every image to a fresh temp dir (deleted afterwards).

Figures: wall time, images/s, process CPU per image (``time.process_time``, all threads; and
utime + stime from ``/proc/self/stat``), event-loop lag (a 5 ms ticker's overshoot) and peak
RSS (``VmHWM``, includes imports).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _proc import busy_seconds, cpu_seconds, peak_rss_mb, percentiles

PROMPT = "A sea otter floating on its back, holding a small red umbrella, watercolor"
Work = Callable[[int], Awaitable[int]]


_threads_max = 1


async def _lag_ticker(samples: list[float], stop: asyncio.Event) -> None:
    global _threads_max
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.005)
        samples.append(time.perf_counter() - t0 - 0.005)
        _threads_max = max(_threads_max, threading.active_count())


async def _bounded(n: int, c: int, one: Work) -> tuple[int, int, list[str]]:
    """Run ``one(i)`` for i < n with at most c at once; returns (images, errors, messages)."""
    sem = asyncio.Semaphore(c)
    errors: list[str] = []

    async def guarded(i: int) -> int:
        async with sem:
            try:
                return await one(i)
            except Exception as exc:  # counted, not fatal: a benchmark reports failures
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                return 0

    counts = await asyncio.gather(*(guarded(i) for i in range(n)))
    return sum(counts), len(errors), errors[:3]


async def run_cometgen(
    url: str, model: str, n: int, c: int, out: str
) -> tuple[int, int, list[str]]:
    import cometgen

    async with cometgen.AsyncClient(
        api_key="k", base_url=url, model=model, limits=cometgen.Limits(concurrency=c),
        max_connections=c,
    ) as client:

        async def one(i: int) -> int:
            result = await client.generate(f"{PROMPT} #{i}", include_text=False)
            for k, image in enumerate(result.images):
                await image.save(os.path.join(out, f"{i}-{k}.{image.extension}"))
            return len(result.images)

        return await _bounded(n, c, one)


async def run_cometgen_batch(
    url: str, model: str, n: int, c: int, out: str
) -> tuple[int, int, list[str]]:
    import cometgen

    jobs = [cometgen.Job(prompt=f"{PROMPT} #{i}", id=f"img{i}") for i in range(n)]
    images = failed = 0
    messages: list[str] = []
    async with cometgen.AsyncClient(api_key="k", base_url=url, model=model) as client:
        async with cometgen.Batch(client, out_dir=out, concurrency=c, include_text=False) as batch:
            async for outcome in batch.run(jobs):
                if isinstance(outcome, cometgen.Done):
                    images += len(outcome.files)
                else:
                    failed += 1
                    if len(messages) < 3:
                        messages.append(str(getattr(outcome, "reason", outcome))[:300])
    return images, failed, messages


async def run_genai(url: str, model: str, n: int, c: int, out: str) -> tuple[int, int, list[str]]:
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="k", http_options={"api_version": "v1beta", "base_url": url})
    config = types.GenerateContentConfig(response_modalities=["IMAGE"])
    try:

        async def one(i: int) -> int:
            resp = await client.aio.models.generate_content(
                model=model, contents=f"{PROMPT} #{i}", config=config
            )
            count = 0
            for k, part in enumerate(resp.candidates[0].content.parts):  # type: ignore[index,union-attr]
                if part.inline_data is not None and part.inline_data.data:
                    with open(os.path.join(out, f"{i}-{k}.img"), "wb") as f:
                        f.write(part.inline_data.data)
                    count += 1
            return count

        return await _bounded(n, c, one)
    finally:
        await client.aio.aclose()


async def run_aiohttp(url: str, model: str, n: int, c: int, out: str) -> tuple[int, int, list[str]]:
    import base64

    import aiohttp

    endpoint = f"{url}/v1beta/models/{model}:generateContent"
    headers = {"x-goog-api-key": "k"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:

        async def one(i: int) -> int:
            payload = {
                "contents": [{"role": "user", "parts": [{"text": f"{PROMPT} #{i}"}]}],
                "generationConfig": {"responseModalities": ["IMAGE"]},
            }
            async with session.post(endpoint, json=payload, headers=headers) as resp:
                resp.raise_for_status()
                data = json.loads(await resp.text())
            count = 0
            for k, part in enumerate(data["candidates"][0]["content"]["parts"]):
                inline = part.get("inlineData")
                if inline:
                    with open(os.path.join(out, f"{i}-{k}.img"), "wb") as f:
                        f.write(base64.b64decode(inline["data"]))
                    count += 1
            return count

        return await _bounded(n, c, one)


class _InlineData(msgspec.Struct, rename="camel"):
    data: bytes = b""  # base64 in the JSON; msgspec decodes it to bytes
    mime_type: str = ""


class _Part(msgspec.Struct, rename="camel"):
    inline_data: _InlineData | None = None


class _Content(msgspec.Struct):
    parts: list[_Part] = []


class _Candidate(msgspec.Struct):
    content: _Content | None = None


class _Response(msgspec.Struct):
    """Only the fields an image needs: the rest (thoughtSignature, usage) is skipped."""

    candidates: list[_Candidate] = []


_DECODER = msgspec.json.Decoder(_Response)


def _durable_write(path: str, data: bytes) -> None:
    """What ``Image.save`` promises: temp file, fsync, rename, directory fsync."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def run_minimal(url: str, model: str, n: int, c: int, out: str) -> tuple[int, int, list[str]]:
    import aiohttp

    endpoint = f"{url}/v1beta/models/{model}:generateContent"
    headers = {"x-goog-api-key": "k", "content-type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:

        async def one(i: int) -> int:
            payload = msgspec.json.encode({
                "contents": [{"role": "user", "parts": [{"text": f"{PROMPT} #{i}"}]}],
                "generationConfig": {"responseModalities": ["IMAGE"]},
            })
            async with session.post(endpoint, data=payload, headers=headers) as resp:
                resp.raise_for_status()
                answer = _DECODER.decode(await resp.read())
            count = 0
            for cand in answer.candidates[:1]:
                for k, part in enumerate(cand.content.parts if cand.content else []):
                    if part.inline_data is not None and part.inline_data.data:
                        path = os.path.join(out, f"{i}-{k}.img")
                        await asyncio.to_thread(_durable_write, path, part.inline_data.data)
                        count += 1
            return count

        return await _bounded(n, c, one)


CLIENTS: dict[str, Callable[..., Awaitable[tuple[int, int, list[str]]]]] = {
    "cometgen": run_cometgen,
    "cometgen-batch": run_cometgen_batch,
    "genai": run_genai,
    "aiohttp": run_aiohttp,
    "minimal": run_minimal,
}


def _dir_bytes(path: str) -> tuple[int, int]:
    files = total = 0
    for root, _, names in os.walk(path):
        for name in names:
            if name.endswith(".jsonl") or name.startswith("."):
                continue  # the Batch manifest / metadata, temp files
            files += 1
            total += os.path.getsize(os.path.join(root, name))
    return files, total


async def _main(args: argparse.Namespace, out: str) -> dict[str, Any]:
    # Import the client library before timing: start-up is its own scenario.
    if args.client.startswith("cometgen"):
        import cometgen  # noqa: F401
    elif args.client == "genai":
        from google import genai  # noqa: F401
    import aiohttp  # noqa: F401

    samples: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_lag_ticker(samples, stop))
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    busy0 = busy_seconds()
    srv0 = cpu_seconds(args.server_pid) if args.server_pid else 0.0
    me = os.getpid()
    proc0, cpu0, t0 = cpu_seconds(me), time.process_time(), time.perf_counter()
    images, errors, messages = await CLIENTS[args.client](args.url, args.model, args.n, args.c, out)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    proc_cpu = cpu_seconds(me) - proc0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    srv = (cpu_seconds(args.server_pid) - srv0) if args.server_pid else 0.0
    # CPU used by everything else on the machine meanwhile (a shared box is noisy).
    others = max(0.0, busy_seconds() - busy0 - cpu - srv)
    user, system = ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime
    stop.set()
    await ticker
    files, written = _dir_bytes(out)
    return {
        "client": args.client, "n": args.n, "c": args.c, "images": images, "errors": errors,
        "error_samples": messages, "files": files, "bytes_written": written,
        "wall_s": round(wall, 3), "images_per_s": round(images / wall, 1) if wall else 0.0,
        "cpu_ms_per_image": round(cpu * 1000 / max(images, 1), 2),
        "cpu_s": round(cpu, 3),
        "proc_cpu_ms_per_image": round(proc_cpu * 1000 / max(images, 1), 2),
        "proc_cpu_s": round(proc_cpu, 2),
        "user_ms_per_image": round(user * 1000 / max(images, 1), 2),
        "sys_ms_per_image": round(system * 1000 / max(images, 1), 2),
        "minflt_per_image": round((ru1.ru_minflt - ru0.ru_minflt) / max(images, 1)),
        "threads_max": _threads_max,
        "server_cpu_ms_per_request": round(srv * 1000 / args.n, 2) if args.server_pid else None,
        "other_load_cores": round(others / wall, 2) if wall else 0.0,
        "lag_ms": percentiles(samples), "lag_samples": len(samples),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_mb": peak_rss_mb(me),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", choices=sorted(CLIENTS), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", default="gemini-3-pro-image-preview")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--c", type=int, default=64)
    parser.add_argument("--server-pid", type=int, default=0,
                        help="server process whose CPU to measure over the same window")
    parser.add_argument("--tmp", default=None, help="parent of the temp output dir")
    parser.add_argument("--keep", action="store_true",
                        help="leave the images for the caller to delete (see run.py)")
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix=f"bench-{args.client}-", dir=args.tmp)
    try:
        result = asyncio.run(_main(args, out))
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
