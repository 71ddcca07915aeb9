"""Method arguments at their size limit: the nesting count and the parse of the
largest legal JSON parameters, beside ``json.loads`` of the same text (the
baseline: the work any parser of the argument must do)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from twin_server.config.nesting import json_too_deep
from twin_server.config.security import LimitsConfig
from twin_server.engine.manager import parse_parameters

ROUNDS = 30


def _timed(call: Callable[[], object]) -> list[float]:
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def _largest_parameters(limit: int) -> str:
    """``{"c0": {"p": 0.5}, "c1": ...}``: as many components as fit in ``limit`` bytes."""
    entries: list[str] = []
    size, i = 2, 0
    while True:
        entry = f'"c{i}": {{"p": {i}.5}}'
        if size + len(entry) + 2 > limit:
            return "{" + ", ".join(entries) + "}"
        entries.append(entry)
        size += len(entry) + 2
        i += 1


def run() -> list[dict[str, Any]]:
    limit = LimitsConfig().max_argument_size
    brackets = "[" + "[]," * (limit // 3 - 2) + "[]]"
    parameters = _largest_parameters(limit)
    count = _timed(lambda: json_too_deep(brackets, 32))
    count_base = _timed(lambda: json.loads(brackets))
    parse = _timed(lambda: parse_parameters(parameters))
    parse_base = _timed(lambda: json.loads(parameters))
    return [
        {"figure": f"nesting count of {len(brackets) // 1024} KiB of brackets (median)",
         "value": statistics.median(count), "unit": "ms",
         "baseline": "json.loads of the same text", "baseline_value":
             statistics.median(count_base), "target": "<= 50 ms",
         "samples": count, "baseline_samples": count_base},
        {"figure": f"parse of {len(parameters) // 1024} KiB of JSON parameters (median)",
         "value": statistics.median(parse), "unit": "ms",
         "baseline": "json.loads of the same text", "baseline_value":
             statistics.median(parse_base), "target": "<= 100 ms",
         "samples": parse, "baseline_samples": parse_base},
    ]
