"""Live runs (placeholder until the live target lands)."""

from __future__ import annotations

from typing import Any


async def run_live(*args: Any, **kwargs: Any) -> list[Any]:
    raise NotImplementedError("live runs are not built yet")
