"""``make bench``: run every benchmark module, print one table, write it with plots.

Each ``tests/bench/bench_*.py`` has ``run() -> list[dict]`` (or ``async def run``),
each dict one figure::

    {"figure": "publish rate", "value": 61000.0, "unit": "values/s",
     "baseline": "Node.write_value loop", "baseline_value": 9000.0,
     "target": ">= 3x baseline", "higher_is_better": True,
     # optional: raw samples (in ``unit``) for the distribution plots
     "samples": [...], "baseline_samples": [...],
     # optional: a verdict the module decides itself (else parsed from "target")
     "passed": True}

This machine is shared and noisy, so every figure stands beside a baseline
measured in the same run, and the ratio is what to compare across runs. A target
reads ``[name] OP NUMBER [unit]`` (``<= 20 ms``, ``p99 <= 2 ms``, ``>= 200,000
samples/s``; a bare number is a bound in the figure's better direction),
``OP Nx baseline`` or ``faster than baseline``, several joined by ``and``; the
``pass`` column says whether the figure met it (blank where the target is not a
check). Everything goes to ``bench-results/``: ``results.md`` (the table and the
plots), ``results.json`` (the figures with their samples), and PNGs when
matplotlib is installed (``pip install -e '.[bench]'``, which ``make bench`` does).

    python -m tests.bench                 # all
    python -m tests.bench clock publish   # only modules whose name contains a word
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import math
import operator
import pkgutil
import platform
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path("bench-results")

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
    "=": operator.eq, "==": operator.eq,
}
_NUMBER = r"(-?\d[\d,]*(?:\.\d+)?|-?\.\d+)"
_RELATIVE = re.compile(rf"^(<=|>=|<|>|==?)?\s*{_NUMBER}\s*x\s+baseline$")
_ABSOLUTE = re.compile(rf"^(?:[A-Za-z]\w*\s+)?(<=|>=|<|>|==?)?\s*{_NUMBER}(?:\s*[^\d\s].*)?$")


def _modules(words: list[str]) -> list[str]:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    return [n for n in names if not words or any(w in n for w in words)]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _ratio(fig: dict[str, Any]) -> str:
    value, base = _number(fig.get("value")), _number(fig.get("baseline_value"))
    if value is None or base is None or not base:
        return ""
    ratio = value / base if fig.get("higher_is_better", True) else base / value if value else 0.0
    return f"{ratio:.3g}x"


def _check(condition: str, fig: dict[str, Any]) -> bool | None:
    """One condition of a target; None when it is not one this harness can check."""
    value, base = _number(fig.get("value")), _number(fig.get("baseline_value"))
    if value is None:
        return None
    higher = fig.get("higher_is_better", True)
    text = condition.strip()
    if text in ("faster than baseline", "better than baseline"):
        if base is None:
            return None
        return value > base if higher else value < base
    relative = _RELATIVE.match(text)
    if relative:
        if base is None:
            return None
        op = relative.group(1) or (">=" if higher else "<=")
        return _OPS[op](value, float(relative.group(2).replace(",", "")) * base)
    if re.search(r"\d\s*x\s", text):  # a multiple of something other than the baseline
        return None
    absolute = _ABSOLUTE.match(text)
    if absolute:
        op = absolute.group(1) or (">=" if higher else "<=")
        return _OPS[op](value, float(absolute.group(2).replace(",", "")))
    return None


def verdict(fig: dict[str, Any]) -> bool | None:
    """Whether the figure met its target: True, False, or None (no checkable target)."""
    if isinstance(fig.get("passed"), bool):
        return bool(fig["passed"])
    target = str(fig.get("target") or "").strip()
    if not target:
        return None
    results = [_check(part, fig) for part in re.split(r"\s+and\s+|;", target)]
    if any(r is None for r in results):
        return None
    return all(results)


def _pass_cell(fig: dict[str, Any]) -> str:
    return {True: "pass", False: "**MISS**", None: ""}[verdict(fig)]


def render(figures: list[dict[str, Any]]) -> str:
    header = ["figure", "value", "unit", "baseline (same run)", "baseline value", "ratio",
              "target", "pass"]
    rows = [[f.get("figure", ""), _fmt(f.get("value")), f.get("unit", ""),
             f.get("baseline", ""), _fmt(f.get("baseline_value")), _ratio(f),
             f.get("target", ""), _pass_cell(f)] for f in figures]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- plots ------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def plot(figures: list[dict[str, Any]], folder: Path) -> list[Path]:
    """The PNGs: one distribution plot (CDF) per figure that carries samples, and
    one bar chart of every figure against its baseline. Nothing without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[bench]')",
              file=sys.stderr)
        return []
    written: list[Path] = []
    for old in folder.glob("*.png"):
        old.unlink()

    for fig in figures:
        samples = fig.get("samples")
        if not samples or len(samples) < 2:
            continue
        chart, (hist, cdf) = plt.subplots(1, 2, figsize=(11, 3.8))
        series = [("ours", samples, "tab:blue")]
        if fig.get("baseline_samples"):
            series.append((fig.get("baseline") or "baseline", fig["baseline_samples"],
                           "tab:gray"))
        top = max(max(s) for _, s, _ in series)
        low = min(min(s) for _, s, _ in series)
        bins = 60
        for label, data, color in series:
            ordered = sorted(data)
            n = len(ordered)
            cdf.step(ordered, [(i + 1) / n for i in range(n)], where="post", color=color,
                     label=f"{label} (n={n:,})")
            hist.hist(ordered, bins=bins, range=(low, top), alpha=0.55, color=color,
                      label=label, log=True)
        unit = fig.get("unit", "")
        for axis in (hist, cdf):
            axis.set_xlabel(unit)
            axis.grid(alpha=0.3)
        hist.set_ylabel("count (log)")
        cdf.set_ylabel("fraction <= x")
        cdf.axhline(0.99, color="tab:red", lw=0.7, ls=":")
        cdf.legend(fontsize=7, loc="lower right")
        chart.suptitle(fig.get("figure", ""), fontsize=9)
        chart.tight_layout()
        path = folder / f"dist-{fig.get('module', 'bench')}-{_slug(fig.get('figure', ''))}.png"
        chart.savefig(path, dpi=110)
        plt.close(chart)
        written.append(path)

    compared = [f for f in figures if _number(f.get("value")) is not None
                and _number(f.get("baseline_value")) is not None]
    if compared:
        cols = 4
        rows = math.ceil(len(compared) / cols)
        chart, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False)
        for axis in axes.flat[len(compared):]:
            axis.set_visible(False)
        for axis, fig in zip(axes.flat, compared, strict=False):
            value, base = float(fig["value"]), float(fig["baseline_value"])
            ok = verdict(fig)
            color = {True: "tab:green", False: "tab:red", None: "tab:blue"}[ok]
            axis.bar([0, 1], [value, base], color=[color, "tab:gray"])
            axis.set_xticks([0, 1], ["ours", "baseline"], fontsize=7)
            axis.tick_params(axis="y", labelsize=7)
            better = "higher" if fig.get("higher_is_better", True) else "lower"
            axis.set_title(f"{fig.get('figure', '')[:58]}\n({fig.get('unit', '')}, "
                           f"{better} is better; {_ratio(fig)})", fontsize=7)
            bound = _target_line(fig)
            if bound is not None:
                axis.axhline(bound, color="tab:red", lw=1, ls="--")
        chart.suptitle("each figure (green: target met, red: missed, blue: no target) "
                       "beside its baseline; dashed: target", fontsize=9)
        chart.tight_layout()
        path = folder / "figures-vs-baselines.png"
        chart.savefig(path, dpi=100)
        plt.close(chart)
        written.append(path)
    return written


def _target_line(fig: dict[str, Any]) -> float | None:
    """The absolute bound of a target, to draw (the first one it names)."""
    base = _number(fig.get("baseline_value"))
    for part in re.split(r"\s+and\s+|;", str(fig.get("target") or "")):
        text = part.strip()
        relative = _RELATIVE.match(text)
        if relative and base is not None:
            return float(relative.group(2).replace(",", "")) * base
        absolute = _ABSOLUTE.match(text)
        if absolute and not re.search(r"\d\s*x\s", text):
            return float(absolute.group(2).replace(",", ""))
    return None


# -- running -----------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    figures: list[dict[str, Any]] = []
    failed: list[str] = []
    for name in _modules(argv):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"tests.bench.{name}")
            result = module.run()
            if inspect.isawaitable(result):
                result = asyncio.run(result)  # type: ignore[arg-type]
        except Exception:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            failed.append(name)
            figures.append({"figure": f"{name} failed (see the log)", "module": name,
                            "passed": False})
            continue
        for fig in result:
            fig.setdefault("module", name.removeprefix("bench_"))
        figures.extend(result)
        print(f"  {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    table = render(figures)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    pngs = plot(figures, RESULTS)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    machine = (f"{platform.machine()}, {platform.python_implementation()} "
               f"{platform.python_version()}")
    checked = [verdict(f) for f in figures]
    summary = (f"{checked.count(True)} targets met, {checked.count(False)} missed, "
               f"{checked.count(None)} figures without a checkable target")
    images = "".join(f"\n![{p.stem}]({p.name})\n" for p in pngs)
    (RESULTS / "results.md").write_text(
        f"# make bench, {stamp} ({machine})\n\n{summary}.\n\n{table}\n{images}")
    (RESULTS / "results.json").write_text(json.dumps(
        {"time": stamp, "machine": machine, "figures": figures}, indent=1, default=str))
    print(f"\n{summary}", file=sys.stderr)
    print(f"written to {RESULTS / 'results.md'}" + "".join(f"\n  {p}" for p in pngs),
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
