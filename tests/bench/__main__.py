"""``make bench``: run every benchmark module and print one table.

Each ``tests/bench/bench_*.py`` has ``run() -> list[dict]`` (or ``async def run``),
each dict one figure::

    {"figure": "publish rate", "value": 61000.0, "unit": "values/s",
     "baseline": "Node.write_value loop", "baseline_value": 9000.0,
     "target": ">= 3x baseline", "higher_is_better": True}

This machine is shared and noisy, so every figure stands beside a baseline
measured in the same run, and the ratio is what to compare across runs. The
table is also written to ``bench-results/results.md``.

    python -m tests.bench                 # all
    python -m tests.bench clock publish   # only modules whose name contains a word
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path("bench-results")


def _modules(words: list[str]) -> list[str]:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    return [n for n in names if not words or any(w in n for w in words)]


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _ratio(fig: dict[str, Any]) -> str:
    value, base = fig.get("value"), fig.get("baseline_value")
    if not isinstance(value, int | float) or not isinstance(base, int | float) or not base:
        return ""
    ratio = value / base if fig.get("higher_is_better", True) else base / value if value else 0.0
    return f"{ratio:.2f}x"


def render(figures: list[dict[str, Any]]) -> str:
    header = ["figure", "value", "unit", "baseline (same run)", "baseline value", "ratio", "target"]
    rows = [[f.get("figure", ""), _fmt(f.get("value")), f.get("unit", ""),
             f.get("baseline", ""), _fmt(f.get("baseline_value")), _ratio(f),
             f.get("target", "")] for f in figures]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    figures: list[dict[str, Any]] = []
    for name in _modules(argv):
        module = importlib.import_module(f"tests.bench.{name}")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result = module.run()
        if inspect.isawaitable(result):
            result = asyncio.run(result)  # type: ignore[arg-type]
        figures.extend(result)
        print(f"  {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    table = render(figures)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    machine = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    (RESULTS / "results.md").write_text(f"# make bench, {stamp} ({machine})\n\n{table}\n")
    print(f"\nwritten to {RESULTS / 'results.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
