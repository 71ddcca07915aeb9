"""Helpers the benchmark modules share (not a benchmark: no ``bench_`` prefix)."""

from __future__ import annotations

from typing import Any


def lateness_samples(clock: Any) -> list[float]:
    """The lateness of the clock's recent ticks (its window, up to 2,048), in
    seconds, oldest first as far as the window allows: for the distribution plots.
    ``Clock`` keeps them in a ring buffer for its percentiles; a public
    ``lateness_samples()`` wins if the clock has one."""
    public = getattr(clock, "lateness_samples", None)
    if callable(public):
        return [float(x) for x in public()]
    ring, count = getattr(clock, "_lateness", None), getattr(clock, "_late_count", 0)
    if ring is None or not count:
        return []
    if count < len(ring):
        return [float(x) for x in ring[:count]]
    index = int(getattr(clock, "_late_index", 0))
    return [float(x) for x in (*ring[index:], *ring[:index])]
