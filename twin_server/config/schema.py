"""The shape of a config file, as frozen pydantic models that forbid unknown keys.

This checks structure and plain values only, strictly: TOML is typed, so a string
where a number belongs (``step_size = "0.1"``) is an error, not a conversion. What
needs the model registry or the connection graph (unknown models, parameters and
ports, doubly-connected inputs, algebraic loops) is checked by
``twin_server.engine.twin.compile_twin``; ``runtime.compile`` runs both (through
``config.loader``) and reports every error at once.

Example (``configs/demo.toml`` is the full one)::

    [server]
    endpoint = "opc.tcp://127.0.0.1:4840/twin-server"

    [twins.tank_level]
    connections = ["tank.level -> controller.measurement", "controller.output -> tank.inflow"]

    [twins.tank_level.components.tank]
    model = "water_tank"
    parameters = { area = 1.5, initial_level = 0.5 }

    [twins.tank_level.components.controller]
    model = "pid"
    parameters = { kp = 0.2, ki = 0.004, output_max = 0.05 }
    inputs = { setpoint = 1.0 }

    [sessions.tank]
    twin = "tank_level"
    step_size = 0.01
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    StringConstraints,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from twin_server.config.security import LimitsConfig, Policy, SecurityConfig, canonical_policy

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=64)]
"""Names of twins, components, sessions and variables: they become NodeId parts,
so no dots, slashes or spaces."""


def _scalar(value: Any) -> float | int | bool | str:
    # One plain check instead of a float|int|bool|str union: a union reports four
    # errors for one bad value. The model's Variable.coerce types it later.
    if isinstance(value, bool | int | float | str):
        return value
    raise PydanticCustomError("scalar_type", "expected a number, boolean or string")


Scalar = Annotated[
    float | int | bool | str,
    PlainValidator(_scalar),
    WithJsonSchema({"type": ["number", "integer", "boolean", "string"]}),
]
"""A variable's value as written in the file: typed against the model at compile time."""


def _option(value: Any) -> float | int | bool | str | tuple[str, ...]:
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return _scalar(value)


Option = Annotated[
    float | int | bool | str | tuple[str, ...],
    PlainValidator(_option),
    WithJsonSchema({"type": ["number", "integer", "boolean", "string", "array"]}),
]
"""A model setting: a scalar or a list of names (an FMU's ``states``)."""

_CONNECTION = re.compile(
    r"^\s*(?P<src>[A-Za-z_]\w*)\.(?P<src_port>[A-Za-z_]\w*)\s*->\s*"
    r"(?P<dst>[A-Za-z_]\w*)\.(?P<dst_port>[A-Za-z_]\w*)\s*$"
)


class _Frozen(BaseModel):
    # strict: no str -> float or float -> str conversions (ints are still taken
    # for floats); allow_inf_nan=False: `step_size = inf` is a mistake, not a value.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class ServerConfig(_Frozen):
    """The OPC UA endpoint and the daemon's own settings."""

    endpoint: str = Field(
        "opc.tcp://127.0.0.1:4840/twin-server",
        pattern=r"^opc\.tcp://[^/:]+(:\d{1,5})?(/.*)?$",
        description="opc.tcp URL the server binds; port 0 picks a free one (tests)",
    )
    application_name: str = "twin-server"
    application_uri: str = "urn:twin-server:server"
    state_dir: str = Field(
        default_factory=lambda: os.environ.get("STATE_DIRECTORY", "var"),
        description="where the database, FMU cache and PKI live (relative to the cwd); "
        "default $STATE_DIRECTORY (set by systemd's StateDirectory=), else 'var'",
    )
    fmu_dirs: tuple[Annotated[str, StringConstraints(min_length=1)], ...] | None = Field(
        None,
        description="the folders (and their subfolders) FMUs may be loaded from, by the "
                    "config file and by clients (DefineTwin); relative entries are relative "
                    "to the config file's folder; default: the config file's folder; [] "
                    "allows none (config/fmu_files.py)")
    scenario_dirs: tuple[Annotated[str, StringConstraints(min_length=1)], ...] | None = Field(
        None,
        description="the folders (and their subfolders) RunScenario may read scenario files "
                    "from; relative entries are relative to the config file's folder; "
                    "default: the config file's folder; [] allows none (scenarios/service.py)")
    scenario_reports: int = Field(
        20, ge=1, le=1000,
        description="finished RunScenario runs kept under Scenarios, with their reports")
    campaign_scheduler: str | None = Field(
        None, pattern=r"^(tcp|tls|inproc|ucx)://\S+$",
        description="a Dask scheduler's address (tcp://HOST:PORT) RunCampaign runs "
                    "campaigns on; default: a local cluster of campaign_workers processes "
                    "at a lower priority than the session workers (campaigns/service.py)")
    campaign_workers: int | None = Field(
        None, ge=1, le=256,
        description="worker processes of RunCampaign's local cluster (default: one per CPU)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_sessions: int = Field(100, ge=1, le=100_000,
                              description="most sessions at once, config and client ones together")
    session_idle_timeout: float = Field(
        3600.0, ge=0,
        description="seconds after which a client-created session nobody reads, writes, "
                    "subscribes to or calls is deleted; 0 = never",
    )
    workers: int | None = Field(
        None, ge=0, le=256,
        description="worker processes that step the sessions (default: one per CPU); "
                    "0 steps them in the server's own process (debugging, tests)")
    hang_timeout: float = Field(
        5.0, gt=0, le=3600,
        description="seconds a Running session's tick may stand still before its worker "
                    "is taken for hung, killed and replaced (workers > 0)")
    worker_scheduling: Literal["realtime", "normal"] = Field(
        "realtime",
        description="how the worker processes ask the kernel for CPU time: 'realtime' "
                    "(SCHED_FIFO at worker_priority, so that a tick wakes on time whatever "
                    "else runs; where the kernel does not permit it, a lower nice value or "
                    "normal scheduling, logged once as worker_scheduling_fallback with how "
                    "to grant it) or 'normal' (as any process); workers > 0")
    worker_priority: int = Field(
        10, ge=1, le=49,
        description="the SCHED_FIFO priority of worker_scheduling = 'realtime' (1-49: "
                    "below the kernel's threaded interrupts at 50; a soft PLC's real-time "
                    "tasks on the same machine should stay above it); grant it with "
                    "systemd's LimitRTPRIO= at least this value")
    security: SecurityConfig = Field(
        default_factory=SecurityConfig,
        description="endpoints, certificates, users and anonymous access ([server.security])")
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig,
        description="bounds on what clients may hold ([server.limits])")

    @field_validator("fmu_dirs", "scenario_dirs", mode="before")
    @classmethod
    def _array_as_tuple(cls, value: object) -> object:
        # TOML arrays arrive as lists; strict mode takes only tuples for a tuple field.
        return tuple(value) if isinstance(value, list) else value


class ConnectionSpec(_Frozen):
    """``"src.port -> dst.port"`` parsed; kept as the parts the graph needs."""

    source: Name
    source_port: Name
    target: Name
    target_port: Name

    @classmethod
    def parse(cls, text: str) -> ConnectionSpec:
        m = _CONNECTION.match(text)
        if m is None:
            raise ValueError(
                f"a connection is written 'component.output -> component.input' (got {text!r})"
            )
        return cls(
            source=m["src"], source_port=m["src_port"], target=m["dst"], target_port=m["dst_port"]
        )

    def __str__(self) -> str:
        return f"{self.source}.{self.source_port} -> {self.target}.{self.target_port}"


def _connection(value: Any) -> Any:
    if isinstance(value, str):
        m = _CONNECTION.match(value)
        if m is None:
            raise PydanticCustomError(
                "connection_syntax",
                "a connection is written 'component.output -> component.input' (got {text})",
                {"text": repr(value)},
            )
        return {
            "source": m["src"],
            "source_port": m["src_port"],
            "target": m["dst"],
            "target_port": m["dst_port"],
        }
    if isinstance(value, ConnectionSpec):
        return value
    raise PydanticCustomError(
        "connection_type", "expected a string 'component.output -> component.input'"
    )


class ComponentConfig(_Frozen):
    """One component of a twin: its model, parameter values, initial states and
    default values of its unconnected inputs."""

    model: Name
    description: str = ""
    parameters: dict[Name, Scalar] = Field(default_factory=dict)
    initial: dict[Name, Scalar] = Field(default_factory=dict, description="initial state values")
    inputs: dict[Name, Scalar] = Field(
        default_factory=dict, description="values of unconnected inputs"
    )
    options: dict[str, Option] = Field(
        default_factory=dict,
        description="model settings (an FMU's path, relative to the config file's folder)",
    )


class AlarmConfig(_Frozen):
    """An alarm on one variable (``[twins.<t>.alarms.<name>]``, overridden by name in
    ``[sessions.<s>.alarms.<name>]``): a limit alarm (any of ``high_high``, ``high``,
    ``low``, ``low_low``) on a number, or an off-normal alarm (``normal``) on a
    Boolean. Served as an OPC UA Part 9 condition (``engine/alarms.py``)."""

    variable: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$",
        description="'component.variable' of the twin, any kind")
    high_high: float | None = Field(None, description="HighHigh limit")
    high: float | None = Field(None, description="High limit")
    low: float | None = Field(None, description="Low limit")
    low_low: float | None = Field(None, description="LowLow limit")
    normal: bool | None = Field(
        None, description="off-normal alarm: the Boolean's normal value (active while it "
                          "differs)")
    exclusive: bool = Field(
        True, description="limit alarm: one limit state at a time, the most severe "
                          "(ExclusiveLimitAlarmType); false: every exceeded limit active "
                          "(NonExclusiveLimitAlarmType)")
    deadband: float = Field(0.0, ge=0, description="limit alarm: how far back past a limit "
                                                   "the value must go to leave it")
    on_delay: float = Field(0.0, ge=0, le=86_400,
                            description="simulated seconds a new state must hold first")
    off_delay: float = Field(0.0, ge=0, le=86_400,
                             description="simulated seconds a return to normal must hold first")
    severity: int = Field(500, ge=1, le=1000, description="OPC UA severity (High, Low, "
                                                          "off-normal)")
    severity_high_high: int | None = Field(
        None, ge=1, le=1000, description="severity of HighHigh and LowLow (default: "
                                         "severity + 200, at most 1000)")
    message: str = Field("", max_length=500,
                         description="what a person reads, e.g. 'Tank level high'")
    enabled: bool = Field(True, description="the condition's state after Reset")
    max_time_shelved: float = Field(
        8 * 3600.0, gt=0, le=7 * 86_400,
        description="wall-clock seconds a shelving lasts at most (MaxTimeShelved): the "
                    "longest TimedShelve, and when a OneShotShelve ends anyway")

    @model_validator(mode="after")
    def _one_kind(self) -> AlarmConfig:
        limits = [v for v in (self.high_high, self.high, self.low, self.low_low)
                  if v is not None]
        if self.normal is not None and limits:
            raise PydanticCustomError(
                "alarm_kind", "an alarm has limits (a limit alarm) or 'normal' (an "
                              "off-normal alarm), not both")
        if self.normal is None and not limits:
            raise PydanticCustomError(
                "alarm_kind", "an alarm needs a limit (high_high, high, low, low_low) or "
                              "'normal' (off-normal alarm on a Boolean)")
        order = [(n, v) for n, v in (("high_high", self.high_high), ("high", self.high),
                                      ("low", self.low), ("low_low", self.low_low))
                 if v is not None]
        for (a, x), (b, y) in itertools.pairwise(order):
            if not x > y:
                raise PydanticCustomError(
                    "alarm_limits", "limits must fall from high_high to low_low ({a} = {x} "
                                    "is not above {b} = {y})", {"a": a, "x": x, "b": b, "y": y})
        return self


class TwinConfig(_Frozen):
    """A twin definition: components and the connections between them."""

    description: str = ""
    components: dict[Name, ComponentConfig] = Field(min_length=1)
    connections: tuple[Annotated[ConnectionSpec, BeforeValidator(_connection)], ...] = ()
    alarms: dict[Name, AlarmConfig] = Field(
        default_factory=dict, description="alarms of every session of the twin, by name")
    isolate: bool | None = Field(
        None, description="sessions of this twin step in a worker process of their own, so "
                          "that a crash harms none but them (default: true for twins with "
                          "an FMU component)")

    @field_validator("connections", mode="before")
    @classmethod
    def _array_as_tuple(cls, value: object) -> object:
        # TOML arrays arrive as lists; strict mode takes only tuples for a tuple field.
        return tuple(value) if isinstance(value, list) else value


VariablePattern = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_*?\[\]!]+\.[A-Za-z0-9_*?\[\]!]+$")]
"""``component.variable`` of a session's twin, either part a glob (``tank.*``)."""


class SessionHistoryConfig(_Frozen):
    """What one session records (``[sessions.<name>.history]``); a field left out
    takes the server-wide ``[history]`` value."""

    enabled: bool | None = Field(
        default=None, description="record this session (default: [history].enabled)")
    variables: tuple[VariablePattern, ...] | None = Field(
        default=None,
        description="'component.variable' names or glob patterns ('tank.*', '*.level'), any "
                    "kind of variable; default: every output and state")
    record_rate: float | None = Field(
        default=None, gt=0, le=1000,
        description="records per wall second; default: the session's publish rate")
    mode: Literal["change", "every"] | None = Field(
        default=None,
        description="'change': store a value only when it differs from the last one stored "
                    "(default); 'every': store every variable at every record")
    max_age: float | None = Field(
        default=None, gt=0, description="retention: seconds of history kept")
    max_samples: int | None = Field(
        default=None, ge=1, description="retention: newest samples kept per variable")

    @field_validator("variables", mode="before")
    @classmethod
    def _array_as_tuple(cls, value: object) -> object:
        # TOML arrays arrive as lists; strict mode takes only tuples for a tuple field.
        return tuple(value) if isinstance(value, list) else value


class HistoryConfig(SessionHistoryConfig):
    """The history store (``[history]``): the SQLite file under ``server.state_dir``,
    its batching, retention, session snapshots, and the recording defaults of every
    session (config and client-created alike)."""

    enabled: bool = True  # server-wide the defaults are concrete
    mode: Literal["change", "every"] = "change"
    file: str = Field(default="history.db", min_length=1,
                      description="the database, relative to server.state_dir")
    batch_interval: float = Field(
        default=1.0, gt=0, le=60,
        description="seconds between commits: a crash loses at most this much")
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000,
                            description="most samples per commit")
    max_queue: int = Field(default=200_000, ge=1, le=100_000_000,
                           description="samples held in memory while the disk is slow; "
                                       "beyond it samples are dropped (and counted)")
    retention_interval: float = Field(default=60.0, gt=0, le=86_400,
                                      description="seconds between retention rounds")
    snapshot_interval: float = Field(
        default=10.0, ge=0, le=86_400,
        description="seconds between snapshots of every session; 0 = only at stop")
    resume: bool = Field(
        default=True, description="at start, bring back client sessions and run-time twins "
                                  "and resume every session from its snapshot")


class FaultConfig(_Frozen):
    """A fault the session has from every Reset on (``[[sessions.<s>.faults]]``); its
    kind, parameters and target are checked against the twin when the config compiles
    (``runtime.compile``: the engine's ``engine.faults`` rules)."""

    target: str = Field(description="component.Inputs.name or component.Outputs.name")
    kind: Literal["stuck", "offset", "drift", "noise", "spike", "quantise", "delay",
                  "dropout"]
    parameters: dict[Name, float] = Field(
        default_factory=dict, description="the kind's numbers, e.g. { sigma = 0.01, seed = 7 }")
    duration: float | None = Field(
        None, ge=0, description="simulated seconds from each Reset; none: until cleared")
    id: Name | None = Field(None, description="its name under Faults (default f1, f2, ...)")


class SessionConfig(_Frozen):
    """A session that the daemon creates at start (and never expires)."""

    twin: Name
    autostart: bool = True
    step_size: float = Field(0.01, gt=0, le=3600, description="seconds of simulated time per tick")
    realtime_factor: float = Field(
        1.0, ge=0, le=1000, description="simulated seconds per wall second; 0 = as fast as possible"
    )
    publish_rate: float = Field(10.0, gt=0, le=1000, description="OPC UA updates per wall second")
    overrun_policy: Literal["skip", "catch_up"] = "skip"
    parameters: dict[Name, dict[Name, Scalar]] = Field(
        default_factory=dict, description="per component: parameter overrides"
    )
    isolate: bool | None = Field(
        None, description="step in a worker process of its own (default: the twin's isolate)")
    history: SessionHistoryConfig = Field(
        default_factory=SessionHistoryConfig,
        description="what this session records ([sessions.<name>.history])")
    alarms: dict[Name, AlarmConfig] = Field(
        default_factory=dict,
        description="alarms of this session: each replaces the twin's of its name, or adds one")
    faults: list[FaultConfig] = Field(
        default_factory=list, description="faults injected at start and at every Reset "
                                          "([[sessions.<name>.faults]])")


class WebConfig(_Frozen):
    """The REST API and the dashboard (``twin_server/web``): off unless enabled, on
    loopback by default; the same users, roles and anonymous access as OPC UA."""

    enabled: bool = Field(False, description="serve the REST API and the dashboard")
    host: str = Field("127.0.0.1", min_length=1,
                      description="the address to listen on (127.0.0.1: this machine only)")
    port: int = Field(8080, ge=0, le=65_535, description="the TCP port (0: any free one)")
    token_lifetime: float = Field(
        3600.0, gt=0, le=30 * 86_400,
        description="seconds a token from POST /api/login stays valid")


#: a face binding's session variable: 'component.variable'
FACE_VARIABLE = r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$"
#: the session methods a face method may call
FaceMethod = Literal["Start", "Suspend", "Resume", "Halt", "Reset"]
#: how the tags of a tagged union begin (``loader.translate`` leaves them out of key paths)
UNION_TAG = "\x00"


class FaceRoutine(_Frozen):
    """A face method that runs a short scenario on the face's session (README,
    "Machine faces"): a scenario file or steps written here."""

    scenario: str | None = Field(
        None, min_length=1,
        description="a scenario file, relative to one of server.scenario_dirs")
    steps: Annotated[tuple[dict[str, Any], ...] | None,
                     BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)
                     ] = Field(
        None, min_length=1,
        description="the scenario's steps, as a scenario file's [[steps]]")

    @model_validator(mode="after")
    def _one_source(self) -> FaceRoutine:
        if (self.scenario is None) == (self.steps is None):
            raise PydanticCustomError(
                "face_routine", "a face method's routine is 'scenario' (a scenario file) "
                                "or 'steps' (the steps written here): give exactly one")
        return self


class FaceConfig(_Frozen):
    """A machine face (README, "Machine faces"): a real machine's own address space,
    from its NodeSet2 files, served beside the twin tree."""

    nodesets: Annotated[tuple[Annotated[str, StringConstraints(min_length=1)], ...],
                        BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)
                        ] = Field(
        min_length=1,
        description="NodeSet2 XML files, relative to the config file's folder: the "
                    "companion specifications the machine's model requires and the "
                    "model itself, in any order (sorted by their RequiredModels)")
    session: Name | None = Field(
        None, description="the session (one of [sessions]) whose variables the bindings "
                          "and methods reach; required with bindings or methods")
    bindings: dict[Annotated[str, StringConstraints(min_length=1)],
                   Annotated[str, StringConstraints(pattern=FACE_VARIABLE)]] = Field(
        default_factory=dict,
        description="face variable -> 'component.variable' of the session: the face "
                    "variable by NodeId ('nsu=<namespace URI>;i=6001') or by browse path "
                    "from the Objects folder ('DeviceSet/Tank/Level', an element "
                    "'<namespace URI>:<name>' where a name is ambiguous)")
    methods: dict[Annotated[str, StringConstraints(min_length=1)], Annotated[
            Annotated[FaceMethod, Tag(UNION_TAG + "call")]
            | Annotated[FaceRoutine, Tag(UNION_TAG + "routine")],
            Discriminator(lambda v: UNION_TAG + ("call" if isinstance(v, str) else "routine"))
            ]] = Field(
        default_factory=dict,
        description="face method (NodeId or browse path) -> the session method it calls, "
                    "or a routine: { scenario = 'file.toml' } or { steps = [...] }")
    endpoint: str | None = Field(
        None, description="serve the face on an endpoint of its own, e.g. the machine's "
                          "'opc.tcp://0.0.0.0:4841' (default: on the daemon's, beside the "
                          "twin tree)")
    application_uri: str | None = Field(
        None, min_length=1, description="the own endpoint's ApplicationUri (the machine's)")
    application_name: str | None = Field(
        None, min_length=1, description="the own endpoint's ApplicationName")

    @model_validator(mode="after")
    def _session_named(self) -> FaceConfig:
        if (self.bindings or self.methods) and self.session is None:
            raise PydanticCustomError(
                "face_session", "a face with bindings or methods needs 'session', the "
                                "session they reach (one of [sessions])")
        if self.endpoint is None and (self.application_uri or self.application_name):
            raise PydanticCustomError(
                "face_endpoint", "application_uri and application_name are the own "
                                 "endpoint's: set 'endpoint' too, or leave them out (on the "
                                 "daemon's endpoint the face has the daemon's)")
        return self


class Config(_Frozen):
    """A whole config file."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    twins: dict[Name, TwinConfig] = Field(default_factory=dict)
    sessions: dict[Name, SessionConfig] = Field(default_factory=dict)
    hil: dict[Name, HilPeerConfig] = Field(
        default_factory=dict, description="hardware-in-the-loop peers (PLCs), by name")
    history: HistoryConfig = Field(
        default_factory=HistoryConfig,
        description="the history store and recording defaults ([history])")
    web: WebConfig = Field(default_factory=WebConfig,
                           description="the REST API and the dashboard ([web])")
    faces: dict[Name, FaceConfig] = Field(
        default_factory=dict, description="machine faces: NodeSet2 address spaces served "
                                          "beside the twin tree")


# -- hardware in the loop ------------------------------------------------------------

_NODE_ID = re.compile(r"^(?:ns=(?P<ns>\d+);|nsu=(?P<nsu>[^;]+);)?(?P<type>[isgb])=(?P<id>.+)$",
                      re.DOTALL)


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A PLC NodeId as written in the config: ``ns=2;s=Level``, ``nsu=urn:plc;i=7``.

    ``namespace`` is an index or a namespace URI (resolved against the PLC's
    NamespaceArray at connect); ``id_type`` is ``i``, ``s``, ``g`` or ``b``.
    """

    namespace: int | str
    id_type: str
    identifier: str

    @classmethod
    def parse(cls, text: str) -> NodeRef:
        m = _NODE_ID.match(text.strip())
        if m is None:
            raise ValueError(
                f"a PLC node is written 'ns=<index>;s=<name>', 'nsu=<namespace URI>;s=<name>' "
                f"or with i=<number>, g=<guid>, b=<base64> (got {text!r})")
        namespace: int | str = m["nsu"] if m["nsu"] is not None else int(m["ns"] or 0)
        if m["type"] == "i" and not m["id"].isdigit():
            raise ValueError(f"a numeric NodeId (i=...) needs a whole number (got {text!r})")
        return cls(namespace, m["type"], m["id"])


def parse_browse_path(text: str) -> tuple[tuple[int | str, str], ...]:
    """``0:Objects/2:PLC/2:Level`` (or ``urn:plc:Level`` with a namespace URI) as
    (namespace index or URI, browse name) pairs from the Root folder.

    An element is ``<index>:<name>`` or ``<namespace URI>:<name>``; with a URI the
    name is what follows the last ':' (a browse name containing ':' needs an index).
    """
    elements = [e for e in text.strip().strip("/").split("/")]
    if not text.strip().strip("/") or any(not e for e in elements):
        raise ValueError(f"a browse path is written '0:Objects/2:PLC/2:Level' (got {text!r})")
    result: list[tuple[int | str, str]] = []
    for element in elements:
        head, sep, tail = element.partition(":")
        if sep and head.isdigit() and tail:
            result.append((int(head), tail))
            continue
        uri, sep, name = element.rpartition(":")
        if not sep or not uri or not name:
            raise ValueError(
                f"each element of a browse path is '<namespace index>:<name>' or "
                f"'<namespace URI>:<name>' (got {element!r} in {text!r})")
        result.append((uri, name))
    return tuple(result)


def _node_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            NodeRef.parse(value)
        except ValueError as exc:
            raise PydanticCustomError("hil_syntax", "{message}", {"message": str(exc)}) from None
    return value


def _browse_path_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            parse_browse_path(value)
        except ValueError as exc:
            raise PydanticCustomError("hil_syntax", "{message}", {"message": str(exc)}) from None
    return value


class HilBinding(_Frozen):
    """One session variable mirrored to or from one PLC node."""

    variable: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$",
        description="'component.variable' of the peer's session: an output or state for "
                    "to_plc, an input for from_plc")
    direction: Literal["to_plc", "from_plc"]
    node: Annotated[str, BeforeValidator(_node_text)] | None = Field(
        None, description="'ns=2;s=Level' or 'nsu=<namespace URI>;s=Level'")
    browse_path: Annotated[str, BeforeValidator(_browse_path_text)] | None = Field(
        None, description="'0:Objects/2:PLC/2:Level' from the Root folder; namespace URIs "
                          "may stand in place of indices")
    deadband: float = Field(0.0, ge=0, description="absolute: smaller changes are not sent")
    sampling_interval: float | None = Field(
        None, ge=0, le=3_600_000,
        description="ms; from_plc: the monitored item's sampling interval "
                    "(default: the session's publish period)")
    fallback: Scalar | None = Field(
        None, description="from_plc: the value the input takes while the link is down "
                          "(default: it keeps its last value)")


_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class BindingFields:
    """What a ``[hil.<peer>.bindings.<name>]`` table says, each field taken on its own
    (None where it is missing or malformed: the whole-file validation reports that),
    so that checks of one field still run when another is wrong and every error of
    a binding is reported at once."""

    variable: str | None
    direction: str | None
    has_node: bool
    has_browse_path: bool
    fallback: float | int | bool | str | None

    @classmethod
    def of(cls, body: object) -> BindingFields | None:
        if not isinstance(body, dict):
            return None
        variable = body.get("variable")
        direction = body.get("direction")
        fallback = body.get("fallback")
        return cls(
            variable if isinstance(variable, str) and _VARIABLE.match(variable) else None,
            direction if direction in ("to_plc", "from_plc") else None,
            "node" in body, "browse_path" in body,
            fallback if isinstance(fallback, bool | int | float | str) else None)


class HilSecurity(_Frozen):
    """How the mirror authenticates to a PLC."""

    policy: Annotated[Policy, BeforeValidator(canonical_policy)] = Field(
        "None", description="'None', 'Basic256Sha256', 'Aes128_Sha256_RsaOaep' or "
                            "'Aes256_Sha256_RsaPss' (as in [server.security]; the spellings "
                            "without '_' are taken too)")
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    username: str | None = None
    password: str | None = None
    password_env: str | None = Field(
        None, description="name of an environment variable holding the password")
    certificate: str | None = Field(None, description="client certificate (PEM or DER) path")
    private_key: str | None = Field(None, description="its private key (PEM or DER) path")
    private_key_password: str | None = None
    server_certificate: str | None = Field(
        None, description="the PLC's certificate, pinned; default: the one it announces "
                          "in its endpoints, checked as server_trust says")
    server_trust: Literal["pki", "announced"] = Field(
        "pki", description="how a certificate the PLC announces is checked: 'pki' against "
                           "the daemon's trust list (<state_dir>/pki/trusted; an untrusted "
                           "one is copied to pki/rejected), 'announced' not at all (a lab)")
    application_uri: str = Field(
        "urn:twin-server:hil", description="our ApplicationUri (must match the certificate's)")


class HilLinkFaultConfig(_Frozen):
    """A link fault the peer has from the daemon's start (``[[hil.<peer>.faults]]``;
    ``hil.link_faults``); its bindings are checked against the peer's by the loader."""

    kind: Literal["freeze", "delay", "cut"]
    delay: float = Field(0.0, ge=0, le=60, description="s, for kind 'delay' (> 0 there)")
    duration: float | None = Field(
        None, ge=0, description="wall-clock seconds from the start; none: until cleared")
    bindings: list[Name] = Field(
        default_factory=list, description="the bindings it acts on; empty: the whole link")


class HilPeerConfig(_Frozen):
    """An external OPC UA server (a PLC) and the bindings mirrored with it."""

    endpoint: str = Field(pattern=r"^opc\.tcp://[^/:]+(:\d{1,5})?(/.*)?$")
    session: Name
    security: HilSecurity = Field(default_factory=HilSecurity)
    timeout: float = Field(2.0, gt=0, le=60, description="seconds per request")
    keepalive_interval: float = Field(
        1.0, gt=0, le=60,
        description="seconds between liveness reads, each also timing out after as long: "
                    "a hung peer is detected within twice this")
    reconnect_min: float = Field(0.5, gt=0, le=3600, description="first backoff, seconds")
    reconnect_max: float = Field(
        10.0, gt=0, le=3600,
        description="longest backoff, seconds; a PLC that could not be reached is probed "
                    "(TCP and the OPC UA Hello) every 0.5 s meanwhile and reconnected as "
                    "soon as it answers")
    settle_time: float = Field(
        0.1, ge=0, le=60,
        description="seconds the PLC is given on every (re)connect, between the twin's "
                    "values written and its own taken: at least one cycle of its program, "
                    "so that outputs it computed from its defaults never reach the twin")
    bindings: dict[Name, HilBinding] = Field(min_length=1)
    faults: list[HilLinkFaultConfig] = Field(
        default_factory=list, description="link faults from the start ([[hil.<peer>.faults]])")
