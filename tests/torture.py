"""The long reliability runs: ``python -m tests.torture --kills 100`` (from the repo root).

Crash torture: ``cometgen run`` on ``--items`` prompts against a threaded mock, killed with
SIGKILL ``--kills`` times at random moments (seeded), rerun until complete; then every
promise is checked (nothing lost, nothing done twice, nothing done re-sent, images whole and
matching the manifest, no temp files). ``--soak N`` also runs the fault soak on N items.
Prints one JSON summary line per run; exits 1 if a promise was broken.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import anyio

from ._reliability import crash_torture, fault_soak, json_line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.torture", description=__doc__)
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=24)
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--soak", type=int, default=0, metavar="N",
                   help="also run the fault soak (30%% faults) on N items")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory(prefix="cometgen-torture-") as tmp:
        if args.kills or args.items:
            log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else None
            report = crash_torture(
                Path(tmp) / "crash", items=args.items, kills=args.kills, seed=args.seed,
                concurrency=args.concurrency, latency=args.latency,
                **({"log": log} if log else {}),
            )
            print(json_line({"torture": report.summary()}), flush=True)
            ok &= report.ok and report.kills >= args.kills
        if args.soak:
            t0 = time.monotonic()
            soak = anyio.run(fault_soak, Path(tmp) / "soak", args.soak, args.seed)
            soak["seconds"] = round(time.monotonic() - t0, 1)
            print(json_line({"soak": soak}), flush=True)
            ok &= not soak["problems"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
