"""The REST API's alarms: every session's conditions and their methods.

The list answers each alarm's condition as the OPC UA condition nodes show it
(``opcua/alarms.py``: enabled, active with its limit states, acknowledged,
confirmed, retained, severity, message, comment, who) with its definition (the
variable, the kind, the limits) and ``event_id``: the EventId of its latest
event, hex, which Acknowledge, Confirm and AddComment name as OPC UA's do (an
alarm that moved on since the client looked refuses with BadEventIdUnknown).

The methods go through the code of the OPC UA condition methods
(``runtime/checks.alarm_method``: the session's engine checks the EventId and the
condition's state), with their role (an operator's) and their refusals:
BadConditionBranchAlreadyAcked, BadConditionBranchAlreadyConfirmed,
BadConditionAlreadyEnabled, BadConditionAlreadyDisabled, BadConditionDisabled,
BadEventIdUnknown (409 Conflict: the condition is not in a state that allows
it), BadNotFound for an unknown session or alarm. The caller's user name is
the condition's ClientUserId.

Shelving, as ShelvingState's methods: ``timed-shelve`` (body ``shelving_time``,
wall-clock seconds, at most the alarm's ``max_time_shelved``), ``one-shot-shelve``
and ``unshelve``, each with an optional ``comment``; refusals
BadConditionAlreadyShelved, BadConditionNotShelved, BadShelvingTimeOutOfRange (409).
The list shows ``shelving`` (Unshelved, TimedShelved, OneShotShelved),
``suppressed_or_shelved``, ``unshelve_time`` (seconds left) and ``max_time_shelved``.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from twin_server.engine.alarms import AlarmDefinition, AlarmState, event_id
from twin_server.errors import InvalidArgument, NotFound
from twin_server.runtime import checks
from twin_server.runtime.served import ServedSession
from twin_server.security.roles import Role
from twin_server.web import views
from twin_server.web.api import Api, _field, user_of
from twin_server.web.routes import Query, Route

#: path action -> engine action (``engine.alarms.ACTIONS``) and OPC UA method
ACTIONS: dict[str, tuple[str, str]] = {
    "acknowledge": ("acknowledge", "Acknowledge"),
    "confirm": ("confirm", "Confirm"),
    "comment": ("add_comment", "AddComment"),
    "enable": ("enable", "Enable"),
    "disable": ("disable", "Disable"),
    "timed-shelve": ("timed_shelve", "TimedShelve"),
    "one-shot-shelve": ("one_shot_shelve", "OneShotShelve"),
    "unshelve": ("unshelve", "Unshelve"),
}
#: the actions that name the event they answer (as OPC UA's take an EventId)
WITH_EVENT = frozenset({"acknowledge", "confirm", "add_comment"})

ALARM: dict[str, Any] = {
    "type": "object",
    "required": ["session", "name", "variable", "kind", "enabled", "active", "acked",
                 "confirmed", "retain", "severity", "message", "event_id"],
    "properties": {
        "session": {"type": "string"}, "name": {"type": "string"},
        "variable": {"type": "string", "description": "the alarm's input, component.name"},
        "path": {"type": "string"},
        "kind": {"type": "string", "enum": ["limit", "off_normal"]},
        "exclusive": {"type": "boolean"},
        "limits_defined": {"type": "array", "items": {
            "type": "object", "properties": {"name": {"type": "string"},
                                             "value": {"type": "number"},
                                             "severity": {"type": "integer"}}}},
        "enabled": {"type": "boolean"}, "active": {"type": "boolean"},
        "limits": {"type": "array", "items": {"type": "string"},
                   "description": "the limit states active now"},
        "limit": {"type": "string", "description": "the most severe active limit state"},
        "acked": {"type": "boolean"}, "confirmed": {"type": "boolean"},
        "retain": {"type": "boolean"}, "severity": {"type": "integer"},
        "message": {"type": "string"},
        "time": {"type": "number", "description": "simulated time of the latest event, s"},
        "active_time": {"type": "number"},
        "value": views.SCALAR, "comment": {"type": "string"},
        "user": {"type": "string", "description": "ClientUserId of the latest method"},
        "transition": {"type": "string"},
        "event_id": {"type": "string", "description": "its latest event's EventId, hex"},
        "shelving": {"type": "string",
                     "enum": ["Unshelved", "TimedShelved", "OneShotShelved"]},
        "suppressed_or_shelved": {"type": "boolean"},
        "unshelve_time": {"type": "number",
                          "description": "wall-clock seconds until the shelving ends by "
                                         "itself (0: unshelved)"},
        "max_time_shelved": {"type": "number",
                             "description": "the longest a shelving lasts, s"},
    },
}
_METHOD_BODY: dict[str, Any] = {
    "type": "object", "properties": {
        "event_id": {"type": "string",
                     "description": "the EventId (hex) of the event answered: the alarm's "
                                    "event_id as listed (required by acknowledge, confirm "
                                    "and comment)"},
        "comment": {"type": "string"},
        "shelving_time": {"type": "number",
                          "description": "timed_shelve: wall-clock seconds, at most the "
                                         "alarm's max_time_shelved"}}}
_REFUSALS = ("BadNotFound", "BadInvalidArgument", "BadEventIdUnknown",
             "BadConditionBranchAlreadyAcked", "BadConditionBranchAlreadyConfirmed",
             "BadConditionAlreadyEnabled", "BadConditionAlreadyDisabled",
             "BadConditionDisabled", "BadConditionAlreadyShelved",
             "BadConditionNotShelved", "BadShelvingTimeOutOfRange")


def alarm_view(session: str, definition: AlarmDefinition, state: AlarmState
               ) -> dict[str, Any]:
    variable = definition.variable
    return {
        "session": session, "name": state.name,
        "variable": f"{variable.component}.{variable.name}", "path": variable.path,
        "kind": definition.kind, "exclusive": definition.exclusive,
        "limits_defined": [{"name": n, "value": views.json_value(v), "severity": s}
                           for n, v, s in definition.limits],
        "enabled": state.enabled, "active": state.active, "limits": list(state.limits),
        "limit": state.limit, "acked": state.acked, "confirmed": state.confirmed,
        "retain": state.retain, "severity": state.severity, "message": state.message,
        "time": state.time, "active_time": state.active_time,
        "value": views.json_value(state.value), "comment": state.comment,
        "user": state.user, "transition": state.transition,
        "event_id": event_id(session, state.name, state.sequence).hex(),
        "shelving": state.shelving, "suppressed_or_shelved": state.shelved,
        "unshelve_time": max(0.0, state.unshelve_at - time.time()) if state.shelved
        else 0.0,
        "max_time_shelved": definition.max_time_shelved,
    }


class Alarms:
    def __init__(self, api: Api) -> None:
        self.api = api

    async def _views(self, record: ServedSession) -> list[dict[str, Any]]:
        session = record.session
        definitions = {d.name: d for d in await session.alarm_definitions()}
        return [alarm_view(record.name, definitions[s.name], s)
                for s in await session.alarm_states() if s.name in definitions]

    async def list_all(self, request: web.Request) -> web.Response:
        retained = request.query.get("retained", "") in ("1", "true")
        found: list[dict[str, Any]] = []
        for record in list(self.api.daemon.manager.records()):
            try:
                found += await self._views(record)
            except NotFound:  # (deleted meanwhile)
                continue
        if retained:
            found = [a for a in found if a["retain"]]
        return web.json_response(found)

    async def list_session(self, request: web.Request) -> web.Response:
        return web.json_response(await self._views(self.api.record(request)))

    def method(self, action: str) -> Any:
        engine_action = ACTIONS[action][0]

        async def handler(request: web.Request) -> web.Response:
            api = self.api
            record = api.record(request)
            body = await api.body(request)
            event: bytes | None = None
            if engine_action in WITH_EVENT:
                text = _field(body, "event_id", str)
                try:
                    event = bytes.fromhex(text)
                except ValueError:
                    raise InvalidArgument(f"event_id {text[:64]!r} is not hex (the alarm's "
                                          f"event_id as GET .../alarms lists it)") from None
            comment = _field(body, "comment", str, default="")
            shelving_time = (_field(body, "shelving_time", float)
                             if engine_action == "timed_shelve" else 0.0)
            user = user_of(request)
            name = request.match_info["alarm"]
            state = await checks.alarm_method(record.session, name, engine_action, event,
                                              comment, user.name or "anonymous",
                                              shelving_time)
            await api.done(record.name)
            definitions = {d.name: d for d in await record.session.alarm_definitions()}
            return web.json_response(alarm_view(record.name, definitions[name], state))

        return handler


def _operation(action: str) -> str:
    """The operationId of a path action: timed-shelve -> timedShelveAlarm."""
    first, *rest = action.split("-")
    return first + "".join(part.title() for part in rest) + "Alarm"


def routes(api: Api) -> list[Route]:
    alarms = Alarms(api)
    session = "/api/sessions/{session}/alarms"
    table = [
        Route("GET", "/api/alarms", alarms.list_all, "listAlarms",
              "Every session's alarms with their condition (the alarm list)", "alarms",
              query=(Query("retained", {"type": "boolean"},
                           "only the retained ones (active, or not yet acknowledged or "
                           "confirmed)"),),
              response=views.array_of(ALARM)),
        Route("GET", session, alarms.list_session, "listSessionAlarms",
              "A session's alarms with their condition", "alarms",
              response=views.array_of(ALARM), refusals=("BadNotFound",)),
    ]
    for action, (_, method) in ACTIONS.items():
        table.append(Route(
            "POST", f"{session}/{{alarm}}/{action}", alarms.method(action),
            _operation(action), f"{method} the alarm, as the condition's OPC UA {method}",
            "alarms", role=Role.OPERATOR, body=_METHOD_BODY, response=ALARM,
            refusals=_REFUSALS))
    return table
