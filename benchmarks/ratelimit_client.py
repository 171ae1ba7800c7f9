"""Rate-limit accuracy client: cometgen against a mock enforcing ``--rpm``; prints JSON.

``python benchmarks/ratelimit_client.py --url URL --mode rpm|adaptive --rpm 600 --duration S``

``rpm``: ``Limits(concurrency=C, rpm=RPM)`` (the limit is known). ``adaptive``:
``Limits(concurrency=C, adaptive=True)`` (the limit is unknown). C workers call
``generate`` until ``duration`` seconds after the first send; calls still in flight then
finish (bounded). Every HTTP attempt's send time and status is recorded by a transport
wrapping the default one (``transport=``), so 429s are counted on the client side, retries included.

The mock's limit is a sliding 60 s window starting empty, so at most RPM/60 * D requests
sent in any D-second span (D <= 60, or a multiple of 60) can succeed; the achieved rate is
the 200s *sent* in [t0, t0 + D) over D.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import cometgen


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    limits = (
        cometgen.Limits(concurrency=args.c, rpm=args.rpm)
        if args.mode == "rpm"
        else cometgen.Limits(concurrency=args.c, adaptive=True)
    )
    sends: list[tuple[float, int]] = []
    failures: list[str] = []
    windows: list[int] = []
    inner = cometgen.AiohttpTransport(max_connections=max(args.c, 1))

    class Recording:
        async def send(self, request: cometgen.TransportRequest) -> cometgen.TransportResponse:
            t = time.monotonic()
            raw = await inner.send(request)
            sends.append((t, raw.status))
            return raw

        async def aclose(self) -> None:
            await inner.aclose()

    async with cometgen.AsyncClient(
        api_key="k", base_url=args.url, model="gemini-2.5-flash-image", limits=limits,
        retry=cometgen.RetryPolicy(max_attempts=20), transport=Recording(),
    ) as client:
        t_start = time.monotonic()
        deadline = t_start + args.duration

        async def worker(w: int) -> None:
            i = 0
            while time.monotonic() < deadline:
                try:
                    await client.generate(f"rate limit probe {w}-{i}", include_text=False)
                except cometgen.CometgenError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}"[:200])
                i += 1

        async def sampler() -> None:
            while True:
                windows.append(client.limiter.snapshot().window)
                await asyncio.sleep(1.0)

        sample_task = asyncio.create_task(sampler())
        try:
            async with asyncio.timeout(args.duration + args.grace):
                await asyncio.gather(*(worker(w) for w in range(args.c)))
        except TimeoutError:
            pass
        sample_task.cancel()
        snap = client.limiter.snapshot()
    if not sends:
        return {"mode": args.mode, "error": "no request was sent", "failures": failures[:3]}
    t0 = sends[0][0]
    in_span = [s for s in sends if s[0] < t0 + args.duration]
    ok = sum(1 for _, status in in_span if status == 200)
    limited = sum(1 for _, status in sends if status == 429)
    oks = sorted(t for t, status in sends if status == 200)
    paced = (len(oks) - 1) / (oks[-1] - oks[0]) * 60 if len(oks) > 1 else 0.0
    return {
        "mode": args.mode, "server_rpm": args.rpm, "duration_s": args.duration,
        "requests": len(sends), "ok_in_span": ok, "ok_total": len(oks),
        "status_429": limited, "other_status": sum(1 for _, s in sends if s not in (200, 429)),
        "rate_429": round(limited / len(sends), 4),
        "achieved_rpm": round(ok / args.duration * 60, 1),
        "achieved_ratio": round(ok / args.duration * 60 / args.rpm, 4),
        "first_to_last_ok_rpm": round(paced, 1),
        "limiter_429s": snap.rate_limited_count, "final_window": snap.window,
        "window_samples": windows[:: max(1, len(windows) // 30)],
        "failures": len(failures), "failure_samples": failures[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("rpm", "adaptive"), required=True)
    parser.add_argument("--rpm", type=float, default=600)
    parser.add_argument("--duration", type=float, default=100)
    parser.add_argument("--grace", type=float, default=20, help="seconds for calls in flight")
    parser.add_argument("--c", type=int, default=64)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_run(args))), flush=True)


if __name__ == "__main__":
    main()
