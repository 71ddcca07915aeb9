"""Big HistoryRead responses built and encoded without holding the event loop.

The clocks of sessions run on the same event loop as the OPC UA server. Turning
10,000 stored samples into DataValues takes about 50 ms here, and asyncua's
encoding of them into the response another 80 ms, in one go (``send_response``
is synchronous): a 100 Hz session would miss ticks by that much. So the work is
cut into ``Slices`` of about ``SLICE`` seconds: between two, the loop runs
whatever is ready, and a slice starts only when no tick falls due during it
(``Ticks.clear``), so that it runs after the tick instead of in its way.

``encode_results`` encodes each result's HistoryData in such slices and hands
asyncua the finished bytes as an ExtensionObject (type id and body: what the
binary encoding of a HistoryData or HistoryEvent is, Part 6 5.2.2.15), which it
copies into the response as they are. The bytes are those asyncua's own
encoder gives for the whole list: a structure with one array field encodes as
the array's length and then its elements.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

from asyncua import ua
from asyncua.ua.ua_binary import struct_to_binary

from twin_server.runtime.clock import TICKS, Ticks

#: the longest the loop is held at a time by one response's work (s)
SLICE = 0.002
#: elements encoded in one call of asyncua's encoder
ENCODE_CHUNK = 64

#: HistoryData-like types: their binary encoding id, and the one array field they hold
_ENCODINGS: dict[type, tuple[ua.NodeId, str]] = {
    ua.HistoryData: (ua.NodeId(ua.ObjectIds.HistoryData_Encoding_DefaultBinary),
                     "DataValues"),
    ua.HistoryEvent: (ua.NodeId(ua.ObjectIds.HistoryEvent_Encoding_DefaultBinary), "Events"),
}
_COUNT = struct.Struct("<i")


class Slices:
    """Work on the event loop in slices of about ``seconds`` each.

    ``await start()`` before the work (and after any other await), then for each
    item ``if slices.spent(): await slices.next()``."""

    def __init__(self, seconds: float = SLICE, ticks: Ticks = TICKS,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.seconds = seconds
        self._ticks = ticks
        self._clock = clock
        self._since = clock()
        self.yields = 0

    async def start(self) -> None:
        """Begin a slice, after the next tick if one falls due within it."""
        await self._ticks.clear(self.seconds)
        self._since = self._clock()

    def spent(self) -> bool:
        return self._clock() - self._since >= self.seconds

    async def next(self) -> None:
        """Let the loop run what is ready, then begin the next slice."""
        self.yields += 1
        await asyncio.sleep(0)
        await self.start()


async def encode_results(results: Iterable[ua.HistoryReadResult], slices: Slices) -> None:
    """Replace each result's HistoryData (or HistoryEvent) longer than one chunk by
    its encoded ExtensionObject, encoding ``ENCODE_CHUNK`` elements at a time."""
    for result in results:
        data = result.HistoryData
        spec = _ENCODINGS.get(type(data))
        if spec is None:
            continue
        typeid, name = spec
        items: list[Any] = getattr(data, name)
        if len(items) <= ENCODE_CHUNK:
            continue  # asyncua encodes it in well under a slice
        parts = [_COUNT.pack(len(items))]
        for i in range(0, len(items), ENCODE_CHUNK):
            if slices.spent():
                await slices.next()
            # the chunk as a structure of its own, without the array length in front
            parts.append(struct_to_binary(type(data)(items[i:i + ENCODE_CHUNK]))[_COUNT.size:])
        result.HistoryData = ua.ExtensionObject(TypeId=typeid, Body=b"".join(parts))


__all__ = ["ENCODE_CHUNK", "SLICE", "Slices", "encode_results"]
