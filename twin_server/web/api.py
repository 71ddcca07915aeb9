"""The REST API: twins, sessions, variables, history, events and HIL health.

Each operation does what its OPC UA method or write does, through the same code:
the daemon's operations (``runtime/daemon.py``: create, delete and fork sessions,
define and remove twins, snapshots), the session's host (``HostedSession``:
run control, parameters, writes) and the shared checks (``runtime/checks.py``,
``engine.manager.parse_parameters``). So the same values are accepted and the
same refusals come back, with the same OPC UA status name and message
(``errors.py`` adds the HTTP status). As after an OPC UA call, the daemon is
told of the activity (a client-created session does not expire while it is
used) and the call's effect shows at once on every sink (``Daemon.show``).

Request bodies are JSON objects, held to the same limits as OPC UA arguments
(``server.limits``: max_argument_size, max_definition_size for a twin's
definition, max_nesting_depth).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from twin_server.config.nesting import MAX_DEPTH, json_too_deep
from twin_server.config.security import LimitsConfig
from twin_server.engine.manager import parse_parameters
from twin_server.engine.state import VarKey
from twin_server.errors import (
    ConfigError,
    ConfigErrors,
    InvalidArgument,
    NotFound,
    NotSupported,
    TypeMismatch,
)
from twin_server.models.base import Kind, Value
from twin_server.recording import series_of
from twin_server.runtime import checks
from twin_server.runtime.served import ServedSession
from twin_server.security.roles import METHOD_ROLES, Role
from twin_server.web import views
from twin_server.web.auth import Authenticator, WebUser
from twin_server.web.errors import Refused
from twin_server.web.routes import Query, Route

if TYPE_CHECKING:
    from twin_server.runtime.daemon import Daemon

log = structlog.get_logger(__name__)

#: samples or events one page holds at most (``max`` may ask for fewer)
MAX_PAGE = 10_000
DEFAULT_PAGE = 1_000
#: most digits of an integer in a request body
MAX_DIGITS = 40
#: the request key under which the middleware leaves the request's user
USER = web.RequestKey("user", WebUser)


def user_of(request: web.Request) -> WebUser:
    return request[USER]


class Api:
    """The handlers, over one daemon."""

    def __init__(self, daemon: Daemon, auth: Authenticator, limits: LimitsConfig,
                 layouts: views.Layouts | None = None) -> None:
        self.daemon = daemon
        self.auth = auth
        self.limits = limits
        self.layouts = layouts if layouts is not None else views.Layouts(
            lambda: daemon.sessions)
        #: what the server awaits when it stops (a group's background work)
        self.closers: list[Callable[[], Awaitable[None]]] = []

    # -- helpers ------------------------------------------------------------------------

    async def body(self, request: web.Request, setting: str = "max_argument_size"
                   ) -> dict[str, Any]:
        """The request's JSON object, held to ``server.limits`` (InvalidArgument)."""
        raw = await request.read()
        if not raw.strip():
            return {}
        limit: int = getattr(self.limits, setting)
        if len(raw) > limit:
            raise InvalidArgument(
                f"the request body is {len(raw)} bytes long; at most {limit} are accepted "
                f"(server.limits.{setting}; raise it there if a legitimate request needs more)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"the request body is not UTF-8 ({exc})") from None
        depth = self.limits.max_nesting_depth
        too_deep = json_too_deep(text, depth)
        if too_deep is not None:
            raise InvalidArgument(
                f"the request body nests more than {depth} levels deep (at line "
                f"{too_deep.line}, column {too_deep.column}); "
                f"server.limits.max_nesting_depth sets the limit")
        try:
            found = json.loads(text, object_pairs_hook=_no_duplicates,
                               parse_constant=_no_constant, parse_int=_integer)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"the request body is not valid JSON: {exc.msg} at line "
                                  f"{exc.lineno}, column {exc.colno}") from None
        if not isinstance(found, dict):
            raise InvalidArgument(f"the request body must be a JSON object (got "
                                  f"{type(found).__name__})")
        return found

    def record(self, request: web.Request) -> ServedSession:
        """The session the path names (NotFound), touched as a client's activity."""
        name = request.match_info["session"]
        record = self.daemon.manager.get(name)
        self.daemon.touch(name)
        return record

    def key(self, request: web.Request, record: ServedSession) -> tuple[VarKey, int]:
        """The variable the path names and its index in the session's layout."""
        match = request.match_info
        kind = views.KINDS.get(match["kind"])
        if kind is None:
            raise NotFound(f"no kind of variable {match['kind']!r}: one of "
                           f"{', '.join(sorted(views.KINDS))}")
        key = VarKey(match["component"], kind, match["name"])
        for index, (known, _) in enumerate(record.session.layout.variables):
            if known == key:
                return key, index
        raise NotFound(f"session {record.name!r} has no {kind} {key.name!r} of component "
                       f"{key.component!r} ({key.path})")

    @staticmethod
    def parameters(body: dict[str, Any], field: str = "parameters"
                   ) -> dict[str, dict[str, Value]]:
        """Parameter overrides from the body's ``field``: an object as OPC UA's JSON
        argument holds (``{"tank": {"area": 2.0}}`` or ``{"tank.area": 2.0}``), read by
        the same parser, or that JSON as a string."""
        given = body.get(field)
        if given is None:
            return {}
        text = given if isinstance(given, str) else json.dumps(given)
        return parse_parameters(text, max_depth=MAX_DEPTH)

    async def done(self, name: str) -> None:
        await self.daemon.show(name)

    def session_json(self, record: ServedSession) -> web.Response:
        return web.json_response(views.session_view(record))

    # -- twins --------------------------------------------------------------------------

    async def list_twins(self, request: web.Request) -> web.Response:
        return web.json_response([self._twin(name) for name in self.daemon.twins])

    def _twin(self, name: str) -> dict[str, Any]:
        manager = self.daemon.manager
        twin = manager.twin(name)
        users = [r.name for r in manager.records() if r.twin is twin]
        return views.twin_view(twin, manager.twin_origin(name), users)

    async def get_twin(self, request: web.Request) -> web.Response:
        return web.json_response(self._twin(request.match_info["twin"]))

    async def define_twin(self, request: web.Request) -> web.Response:
        body = await self.body(request, "max_definition_size")
        text = _field(body, "definition", str)
        checks.definition(text)
        try:
            twin = await self.daemon.define_twin(text)
        except ConfigErrors as group:
            # every error of the definition, one per line, as DefineTwin answers it
            raise ConfigError(str(group)) from None
        return web.json_response(self._twin(twin.name), status=201)

    async def remove_twin(self, request: web.Request) -> web.Response:
        await self.daemon.remove_twin(request.match_info["twin"])
        return web.Response(status=204)

    # -- sessions -----------------------------------------------------------------------

    async def list_sessions(self, request: web.Request) -> web.Response:
        return web.json_response([views.session_view(r)
                                  for r in self.daemon.manager.records()])

    async def get_session(self, request: web.Request) -> web.Response:
        return self.session_json(self.record(request))

    async def create_session(self, request: web.Request) -> web.Response:
        body = await self.body(request)
        twin = _field(body, "twin", str)
        name = _field(body, "name", str)
        overrides = self.parameters(body)
        hosted = await self.daemon.create_session(twin, name, overrides)
        record = self.daemon.sessions.get(hosted.name)
        if record is None:  # a big twin, still being built: its created event tells
            return web.json_response({"name": name, "twin": twin, "state": "Creating"},
                                     status=202)
        return web.json_response(views.session_view(record), status=201)

    async def delete_session(self, request: web.Request) -> web.Response:
        name = request.match_info["session"]
        await self.daemon.delete_session(name)
        return web.Response(status=204)

    def _control(self, command: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            record = self.record(request)
            await getattr(record.session, command)()
            await self.done(record.name)
            return self.session_json(record)
        return handler

    async def step(self, request: web.Request) -> web.Response:
        record = self.record(request)
        body = await self.body(request)
        count = _field(body, "count", int, default=1)
        checks.step_count(count)
        await record.session.step(count, wait=checks.STEP_WAIT)
        await self.done(record.name)
        return self.session_json(record)

    async def reset(self, request: web.Request) -> web.Response:
        record = self.record(request)
        overrides = self.parameters(await self.body(request))
        await record.session.reset(overrides)
        await self.daemon.inputs_released(record.name)
        await self.done(record.name)
        return self.session_json(record)

    async def set_parameters(self, request: web.Request) -> web.Response:
        record = self.record(request)
        body = await self.body(request)
        _field(body, "parameters", object)
        await record.session.set_parameters(self.parameters(body))
        await self.done(record.name)
        return self.session_json(record)

    async def set_realtime_factor(self, request: web.Request) -> web.Response:
        record = self.record(request)
        value = _field(await self.body(request), "value", float)
        await record.session.set_realtime_factor(checks.realtime_factor(value))
        await self.done(record.name)
        return self.session_json(record)

    async def snapshot(self, request: web.Request) -> web.Response:
        record = self.record(request)
        snapshot_id = await self.daemon.take_snapshot(record.name)
        await self.done(record.name)
        return web.json_response({"id": snapshot_id}, status=201)

    async def restore(self, request: web.Request) -> web.Response:
        record = self.record(request)
        snapshot_id = _field(await self.body(request), "snapshot", str)
        await self.daemon.restore_snapshot(record.name, snapshot_id)
        await self.done(record.name)
        return self.session_json(record)

    async def fork(self, request: web.Request) -> web.Response:
        record = self.record(request)
        body = await self.body(request)
        name = _field(body, "name", str)
        factor = checks.fork_factor(_field(body, "realtime_factor", float, default=1.0))
        child = await self.daemon.fork_session(record.name, name, factor)
        await self.done(record.name)
        return web.json_response(views.session_view(self.daemon.manager.get(child.name)),
                                 status=201)

    async def release_inputs(self, request: web.Request) -> web.Response:
        record = self.record(request)
        released = await record.session.release_all()
        await self.daemon.inputs_released(record.name)
        await self.done(record.name)
        return web.json_response({"released": [f"{k.component}.{k.name}" for k in released]})

    # -- variables ----------------------------------------------------------------------

    async def list_variables(self, request: web.Request) -> web.Response:
        record = self.record(request)
        session = record.session
        view = await self.layouts.of(record)
        forced = await session.forced()
        # (a big session's thousand entries: encoded from what never changes, in
        # slices that let the loop's clocks tick between them)
        text = await view.listing(session.frame(), forced)
        return web.Response(text=text, content_type="application/json")

    async def get_variable(self, request: web.Request) -> web.Response:
        record = self.record(request)
        key, index = self.key(request, record)
        return web.json_response(await self._variable(record, key, index))

    async def _variable(self, record: ServedSession, key: VarKey, index: int
                        ) -> dict[str, Any]:
        session = record.session
        frame = session.frame()
        var = session.layout.variables[index][1]
        forced = key.kind is Kind.INPUT and key in await session.forced()
        return views.variable_view(key, var, frame.values[index],
                                   frame.quality.get(index, 0), forced)

    async def write_variable(self, request: web.Request) -> web.Response:
        record = self.record(request)
        key, index = self.key(request, record)
        body = await self.body(request)
        if "value" not in body:
            raise InvalidArgument('the body is {"value": ...}: the value to write '
                                  '(a number, true/false or a string, as the variable takes)')
        recording = self.daemon.recording
        await checks.write_value(record.session, key, body["value"],
                                 recording.written if recording is not None else None)
        await self.done(record.name)
        return web.json_response(await self._variable(record, key, index))

    async def release_input(self, request: web.Request) -> web.Response:
        record = self.record(request)
        key, index = self.key(request, record)
        if key.kind is not Kind.INPUT:
            raise InvalidArgument(f"only inputs are forced and released; {key.path} is a "
                                  f"{key.kind}")
        released = await record.session.release(key)
        if released:
            await self.daemon.inputs_released(record.name)
        await self.done(record.name)
        view = await self._variable(record, key, index)
        view["released"] = released
        return web.json_response(view)

    # -- history and events -------------------------------------------------------------

    def _store(self) -> Any:
        store = self.daemon.store
        if store is None:
            raise NotSupported("history is off ([history] enabled = false): there is "
                               "nothing recorded to read")
        return store

    async def history(self, request: web.Request) -> web.Response:
        record = self.record(request)
        key, _ = self.key(request, record)
        start, end, most, token = _page_query(request)
        result = await self._store().read_raw(series_of(record.name, key), start, end,
                                              max_values=most, continuation=token)
        items = [{"t": s.t_us / 1e6, "sim_t": s.sim_t, "value": views.json_value(s.value),
                  "status": views.status_name(s.status), "source": s.source}
                 for s in result.samples]
        return web.json_response({"items": items,
                                  "continuation": _token_text(result.continuation)})

    async def events(self, request: web.Request) -> web.Response:
        name = request.match_info["session"]
        self.daemon.touch(name)
        start, end, most, token = _page_query(request)
        result = await self._store().read_events(name, start, end, most, token)
        items = [{"t": e.t_us / 1e6, "kind": e.kind, "severity": e.severity,
                  "message": e.message} for e in result.events]
        return web.json_response({"items": items,
                                  "continuation": _token_text(result.continuation)})

    # -- HIL ----------------------------------------------------------------------------

    async def hil(self, request: web.Request) -> web.Response:
        mirror = self.daemon.hil
        peers = mirror.statistics().peers if mirror is not None else ()
        return web.json_response([_peer(p) for p in peers])

    # -- access -------------------------------------------------------------------------

    async def me(self, request: web.Request) -> web.Response:
        user = user_of(request)
        return web.json_response({"name": user.name, "role": str(user.role),
                                  "anonymous": user.name is None})

    async def login(self, request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").lower().startswith("basic "):
            raise Refused("BadIdentityTokenRejected",
                          "log in with HTTP Basic credentials (user name and password from "
                          "the users file)", headers={"WWW-Authenticate":
                                                      'Basic realm="twin-server"'})
        user = self.auth.identify(request)
        token, lifetime = self.auth.issue(user)
        log.info("web_login", user=user.name, role=str(user.role))
        return web.json_response({"token": token, "expires_in": lifetime,
                                  "name": user.name, "role": str(user.role)})

    async def logout(self, request: web.Request) -> web.Response:
        return web.json_response({"revoked": self.auth.revoke(request)})


# -- body and query fields -------------------------------------------------------------

_MISSING = object()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", object: "a value"}


def _field(body: dict[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    """``body[name]`` of ``kind`` (InvalidArgument when missing, TypeMismatch when of
    another type; a JSON integer is a number)."""
    if name not in body or body[name] is None:
        if default is not _MISSING:
            return default
        raise InvalidArgument(f"the body needs {name!r} ({_TYPE_NAMES[kind]})")
    value = body[name]
    if kind is object:
        return value
    ok = (isinstance(value, int | float) if kind is float else isinstance(value, kind)) \
        and not isinstance(value, bool)
    if not ok:
        raise TypeMismatch(f"{name!r} takes {_TYPE_NAMES[kind]} (got "
                           f"{type(value).__name__} {json.dumps(value)[:100]})")
    return float(value) if kind is float else value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise InvalidArgument(f"the request body names {key!r} twice")
        found[key] = value
    return found


def _no_constant(name: str) -> None:
    raise InvalidArgument(f"the request body holds {name}, which JSON does not allow")


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise InvalidArgument(f"the request body holds an integer of {len(text)} digits "
                              f"(at most {MAX_DIGITS})")
    return int(text)


def _time(request: web.Request, name: str) -> float | None:
    """A query time: seconds since the epoch, or ISO 8601 (with a zone)."""
    text = request.query.get(name)
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"{name}={text[:60]!r} is neither seconds since the epoch nor "
                              f"an ISO 8601 time such as 2025-01-31T12:00:00Z") from None
    if when.tzinfo is None:
        raise InvalidArgument(f"{name}={text[:60]!r} has no time zone: add Z or +01:00")
    return when.timestamp()


def _page_query(request: web.Request) -> tuple[float | None, float | None, int, bytes | None]:
    start, end = _time(request, "start"), _time(request, "end")
    if start is None and end is None:
        start = 0.0  # everything recorded, oldest first
    text = request.query.get("max", str(DEFAULT_PAGE))
    try:
        most = int(text)
    except ValueError:
        raise InvalidArgument(f"max={text[:30]!r} is not an integer") from None
    if not 1 <= most <= MAX_PAGE:
        raise InvalidArgument(f"max must be within [1, {MAX_PAGE}] (got {most})")
    token_text = request.query.get("continuation")
    token = None
    if token_text:
        try:
            token = base64.urlsafe_b64decode(token_text + "=" * (-len(token_text) % 4))
        except (binascii.Error, ValueError):
            raise InvalidArgument("continuation is not a token a previous page "
                                  "returned") from None
    return start, end, most, token


def _token_text(token: bytes | None) -> str | None:
    return base64.urlsafe_b64encode(token).decode().rstrip("=") if token else None


def _peer(peer: Any) -> dict[str, Any]:
    return {
        "name": peer.name, "endpoint": peer.endpoint, "session": peer.session,
        "state": str(peer.state), "last_error": peer.last_error,
        "reconnect_count": peer.reconnect_count, "writes_sent": peer.writes_sent,
        "values_received": peer.values_received,
        "round_trip_latency": peer.round_trip_latency,
        "bindings": [{"variable": b.variable, "direction": b.direction, "node": b.node,
                      "status": b.status, "error": b.error,
                      "value": views.json_value(b.value), "transfers": b.transfers}
                     for b in peer.bindings],
    }


# -- the table -------------------------------------------------------------------------

PAGE_QUERY = (
    Query("start", {"type": "string"}, "from: seconds since the epoch or ISO 8601 "
          "(later than end: read backward, newest first; neither start nor end: "
          "everything, oldest first)"),
    Query("end", {"type": "string"}, "until (exclusive): seconds since the epoch or ISO 8601"),
    Query("max", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
          f"most items in this page (default {DEFAULT_PAGE})"),
    Query("continuation", {"type": "string"}, "the continuation a previous page returned"),
)
_SESSION = "/api/sessions/{session}"
_VARIABLE = _SESSION + "/components/{component}/{kind}/{name}"
_NAMED = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
_PARAMETERS = {"type": "object", "description": 'as OPC UA\'s Parameters argument: '
               '{"tank": {"area": 2.0}} or {"tank.area": 2.0}',
               "additionalProperties": True}


def routes(api: Api) -> list[Route]:
    """The routes of the API proper (``routes.py``: other groups add theirs)."""
    session = views.SESSION
    run = ("BadNotFound", "BadInvalidState")
    table = [
        Route("GET", "/api/twins", api.list_twins, "listTwins", "Every twin definition",
              "twins", response=views.array_of(views.TWIN)),
        Route("POST", "/api/twins", api.define_twin, "defineTwin",
              "Define a twin from TOML, as DefineTwin", "twins", role=METHOD_ROLES["DefineTwin"],
              body={"type": "object", "required": ["definition"], "properties": {
                  "definition": {"type": "string",
                                 "description": "[twins.<name>] and its components, TOML"}}},
              response=views.TWIN, status=201,
              refusals=("BadConfigurationError", "BadBrowseNameDuplicated",
                        "BadInvalidArgument")),
        Route("GET", "/api/twins/{twin}", api.get_twin, "getTwin", "One twin definition",
              "twins", response=views.TWIN, refusals=("BadNotFound",)),
        Route("DELETE", "/api/twins/{twin}", api.remove_twin, "removeTwin",
              "Remove a twin, as RemoveTwin", "twins", role=METHOD_ROLES["RemoveTwin"],
              status=204, refusals=("BadNotFound", "BadInvalidState")),
        Route("GET", "/api/sessions", api.list_sessions, "listSessions",
              "Every session with its run state", "sessions", response=views.array_of(session)),
        Route("POST", "/api/sessions", api.create_session, "createSession",
              "Create a session of a twin with parameters, as CreateSession", "sessions",
              role=METHOD_ROLES["CreateSession"],
              body={"type": "object", "required": ["twin", "name"], "properties": {
                  "twin": {"type": "string"}, "name": {"type": "string"},
                  "parameters": _PARAMETERS}},
              response=session, status=201,
              refusals=("BadNotFound", "BadBrowseNameDuplicated", "BadInvalidArgument",
                        "BadOutOfRange", "BadTypeMismatch", "BadResourceUnavailable")),
        Route("GET", _SESSION, api.get_session, "getSession", "A session's state",
              "sessions", response=session, refusals=("BadNotFound",)),
        Route("DELETE", _SESSION, api.delete_session, "deleteSession",
              "Delete a session, as DeleteSession", "sessions",
              role=METHOD_ROLES["DeleteSession"], status=204,
              refusals=("BadNotFound", "BadInvalidState")),
    ]
    for command, method in (("start", "Start"), ("suspend", "Suspend"), ("resume", "Resume"),
                            ("halt", "Halt")):
        table.append(Route("POST", f"{_SESSION}/{command}", api._control(command),
                           f"{command}Session", f"{method} the session", "sessions",
                           role=METHOD_ROLES[method], response=session, refusals=run))
    table += [
        Route("POST", f"{_SESSION}/step", api.step, "stepSession",
              "Step a suspended (or Ready) session count ticks, as Step; answered once done "
              "or after half a second with the rest running on (steps_remaining)", "sessions",
              role=METHOD_ROLES["Step"], body={"type": "object", "properties": {
                  "count": {"type": "integer", "minimum": 1,
                            "maximum": checks.MAX_STEP_COUNT}}},
              response=session, refusals=(*run, "BadOutOfRange", "BadTypeMismatch")),
        Route("POST", f"{_SESSION}/reset", api.reset, "resetSession",
              "Reset, with parameters, as Reset", "sessions", role=METHOD_ROLES["Reset"],
              body={"type": "object", "properties": {"parameters": _PARAMETERS}},
              response=session, refusals=(*run, "BadOutOfRange", "BadInvalidArgument")),
        Route("POST", f"{_SESSION}/parameters", api.set_parameters, "setParameters",
              "Set parameters, as SetParameters", "sessions",
              role=METHOD_ROLES["SetParameters"],
              body={"type": "object", "required": ["parameters"],
                    "properties": {"parameters": _PARAMETERS}},
              response=session,
              refusals=(*run, "BadOutOfRange", "BadNotWritable", "BadInvalidArgument")),
        Route("PUT", f"{_SESSION}/realtime-factor", api.set_realtime_factor,
              "setRealtimeFactor", "Write RealtimeFactor (0: as fast as possible)",
              "sessions", role=Role.OPERATOR,
              body={"type": "object", "required": ["value"],
                    "properties": {"value": {"type": "number", "minimum": 0,
                                             "maximum": checks.MAX_REALTIME_FACTOR}}},
              response=session, refusals=("BadNotFound", "BadOutOfRange", "BadTypeMismatch")),
        Route("POST", f"{_SESSION}/snapshots", api.snapshot, "takeSnapshot",
              "Take a snapshot, as Snapshot", "sessions", role=METHOD_ROLES["Snapshot"],
              response={"type": "object", "required": ["id"],
                        "properties": {"id": {"type": "string"}}},
              status=201, refusals=("BadNotFound", "BadNotSupported")),
        Route("POST", f"{_SESSION}/restore", api.restore, "restoreSnapshot",
              "Restore a snapshot, as Restore", "sessions", role=METHOD_ROLES["Restore"],
              body={"type": "object", "required": ["snapshot"],
                    "properties": {"snapshot": {"type": "string"}}},
              response=session, refusals=("BadNotFound", "BadInvalidState")),
        Route("POST", f"{_SESSION}/fork", api.fork, "forkSession",
              "Fork a session in its current state, as Fork", "sessions",
              role=METHOD_ROLES["Fork"],
              body={"type": "object", "required": ["name"], "properties": {
                  "name": {"type": "string"},
                  "realtime_factor": {"type": "number", "minimum": 0,
                                      "maximum": checks.MAX_REALTIME_FACTOR}}},
              response=session, status=201,
              refusals=("BadNotFound", "BadBrowseNameDuplicated", "BadOutOfRange")),
        Route("POST", f"{_SESSION}/release-inputs", api.release_inputs, "releaseInputs",
              "Release every forced input, as ReleaseInputs", "variables",
              role=METHOD_ROLES["ReleaseInputs"],
              response={"type": "object", "required": ["released"], "properties": {
                  "released": {"type": "array", "items": {"type": "string"}}}},
              refusals=("BadNotFound",)),
        Route("GET", f"{_SESSION}/variables", api.list_variables, "listVariables",
              "Every variable of the session with its value, unit and range", "variables",
              response=views.array_of(views.VARIABLE), refusals=("BadNotFound",)),
        Route("GET", _VARIABLE, api.get_variable, "readVariable", "Read one variable",
              "variables", response=views.VARIABLE, refusals=("BadNotFound",)),
        Route("PUT", _VARIABLE, api.write_variable, "writeVariable",
              "Write an input (forcing it), a state or a parameter", "variables",
              role=Role.OPERATOR,
              body={"type": "object", "required": ["value"],
                    "properties": {"value": views.SCALAR}},
              response=views.VARIABLE,
              refusals=("BadNotFound", "BadOutOfRange", "BadTypeMismatch", "BadNotWritable")),
        Route("DELETE", _VARIABLE, api.release_input, "releaseInput",
              "Release a forced input, as ReleaseInput", "variables",
              role=METHOD_ROLES["ReleaseInput"], response=views.VARIABLE,
              refusals=("BadNotFound", "BadInvalidArgument")),
        Route("GET", _VARIABLE + "/history", api.history, "readHistory",
              "A variable's recorded values over a time range, a page at a time", "history",
              query=PAGE_QUERY, response=views.page_of(views.SAMPLE),
              refusals=("BadNotFound", "BadInvalidArgument", "BadNotSupported")),
        Route("GET", f"{_SESSION}/events", api.events, "readEvents",
              "A session's events over a time range, a page at a time", "history",
              query=PAGE_QUERY, response=views.page_of(views.EVENT),
              refusals=("BadInvalidArgument", "BadNotSupported")),
        Route("GET", "/api/hil", api.hil, "listHilPeers", "HIL peers' link health and bindings",
              "hil", response=views.array_of({"type": "object"})),
        Route("GET", "/api/me", api.me, "whoAmI", "The user of this request and its role",
              "access", response={"type": "object", "properties": {
                  "name": {"type": "string", "nullable": True}, "role": {"type": "string"},
                  "anonymous": {"type": "boolean"}}}),
        Route("POST", "/api/login", api.login, "login",
              "A token for HTTP Basic credentials (Authorization: Bearer <token>)", "access",
              role=None, response={"type": "object", "required": ["token"], "properties": {
                  "token": {"type": "string"}, "expires_in": {"type": "number"},
                  "name": {"type": "string"}, "role": {"type": "string"}}}),
        Route("POST", "/api/logout", api.logout, "logout", "Revoke this request's token",
              "access", response={"type": "object", "properties": {
                  "revoked": {"type": "boolean"}}}),
    ]
    return table
