"""The real-time clock: paces a session's ticks against absolute wall-clock deadlines.

(Contract; the pacing loop is filled in by the engine work.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClockStatistics:
    """An immutable snapshot for the Diagnostics nodes; times in seconds."""

    ticks: int  # ticks this clock has taken
    overruns: int  # deadlines missed by more than one step period
    lateness_p50: float  # how late ticks started against their deadline, recent window
    lateness_p99: float
    lateness_max: float
