"""Live values for the dashboard: a sink of the sessions' pacers, fanned out to
WebSockets.

``LiveFeed`` is one more sink (``runtime/sinks.py``): each session's pacer hands
it the same frame, with the same stamp, once per publish period as it hands the
OPC UA publisher and the history. It never reads a session itself and never
runs in a tick: ``deliver`` only leaves the frame in each watcher's slot (the
latest wins: a slow browser skips frames, it does not queue them) and wakes the
watcher's WebSocket task, which sends what changed since its last message.

Messages (JSON text):

* ``{"type": "layout", "session", "variables": [...]}`` first: every variable's
  component, kind, name, datatype, unit and range, in the frame's order;
* ``{"type": "frame", "t", "state", "sim_time", "step_count", "realtime_factor",
  "values": [[index, value], ...], "status": {index: "<status name>"}}`` then:
  the first with every value, each next one with those that changed; ``status``
  holds the values that are not Good; ``forced`` (the indices of the forced
  inputs) comes in the first and whenever the forced inputs changed, wherever
  they were forced or released (OPC UA, REST, a reset); ``faults`` is the
  session's fault counter, which moves whenever its set of injected faults
  changes (GET .../faults then; a fault's remaining time is its ``started +
  duration - sim_time``);
* ``{"type": "deleted"}`` when the session goes, then the socket closes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twin_server.runtime.host import Frame
from twin_server.runtime.sinks import Stamp
from twin_server.web.views import encode_values, status_name


@dataclass(frozen=True, slots=True)
class LiveStatistics:
    watchers: int  # WebSockets watching, over every session
    frames: int  # frames delivered to watchers
    skipped: int  # frames a watcher's next one replaced before it was sent


class Watcher:
    """One WebSocket's slot: the latest frame not sent yet."""

    def __init__(self, session: str) -> None:
        self.session = session
        self.latest: tuple[Frame, Stamp] | None = None
        self.ready = asyncio.Event()
        self.skipped = 0

    def offer(self, frame: Frame, stamp: Stamp) -> None:
        if self.latest is not None:
            self.skipped += 1
        self.latest = (frame, stamp)
        self.ready.set()

    async def next(self) -> tuple[Frame, Stamp]:
        while self.latest is None:
            self.ready.clear()
            await self.ready.wait()
        taken, self.latest = self.latest, None
        self.ready.clear()
        return taken


class LiveFeed:
    """The sink: frames of watched sessions to their watchers."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[Watcher]] = {}
        self._frames = 0
        self._skipped = 0
        #: per session, the last message computed and what it was computed from
        self._shared: dict[str, tuple[Any, ...]] = {}

    def watch(self, session: str) -> Watcher:
        watcher = Watcher(session)
        self._watchers.setdefault(session, set()).add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        watchers = self._watchers.get(watcher.session)
        if watchers is not None:
            watchers.discard(watcher)
            self._skipped += watcher.skipped
            if not watchers:
                del self._watchers[watcher.session]
                self._shared.pop(watcher.session, None)

    # -- Sink --------------------------------------------------------------------------
    def wants(self, session: str) -> bool:
        watchers = self._watchers.get(session)
        return watchers is not None and any(w.latest is None for w in watchers)

    def deliver(self, session: str, frame: Frame, stamp: Stamp) -> None:
        watchers = self._watchers.get(session)
        if watchers:
            for watcher in watchers:
                watcher.offer(frame, stamp)
            self._frames += 1

    def message(self, session: str, changes: Changes, frame: Frame, stamp: Stamp,
                forced: list[int] | None = None) -> str | None:
        """``changes.message(frame, stamp, forced)``, computed once for every watcher of the
        session that saw the same frame last (the usual case: all of them), so that
        ten browsers cost one diff and one JSON encoding a period, not ten."""
        key = (changes.values, frame.values, changes.scalars, tuple(changes.status.items()))
        shared = self._shared.get(session)
        if shared is not None and shared[0] is key[0] and shared[1] is key[1] \
                and shared[2:4] == key[2:4] and shared[4] is stamp:
            changes.values, changes.scalars, changes.status = shared[5]
            cached: str | None = shared[6]
            return cached
        message = changes.message(frame, stamp, forced)
        self._shared[session] = (*key, stamp,
                                 (changes.values, changes.scalars, changes.status), message)
        return message

    def statistics(self) -> LiveStatistics:
        skipped = self._skipped + sum(w.skipped for ws in self._watchers.values() for w in ws)
        return LiveStatistics(sum(len(ws) for ws in self._watchers.values()), self._frames,
                              skipped)


class Changes:
    """What one watcher sent last, to send only what changed."""

    def __init__(self) -> None:
        self.values: tuple[Any, ...] | None = None
        self.status: dict[int, int] = {}
        self.scalars: tuple[Any, ...] = ()

    def message(self, frame: Frame, stamp: Stamp, forced: list[int] | None = None
                ) -> str | None:
        """The frame's message, None when it shows nothing new (a session standing
        still: its pacer still delivers every period). ``forced``: the indices of
        the forced inputs as of ``frame.forces``, sent when that moved since the last
        message (``needs_forced``)."""
        values = frame.values
        scalars = (str(frame.state), frame.sim_time, frame.step_count, frame.realtime_factor,
                   frame.good, frame.steps_remaining, frame.faults, frame.forces)
        quality = dict(frame.quality)
        last = self.values
        changed: Sequence[int]
        if last is None or len(last) != len(values):
            changed = range(len(values))
        elif values is last:
            changed = ()
        else:
            changed = [i for i, (v, w) in enumerate(zip(values, last, strict=True))
                       if v != w and not (v != v and w != w)]  # (NaN stays NaN: unchanged)
        if last is not None and not changed and scalars == self.scalars \
                and quality == self.status:
            return None
        status = {str(i): status_name(code) for i, code in quality.items()}
        # values that turned Good again are named with "Good"
        status.update({str(i): "Good" for i in self.status if i not in quality})
        send_forced = forced is not None and self.needs_forced(frame)
        self.values, self.scalars, self.status = values, scalars, quality
        head = json.dumps({
            "type": "frame", "t": stamp.seconds, "state": scalars[0],
            "sim_time": frame.sim_time, "step_count": frame.step_count,
            "realtime_factor": frame.realtime_factor, "good": frame.good,
            "steps_remaining": frame.steps_remaining, "faults": frame.faults,
            "status": status,
            **({"forced": forced} if send_forced else {}),
        })
        # the values, the bulk of a big session's message, encoded without json's
        # per-object overhead
        return f'{head[:-1]}, "values": {encode_values(changed, [values[i] for i in changed])}}}'

    def needs_forced(self, frame: Frame) -> bool:
        """Whether the forced inputs may have changed since the last message."""
        return not self.scalars or self.scalars[-1] != frame.forces
