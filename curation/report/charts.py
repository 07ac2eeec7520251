"""The report's charts: inline SVG drawn in Python (no script), every label escaped."""

from __future__ import annotations

import math

import numpy as np
from markupsafe import Markup, escape

from curation.report.records import num
from schemas.figures import TokenHistogram

LENGTH_BINS = 24


def bar_chart(bars: list[tuple[str, str, float]], css: str, unit: str, over: list[bool] | None = None) -> Markup:
    """Vertical bars of (tick label, tooltip, value); ticks thinned out so they never overlap.
    `over`: per bar, whether it is past a limit (drawn in the removed colour)."""
    width, height, top, bottom, left = 640, 200, 14, 34, 44
    peak = max((v for _, _, v in bars), default=0) or 1
    slot = (width - left - 4) / max(len(bars), 1)
    plot = height - top - bottom
    parts = [
        f'<line class="axis" x1="{left}" y1="{top + plot}" x2="{width}" y2="{top + plot}"/>',
        f'<text class="tick" x="{left - 6}" y="{top + 4}" text-anchor="end">{escape(num(peak))}</text>',
        f'<text class="tick" x="{left - 6}" y="{top + plot}" text-anchor="end">0</text>',
        f'<text class="tick" x="{left}" y="{height - 2}">{escape(unit)}</text>',
    ]
    ticks = _tick_positions(len(bars), slot, max((len(tick) for tick, _, _ in bars), default=1))
    for i, (tick, tip, value) in enumerate(bars):
        h = plot * value / peak
        x = left + i * slot + slot * 0.1
        bar_css = "c-removed" if over and over[i] else css
        parts.append(
            f'<rect class="bar {escape(bar_css)}" x="{x:.1f}" y="{top + plot - h:.1f}" width="{slot * 0.8:.1f}"'
            f' height="{h:.1f}"><title>{escape(tip)}: {escape(num(value))}</title></rect>'
        )
        if i in ticks:
            parts.append(
                f'<text class="tick" x="{x + slot * 0.4:.1f}" y="{top + plot + 14}"'
                f' text-anchor="middle">{escape(tick)}</text>'
            )
    return svg(width, height, parts)


def _tick_positions(n: int, slot: float, chars: int) -> set[int]:
    every = max(1, math.ceil((chars * 7 + 8) / slot))  # about 7 px per character at 11 px
    ticks = set(range(0, n, every))
    last = max(ticks, default=0)
    if n and last != n - 1:  # the last bar (often the tail bin) is always labelled
        if 0 < last and n - 1 - last < every:  # too close to it: drop the tick before
            ticks.discard(last)
        ticks.add(n - 1)
    return ticks


def stacked_bars(rows: list[tuple[str, list[tuple[float, str, str]], str]]) -> Markup:
    """Horizontal stacked bars: per row a label, segments of (value, css class, tooltip), a note."""
    width, row_h, left, right = 700, 24, 220, 110
    peak = max((sum(v for v, _, _ in segs) for _, segs, _ in rows), default=0) or 1
    span = width - left - right
    parts = []
    for i, (label, segments, note) in enumerate(rows):
        y = i * row_h + 4
        shown = label if len(label) <= 34 else "…" + label[-33:]  # file names differ at the end
        parts.append(
            f'<text class="tick" x="{left - 6}" y="{y + 14}" text-anchor="end">'
            f"<title>{escape(label)}</title>{escape(shown)}</text>"
        )
        x = float(left)
        for value, css, tip in segments:
            w = span * value / peak
            parts.append(
                f'<rect class="bar {escape(css)}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 8}">'
                f"<title>{escape(tip)}</title></rect>"
            )
            x += w
        parts.append(f'<text class="tick" x="{x + 4:.1f}" y="{y + 14}">{escape(note)}</text>')
    return svg(width, len(rows) * row_h + 8, parts)


def svg(width: int, height: int, parts: list[str]) -> Markup:
    body = "".join(parts)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' role="img">{body}</svg>'
    )


def histogram(values: np.ndarray, bins: int = LENGTH_BINS) -> list[tuple[str, str, float]]:
    """Counts in equal round-width bins up to the 95th percentile; the long tail goes in a last bin."""
    width = _round_width(max(float(np.percentile(values, 95)), 1.0) / bins)
    n = min(bins, int(values.max()) // width + 1)  # fewer bins when every value fits
    counts = np.bincount(np.minimum(values // width, n - 1).astype(int), minlength=n)
    tips = [f"{i * width} words" if width == 1 else f"{i * width}-{(i + 1) * width - 1} words" for i in range(n)]
    ticks = [short(i * width) for i in range(n)]
    if values.max() >= n * width:
        ticks[-1] = tips[-1] = f"≥{short((n - 1) * width)}"
    return [(tick, tip, float(c)) for tick, tip, c in zip(ticks, tips, counts, strict=True)]


def short(n: int) -> str:
    return f"{n / 1000:g}k" if n >= 1000 else str(n)


def _round_width(raw: float) -> int:
    """The smallest of 1, 2, 5 x 10^k not below raw (at least 1)."""
    if raw <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(int(m * magnitude) for m in (1, 2, 5, 10) if m * magnitude >= raw)


def token_chart(hist: TokenHistogram, limit: int) -> Markup:
    """The export's token histogram; bins past max_seq_length are drawn in the removed colour."""
    width, counts = hist.bin_width, hist.counts
    bars = []
    for i, count in enumerate(counts):
        lo, hi = i * width, (i + 1) * width - 1
        tail = i == len(counts) - 1
        label = f"≥{short(lo)}" if tail else short(lo)
        tip = f"{lo}+ tokens" if tail else f"{lo}-{hi} tokens"
        bars.append((label, tip + (" (over max_seq_length)" if lo >= limit else ""), float(count), lo >= limit))
    return bar_chart([(a, b, c) for a, b, c, _ in bars], "c-length", f"tokens (max_seq_length {limit} marked red)",
                     over=[over for *_, over in bars])


def cluster_size_chart(removed: np.ndarray) -> Markup:
    sizes = removed + 1  # the kept record belongs to its cluster
    bins = [(2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, 50), (51, 10**12)]
    labels = [str(lo) if lo == hi else (f"{lo}-{hi}" if hi < 10**12 else f"≥{lo}") for lo, hi in bins]
    bars = [
        (label, f"clusters of {label}", float(((sizes >= lo) & (sizes <= hi)).sum()))
        for label, (lo, hi) in zip(labels, bins, strict=True)
    ]
    return bar_chart(bars, "c-dup", "records per cluster")

