"""The REST API's faults: a session's injected faults, InjectFault, ClearFault and
ClearFaults.

The list answers each active fault as the session's ``Faults`` folder shows it
over OPC UA (``opcua/faults.py``): its id, kind, target, parameters (every one,
defaults filled in), duration, the simulated time it started at, what is left
of it and whether the config defined it. Injecting goes through the code of
the OPC UA InjectFault method (``runtime/checks.inject_fault``: each argument
checked on its own, then the session), so the same values are refused with the
same status and message; clearing one or all through the session's
``clear_fault`` and ``clear_faults``, as ClearFault and ClearFaults do. Each
needs the role of its OPC UA method (an operator's). The start and end of each
fault are session events as after an OPC UA call; the live feed's frames carry
the session's fault counter (``faults``), which moves whenever the set changes.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from twin_server.engine.faults import FaultKind, FaultState
from twin_server.errors import TypeMismatch
from twin_server.runtime import checks
from twin_server.security.roles import METHOD_ROLES
from twin_server.web import views
from twin_server.web.api import Api, _field
from twin_server.web.routes import Route

FAULT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "kind", "target", "parameters", "started", "from_config"],
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string", "enum": [k.value for k in FaultKind]},
        "target": {"type": "string",
                   "description": "the variable it acts on: component.Inputs|Outputs.name"},
        "parameters": {"type": "object", "additionalProperties": {"type": "number"},
                       "description": "every parameter of its kind, defaults filled in"},
        "duration": {"type": "number", "nullable": True,
                     "description": "simulated s it acts; null: until cleared"},
        "started": {"type": "number", "description": "the simulated time it started, s"},
        "remaining": {"type": "number", "nullable": True,
                      "description": "simulated s until it ends by itself; null: until "
                                     "cleared"},
        "from_config": {"type": "boolean",
                        "description": "defined in the config: Reset brings it back"},
        "dropout": {"type": "boolean", "description": "its variable's status is Bad"},
    },
}
_INJECT: dict[str, Any] = {
    "type": "object", "required": ["target", "kind"], "properties": {
        "target": {"type": "string", "description": "component.Inputs.name or "
                                                    "component.Outputs.name, e.g. "
                                                    "tank.Outputs.level"},
        "kind": {"type": "string", "enum": [k.value for k in FaultKind]},
        "parameters": {"description": 'the kind\'s parameters: {"sigma": 0.01, "seed": 7} '
                                      "(or that JSON as a string)",
                       "oneOf": [{"type": "object",
                                  "additionalProperties": {"type": "number"}},
                                 {"type": "string"}]},
        "duration": {"type": "number", "minimum": 0,
                     "description": "simulated s; 0 or none: until cleared"},
        "id": {"type": "string", "description": "names it (letters, digits, _); none: "
                                                "the session picks f1, f2, ..."}}}
_REFUSALS = ("BadNotFound", "BadInvalidArgument", "BadTypeMismatch",
             "BadBrowseNameDuplicated")


def fault_view(state: FaultState) -> dict[str, Any]:
    return {
        "id": state.id, "kind": str(state.kind), "target": state.target,
        "parameters": {k: views.json_value(v) for k, v in state.parameters.items()},
        "duration": state.duration, "started": state.started, "remaining": state.remaining,
        "from_config": state.from_config, "dropout": state.dropout,
    }


class Faults:
    def __init__(self, api: Api) -> None:
        self.api = api

    async def list_faults(self, request: web.Request) -> web.Response:
        record = self.api.record(request)
        return web.json_response([fault_view(f) for f in await record.session.faults()])

    async def inject(self, request: web.Request) -> web.Response:
        api = self.api
        record = api.record(request)
        body = await api.body(request)
        target = _field(body, "target", str)
        kind = _field(body, "kind", str)
        parameters = _field(body, "parameters", object, default="")
        if isinstance(parameters, dict):
            parameters = json.dumps(parameters)
        elif not isinstance(parameters, str):
            raise TypeMismatch(f"'parameters' takes an object of numbers such as "
                               f'{{"sigma": 0.01}} (got {json.dumps(parameters)[:100]})')
        duration = _field(body, "duration", float, default=0.0)
        fault_id = _field(body, "id", str, default="")
        try:
            injected = await checks.inject_fault(record.session, target, kind, parameters,
                                                 duration, fault_id)
        except checks.ArgumentRefused as exc:
            raise exc.error from None
        await api.done(record.name)
        found = next((f for f in await record.session.faults() if f.id == injected), None)
        if found is None:  # (a duration of one tick, ended already)
            return web.json_response({"id": injected}, status=201)
        return web.json_response(fault_view(found), status=201)

    async def clear(self, request: web.Request) -> web.Response:
        record = self.api.record(request)
        await record.session.clear_fault(request.match_info["fault"])
        await self.api.done(record.name)
        return web.Response(status=204)

    async def clear_all(self, request: web.Request) -> web.Response:
        record = self.api.record(request)
        cleared = await record.session.clear_faults()
        await self.api.done(record.name)
        return web.json_response({"cleared": cleared})


def routes(api: Api) -> list[Route]:
    faults = Faults(api)
    path = "/api/sessions/{session}/faults"
    return [
        Route("GET", path, faults.list_faults, "listFaults",
              "A session's active faults, in the order they apply", "faults",
              response=views.array_of(FAULT), refusals=("BadNotFound",)),
        Route("POST", path, faults.inject, "injectFault",
              "Inject a fault, as InjectFault", "faults", role=METHOD_ROLES["InjectFault"],
              body=_INJECT, response=FAULT, status=201, refusals=_REFUSALS),
        Route("DELETE", path + "/{fault}", faults.clear, "clearFault",
              "End a fault, as ClearFault", "faults", role=METHOD_ROLES["ClearFault"],
              status=204, refusals=("BadNotFound",)),
        Route("DELETE", path, faults.clear_all, "clearFaults",
              "End every fault of the session, as ClearFaults", "faults",
              role=METHOD_ROLES["ClearFaults"],
              response={"type": "object", "required": ["cleared"], "properties": {
                  "cleared": {"type": "array", "items": {"type": "string"}}}},
              refusals=("BadNotFound",)),
    ]
