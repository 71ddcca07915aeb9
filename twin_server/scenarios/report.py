"""The human report of scenario runs: Markdown, with an SVG plot per check.

``write_report(results, folder)`` writes ``index.md`` (a table of every scenario
and its verdict), ``<scenario>.md`` (its steps, its checks with their verdicts
and failure texts) and ``<scenario>-step<N>.svg``: the variables the check at step
N looked at, from a little before it began to a little after its verdict, its
interval shaded and its verdict marked. The SVG is drawn here (no matplotlib: the
server and the CLI need no plotting library); any browser, GitHub and GitLab show it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

from twin_server.scenarios.results import CheckResult, ScenarioResult, Trace, Verdict

WIDTH, HEIGHT = 640, 240
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 60, 12, 24, 36
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
_MAX_POINTS = 800
_MARK = {Verdict.PASSED: "PASS", Verdict.FAILED: "FAIL", Verdict.ERROR: "ERROR",
         Verdict.SKIPPED: "SKIP"}


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "scenario"


def write_report(results: Sequence[ScenarioResult], folder: str | Path) -> Path:
    """Write the report of ``results`` into ``folder``; the index's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# Scenario report", "", "| scenario | verdict | checks | simulated | wall |",
             "|---|---|---|---|---|"]
    for result in results:
        counts = result.counts()
        checks = ", ".join(f"{counts[v]} {v}" for v in Verdict if counts[v]) or "none"
        lines.append(f"| [{result.name}]({slug(result.name)}.md) | "
                     f"**{result.verdict.upper()}** | {checks} | {result.sim_time:.6g} s | "
                     f"{result.wall_time:.3g} s |")
        (folder / f"{slug(result.name)}.md").write_text(scenario_markdown(result, folder),
                                                         encoding="utf-8")
    index = folder / "index.md"
    index.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return index


def scenario_markdown(result: ScenarioResult, folder: Path | None = None) -> str:
    """One scenario's report; with ``folder``, its plots are written there beside it."""
    lines = [f"# {result.name}: {result.verdict.upper()}", "",
             f"- file: `{result.file}`", f"- mode: {result.mode}, session `{result.session}`",
             f"- seed: {result.seed}",
             f"- {result.sim_time:.6g} s simulated in {result.wall_time:.3g} s", ""]
    if result.error:
        lines += [f"**The run broke off:** {result.error}", ""]
    lines += ["## Steps", "", "| # | step | from | to | outcome |", "|---|---|---|---|---|"]
    for record in result.steps:
        note = f" ({record.message})" if record.message else ""
        lines.append(f"| {record.index} | {_cell(record.label)} | {record.started:.6g} s | "
                     f"{record.ended:.6g} s | {record.outcome}{_cell(note)} |")
    lines += ["", "## Checks", ""]
    for check in result.checks:
        lines += [f"### {_MARK[check.verdict]}: {check.name}", "",
                  f"`{check.condition}` ({check.mode}): {check.message}", ""]
        if check.verdict in (Verdict.FAILED, Verdict.ERROR):
            lines += ["```", check.describe(), "```", ""]
        svg = plot_check(result.trace, check)
        if svg is not None and folder is not None:
            name = f"{slug(result.name)}-step{check.step}.svg"
            (folder / name).write_text(svg, encoding="utf-8")
            lines += [f"![{check.name}]({name})", ""]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def plot_check(trace: Trace, check: CheckResult) -> str | None:
    """An SVG of the check's variables around its verdict (None: nothing to plot)."""
    names = [n for n in check.names if n in trace.values]
    if not names or not trace.times or check.verdict is Verdict.SKIPPED:
        return None
    span = max(check.decided - check.started, trace.times[-1] * 0.02, 1e-9)
    start = max(0.0, check.started - 0.25 * span)
    end = min(trace.times[-1], check.decided + 0.25 * span)
    times, values = trace.window(start, end)
    if not times:
        return None
    stride = max(1, len(times) // _MAX_POINTS)
    times = times[::stride]
    series = {n: values[n][::stride] for n in names}
    low = min(min(v) for v in series.values())
    high = max(max(v) for v in series.values())
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    margin = (high - low) * 0.05
    low, high = low - margin, high + margin
    t0, t1 = times[0], max(times[-1], times[0] + 1e-9)
    plot_w = WIDTH - _PAD_LEFT - _PAD_RIGHT
    plot_h = HEIGHT - _PAD_TOP - _PAD_BOTTOM

    def x(t: float) -> float:
        return _PAD_LEFT + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return _PAD_TOP + (high - v) / (high - low) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
             f"<title>{html.escape(check.name)}</title>",
             f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>']
    shade_from, shade_to = x(max(check.started, t0)), x(min(check.decided, t1))
    colour = "#d4edda" if check.verdict is Verdict.PASSED else "#f8d7da"
    parts.append(f'<rect x="{shade_from:.1f}" y="{_PAD_TOP}" '
                 f'width="{max(shade_to - shade_from, 1.0):.1f}" height="{plot_h}" '
                 f'fill="{colour}"/>')
    parts.append(f'<rect x="{_PAD_LEFT}" y="{_PAD_TOP}" width="{plot_w}" height="{plot_h}" '
                 'fill="none" stroke="#888"/>')
    for value in (low + margin, (low + high) / 2, high - margin):
        parts.append(f'<text x="{_PAD_LEFT - 4}" y="{y(value) + 4:.1f}" '
                     f'text-anchor="end">{value:.4g}</text>')
    for t in (t0, (t0 + t1) / 2, t1):
        parts.append(f'<text x="{x(t):.1f}" y="{HEIGHT - _PAD_BOTTOM + 14}" '
                     f'text-anchor="middle">{t:.4g}</text>')
    parts.append(f'<text x="{_PAD_LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" '
                 'text-anchor="middle">simulated time (s)</text>')
    for i, (name, vals) in enumerate(series.items()):
        stroke = _COLOURS[i % len(_COLOURS)]
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(times, vals, strict=True))
        parts.append(f'<polyline fill="none" stroke="{stroke}" stroke-width="1.5" '
                     f'points="{points}"/>')
        parts.append(f'<text x="{_PAD_LEFT + 6 + 150 * i}" y="{_PAD_TOP - 8}" '
                     f'fill="{stroke}">{html.escape(name)}</text>')
    verdict_x = x(min(max(check.decided, t0), t1))
    parts.append(f'<line x1="{verdict_x:.1f}" y1="{_PAD_TOP}" x2="{verdict_x:.1f}" '
                 f'y2="{_PAD_TOP + plot_h}" stroke="black" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{WIDTH - _PAD_RIGHT}" y="{_PAD_TOP - 8}" text-anchor="end">'
                 f'{_MARK[check.verdict]} at {check.decided:.4g} s</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
