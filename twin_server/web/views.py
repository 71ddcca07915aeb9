"""What the REST API answers: sessions, twins, variables and samples as JSON.

Plain functions from the daemon's records and frames to JSON-ready dicts, and
the schemas that document them (``openapi.py``). JSON has no NaN or infinity: a
non-finite value (a faulted model's output) is answered as null.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from json.encoder import encode_basestring
from typing import Any

from twin_server.engine.state import VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import NotFound
from twin_server.models.base import Kind, Value, Variable
from twin_server.runtime.host import Frame, SessionLayout
from twin_server.runtime.served import ServedSession

#: the URL spelling of each kind (``.../components/tank/inputs/inflow``)
KINDS: dict[str, Kind] = {kind.folder.lower(): kind for kind in Kind}


def json_value(value: Value | None) -> Any:
    """A value as JSON takes it (non-finite floats: None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def status_name(code: int) -> str:
    """The name of an OPC UA StatusCode (an int)."""
    if not code:
        return "Good"
    from asyncua import ua  # (the web front runs in the main process, beside the server)

    return str(ua.StatusCode(code).name)


def session_view(record: ServedSession) -> dict[str, Any]:
    try:
        frame: Frame | None = record.session.frame()
    except NotFound:  # (being deleted)
        frame = None
    fault = record.session.fault() if frame is not None else None
    view: dict[str, Any] = {
        "name": record.name, "twin": record.twin.name, "origin": record.origin,
        "step_size": record.settings.step_size, "publish_rate": record.settings.publish_rate,
        "fault": str(fault) if fault is not None else None,
    }
    if frame is not None:
        view.update(state=str(frame.state), sim_time=frame.sim_time,
                    step_count=frame.step_count, realtime_factor=frame.realtime_factor,
                    steps_remaining=frame.steps_remaining, good=frame.good)
    else:
        view.update(state="Deleted", sim_time=None, step_count=None, realtime_factor=None,
                    steps_remaining=0, good=False)
    return view


def twin_view(twin: TwinDefinition, origin: str, sessions: list[str]) -> dict[str, Any]:
    return {
        "name": twin.name, "description": twin.description, "origin": origin,
        "components": [{"name": c.name, "model": c.model, "description": c.description}
                       for c in twin.components],
        "connections": [str(c) for c in twin.connections],
        "sessions": sessions,
    }


def variable_meta(key: VarKey, var: Variable) -> dict[str, Any]:
    """What never changes of a variable: its address, type, unit and range."""
    return {
        "component": key.component, "kind": key.kind.folder.lower(), "name": key.name,
        "path": key.path, "datatype": str(var.datatype), "unit": var.unit,
        "low": json_value(var.low), "high": json_value(var.high),
        "description": var.description,
        "writable": key.kind is not Kind.OUTPUT,
        "tunable": var.tunable if key.kind is Kind.PARAMETER else None,
    }


def variable_view(key: VarKey, var: Variable, value: Value, status: int,
                  forced: bool) -> dict[str, Any]:
    view = variable_meta(key, var)
    view.update(value=json_value(value), status=status_name(status), forced=forced)
    return view


# -- big sessions, fast: what never changes encoded once ------------------------------

#: variables encoded between two yields to the event loop (a few ms of work: the
#: clocks of ``workers = 0`` sessions tick on the same loop)
SLICE = 1000


def encode_value(value: Value | None) -> str:
    """``json.dumps(json_value(value))``, for the types a variable holds, faster."""
    if isinstance(value, float):
        return float.__repr__(value) if math.isfinite(value) else "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, str):
        return str(encode_basestring(value))
    return json.dumps(json_value(value))


#: how the repr of a finite int or float starts (anything else: encoded one by one)
_NUMERIC = frozenset("0123456789-")


def encode_all(values: Sequence[Value | None]) -> list[str]:
    """``[encode_value(v) for v in values]``: ``repr`` over the whole list at C
    speed, then the few that are not finite numbers (booleans, strings, NaN)
    encoded again."""
    out = list(map(repr, values))
    numeric, encode = _NUMERIC, encode_value
    for i, text in enumerate(out):
        if text[0] not in numeric or text == "-inf":
            out[i] = encode(values[i])
    return out


def encode_values(indices: Sequence[int], values: Sequence[Value | None]) -> str:
    """``[[index, value], ...]`` as JSON text."""
    return "[" + ",".join(f"[{i},{t}]" for i, t in zip(indices, encode_all(values),
                                                        strict=True)) + "]"


class LayoutView:
    """A session layout's variables as the API answers them, encoded once: the
    WebSocket's layout message and, per variable, the JSON of its fixed fields, so
    that a listing of thousands of variables costs a string join per request."""

    def __init__(self, layout: SessionLayout) -> None:
        self.layout = layout
        self.meta: list[dict[str, Any]] = []
        self._heads: list[str] = []
        self.message = ""
        #: each variable's index in the frame's values
        self.index: dict[VarKey, int] = {}

    async def build(self, twin: str) -> LayoutView:
        """Encode, yielding to the loop every ``SLICE / 4`` variables."""
        variables = self.layout.variables
        self.index = {key: i for i, (key, _) in enumerate(variables)}
        for start in range(0, len(variables), SLICE // 4):
            chunk = [variable_meta(k, v) for k, v in variables[start:start + SLICE // 4]]
            self.meta += chunk
            # '{..., "tunable": null' : the object without its closing brace
            self._heads += [json.dumps(m)[:-1] for m in chunk]
            await asyncio.sleep(0)
        head = json.dumps({"type": "layout", "session": self.layout.name, "twin": twin,
                           "publish_rate": self.layout.publish_rate})
        self.message = f'{head[:-1]}, "variables": [{"}, ".join(self._heads)}}}]}}'
        return self

    def forced_indices(self, forced: Iterable[VarKey]) -> list[int]:
        """The indices of the variables ``forced`` names, in order."""
        return sorted(self.index[key] for key in forced if key in self.index)

    async def listing(self, frame: Frame, forced: Iterable[VarKey]) -> str:
        """Every variable with its value, status and forced mark (``VARIABLE``s),
        as JSON text."""
        values, quality, heads = frame.values, frame.quality, self._heads
        marks = [False] * len(heads)
        for i in self.forced_indices(forced):
            marks[i] = True
        parts: list[str] = []
        good = ', "status": "Good", "forced": '
        for start in range(0, len(heads), SLICE):
            stop = min(start + SLICE, len(heads))
            encoded = encode_all(values[start:stop])
            parts += [
                f'{heads[i]}, "value": {encoded[i - start]}'
                + (good if i not in quality else
                   f', "status": "{status_name(quality[i])}", "forced": ')
                + ("true}" if marks[i] else "false}")
                for i in range(start, stop)]
            if stop < len(heads):
                await asyncio.sleep(0)
        return "[" + ", ".join(parts) + "]"


class Layouts:
    """Each session's ``LayoutView``, built once (a new layout: built again); those
    of sessions gone are dropped (``alive``: the names of the sessions now)."""

    def __init__(self, alive: Callable[[], Collection[str]]) -> None:
        self._alive = alive
        self._views: dict[str, LayoutView] = {}
        self._building: dict[str, tuple[SessionLayout, asyncio.Future[LayoutView]]] = {}

    async def of(self, record: ServedSession) -> LayoutView:
        layout = record.session.layout
        found = self._views.get(record.name)
        if found is not None and found.layout is layout:
            return found
        alive = self._alive()
        for name in [n for n in self._views if n not in alive]:
            del self._views[name]
        building = self._building.get(record.name)
        if building is None or building[0] is not layout:
            future = asyncio.ensure_future(LayoutView(layout).build(record.twin.name))
            building = self._building[record.name] = (layout, future)
        try:
            view = await asyncio.shield(building[1])
        finally:
            if building[1].done() and self._building.get(record.name) is building:
                del self._building[record.name]
        if view.layout is layout:
            self._views[record.name] = view
        return view


# -- schemas -------------------------------------------------------------------------

SCALAR: dict[str, Any] = {"oneOf": [{"type": "number"}, {"type": "boolean"},
                                    {"type": "string"}], "nullable": True}
ERROR = {
    "type": "object", "required": ["status", "message"],
    "properties": {"status": {"type": "string", "description": "the OPC UA status name"},
                   "message": {"type": "string"}},
}
SESSION = {
    "type": "object",
    "required": ["name", "twin", "origin", "state", "sim_time", "step_count"],
    "properties": {
        "name": {"type": "string"}, "twin": {"type": "string"},
        "origin": {"type": "string", "enum": ["config", "client"]},
        "state": {"type": "string", "enum": ["Ready", "Running", "Suspended", "Halted",
                                             "Deleted"]},
        "sim_time": {"type": "number", "nullable": True},
        "step_count": {"type": "integer", "nullable": True},
        "step_size": {"type": "number"}, "publish_rate": {"type": "number"},
        "realtime_factor": {"type": "number", "nullable": True},
        "steps_remaining": {"type": "integer"}, "good": {"type": "boolean"},
        "fault": {"type": "string", "nullable": True},
    },
}
TWIN = {
    "type": "object", "required": ["name", "components"],
    "properties": {
        "name": {"type": "string"}, "description": {"type": "string"},
        "origin": {"type": "string", "enum": ["config", "client"]},
        "components": {"type": "array", "items": {
            "type": "object", "properties": {"name": {"type": "string"},
                                             "model": {"type": "string"},
                                             "description": {"type": "string"}}}},
        "connections": {"type": "array", "items": {"type": "string"}},
        "sessions": {"type": "array", "items": {"type": "string"}},
    },
}
VARIABLE = {
    "type": "object",
    "required": ["component", "kind", "name", "datatype", "value", "status"],
    "properties": {
        "component": {"type": "string"},
        "kind": {"type": "string", "enum": sorted(KINDS)},
        "name": {"type": "string"}, "path": {"type": "string"},
        "datatype": {"type": "string", "enum": ["Double", "Int32", "Boolean", "String"]},
        "unit": {"type": "string"},
        "low": {"type": "number", "nullable": True},
        "high": {"type": "number", "nullable": True},
        "description": {"type": "string"}, "writable": {"type": "boolean"},
        "tunable": {"type": "boolean", "nullable": True},
        "value": SCALAR,
        "status": {"type": "string", "description": "the value's OPC UA status name"},
        "forced": {"type": "boolean"},
    },
}
SAMPLE = {
    "type": "object", "required": ["t", "value", "status"],
    "properties": {
        "t": {"type": "number", "description": "seconds since the Unix epoch (UTC)"},
        "sim_t": {"type": "number", "nullable": True},
        "value": SCALAR, "status": {"type": "string"},
        "source": {"type": "string"},
    },
}
EVENT = {
    "type": "object", "required": ["t", "kind", "severity", "message"],
    "properties": {"t": {"type": "number"}, "kind": {"type": "string"},
                   "severity": {"type": "integer"}, "message": {"type": "string"}},
}


def page_of(item: dict[str, Any]) -> dict[str, Any]:
    """A page of ``item``s with the continuation of the next page (null: the last)."""
    return {"type": "object", "required": ["items", "continuation"],
            "properties": {"items": {"type": "array", "items": item},
                           "continuation": {"type": "string", "nullable": True}}}


def array_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}
