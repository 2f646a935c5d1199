"""Line charts as plain SVG text: polylines on linear axes with ticks, a grid and a legend.
No plotting library, so `oellm report` works on a bare login-node install; the page it is
embedded in needs no network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# Distinct colours for values without an order (Tableau 10).
CATEGORICAL = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
# Anchors of a perceptually ordered scale (viridis), for values with an order (an lr sweep).
_SEQUENTIAL = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


def sequential(fraction: float) -> str:
    """The colour at `fraction` (0..1) along the ordered scale, as `#rrggbb`."""
    fraction = min(max(fraction, 0.0), 1.0) * (len(_SEQUENTIAL) - 1)
    low = min(int(fraction), len(_SEQUENTIAL) - 2)
    part = fraction - low
    rgb = [
        round(a + (b - a) * part)
        for a, b in zip(_SEQUENTIAL[low], _SEQUENTIAL[low + 1], strict=True)
    ]
    return "#" + "".join(f"{c:02x}" for c in rgb)


@dataclass(frozen=True)
class Line:
    label: str
    color: str
    points: Sequence[tuple[float, float]]
    job: str = ""  # written as data-job, so a page's curves can be told apart


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 times a power of ten) covering low..high."""
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    out = [round(first, 12)]
    # Up to the first tick at or above `high`, so that every value is inside the axes.
    while out[-1] < high - step * 1e-9:
        out.append(round(first + len(out) * step, 12))
    return out


def label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.0e}"
    return f"{value:g}"


def chart(
    lines: Sequence[Line],
    title: str,
    x_label: str,
    y_label: str,
    width: int = 640,
    height: int = 360,
) -> str:
    """An SVG element; lines without points are left out of the plot but kept in the legend."""
    drawn = [line for line in lines if line.points]
    legend_width = 150
    left, right, top, bottom = 64, legend_width + 16, 40, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="22" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    if not drawn:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" font-size="13" '
            'text-anchor="middle" fill="#666">no data yet</text>'
        )
        parts.append("</svg>")
        return "\n".join(parts)
    xs = [x for line in drawn for x, _ in line.points]
    ys = [y for line in drawn for _, y in line.points]
    x_ticks, y_ticks = ticks(min(xs), max(xs)), ticks(min(ys), max(ys))
    x0, x1 = x_ticks[0], x_ticks[-1]
    y0, y1 = y_ticks[0], y_ticks[-1]

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1.0) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (y - y0) / ((y1 - y0) or 1.0) * plot_h

    parts.append('<g font-size="11" fill="#333">')
    for value in x_ticks:
        x = sx(value)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
            f"{label(value)}</text>"
        )
    for value in y_ticks:
        y = sy(value)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label(value)}</text>'
        )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#999"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 10}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    parts.append("</g>")
    for line in drawn:
        points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line.points)
        parts.append(
            f'<polyline class="curve" data-job="{escape(line.job)}" fill="none" '
            f'stroke="{line.color}" stroke-width="1.8" points="{points}">'
            f"<title>{escape(line.label)}</title></polyline>"
        )
    legend_x = width - legend_width
    parts.append('<g font-size="11" fill="#333">')
    for number, line in enumerate(lines[:24]):
        y = top + 6 + number * 16
        parts.append(
            f'<line x1="{legend_x}" y1="{y}" x2="{legend_x + 18}" y2="{y}" '
            f'stroke="{line.color}" stroke-width="3"/>'
            f'<text x="{legend_x + 24}" y="{y + 4}">{escape(_short(line.label))}</text>'
        )
    if len(lines) > 24:
        parts.append(
            f'<text x="{legend_x}" y="{top + 6 + 24 * 16 + 4}">and {len(lines) - 24} more</text>'
        )
    parts.append("</g></svg>")
    return "\n".join(parts)


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
