"""Realistic load: the recorded Pro answer, answered after 3-9 s, 400 requests in flight.

The three clients (cometgen ``AsyncClient`` + ``Image.save``, google-genai's ``client.aio``
and the minimal hand-written client) alternate against one server process, A B C A B C for
the configured rounds. Before each client run the server's latency draws are re-seeded, so
every run sees the same sequence of latencies; ``os.sync()`` runs first, so none starts with
another's dirty pages. Images are deleted with the run's temp dir at the end (see run.py).

An unmeasured warm-up run of the minimal client (``warmup_n`` requests) goes first: on this
VM the first process to use a few hundred MB of fresh memory and page cache after a quiet
spell pays host-side faults the later ones do not, and without it that was always cometgen
(round 1 slower than round 2 for it alone, in every run of session 6 and 7).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bodies
from _proc import HERE, PYTHON, fixed_server, get_json, run_json

CLIENTS = ("cometgen", "genai", "minimal")


def run_realistic(cfg: dict[str, Any], tmp: Path, log: Any) -> dict[str, Any]:
    """Run every client ``rounds`` times, alternating; returns the rows and per-client totals."""
    (body,) = bodies.prepare(tmp, ["pro-4MB"])
    lo, hi = cfg["real_latency_s"]
    n, c = cfg["real_n"], cfg["real_c"]
    rows: list[dict[str, Any]] = []
    server_args = ["--latency", str(lo), str(hi), "--seed", str(cfg["real_seed"])]
    with fixed_server(body.path, *server_args) as server:
        if cfg.get("real_warmup_n"):
            log(f"realistic: warm-up (minimal client, N={cfg['real_warmup_n']}, not measured)")
            os.sync()
            get_json(f"{server.url}/_bench/reset")
            run_json([PYTHON, str(HERE / "client.py"), "--client", "minimal", "--url", server.url,
                      "--model", body.model, "--n", str(cfg["real_warmup_n"]), "--c", str(c),
                      "--tmp", str(tmp), "--keep"], timeout=cfg["client_timeout"])
        for rnd in range(1, cfg["real_rounds"] + 1):
            for client in CLIENTS:
                log(f"realistic: round {rnd} {client} N={n}, {c} in flight, "
                    f"latency {lo}-{hi} s ...")
                os.sync()
                get_json(f"{server.url}/_bench/reset")
                row = run_json(
                    [PYTHON, str(HERE / "client.py"), "--client", client, "--url", server.url,
                     "--model", body.model, "--n", str(n), "--c", str(c), "--tmp", str(tmp),
                     "--server-pid", str(server.pid), "--keep"],
                    timeout=cfg["client_timeout"],
                )
                stats = get_json(f"{server.url}/_bench/stats")
                row.update(round=rnd, body=body.name, body_bytes=body.size,
                           image_bytes=body.image_bytes,
                           server_requests=stats["requests"],
                           server_max_in_flight=stats["max_in_flight"])
                rows.append(row)
    return {"n": n, "c": c, "latency_s": [lo, hi], "seed": cfg["real_seed"],
            "rounds": cfg["real_rounds"], "body": body.name, "rows": rows,
            "totals": totals(rows)}


def totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per client over all rounds: CPU per image from summed CPU and images, the worst RSS
    and lag p99, summed errors."""
    out: dict[str, dict[str, Any]] = {}
    for client in CLIENTS:
        mine = [r for r in rows if r["client"] == client]
        if not mine:
            continue
        images = sum(r["images"] for r in mine)
        cpu = sum(r["proc_cpu_s"] for r in mine)
        per_round = [r["proc_cpu_ms_per_image"] for r in mine]
        out[client] = {
            "runs": len(mine), "images": images,
            "errors": sum(r["errors"] for r in mine),
            "cpu_ms_per_image": round(cpu * 1000 / max(images, 1), 2),
            "cpu_ms_per_image_rounds": per_round,
            "peak_rss_mb": max(r["peak_rss_mb"] or r["max_rss_mb"] for r in mine),
            "lag_p99_ms": max(r["lag_ms"]["p99"] for r in mine),
            "lag_p99_ms_rounds": [r["lag_ms"]["p99"] for r in mine],
            "wall_s_rounds": [r["wall_s"] for r in mine],
            "max_in_flight": min(r["server_max_in_flight"] for r in mine),
        }
    return out
