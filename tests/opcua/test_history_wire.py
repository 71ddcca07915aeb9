"""Encoding HistoryRead results in slices gives the bytes asyncua's own encoder gives."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from asyncua import ua
from asyncua.ua.ua_binary import struct_to_binary

from twin_server.history import to_datetime
from twin_server.opcua.history_wire import ENCODE_CHUNK, Slices, encode_results
from twin_server.runtime.clock import Ticks


def data_values(n: int) -> ua.HistoryData:
    variants = [ua.Variant(1.5, ua.VariantType.Double), ua.Variant(7, ua.VariantType.Int32),
                ua.Variant(True, ua.VariantType.Boolean), ua.Variant("é", ua.VariantType.String),
                ua.Variant()]
    return ua.HistoryData(DataValues=[
        ua.DataValue(variants[k % len(variants)],
                     StatusCode=ua.StatusCode(ua.StatusCodes.BadBoundNotFound if k % 7 == 0
                                              else ua.StatusCodes.Good),
                     SourceTimestamp=to_datetime(1_700_000_000_000_000 + k),
                     ServerTimestamp=None if k % 3 else to_datetime(k))
        for k in range(n)])


def events(n: int) -> ua.HistoryEvent:
    return ua.HistoryEvent(Events=[ua.HistoryEventFieldList(EventFields=[
        ua.Variant(f"event {k}", ua.VariantType.String),
        ua.Variant(ua.LocalizedText(f"m{k}"), ua.VariantType.LocalizedText),
        ua.Variant(k, ua.VariantType.UInt16)]) for k in range(n)])


class FakeTime:
    """A perf_counter that moves 1 ms per reading."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> float:
        return next(self._ticks) * 0.001


class TestEncodeResults:
    @pytest.mark.parametrize("data", [
        pytest.param(data_values(ENCODE_CHUNK * 5 + 3), id="data"),
        pytest.param(events(ENCODE_CHUNK * 2 + 1), id="events"),
        pytest.param(data_values(3), id="short"),
    ])
    async def test_same_bytes_as_asyncua(self, data: Any) -> None:
        """A result encoded in chunks encodes to exactly what asyncua makes of it whole."""
        whole = struct_to_binary(ua.HistoryReadResult(HistoryData=data))
        result = ua.HistoryReadResult(HistoryData=data)
        await encode_results([result], Slices())
        assert struct_to_binary(result) == whole

    async def test_long_work_yields(self) -> None:
        """Encoding more than a slice's worth lets the event loop run in between."""
        slices = Slices(seconds=0.002, ticks=Ticks(), clock=FakeTime())
        await slices.start()
        await encode_results([ua.HistoryReadResult(HistoryData=data_values(ENCODE_CHUNK * 8))],
                             slices)
        assert slices.yields >= 3
