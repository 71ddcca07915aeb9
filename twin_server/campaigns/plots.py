"""A campaign's report: Markdown with SVG plots, written beside its results.

``write_report(folder)`` reads ``results.sqlite`` and writes ``report/index.md``: the
summary (``report.summary``), then per figure a histogram of its values over the
successful runs (its distribution) and one scatter plot per numeric varied parameter
(the figure against the parameter, one point per run), and with a scenario a bar per
verdict. The SVG is drawn here, as the scenario reports' are (no matplotlib: it is
only in the bench extra); any browser, GitHub and GitLab show it.
"""

from __future__ import annotations

import collections
import html
import math
import re
from collections.abc import Sequence
from pathlib import Path

from twin_server.campaigns.report import kinds, summary
from twin_server.campaigns.store import ResultStore

REPORT = "report"
WIDTH, HEIGHT = 480, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 14, 28, 40
_BINS = 20
_COLOUR = "#1f77b4"


def write_report(folder: str | Path) -> Path:
    """Write the report of the results in ``folder`` to ``folder/report``; the path of
    its index (FileNotFoundError if there are no results)."""
    folder = Path(folder)
    text = summary(folder)
    store = ResultStore.open(folder)
    try:
        meta, columns, rows = store.meta(), store.columns("runs"), store.rows("runs")
    finally:
        store.close()
    params, figures, verdicts = kinds(meta, columns)
    at = {c: i for i, c in enumerate(columns)}
    ok = [r for r in rows if r[at["status"]] == "ok"]
    out = folder / REPORT
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.svg"):
        old.unlink()
    lines = [f"# Campaign {meta.get('name', '')}", "", "```", text.rstrip(), "```", ""]
    numeric = [p for p in params if ok and all(_number(r[at[p]]) for r in ok)]
    for figure in figures:
        values = [float(r[at[figure]]) for r in ok if r[at[figure]] is not None]
        if not values:
            continue
        lines += [f"## {figure}", ""]
        name = f"{_slug(figure)}.svg"
        (out / name).write_text(histogram(figure, values), encoding="utf-8")
        lines += [f"![distribution of {figure}]({name})", ""]
        for param in numeric:
            pairs = [(float(r[at[param]]), float(r[at[figure]])) for r in ok
                     if r[at[figure]] is not None]
            name = f"{_slug(figure)}-vs-{_slug(param)}.svg"
            (out / name).write_text(scatter(param, [p[0] for p in pairs], figure,
                                            [p[1] for p in pairs]), encoding="utf-8")
            lines += [f"![{figure} against {param}]({name})", ""]
    for verdict in verdicts:
        if verdict == "scenario.verdict" or verdict.startswith("check."):
            tally = collections.Counter(str(r[at[verdict]]) for r in ok)
            name = f"{_slug(verdict)}.svg"
            (out / name).write_text(bars(verdict, sorted(tally.items())), encoding="utf-8")
            lines += [f"## {verdict}", "", f"![{verdict}]({name})", ""]
    index = out / "index.md"
    index.write_text("\n".join(lines), encoding="utf-8")
    return index


def _number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(float(value))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "figure"


def _frame(title: str, x_label: str, y_label: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
            f"<title>{html.escape(title)}</title>",
            f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
            f'<text x="{WIDTH / 2:.1f}" y="16" text-anchor="middle" font-weight="bold">'
            f"{html.escape(title)}</text>",
            f'<text x="{_LEFT + _plot_w() / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
            f"{html.escape(x_label)}</text>",
            f'<text x="12" y="{_TOP + _plot_h() / 2:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 12 {_TOP + _plot_h() / 2:.1f})">{html.escape(y_label)}</text>',
            f'<rect x="{_LEFT}" y="{_TOP}" width="{_plot_w()}" height="{_plot_h()}" '
            'fill="none" stroke="#888"/>']


def _plot_w() -> int:
    return WIDTH - _LEFT - _RIGHT


def _plot_h() -> int:
    return HEIGHT - _TOP - _BOTTOM


def _span(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low < 1e-12 * max(1.0, abs(high)):
        return low - 0.5, high + 0.5
    return low, high


def _ticks(parts: list[str], x0: float, x1: float, y0: float, y1: float) -> None:
    for v in (x0, (x0 + x1) / 2, x1):
        x = _LEFT + (v - x0) / (x1 - x0) * _plot_w()
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - _BOTTOM + 14}" '
                     f'text-anchor="middle">{v:.4g}</text>')
    for v in (y0, (y0 + y1) / 2, y1):
        y = _TOP + (y1 - v) / (y1 - y0) * _plot_h()
        parts.append(f'<text x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{v:.4g}</text>')


def histogram(name: str, values: Sequence[float], bins: int = _BINS) -> str:
    """An SVG histogram of ``values`` (runs per bin)."""
    low, high = _span(values)
    width = (high - low) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - low) / width), bins - 1)] += 1
    top = max(counts)
    parts = _frame(f"distribution of {name} ({len(values)} runs)", name, "runs")
    _ticks(parts, low, high, 0.0, float(top))
    bar_w = _plot_w() / bins
    for i, count in enumerate(counts):
        if count:
            h = count / top * _plot_h()
            parts.append(f'<rect x="{_LEFT + i * bar_w + 0.5:.1f}" y="{_TOP + _plot_h() - h:.1f}" '
                         f'width="{max(bar_w - 1, 0.5):.1f}" height="{h:.1f}" '
                         f'fill="{_COLOUR}"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def scatter(x_name: str, xs: Sequence[float], y_name: str, ys: Sequence[float]) -> str:
    """An SVG scatter plot of ``ys`` against ``xs`` (one point per run)."""
    x0, x1 = _span(xs)
    y0, y1 = _span(ys)
    parts = _frame(f"{y_name} against {x_name}", x_name, y_name)
    _ticks(parts, x0, x1, y0, y1)
    for x, y in zip(xs, ys, strict=True):
        px = _LEFT + (x - x0) / (x1 - x0) * _plot_w()
        py = _TOP + (y1 - y) / (y1 - y0) * _plot_h()
        parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{_COLOUR}" '
                     'fill-opacity="0.6"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def bars(name: str, items: Sequence[tuple[str, int]]) -> str:
    """An SVG bar chart: runs per verdict."""
    top = max((n for _, n in items), default=1) or 1
    parts = _frame(f"{name}: runs per verdict", "verdict", "runs")
    slot = _plot_w() / max(len(items), 1)
    colours = {"passed": "#2ca02c", "failed": "#d62728", "error": "#9467bd"}
    for i, (label, count) in enumerate(items):
        h = count / top * _plot_h()
        x = _LEFT + i * slot
        parts.append(f'<rect x="{x + slot * 0.2:.1f}" y="{_TOP + _plot_h() - h:.1f}" '
                     f'width="{slot * 0.6:.1f}" height="{h:.1f}" '
                     f'fill="{colours.get(label, "#888")}"/>')
        parts.append(f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - _BOTTOM + 14}" '
                     f'text-anchor="middle">{html.escape(label)} ({count})</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
