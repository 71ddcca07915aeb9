"""Fixtures: a real history store in a fresh SQLite file per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from twin_server.history import HistoryStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[HistoryStore]:
    opened = await HistoryStore.open(tmp_path / "history.db", batch_interval=0.05)
    try:
        yield opened
    finally:
        await opened.close()
