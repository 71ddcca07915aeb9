"""What the REST API answers: sessions, twins, variables and samples as JSON.

Plain functions from the daemon's records and frames to JSON-ready dicts, and
the schemas that document them (``openapi.py``). JSON has no NaN or infinity: a
non-finite value (a faulted model's output) is answered as null.
"""

from __future__ import annotations

import math
from typing import Any

from twin_server.engine.state import VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import NotFound
from twin_server.models.base import Kind, Value, Variable
from twin_server.runtime.host import Frame
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
