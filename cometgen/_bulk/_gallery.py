"""``gallery``: a static HTML contact sheet of a run, opened from ``file://``.

Two streaming passes over the manifest's latest records: the first collects the header
(counts, cost, failures by reason, latency percentiles), the second writes the pages of
``per_page`` thumbnails and ``failures.html``. With Pillow installed each image gets a
small JPEG thumbnail (``DIR/thumbs/<page>/``, so no folder holds more than a page's
files; an existing thumbnail is kept); without it the page shows the originals, scaled by
the browser and lazy-loaded. Pages are written atomically.
"""

from __future__ import annotations

import io
import os
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from .._exceptions import ConfigError
from .._files import write_atomic_sync
from ._export_rows import ExportFile, ExportRecord, iter_latest, sample_key, scan_manifest
from ._gallery_html import bar_chart, esc, name_of, page, pager
from ._manifest import MANIFEST_NAME, STATUS_DONE, STATUSES

__all__ = ["GalleryReport", "write_gallery"]

THUMB_SIZE: Final = 256
_PERCENTILES: Final = (50, 90, 95, 99, 100)


@dataclass
class GalleryReport:
    """What ``write_gallery`` wrote."""

    dir: str
    index: str  #: path of the first page
    pages: int = 0
    images: int = 0
    failures: int = 0
    thumbnails: int = 0  #: thumbnails made by this call (0 without Pillow)
    pillow: bool = False


@dataclass
class _Stats:
    counts: Counter[str] = field(default_factory=Counter)
    images: int = 0
    cost: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))


def _reason(rec: ExportRecord) -> str:
    detail = rec.block_reason or rec.finish_reason or rec.error_type or rec.reason
    return f"{rec.status}: {detail}" if detail else rec.status


def _collect(records: Any) -> _Stats:
    stats = _Stats()
    for rec in records:
        stats.counts[rec.status] += 1
        stats.cost += rec.cost or 0.0
        if rec.latency is not None:
            stats.latencies.append(rec.latency)
        if rec.status == STATUS_DONE:
            stats.images += len(rec.files)
        else:
            stats.reasons[_reason(rec)] += 1
    return stats


def _percentile(ordered: list[float], p: int) -> float:
    # Nearest rank: an observed latency, not an interpolated one.
    rank = max(1, -(-p * len(ordered) // 100))
    return ordered[min(rank, len(ordered)) - 1]


def _header(title: str, stats: _Stats, failures_link: bool) -> str:
    total = sum(stats.counts.values())
    per_image = f"${stats.cost / stats.images:.4f}" if stats.images else "–"
    rows = [("items", total), *((s, stats.counts.get(s, 0)) for s in STATUSES),
            *((s, n) for s, n in sorted(stats.counts.items()) if s not in STATUSES),
            ("images", stats.images), ("total cost", f"${stats.cost:.4f}"),
            ("cost per accepted image", per_image)]
    table = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    reasons = [(r, float(n), str(n)) for r, n in stats.reasons.most_common(12)]
    ordered = sorted(stats.latencies)
    latency = [(f"p{p}" if p < 100 else "max", v, f"{v:.2f} s")
               for p in _PERCENTILES if ordered
               for v in (_percentile(ordered, p),)]
    link = ('<p><a href="failures.html">failed, blocked and no_image items</a></p>'
            if failures_link else "")
    return (f"<h1>{esc(title)}</h1><header>"
            f'<div><table class="stats">{table}</table>{link}</div>'
            f"{bar_chart('failures by reason', reasons)}"
            f"{bar_chart('latency percentiles (all attempts of an item)', latency)}"
            f"</header>")


def _thumbnail(src: str, dest: str) -> tuple[int, int] | None:
    """Write a JPEG thumbnail of ``src``; returns the original's size (None: undecodable)."""
    from PIL import Image

    try:
        with Image.open(src) as im:
            size = im.size
            if not os.path.exists(dest):
                im.thumbnail((THUMB_SIZE, THUMB_SIZE))
                out = io.BytesIO()
                im.convert("RGB").save(out, "JPEG", quality=80)
                write_atomic_sync(dest, out.getvalue(), fsync=False, digest=False)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return size


def _card(rec: ExportRecord, file: ExportFile, href: str, src: str,
          dims: tuple[int, int] | None) -> str:
    size = " · ".join(x for x in (
        rec.image_size, f"{dims[0]}×{dims[1]}" if dims else None,
        f"{file.bytes / 1000:.1f} kB") if x)
    cost = "–" if rec.cost is None else f"${rec.cost:.4f}"
    latency = "–" if rec.latency is None else f"{rec.latency:.2f} s"
    return (
        f'<figure class="thumb"><a href="{esc(href)}"><img src="{esc(src)}" loading="lazy" '
        f'decoding="async" alt="{esc(rec.prompt)}"></a><figcaption>'
        f'<div class="prompt" title="{esc(rec.prompt)}">{esc(rec.prompt)}</div>'
        f'<div class="meta">id {esc(rec.id or rec.key)} · {esc(rec.model)}</div>'
        f'<div class="meta">{esc(size)} · {esc(cost)} · {esc(latency)}</div>'
        f"</figcaption></figure>"
    )


def _failure_row(rec: ExportRecord) -> str:
    cells = (rec.status, rec.id or rec.key, rec.model, rec.reason or _reason(rec),
             rec.attempts, "–" if rec.cost is None else f"${rec.cost:.4f}", rec.prompt)
    return '<tr class="failure">' + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"


def _pillow() -> bool:
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        return False
    return True


def write_gallery(
    out_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str] | None = None,
    *,
    per_page: int = 200,
    thumbnails: bool = True,
) -> GalleryReport:
    """Write the gallery of the run in ``out_dir`` to ``dest`` (default
    ``OUTDIR/gallery``). Blocking: from async code run it in a worker thread."""
    root = os.path.abspath(os.fspath(out_dir))
    target = os.path.abspath(os.fspath(dest) if dest is not None else
                             os.path.join(root, "gallery"))
    if not 1 <= per_page <= 10_000:
        raise ConfigError("--per-page must be between 1 and 10000")
    if not os.path.isfile(os.path.join(root, MANIFEST_NAME)):
        raise ConfigError(f"{root}: no {MANIFEST_NAME}, not a cometgen output folder")
    use_pillow = thumbnails and _pillow()
    scan = scan_manifest(root)
    stats = _collect(iter_latest(scan))
    failures = sum(n for s, n in stats.counts.items() if s != STATUS_DONE)
    pages = max(1, -(-stats.images // per_page))
    title = f"cometgen gallery: {os.path.basename(root)}"
    header = _header(title, stats, failures > 0)
    os.makedirs(target, exist_ok=True)
    report = GalleryReport(dir=target, index=os.path.join(target, "index.html"),
                           pages=pages, images=stats.images, failures=failures,
                           pillow=use_pillow)
    cards: list[str] = []
    number = 1
    fail_rows: list[str] = []

    def emit(last: bool = False) -> None:
        nav = pager(number, pages, "index")
        body = f'{nav}<main class="grid">{"".join(cards)}</main>{nav}'
        if last and not cards and stats.images == 0:
            body = "<p>No images yet.</p>"
        text = page(f"{title} (page {number} of {pages})", header, body)
        write_atomic_sync(os.path.join(target, name_of(number, "index")), text.encode(),
                          fsync=False, digest=False)

    for rec in iter_latest(scan):
        if rec.status != STATUS_DONE:
            fail_rows.append(_failure_row(rec))
            continue
        several = len(rec.files) > 1
        for i, file in enumerate(rec.files):
            source = os.path.join(root, file.path)
            href = src = os.path.relpath(source, target)
            dims = None
            if use_pillow:
                folder = os.path.join(target, "thumbs", f"{number:05d}")
                os.makedirs(folder, exist_ok=True)
                thumb = os.path.join(folder, sample_key(rec.key, i if several else None)
                                     + ".jpg")
                existed = os.path.exists(thumb)
                dims = _thumbnail(source, thumb)
                if dims is not None:
                    src = os.path.relpath(thumb, target)
                    report.thumbnails += 0 if existed else 1
            cards.append(_card(rec, file, href, src, dims))
            if len(cards) == per_page:
                emit()
                cards, number = [], number + 1
    if cards or number == 1:
        emit(last=True)
    head = "".join(f"<th>{h}</th>" for h in
                   ("status", "id", "model", "reason", "attempts", "cost", "prompt"))
    failures_page = page(f"{title}: failures", header,
                         '<p><a href="index.html">‹ images</a></p><table class="failures">'
                         f"<thead><tr>{head}</tr></thead><tbody>{''.join(fail_rows)}"
                         "</tbody></table>")
    write_atomic_sync(os.path.join(target, "failures.html"), failures_page.encode(),
                      fsync=False, digest=False)
    return report
