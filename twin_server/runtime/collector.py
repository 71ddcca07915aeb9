"""The cyclic garbage collector held off while something big is built.

Building the nodes of a twin of 20,000 components, its session in a worker, or
its recorder allocates millions of objects that all live on; the collector's
full passes over them while they pile up would cost more than building them (and
each holds the GIL: the event loop, or a worker's clocks, wait). ``collector_paused``
holds it off while builds run (they may overlap, in slices or threads); when the
last ends, what they allocated is frozen if it is a lot (``gc.freeze``: a young
collection would otherwise walk all of it), then the collector runs again.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

#: objects allocated while the collector was paused above which they are frozen
#: (``gc.freeze``) before it runs again
FREEZE_AFTER = 100_000


class _Collector:
    """The collector held off while subtrees are built (``paused``)."""

    def __init__(self) -> None:
        self.depth = 0
        self.enable_after = False
        self._lock = threading.Lock()  # (a build in a thread pauses it too)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold off the collector while this block runs (module docstring)."""
        with self._lock:
            if self.depth == 0:
                self.enable_after = gc.isenabled()
                gc.disable()
            self.depth += 1
        try:
            yield
        finally:
            with self._lock:
                self.depth -= 1
                if self.depth == 0:
                    if gc.get_count()[0] > FREEZE_AFTER:
                        # (what lives as long as the twin or session: the garbage of
                        # others meanwhile, freed by reference counting, is not in it)
                        gc.freeze()
                    if self.enable_after:
                        gc.enable()


collector_paused = _Collector().paused
