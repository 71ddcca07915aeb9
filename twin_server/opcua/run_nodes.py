"""The objects of background runs on the server: scenario runs and campaigns.

A run shows as a ``ProgramStateMachineType`` object under its folder below TwinServer
(``Scenarios/<run>``, ``Campaigns/<run>``): Running while it runs, then Halted
(RunningToHalted); its variables, written by :meth:`RunObjects.publish` as they change;
a ``Halt`` method (an operator's); and, when it ends, an event of its own type (a subtype
of BaseEventType) from the run's node, its folder, TwinServer and Server. The method
that starts a run lives on TwinServer.

:class:`RunObjects` holds all of that; ``scenario_nodes`` and ``campaign_nodes`` say
what differs: their names, variables, event fields and how a run starts and halts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from asyncua import Server, ua
from asyncua.common.event_objects import BaseEvent

from twin_server.config.security import LimitsConfig
from twin_server.engine.session import RunState
from twin_server.errors import TwinServerError
from twin_server.opcua import events as ev
from twin_server.opcua.methods import MethodCounter, _Call, make_callback
from twin_server.opcua.nodes import NodeBatch
from twin_server.opcua.patches import monitoring
from twin_server.opcua.program import PROGRAM_STATE_MACHINE_TYPE, TRANSITIONS, StateView
from twin_server.opcua.tree import ROOT, MethodSpec, _build_program, write_program
from twin_server.opcua.units import engineering_units


class Run(Protocol):
    @property
    def name(self) -> str: ...


RunT = TypeVar("RunT", bound=Run)
RunCallback = Callable[[RunT], Awaitable[None]]


class RunService(Protocol[RunT]):
    """What the objects need of a service (ScenarioService, CampaignService)."""

    on_started: list[Callable[[RunT], Awaitable[None]]]
    on_finished: list[Callable[[RunT], Awaitable[None]]]
    on_removed: list[Callable[[RunT], Awaitable[None]]]

    def __iter__(self) -> Iterator[RunT]: ...


#: (name, type, description, value of a run) of a run's variables
Variables = tuple[tuple[str, ua.VariantType, str, Callable[[Any], Any]], ...]
#: (name, type, default) of an event type's own fields
EventFields = tuple[tuple[str, ua.VariantType, Any], ...]
#: (node, type, value) to write
Pairs = list[tuple[ua.NodeId, ua.VariantType, Any]]

_VALUE = ua.AttributeIds.Value
_UNSENT = object()


@dataclass(slots=True)
class RunNodes:
    """A run's object: its root, every node below it (for removal), its variables
    (with their getters), what else it shows (``extra``), its Program nodes."""

    root: ua.NodeId
    all: list[ua.NodeId]
    values: list[tuple[ua.NodeId, ua.VariantType, Callable[[Any], Any]]]
    program: Any  # tree.ProgramNodes
    extra: Any = None
    sent: dict[ua.NodeId, Any] = field(default_factory=dict)


class FinishedEvent(BaseEvent):  # type: ignore[misc]  # asyncua: untyped to mypy
    """An event of a run's own type, with ``fields`` as properties."""

    def __init__(self, event_type: ua.NodeId, fields: EventFields) -> None:
        super().__init__()
        self.EventType = event_type
        for name, vtype, default in fields:
            self.add_property(name, default, vtype)


async def register_event_type(server: Server, namespace: int, name: str,
                              fields: EventFields) -> ua.NodeId:
    """Add event type ``name`` with ``fields`` below BaseEventType."""
    base = server.get_node(ua.NodeId(ua.ObjectIds.BaseEventType))
    etype = await base.add_object_type(ua.NodeId(name, namespace),
                                       ua.QualifiedName(name, namespace))
    for field_name, vtype, _ in fields:
        await etype.add_property(ua.NodeId(f"{name}.{field_name}", namespace),
                                 ua.QualifiedName(field_name, namespace),
                                 ua.get_default_value(vtype), varianttype=vtype)
    return etype.nodeid


async def remove_run(server: Server, folder: ua.NodeId, root: ua.NodeId,
                     nodes: list[ua.NodeId]) -> None:
    """Take a run's ``nodes`` (its object ``root`` under ``folder`` and all below it)
    out of the address space; their monitored items are told first."""
    aspace = server.iserver.aspace
    await monitoring.detach(aspace, nodes)
    parent = aspace[folder]
    parent.references[:] = [r for r in parent.references if r.NodeId != root]
    items = [ua.DeleteNodesItem(NodeId=n, DeleteTargetReferences=False)
             for n in reversed(nodes)]
    with contextlib.suppress(TwinServerError):
        server.iserver.node_mgt_service.delete_nodes(
            ua.DeleteNodesParameters(NodesToDelete=items))


class RunObjects(Generic[RunT]):
    """The method that starts runs and the objects of a service's runs."""

    FOLDER: ClassVar[str]
    FOLDER_DESCRIPTION: ClassVar[str]
    EVENT_TYPE: ClassVar[str]
    EVENT_FIELDS: ClassVar[EventFields]
    START: ClassVar[MethodSpec]
    HALT: ClassVar[MethodSpec]
    VARIABLES: ClassVar[Variables]
    UNITS: ClassVar[dict[str, str]]
    LOG_KEY: ClassVar[str]

    def __init__(self, server: Server, namespace: int, batch: Callable[[], NodeBatch],
                 emitter: ev.Emitter, service: RunService[RunT], *,
                 limits: LimitsConfig) -> None:
        self._server = server
        self._ns = namespace
        self._batch = batch
        self._emitter = emitter
        self.service = service
        self._limits = limits
        self._runs: dict[str, RunNodes] = {}
        self._event_type: ua.NodeId | None = None
        self.counter = MethodCounter()
        service.on_started.append(self._started)
        service.on_finished.append(self._finished)
        service.on_removed.append(self._removed)

    # -- what each kind of run says itself -----------------------------------------
    async def start(self, *arguments: Any) -> RunT:
        """Start a run with the method's arguments (through the service)."""
        raise NotImplementedError

    def argument_of(self, error: TwinServerError) -> int | None:
        """Which of the method's arguments a refusal is about (None: the call's)."""
        return None

    def describe(self, run: RunT) -> str:
        raise NotImplementedError

    def running(self, run: RunT) -> bool:
        raise NotImplementedError

    def halt(self, run: RunT) -> None:
        raise NotImplementedError

    def finished(self, run: RunT) -> tuple[dict[str, Any], str, int]:
        """The finished event's own fields, its message and its severity."""
        raise NotImplementedError

    def build_extra(self, batch: NodeBatch, root: ua.NodeId, base: str, run: RunT) -> Any:
        """More nodes below a run's object; what :meth:`extra_pairs` needs of them."""
        return None

    def extra_pairs(self, run: RunT, extra: Any) -> Pairs:
        return []

    # -- the common part -----------------------------------------------------------
    @property
    def _aspace(self) -> Any:
        return self._server.iserver.aspace

    def nodeid(self, path: str) -> ua.NodeId:
        return ua.NodeId(path, self._ns)

    async def build(self) -> None:
        """The folder below TwinServer, the method on TwinServer, the event type."""
        self._event_type = await register_event_type(self._server, self._ns,
                                                     self.EVENT_TYPE, self.EVENT_FIELDS)
        batch = self._batch()
        root = self.nodeid(ROOT)
        batch.folder(root, self.FOLDER, self.FOLDER, self.FOLDER_DESCRIPTION, notifier=True)
        spec = self.START
        method = batch.method(root, spec.name, spec.name, spec.description, spec.inputs,
                              spec.outputs)
        batch.commit(self._aspace)
        call = _Call(spec, "TwinServer", self.counter, limits=self._limits,
                     attribute=self.argument_of)
        self._aspace.add_method_callback(method, make_callback(call, self._start_call))

    async def _start_call(self, *arguments: Any) -> list[ua.Variant]:
        run = await self.start(*arguments)
        return [ua.Variant(self._runs[run.name].root, ua.VariantType.NodeId)]

    async def _started(self, run: RunT) -> None:
        batch = self._batch()
        base = f"{self.FOLDER}.{run.name}"
        root = batch.object(self.nodeid(self.FOLDER), base, run.name, self.describe(run),
                            typedef=PROGRAM_STATE_MACHINE_TYPE, notifier=True)
        view = StateView(RunState.RUNNING, TRANSITIONS[(RunState.READY, RunState.RUNNING)],
                         datetime.now(UTC), 0)
        program = _build_program(batch, root, base, view)
        values = []
        for name, vtype, desc, get in self.VARIABLES:
            unit = self.UNITS.get(name)
            nodeid = batch.variable(root, f"{base}.{name}", name, get(run), vtype,
                                    description=desc, analog=unit is not None,
                                    unit=engineering_units(unit) if unit else None)
            values.append((nodeid, vtype, get))
        halt = batch.method(root, f"{base}.Halt", "Halt", self.HALT.description, namespace=0)
        extra = self.build_extra(batch, root, base, run)
        nodes = RunNodes(root, batch.nodeids, values, program, extra)
        batch.commit(self._aspace)
        self._runs[run.name] = nodes
        call = _Call(self.HALT, run.name, self.counter, limits=self._limits,
                     log_context={self.LOG_KEY: run.name})
        self._aspace.add_method_callback(halt, make_callback(call, self._halter(run)))

    def _halter(self, run: RunT) -> Callable[[], Awaitable[None]]:
        async def halt() -> None:
            self.halt(run)
        return halt

    async def publish(self) -> int:
        """Write what changed in every running run's nodes; how many values."""
        written = 0
        for run in self.service:
            nodes = self._runs.get(run.name)
            if nodes is not None and self.running(run):
                written += await self._write(run, nodes)
        return written

    async def publish_forever(self, period: float = 0.25) -> None:
        """Keep the running runs' nodes current until cancelled."""
        while True:
            await self.publish()
            await asyncio.sleep(period)

    async def _write(self, run: RunT, nodes: RunNodes) -> int:
        aspace = self._aspace
        now = datetime.now(UTC)
        pairs: Pairs = [(nodeid, vtype, get(run)) for nodeid, vtype, get in nodes.values]
        pairs += self.extra_pairs(run, nodes.extra)
        written = 0
        for nodeid, vtype, value in pairs:
            if nodes.sent.get(nodeid, _UNSENT) == value or nodeid not in aspace:
                continue
            await aspace.write_attribute_value(nodeid, _VALUE, ua.DataValue(
                ua.Variant(value, vtype), SourceTimestamp=now, ServerTimestamp=now))
            nodes.sent[nodeid] = value
            written += 1
        return written

    async def _finished(self, run: RunT) -> None:
        nodes = self._runs.get(run.name)
        if nodes is None:
            return
        await self._write(run, nodes)
        halted = TRANSITIONS[(RunState.RUNNING, RunState.HALTED)]
        await write_program(self._aspace, nodes.program,
                            StateView(RunState.HALTED, halted, datetime.now(UTC), 0))
        assert self._event_type is not None
        fields, message, severity = self.finished(run)
        event = FinishedEvent(self._event_type, self.EVENT_FIELDS)
        for name, value in fields.items():
            setattr(event, name, value)
        chain = (nodes.root, self.nodeid(self.FOLDER), self.nodeid(ROOT), ev.SERVER_OBJECT)
        await self._emitter.emit(event, chain, run.name, message, severity)

    async def _removed(self, run: RunT) -> None:
        nodes = self._runs.pop(run.name, None)
        if nodes is None:
            return
        await remove_run(self._server, self.nodeid(self.FOLDER), nodes.root, nodes.all)
