"""CSV export: what a spreadsheet or pandas reads equals a raw read of the same range."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import pytest

from twin_server.errors import InvalidArgument
from twin_server.history import HistoryStore, export_csv

T0 = 1_700_000_000.0


async def fill(store: HistoryStore) -> None:
    for k in range(25_000):  # more than one page
        t = T0 + k * 0.01
        store.record("s/Components.tank.Outputs.level", t, 0.1 + k / 3)
        if k % 2 == 0:
            store.record("s/Components.pump.Inputs.on", t, k % 4 == 0, source="client")
    store.record("s/Components.tank.Outputs.level", T0, 99.0)  # a second sample at T0
    await store.flush()


class TestExport:
    async def test_long_matches_raw_read(self, store: HistoryStore) -> None:
        """Every row of the long layout is a sample of a raw read, exactly."""
        await fill(store)
        out = io.StringIO()
        rows = await export_csv(store, "s", None, T0, T0 + 300, out, layout="long")
        parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
        assert rows == len(parsed) == 25_001 + 12_500
        for path in ("Components.tank.Outputs.level", "Components.pump.Inputs.on"):
            raw = (await store.read_raw(("s", path), T0, T0 + 300)).samples
            mine = [r for r in parsed if r["path"] == path]
            assert [r["value"] for r in mine] == [str(s.value) for s in raw]
            assert [round(float(r["epoch_s"]) * 1e6) for r in mine] == [s.t_us for s in raw]
            assert [datetime.fromisoformat(r["time"]) for r in mine] == [s.time for s in raw]
            assert {r["source"] for r in mine} == {raw[0].source}

    async def test_wide_lines_up_ticks(self, store: HistoryStore) -> None:
        """The wide layout has one row per time, a column per path, blanks where none."""
        await fill(store)
        out = io.StringIO()
        paths = ["Components.tank.Outputs.level", "Components.pump.Inputs.on"]
        rows = await export_csv(store, "s", paths, T0, T0 + 0.05, out)
        lines = list(csv.reader(io.StringIO(out.getvalue())))
        assert lines[0] == ["time", "epoch_s", "sim_time_s", *paths]
        assert rows == len(lines) - 1 == 6
        assert lines[1] == ["2023-11-14T22:13:20.000000Z", "1700000000.000000", "",
                            str(0.1), "True"]
        assert lines[2][1:] == ["1700000000.000000", "", "99.0", ""]  # 2nd sample at T0
        assert lines[3][1:] == ["1700000000.010000", "", str(0.1 + 1 / 3), ""]
        assert float(lines[3][3]) == 0.1 + 1 / 3  # the float round-trips exactly

    @pytest.mark.parametrize("layout", ["wide", "long"])
    async def test_simulated_time_column_and_range(self, store: HistoryStore,
                                                   layout: str) -> None:
        """Each row carries its samples' simulated time (exactly, empty where unknown);
        sim_start and sim_end keep the rows of simulated time in [sim_start, sim_end)."""
        for k in range(10):  # 1000 simulated seconds per wall second, as at factor 0
            store.record("s/a", T0 + k * 0.1, float(k), sim_t=k * 100.0 + 0.1)
        store.record("s/a", T0 + 2, -1.0)  # no simulated time known
        await store.flush()
        out = io.StringIO()
        rows = await export_csv(store, "s", None, T0, T0 + 10, out, layout=layout)
        parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
        assert rows == 11
        assert [r["sim_time_s"] for r in parsed] == [repr(k * 100.0 + 0.1)
                                                     for k in range(10)] + [""]
        out = io.StringIO()
        rows = await export_csv(store, "s", None, T0, T0 + 10, out, layout=layout,
                                sim_start=200.0, sim_end=500.1)
        parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
        column = "value" if layout == "long" else "a"
        assert [float(r[column]) for r in parsed] == [2.0, 3.0, 4.0] and rows == 3

    async def test_unknown_session_refused(self, store: HistoryStore) -> None:
        """Exporting a session without history says so instead of writing an empty file."""
        with pytest.raises(InvalidArgument, match="no recorded history"):
            await export_csv(store, "nobody", None, T0, T0 + 1, io.StringIO())
