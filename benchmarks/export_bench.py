"""Benchmark ``cometgen export``: a 200,000-item mock run to Parquet and to WebDataset.

The run is synthesized directly (no HTTP: generating 200k images through the mock would
only measure the run, which ``scale.py`` already does): the mock's own PNG and JPEG
images (64x64, about 0.3 and 0.7 kB, alternating, one file per item at the path a run
would use, ``images/<line // 100000>/<line // 100 % 1000>/``) and a ``manifest.jsonl``
of done records shaped like a real run's (prompt, usage, cost, latency, metadata), 2% of
them ``failed``. Each export runs in its own process (``cometgen export ...
--include-failed``); the figures are its wall time, items/s and peak RSS (``VmHWM`` of
that process).

    .venv/bin/python benchmarks/export_bench.py [--items 200000] [--dir /tmp/x] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cometgen._files import image_path
from cometgen.testing._images import make_jpeg, make_png

BARS = {"items_per_s": 2000.0, "peak_rss_mb": 300.0}


def synthesize(root: Path, items: int) -> None:
    """A run folder of ``items`` keys; returns quickly if it already exists."""
    if (root / "manifest.jsonl").exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    images = {"image/png": (make_png(64, 64), "png"), "image/jpeg": (make_jpeg(64, 64), "jpg")}
    sums = {m: hashlib.sha256(d).hexdigest() for m, (d, _) in images.items()}
    lines = []
    made: set[str] = set()
    for i in range(items):
        key = f"item-{i:07d}"
        if i % 50 == 49:
            lines.append(json.dumps({"key": key, "id": key, "status": "failed",
                                     "reason": "ServerError: 503 overloaded",
                                     "error_type": "ServerError", "prompt": f"prompt {i}",
                                     "attempts": 4, "latency": 2.5}))
            continue
        mime = "image/png" if i % 2 else "image/jpeg"
        data, ext = images[mime]
        path = image_path(key, key, None, ext, i + 1)  # where `cometgen run` puts line i+1
        folder = path.rsplit("/", 1)[0]
        if folder not in made:
            (root / folder).mkdir(parents=True, exist_ok=True)
            made.add(folder)
        (root / path).write_bytes(data)
        lines.append(json.dumps({
            "key": key, "id": key, "status": "done",
            "files": [{"path": path, "sha256": sums[mime], "mime_type": mime,
                       "bytes": len(data)}],
            "model": "gemini-2.5-flash-image", "prompt": f"a red fox number {i}, oil painting",
            "usage": {"prompt_tokens": 9, "output_tokens": 1298, "image_tokens": 1290,
                      "thought_tokens": 0, "total_tokens": 1307},
            "cost": 0.0387, "attempts": 1, "latency": 4.2,
            "metadata": {"style": "painting", "n": i},
        }))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")


def export(run: Path, dest: Path, fmt: str) -> dict[str, object]:
    shutil.rmtree(dest, ignore_errors=True)
    cmd = [sys.executable, "-c",
           # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec (the parent's size).
           "import sys; from cometgen._cli import main; code = main(sys.argv[1:]); "
           "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
           "print(hwm.split()[1], file=sys.stderr); sys.exit(code)",
           "export", str(run), "-o", str(dest), "--format", fmt, "--include-failed", "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    report = json.loads(proc.stdout)
    peak_kb = int(proc.stderr.strip().splitlines()[-1])
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    return {"format": fmt, "rows": report["rows"], "failures": report["failures"],
            "shards": report["shards"], "seconds": round(wall, 2),
            "items_per_s": round((report["rows"] + report["failures"]) / wall),
            "peak_rss_mb": round(peak_kb / 1024, 1), "dest_mb": round(size / 1e6, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, help="work folder (kept; default a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="cometgen-export-bench-"))
    t0 = time.perf_counter()
    synthesize(work / "run", args.items)
    made = time.perf_counter() - t0
    rows = [export(work / "run", work / fmt, fmt) for fmt in ("parquet", "webdataset")]
    if args.json:
        print(json.dumps({"items": args.items, "synthesize_s": round(made, 1), "rows": rows}))
    print(f"{args.items} items synthesized in {made:.1f} s in {work}", file=sys.stderr)
    ok = True
    for row in rows:
        passed = (row["items_per_s"] >= BARS["items_per_s"]  # type: ignore[operator]
                  and row["peak_rss_mb"] < BARS["peak_rss_mb"])  # type: ignore[operator]
        ok = ok and passed
        print(f"{row['format']:>10}: {row['rows']} rows + {row['failures']} failures, "
              f"{row['shards']} shards, {row['seconds']} s, {row['items_per_s']} items/s, "
              f"peak RSS {row['peak_rss_mb']} MB, {row['dest_mb']} MB written "
              f"[{'ok' if passed else 'BELOW BAR'}]", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
