"""The Dask worker plugin of the local cluster (imported only where Dask is)."""

from __future__ import annotations

import os
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class Niceness(WorkerPlugin):  # type: ignore[misc]  # (distributed: untyped to mypy)
    """Lowers each worker process's CPU priority by ``increment`` when it starts: the
    workers there now and every one the nanny starts again after a crash."""

    name = "twin-server-niceness"

    def __init__(self, increment: int) -> None:
        self.increment = increment

    def setup(self, worker: Any) -> None:
        os.nice(self.increment)
