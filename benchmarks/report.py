"""Turn benchmark results into the bar checks and the printed table."""

from __future__ import annotations

from typing import Any

LARGE_BODIES = ("pro-4MB", "flash-2MB")


def _row(rows: list[dict[str, Any]], body: str, client: str) -> dict[str, Any] | None:
    for r in rows:
        if r.get("body") == body and r.get("client") == client:
            return r
    return None


def _bar(name: str, value: Any, target: str, ok: bool | None) -> dict[str, Any]:
    return {"bar": name, "value": value, "target": target,
            "status": "n/a" if ok is None else ("PASS" if ok else "FAIL")}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def realistic_bars(real: dict[str, Any]) -> list[dict[str, Any]]:
    """The realistic-load bars, on the totals over all rounds (worst round for RSS, lag)."""
    tot = real["totals"]
    mine, genai, minimal = tot.get("cometgen"), tot.get("genai"), tot.get("minimal")
    if mine is None:
        return []
    out = []
    for other, name, limit in ((genai, "genai", 0.65), (minimal, "minimal", 1.10)):
        cpu = _ratio(mine["cpu_ms_per_image"], other and other["cpu_ms_per_image"])
        out.append(_bar(f"realistic cometgen: CPU/image vs {name}", cpu, f"<= {limit:.2f}x",
                        None if cpu is None else cpu <= limit))
    rss = _ratio(mine["peak_rss_mb"], genai and genai["peak_rss_mb"])
    out.append(_bar("realistic cometgen: peak RSS vs genai", rss, "<= 0.50x",
                    None if rss is None else rss <= 0.5))
    out.append(_bar("realistic cometgen: event-loop lag p99 (ms, worst round)",
                    mine["lag_p99_ms"], "< 10", mine["lag_p99_ms"] < 10))
    errors = sum(t["errors"] for t in tot.values())
    out.append(_bar("realistic: errors (all clients, all rounds)", errors, "0", errors == 0))
    held = min(t["max_in_flight"] for t in tot.values())
    out.append(_bar("realistic: requests in flight at the server (every run)", held,
                    f"= {real['c']}", held == real["c"]))
    return out


def bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each bar of the benchmark issue, evaluated on what was run."""
    out: list[dict[str, Any]] = []
    sc = results["scenarios"]
    real = sc.get("realistic")
    if isinstance(real, dict) and "totals" in real:
        out += realistic_bars(real)
    rows = sc.get("throughput")
    if isinstance(rows, list):
        # Zero latency is not the regime users live in: information, with one bar.
        for body in LARGE_BODIES:
            genai = _row(rows, body, "genai")
            for client in ("cometgen", "cometgen-batch"):
                mine = _row(rows, body, client)
                if mine is None or genai is None or not genai["cpu_ms_per_image"]:
                    continue
                cpu = mine["cpu_ms_per_image"] / genai["cpu_ms_per_image"]
                out.append(_bar(f"(info) zero-latency {body} {client}: CPU/image vs genai",
                                round(cpu, 2), "<= 0.65x", cpu <= 0.65))
    s = sc.get("scale")
    if isinstance(s, dict) and "n" in s:
        rate = s.get("items_per_s_run") or 0.0
        out.append(_bar(f"scale {s['n']:,} items: items/s (CLI run phase)", rate, ">= 1000",
                        rate >= 1000))
        rss = s.get("max_rss_mb")
        out.append(_bar("scale: max RSS (MB)", rss, "< 250", rss is not None and rss < 250))
    rl = sc.get("ratelimit")
    if isinstance(rl, list):
        for r in rl:
            if "achieved_ratio" not in r:
                continue
            if r["mode"] == "rpm":
                ok = abs(r["achieved_ratio"] - 1) <= 0.02 and r["status_429"] == 0
                out.append(_bar("ratelimit rpm known: achieved/limit, 429s",
                                f"{r['achieved_ratio']:.3f}, {r['status_429']}",
                                "within 2%, 0", ok))
            else:
                ok = r["achieved_ratio"] >= 0.90 and r["rate_429"] < 0.03
                out.append(_bar("ratelimit adaptive: achieved/limit, 429 share",
                                f"{r['achieved_ratio']:.3f}, {r['rate_429']:.1%}",
                                ">= 0.90, < 3%", ok))
    return out


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in headers]] + [[("" if c is None else str(c)) for c in r]
                                           for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_realistic(real: dict[str, Any]) -> str:
    lo, hi = real["latency_s"]
    runs = [[r["round"], r["client"], r["n"], f"{r['server_max_in_flight']}/{real['c']}",
             f"{r['images']}/{r['errors']}", r["wall_s"], r["proc_cpu_ms_per_image"],
             f"{r['user_ms_per_image']}/{r['sys_ms_per_image']}",
             "{p50}/{p99}/{max}".format(**r["lag_ms"]), r["peak_rss_mb"],
             r["server_cpu_ms_per_request"], r.get("other_load_cores")] for r in real["rows"]]
    tot = real["totals"]
    genai, minimal = tot.get("genai"), tot.get("minimal")
    summary = []
    for client, t in tot.items():
        vs_g = _ratio(t["cpu_ms_per_image"], genai and genai["cpu_ms_per_image"])
        vs_m = _ratio(t["cpu_ms_per_image"], minimal and minimal["cpu_ms_per_image"])
        rss = _ratio(t["peak_rss_mb"], genai and genai["peak_rss_mb"])
        summary.append([client, f"{t['images']}/{t['errors']}", t["cpu_ms_per_image"],
                        " ".join(str(x) for x in t["cpu_ms_per_image_rounds"]),
                        f"{vs_g}x", f"{vs_m}x", t["peak_rss_mb"], f"{rss}x",
                        " ".join(str(x) for x in t["lag_p99_ms_rounds"])])
    return (f"\n[realistic] {real['body']}, server answers after uniform({lo}, {hi}) s "
            f"(seed {real['seed']}), N={real['n']}, {real['c']} in flight, "
            f"{real['rounds']} round(s), clients alternating\n"
            + _table(["round", "client", "N", "in flight", "img/err", "wall s",
                      "CPU ms/img", "user/sys ms", "lag p50/p99/max ms", "peak RSS MB",
                      "srv CPU ms/req", "other load"], runs)
            + "\n\n" + _table(["client", "img/err", "CPU ms/img", "per round",
                                "CPU vs genai", "CPU vs minimal", "peak RSS MB",
                                "RSS vs genai", "lag p99 ms per round"], summary))


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    parts = [f"cometgen benchmarks ({results['config']['mode']}) on {m['cpu']}, "
             f"{m['cores']} cores, Python {m['python']}; "
             + ", ".join(f"{k} {v}" for k, v in results["versions"].items())]
    sc = results["scenarios"]
    real = sc.get("realistic")
    if isinstance(real, dict) and "totals" in real:
        parts.append(render_realistic(real))
    elif real is not None:
        parts.append(f"\n[realistic] ERROR: {real.get('error')}")
    rows = sc.get("throughput")
    if isinstance(rows, list):
        genai = {r["body"]: r for r in rows if r["client"] == "genai"}
        table = []
        for r in rows:
            g = genai.get(r["body"])
            ratio_cpu = ratio_speed = None
            if g and r["client"] != "genai" and g["cpu_ms_per_image"]:
                ratio_cpu = f"{r['cpu_ms_per_image'] / g['cpu_ms_per_image']:.2f}x"
                ratio_speed = f"{r['images_per_s'] / g['images_per_s']:.2f}x"
            lag = r["lag_ms"]
            table.append([r["body"], r["client"], r["n"], r["c"],
                          f"{r['images']}/{r['errors']}", r["wall_s"], r["images_per_s"],
                          r["cpu_ms_per_image"], f"{lag['p50']}/{lag['p99']}/{lag['max']}",
                          r["max_rss_mb"], r["server_cpu_ms_per_request"],
                          r.get("other_load_cores"), ratio_speed, ratio_cpu])
        parts.append("\n[throughput] zero latency (information), fixed-body loopback server\n"
                     + _table(
            ["body", "client", "N", "C", "img/err", "wall s", "img/s", "CPU ms/img",
             "lag p50/p99/max ms", "RSS MB", "srv CPU ms/req", "other load",
             "speed vs genai",
             "CPU vs genai"], table))
    elif rows is not None:
        parts.append(f"\n[throughput] ERROR: {rows.get('error')}")
    s = sc.get("scale")
    if isinstance(s, dict) and "n" in s:
        head = (f"\n[scale] cometgen run, {s['n']:,} items, C={s['c']}, mock zero latency: "
                f"exit {s['exit_code']}, done {s['done']}, failed {s['failed']}, wall "
                f"{s['wall_s']} s, {s['items_per_s_run']} items/s (run phase), "
                f"{s['items_per_s_overall']} items/s (process start to exit), steady min/median "
                f"{s['items_per_s_steady_min']}/{s['items_per_s_steady_median']}, first image "
                f"{s['first_image_s']} s, max RSS {s['max_rss_mb']} MB, client CPU "
                f"{s['client_cpu_ms_per_item']} ms/item, mock CPU "
                f"{s['server_cpu_ms_per_item']} ms/item")
        samples = s["samples"]
        step = max(1, len(samples) // 20)
        table = [[x["t_s"], x["items_done"], x["items_per_s"], x["rss_mb"], x["client_cpu_s"],
                  x["server_cpu_s"]] for x in samples[::step]]
        parts.append(head + "\n" + _table(
            ["t s", "items done", "items/s", "VmRSS MB", "client CPU s", "mock CPU s"], table))
        if s.get("stderr_tail"):
            parts.append("[scale] CLI stderr: " + s["stderr_tail"])
    elif s is not None:
        parts.append(f"\n[scale] ERROR: {s.get('error')}")
    rl = sc.get("ratelimit")
    if isinstance(rl, list):
        table = [[r["mode"], r["server_rpm"], r["mock_latency_s"], r["duration_s"],
                  r["requests"], r["ok_in_span"], r["achieved_rpm"], r["achieved_ratio"],
                  r["status_429"], f"{r['rate_429']:.1%}", r["final_window"], r["failures"]]
                 for r in rl if "requests" in r]
        overlapped = " (run while the scale scenario loaded both cores)" if any(
            r.get("overlapped_with_scale") for r in rl) else ""
        parts.append("\n[ratelimit] mock --rpm (sliding 60 s window), cometgen client"
                     + overlapped + "\n"
                     + _table(["mode", "limit rpm", "latency s", "span s", "requests",
                               "200s sent in span", "achieved rpm", "ratio", "429s",
                               "429 share", "final window", "failed calls"], table))
    elif rl is not None:
        parts.append(f"\n[ratelimit] ERROR: {rl.get('error')}")
    st = sc.get("startup")
    if isinstance(st, list):
        base = {r["command"]: r["median_ms"] for r in st}
        genai = base.get("python -c 'from google import genai'")
        table = [[r["command"], r["median_ms"],
                  f"{r['median_ms'] / genai:.2f}x" if genai else None] for r in st]
        parts.append("\n[startup] median wall time\n"
                     + _table(["command", "median ms", "vs genai import"], table))
    if results.get("bars"):
        parts.append("\n[bars]\n" + _table(
            ["bar", "value", "target", "status"],
            [[b["bar"], b["value"], b["target"], b["status"]] for b in results["bars"]]))
    parts.append(f"\nelapsed {results.get('elapsed_s')} s")
    return "\n".join(parts)
