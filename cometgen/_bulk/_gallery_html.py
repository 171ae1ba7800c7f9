"""HTML and inline SVG of ``cometgen gallery``: no JavaScript, no external resource.

Every value that comes from the run (prompts, ids, metadata, reasons, model names) goes
through ``esc``: a prompt is user input, so ``<script>`` in one renders as text.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Final

__all__ = ["bar_chart", "esc", "page", "pager"]

CSS: Final = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 16px 32px;color:#222;background:#fafafa}
header{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start;padding:12px 0}
h1{font-size:20px;margin:12px 0 0}
.stats{border-collapse:collapse}.stats td{padding:1px 8px 1px 0}
.stats td:last-child{text-align:right;font-variant-numeric:tabular-nums}
figure.chart{margin:0}figure.chart figcaption{font-weight:600;margin-bottom:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px}
.thumb{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;margin:0}
.thumb img{width:100%;height:200px;object-fit:contain;background:#eee;display:block}
.thumb figcaption{font-size:12px;margin-top:6px;overflow-wrap:anywhere}
.prompt{display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical;overflow:hidden}
.meta{color:#666}
nav{margin:12px 0}nav a,nav span{margin-right:6px}
table.failures{border-collapse:collapse;width:100%;background:#fff}
table.failures td,table.failures th{border:1px solid #ddd;padding:4px 6px;text-align:left;
vertical-align:top;overflow-wrap:anywhere}
"""


def esc(value: object) -> str:
    """Text (or ``None``) as HTML-escaped text, quotes included (safe in attributes)."""
    return "" if value is None else html.escape(str(value), quote=True)


def bar_chart(title: str, bars: Sequence[tuple[str, float, str]], *, width: int = 430) -> str:
    """A horizontal bar chart as inline SVG: ``bars`` is ``(label, value, value text)``."""
    if not bars:
        return f'<figure class="chart"><figcaption>{esc(title)}</figcaption>none</figure>'
    row, label_w, text_w = 18, 200, 64
    top = max(value for _, value, _ in bars) or 1.0
    span = width - label_w - text_w
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{row * len(bars) + 4}" role="img" aria-label="{esc(title)}">']
    for i, (label, value, text) in enumerate(bars):
        y = i * row + 2
        bar = max(1.0, span * value / top) if value > 0 else 0.0
        short = label if len(label) <= 34 else label[:33] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" font-size="12">'
            f"<title>{esc(label)}</title>{esc(short)}</text>"
            f'<rect x="{label_w}" y="{y + 2}" width="{bar:.1f}" height="{row - 5}" '
            f'fill="#4a7bd0"/>'
            f'<text x="{label_w + bar + 4:.1f}" y="{y + 13}" font-size="12">{esc(text)}</text>'
        )
    parts.append("</svg>")
    return (f'<figure class="chart"><figcaption>{esc(title)}</figcaption>'
            f'{"".join(parts)}</figure>')


def pager(current: int, pages: int, name: str) -> str:
    """Links to the first, previous, nearby, next and last pages (``name(i)`` -> file)."""
    if pages <= 1:
        return ""
    shown = sorted({1, pages, *range(max(1, current - 3), min(pages, current + 3) + 1)})
    links = []
    if current > 1:
        links.append(f'<a href="{name_of(current - 1, name)}" rel="prev">‹ prev</a>')
    last = 0
    for i in shown:
        if i - last > 1:
            links.append("<span>…</span>")
        if i == current:
            links.append(f'<span aria-current="page">{i}</span>')
        else:
            links.append(f'<a href="{name_of(i, name)}">{i}</a>')
        last = i
    if current < pages:
        links.append(f'<a href="{name_of(current + 1, name)}" rel="next">next ›</a>')
    return f'<nav>{" ".join(links)}</nav>'


def name_of(number: int, name: str) -> str:
    """File name of page ``number`` (1-based): ``index.html``, ``page-2.html``, ..."""
    return f"{name}.html" if number == 1 else f"page-{number}.html"


def page(title: str, header: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        # No script may run, whatever the data: the page needs none.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "img-src 'self' data: file:; style-src 'unsafe-inline'\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"{header}{body}</body></html>\n"
    )
