"""The methods of a session node and of TwinServer.

Session: Start, Suspend, Resume, Halt, Reset([Parameters]), Step(Count),
SetParameters(Parameters), Snapshot() -> SnapshotId, Restore(SnapshotId),
Fork(Name, RealtimeFactor) -> SessionNodeId, ReleaseInput(Name),
ReleaseInputs() -> Released, InjectFault(Target, Kind, Parameters, [Duration], [Id])
-> FaultId, ClearFault(Id), ClearFaults() -> Cleared (checks: ``runtime/checks.py``;
the Faults folder: ``faults.py``).
TwinServer: CreateSession(Twin, Name, Parameters) -> SessionNodeId,
DeleteSession(Name), DefineTwin(Definition) -> TwinNodeId, RemoveTwin(Name).

asyncua's MethodService turns any exception from a callback into
BadUnexpectedError, so callbacks here never raise: they return a
``ua.CallMethodResult`` that MethodService passes through unchanged.

Status codes. The call's StatusCode is

* BadArgumentsMissing / BadTooManyArguments for a wrong count;
* BadInvalidArgument for an argument of the wrong type (its
  InputArgumentResult is BadTypeMismatch) or a malformed one (bad JSON, a name
  that cannot be a NodeId part), and for a String argument longer than
  ``server.limits.max_argument_size`` (DefineTwin's Definition:
  ``max_definition_size``) or JSON/TOML nested deeper than
  ``max_nesting_depth``, checked for every method before it runs;
* otherwise the refusal's own code: BadOutOfRange (a value outside its range),
  BadNotFound (an unknown twin, session, component, parameter or snapshot),
  BadBrowseNameDuplicated (a taken name), BadResourceUnavailable (beyond
  ``server.max_sessions``), BadNotWritable (a fixed parameter while Running),
  BadInvalidState (the wrong run state, or a twin still in use),
  BadConfigurationError (DefineTwin with an invalid definition), BadNotSupported
  (a model that cannot snapshot).

Messages. When a refusal concerns one argument, that argument's
InputArgumentResult carries the code and its InputArgumentDiagnosticInfo the
message as AdditionalInfo. A refusal of the call as a whole (the wrong state,
too many sessions) carries the message in every argument's DiagnosticInfo, and
for a method without arguments in a one-element InputArgumentDiagnosticInfos.
Every refusal is also logged with its message. Nothing changes on a refusal.
Logs show an excerpt of each argument and message (``logs.excerpt``), never a
client's whole value.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from asyncua import ua

from twin_server.config.nesting import MAX_DEPTH, TooDeep, json_too_deep, toml_too_deep
from twin_server.config.security import LimitsConfig
from twin_server.engine.manager import parse_parameters
from twin_server.errors import (
    AlreadyExists,
    ConfigError,
    ConfigErrors,
    InvalidArgument,
    NotFound,
    NotSupported,
    TwinServerError,
    TypeMismatch,
    ValueRejected,
)
from twin_server.logs import excerpt
from twin_server.opcua.nodes import Argument
from twin_server.opcua.runtime import Runtime
from twin_server.opcua.status import GOOD, diagnostic, status_code, status_of
from twin_server.opcua.tree import (
    METHODS,
    SERVER_METHODS,
    MethodSpec,
)
from twin_server.runtime import checks
from twin_server.runtime.host import HostedSession

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: seconds a Step call waits for its ticks before it answers (``runtime/checks.py``)
STEP_WAIT = checks.STEP_WAIT

_INTEGER_TYPES = frozenset({
    ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16,
    ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64,
})
_FLOAT_TYPES = frozenset({ua.VariantType.Float, ua.VariantType.Double})
#: refusals that say an argument is malformed rather than refused on its merits
_MALFORMED = (InvalidArgument, TypeMismatch)
#: most characters of a refusal's message in the log (the client gets all of it)
LOGGED_MESSAGE = 1000
_DEFAULT_LIMITS = LimitsConfig()


@dataclass(frozen=True, slots=True)
class _Text:
    """What a String argument holds, when it is more than a name: its format, the
    setting that bounds its size, and how deep it needs to nest (for the message)."""

    format: str  # "JSON" or "TOML"
    size_setting: str
    needs: str


#: String arguments, by name, that carry a document (others are names and ids)
_TEXTS = {
    "Parameters": _Text("JSON", "max_argument_size",
                        'parameters need two levels, as in {"tank": {"area": 2.0}}'),
    "Definition": _Text("TOML", "max_definition_size",
                        "a twin needs about seven ([twins.t.components.c] and its options)"),
    "Scenario": _Text("TOML", "max_definition_size",
                      "a scenario needs three ([[steps]] with a table in it)"),
}


class ArgumentError(Exception):
    """One input argument refused: its index, status and message."""

    def __init__(self, index: int, error: TwinServerError) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


MethodCallback = Callable[..., Awaitable[ua.CallMethodResult]]
Action = Callable[..., Awaitable[list[ua.Variant] | None]]
#: which argument a refusal raised by an action concerns (None: the call as a whole)
Attribution = Callable[[TwinServerError], int | None]


@dataclass(frozen=True, slots=True)
class MethodStatistics:
    calls: int
    refused: int


@dataclass(slots=True)
class MethodCounter:
    calls: int = 0
    refused: int = 0


@dataclass(slots=True)
class _Call:
    """What one callback needs besides its action."""

    spec: MethodSpec
    subject: str  # the session's name, or "TwinServer"
    counter: MethodCounter
    after: Callable[[], Awaitable[None]] | None = None
    before: Callable[[], None] | None = None
    attribute: Attribution | None = None
    log_context: dict[str, Any] = field(default_factory=dict)
    limits: LimitsConfig = _DEFAULT_LIMITS


#: characters of String arguments above which a call's arguments are checked in a thread
_LONG_TEXT = 65_536


def make_callback(call: _Call, action: Action) -> MethodCallback:
    """An asyncua method callback around ``action`` that never raises."""
    spec = call.spec

    async def callback(parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
        call.counter.calls += 1
        if call.before is not None:
            call.before()
        result = ua.CallMethodResult()
        try:
            if sum(len(a.Value) for a in args if isinstance(a.Value, str)) > _LONG_TEXT:
                # (a twin of 20,000 components is 1.6 MB of TOML: its nesting check
                # takes a second, which the event loop does not wait for)
                values = await asyncio.to_thread(check_arguments, spec, args, call.limits)
            else:
                values = check_arguments(spec, args, call.limits)
            outputs = await action(*values)
        except ArgumentError as exc:
            result = _refuse(call, args, exc.error, exc.index)
        except TwinServerError as exc:
            index = call.attribute(exc) if call.attribute is not None else None
            if index is not None and index >= len(args):
                index = None
            result = _refuse(call, args, exc, index)
        except Exception:
            call.counter.refused += 1
            log.exception("method_failed", method=spec.name, **call.log_context)
            result.StatusCode = ua.StatusCode(ua.StatusCodes.BadInternalError)
        else:
            result.OutputArguments = outputs or []
            log.info("method_called", method=spec.name,
                     arguments=[_loggable(a.Value) for a in args] or None,
                     outputs=[_loggable(o.Value) for o in outputs] if outputs else None,
                     **call.log_context)
        if not result.InputArgumentResults:
            result.InputArgumentResults = [GOOD for _ in args]
        if call.after is not None:
            await call.after()
        return result
    return callback


def _refuse(call: _Call, args: Sequence[ua.Variant], error: TwinServerError,
            index: int | None) -> ua.CallMethodResult:
    """The result of a refused call; ``index`` names the argument concerned."""
    spec = call.spec
    message = str(error)
    code = status_of(error)
    results = [GOOD for _ in args]
    if index is None:
        call_status = code
        diagnostics = [diagnostic(message) for _ in args] or [diagnostic(message)]
    else:
        diagnostics = [ua.DiagnosticInfo() for _ in args]
        if index < len(args):
            results[index] = code
            diagnostics[index] = diagnostic(message)
        # a wrong count has its own codes; a malformed argument is a bad argument
        if isinstance(error, InvalidArgument) and index >= len(args):
            call_status = status_code("BadArgumentsMissing")
        elif isinstance(error, InvalidArgument) and len(args) > len(spec.inputs):
            call_status = status_code("BadTooManyArguments")
        elif isinstance(error, _MALFORMED):
            call_status = status_code("BadInvalidArgument")
        else:
            call_status = code
    call.counter.refused += 1
    log.info("method_refused", method=spec.name, status=call_status.name,
             reason=excerpt(message, LOGGED_MESSAGE), **call.log_context)
    return ua.CallMethodResult(StatusCode=call_status, InputArgumentResults=results,
                               InputArgumentDiagnosticInfos=diagnostics)


def _loggable(value: Any) -> Any:
    """An argument's value for the log: a number as it is, anything else an excerpt."""
    return value if isinstance(value, bool | int | float) or value is None else excerpt(value)


def check_arguments(spec: MethodSpec, args: Sequence[ua.Variant],
                    limits: LimitsConfig = _DEFAULT_LIMITS) -> list[Any]:
    """The Python values of ``args``, or ArgumentError naming the first bad one:
    a wrong count or type, or a String argument too long or nested too deep for
    ``limits``."""
    least = len(spec.inputs) - spec.optional
    if len(args) < least:
        missing = ", ".join(a.name for a in spec.inputs[len(args):least])
        raise ArgumentError(len(args), InvalidArgument(
            f"{spec.name} takes {_count(spec)} argument(s); missing {missing}"))
    if len(args) > len(spec.inputs):
        raise ArgumentError(len(spec.inputs), InvalidArgument(
            f"{spec.name} takes {_count(spec)} argument(s) (got {len(args)})"))
    values: list[Any] = []
    for index, (arg, variant) in enumerate(zip(spec.inputs, args, strict=False)):
        value = variant.Value
        if arg.array:  # (InjectLinkFault's Bindings: a one-dimensional array)
            values.append(_array(spec, index, arg, variant, limits))
            continue
        if variant.is_array or isinstance(value, list | tuple):
            raise ArgumentError(index, TypeMismatch(
                f"{spec.name} argument {arg.name} takes a scalar {arg.vtype.name} "
                f"(got an array)"))
        if arg.vtype in _INTEGER_TYPES:
            # clients often send a plain integer as Int64; any integer type will do
            if variant.VariantType not in _INTEGER_TYPES:
                raise ArgumentError(index, TypeMismatch(
                    f"{spec.name} argument {arg.name} takes an integer "
                    f"({arg.vtype.name}) (got {variant.VariantType.name} {_shown(value)})"))
        elif arg.vtype is ua.VariantType.Double:
            if variant.VariantType not in _FLOAT_TYPES | _INTEGER_TYPES:
                raise ArgumentError(index, TypeMismatch(
                    f"{spec.name} argument {arg.name} takes a Double "
                    f"(got {variant.VariantType.name} {_shown(value)})"))
            value = float(value)
        elif variant.VariantType != arg.vtype:
            raise ArgumentError(index, TypeMismatch(
                f"{spec.name} argument {arg.name} takes a {arg.vtype.name} "
                f"(got {variant.VariantType.name})"))
        if arg.vtype is ua.VariantType.String:
            if value is None:
                value = ""  # a null String is an empty one
            _check_text(spec, index, value, limits)
        values.append(value)
    return values


def _array(spec: MethodSpec, index: int, arg: Argument, variant: ua.Variant,
           limits: LimitsConfig) -> list[Any]:
    """An array argument's values (a null array is an empty one); String elements
    held to the size limit, as scalars are."""
    value = variant.Value
    if value is None and variant.VariantType in (arg.vtype, ua.VariantType.Null):
        return []
    if not isinstance(value, list | tuple) or variant.VariantType != arg.vtype:
        got = f"an array of {variant.VariantType.name}" if isinstance(value, list | tuple) \
            else f"a scalar {variant.VariantType.name}"
        raise ArgumentError(index, TypeMismatch(
            f"{spec.name} argument {arg.name} takes an array of {arg.vtype.name} (got {got})"))
    items = [("" if v is None else v) if arg.vtype is ua.VariantType.String else v
             for v in value]
    if arg.vtype is ua.VariantType.String:
        _check_text(spec, index, "".join(items), limits)
    return items


def _shown(value: Any) -> str:
    return repr(excerpt(value, 100)) if isinstance(value, str) else excerpt(value, 100)


def _check_text(spec: MethodSpec, index: int, value: str, limits: LimitsConfig) -> None:
    """Refuse a String argument longer than its setting allows, or a document in it
    (JSON parameters, a TOML definition) nested deeper than max_nesting_depth:
    before anything parses it (Python's parsers recurse)."""
    name = spec.inputs[index].name
    text = _TEXTS.get(name)
    setting = text.size_setting if text is not None else "max_argument_size"
    limit: int = getattr(limits, setting)
    # (UTF-8 takes 1 to 4 bytes a character: count them only when that could matter)
    size = len(value)
    if 4 * size > limit:
        size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ArgumentError(index, InvalidArgument(
            f"{spec.name} argument {name} is {size} bytes long; at most {limit} are accepted "
            f"(server.limits.{setting}; raise it there if a legitimate {spec.name} "
            f"needs more)"))
    if text is None:
        return
    depth = limits.max_nesting_depth
    find = json_too_deep if text.format == "JSON" else toml_too_deep
    too_deep: TooDeep | None = find(value, depth)
    if too_deep is not None:
        raise ArgumentError(index, InvalidArgument(
            f"{spec.name} argument {name} nests more than {depth} levels deep ({text.format}, "
            f"at line {too_deep.line}, column {too_deep.column}); {text.needs} "
            f"(server.limits.max_nesting_depth sets the limit)"))


def _count(spec: MethodSpec) -> str:
    most = len(spec.inputs)
    return f"{most - spec.optional} to {most}" if spec.optional else str(most)


def _argument(index: int, check: Callable[[Any], T], value: Any) -> T:
    """``check(value)`` (a shared check, ``runtime/checks.py``), its refusal that of
    argument ``index``."""
    try:
        return check(value)
    except TwinServerError as exc:
        raise ArgumentError(index, exc) from None


def _parameters(text: str, index: int = 0) -> dict[str, dict[str, Any]]:
    try:
        # (check_arguments held the text to max_nesting_depth, at most MAX_DEPTH)
        return parse_parameters(text, max_depth=MAX_DEPTH)
    except InvalidArgument as exc:
        raise ArgumentError(index, exc) from None


class _Counted:
    """The call and refusal counts of a set of method callbacks."""

    _counter: MethodCounter

    @property
    def calls(self) -> int:
        return self._counter.calls

    @property
    def refused(self) -> int:
        return self._counter.refused


class SessionMethods(_Counted):
    """The method callbacks of one session, each an awaited command to the session's
    host (``HostedSession``: in this process or a worker; our exceptions come back
    with their fields, so the status codes are the same). ``changed`` runs after
    every call so that State, StepCount, SimTime and the session's events show the
    outcome at once; ``runtime`` (the daemon) serves Snapshot, Restore and Fork and
    is told of every call (``touch``)."""

    def __init__(self, session: HostedSession, changed: Callable[[], Awaitable[None]], *,
                 runtime: Runtime | None = None,
                 session_nodeid: Callable[[str], ua.NodeId] | None = None,
                 limits: LimitsConfig = _DEFAULT_LIMITS) -> None:
        self.session = session
        self._limits = limits
        self._changed = changed
        self._runtime = runtime
        self._session_nodeid = session_nodeid
        self._counter = MethodCounter()

    def callbacks(self) -> dict[str, MethodCallback]:
        session = self.session
        actions: dict[str, tuple[Action, Attribution | None]] = {
            "Start": (self._run(session.start), None),
            "Suspend": (self._run(session.suspend), None),
            "Resume": (self._run(session.resume), None),
            "Halt": (self._run(session.halt), None),
            "Reset": (self._reset, _value_refusals),
            "ReleaseInput": (self._release_input, _name_refusals),
            "ReleaseInputs": (self._release_inputs, None),
            "Step": (self._step, None),
            "SetParameters": (self._set_parameters, _value_refusals),
            "Snapshot": (self._snapshot, None),
            "Restore": (self._restore, _restore_refusals),
            "Fork": (self._fork, _fork_refusals),
            "InjectFault": (self._inject_fault, None),
            "ClearFault": (self._clear_fault, _not_found_refusals),
            "ClearFaults": (self._clear_faults, None),
        }
        callbacks: dict[str, MethodCallback] = {}
        for spec in METHODS:
            action, attribution = actions[spec.name]
            call = _Call(spec, session.name, self._counter, after=self._changed,
                         before=self._touch, attribute=attribution,
                         log_context={"session": session.name}, limits=self._limits)
            callbacks[spec.name] = make_callback(call, action)
        return callbacks

    def _touch(self) -> None:
        if self._runtime is not None:
            self._runtime.touch(self.session.name)

    def _need_runtime(self, method: str) -> Runtime:
        if self._runtime is None:
            raise NotSupported(f"{method} needs the daemon; this server runs without one")
        return self._runtime

    @staticmethod
    def _run(action: Callable[[], Awaitable[None]]) -> Action:
        async def run() -> None:
            await action()
        return run

    async def _reset(self, parameters: str = "") -> None:
        await self.session.reset(_parameters(parameters))
        await self._released()

    async def _release_input(self, name: str) -> None:
        key = _argument(0, checks.input_key, name)
        if await self.session.release(key):
            await self._released()

    async def _release_inputs(self) -> list[ua.Variant]:
        released = await self.session.release_all()
        await self._released()
        return [ua.Variant([f"{k.component}.{k.name}" for k in released],
                           ua.VariantType.String, is_array=True)]

    async def _released(self) -> None:
        """Forces were released: HIL bindings force their inputs again (the daemon's)."""
        if self._runtime is not None:
            await self._runtime.inputs_released(self.session.name)

    async def _set_parameters(self, parameters: str) -> None:
        await self.session.set_parameters(_parameters(parameters))

    async def _step(self, count: int) -> None:
        _argument(0, checks.step_count, count)
        # it steps in the background, in slices (runtime/stepping.py); the call
        # answers once it is done, or after STEP_WAIT with the Step running on
        await self.session.step(count, wait=STEP_WAIT)

    async def _snapshot(self) -> list[ua.Variant]:
        snapshot_id = await self._need_runtime("Snapshot").take_snapshot(self.session.name)
        return [ua.Variant(snapshot_id, ua.VariantType.String)]

    async def _restore(self, snapshot_id: str) -> None:
        await self._need_runtime("Restore").restore_snapshot(self.session.name, snapshot_id)

    async def _fork(self, name: str, realtime_factor: float) -> list[ua.Variant]:
        _argument(1, checks.fork_factor, realtime_factor)
        runtime = self._need_runtime("Fork")
        child = await runtime.fork_session(self.session.name, name, realtime_factor)
        assert self._session_nodeid is not None
        return [ua.Variant(self._session_nodeid(child.name), ua.VariantType.NodeId)]


    async def _inject_fault(self, target: str, kind: str, parameters: str,
                            duration: float = 0.0, fault_id: str = "") -> list[ua.Variant]:
        try:
            injected = await checks.inject_fault(self.session, target, kind, parameters,
                                                 duration, fault_id)
        except checks.ArgumentRefused as exc:
            raise ArgumentError(exc.index, exc.error) from None
        return [ua.Variant(injected, ua.VariantType.String)]

    async def _clear_fault(self, fault_id: str) -> None:
        await self.session.clear_fault(fault_id)

    async def _clear_faults(self) -> list[ua.Variant]:
        cleared = await self.session.clear_faults()
        return [ua.Variant(cleared, ua.VariantType.String, is_array=True)]


def _not_found_refusals(exc: TwinServerError) -> int | None:
    return 0 if isinstance(exc, NotFound) else None


def _value_refusals(exc: TwinServerError) -> int | None:
    """Reset and SetParameters: a refused value concerns the Parameters argument."""
    return 0 if isinstance(exc, ValueRejected) else None


def _restore_refusals(exc: TwinServerError) -> int | None:
    return 0 if isinstance(exc, NotFound | InvalidArgument) else None


def _fork_refusals(exc: TwinServerError) -> int | None:
    return 0 if isinstance(exc, AlreadyExists | InvalidArgument) else None


class ServerMethods(_Counted):
    """CreateSession, DeleteSession, DefineTwin, RemoveTwin and ReloadConfig on TwinServer."""

    def __init__(self, runtime: Runtime, *, session_nodeid: Callable[[str], ua.NodeId],
                 twin_nodeid: Callable[[str], ua.NodeId],
                 after: Callable[[], Awaitable[None]] | None = None,
                 limits: LimitsConfig = _DEFAULT_LIMITS) -> None:
        self._runtime = runtime
        self._limits = limits
        self._session_nodeid = session_nodeid
        self._twin_nodeid = twin_nodeid
        self._after = after
        self._counter = MethodCounter()

    def callbacks(self) -> dict[str, MethodCallback]:
        actions: dict[str, tuple[Action, Attribution | None]] = {
            "CreateSession": (self._create, _create_refusals),
            "DeleteSession": (self._delete, _name_refusals),
            "DefineTwin": (self._define, _name_refusals),
            "RemoveTwin": (self._remove, _name_refusals),
            "ReloadConfig": (self._reload, None),
        }
        callbacks: dict[str, MethodCallback] = {}
        for spec in SERVER_METHODS:
            action, attribution = actions[spec.name]
            call = _Call(spec, "TwinServer", self._counter, after=self._after,
                         attribute=attribution, limits=self._limits)
            callbacks[spec.name] = make_callback(call, action)
        return callbacks

    async def _create(self, twin: str, name: str, parameters: str) -> list[ua.Variant]:
        overrides = _parameters(parameters, 2)
        try:
            session = await self._runtime.create_session(twin, name, overrides)
        except NotFound as exc:
            # an unknown twin, else an unknown component or parameter
            raise ArgumentError(0 if twin not in self._runtime.twins else 2, exc) from None
        return [ua.Variant(self._session_nodeid(session.name), ua.VariantType.NodeId)]

    async def _delete(self, name: str) -> None:
        await self._runtime.delete_session(name)

    async def _define(self, definition: str) -> list[ua.Variant]:
        _argument(0, checks.definition, definition)
        try:
            twin = await self._runtime.define_twin(definition)
        except ConfigErrors as group:
            # every error of the definition, one per line, as `twin-server check` prints
            raise ArgumentError(0, ConfigError(str(group))) from None
        return [ua.Variant(self._twin_nodeid(twin.name), ua.VariantType.NodeId)]

    async def _remove(self, name: str) -> None:
        await self._runtime.remove_twin(name)

    async def _reload(self) -> list[ua.Variant]:
        try:
            summary = await self._runtime.reload_config()
        except ConfigErrors as group:
            raise ConfigError(f"the config file was not reloaded:\n{group}") from None
        return [ua.Variant(summary, ua.VariantType.String)]


def _create_refusals(exc: TwinServerError) -> int | None:
    if isinstance(exc, AlreadyExists | InvalidArgument):
        return 1  # the name (the parameters' form was checked before)
    if isinstance(exc, ValueRejected) and exc.status != "BadResourceUnavailable":
        return 2  # a parameter's value
    return None


def _name_refusals(exc: TwinServerError) -> int | None:
    """A one-argument method's refusals concern that argument, except state ones."""
    return 0 if isinstance(exc, ValueRejected) else None


def method_statistics(methods: Sequence[SessionMethods | ServerMethods]) -> MethodStatistics:
    return MethodStatistics(sum(m.calls for m in methods), sum(m.refused for m in methods))

