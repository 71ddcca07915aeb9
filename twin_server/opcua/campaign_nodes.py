"""RunCampaign and the ``Campaigns/<run>`` nodes: campaigns on the server.

::

    Objects/TwinServer
      RunCampaign(Campaign) -> RunNodeId              an operator's
      Campaigns/                          ns;s=Campaigns  (event notifier)
        <run>                             ns;s=Campaigns.<run>  ProgramStateMachineType
          CurrentState (+Id, Number), LastTransition (+Id, Number, TransitionTime)
                            Running while it runs, then Halted (RunningToHalted)
          Halt                            (0:Halt) an operator's: cancels the runs not
                                          finished (the finished ones are kept)
          Campaign, File, RunsOn, Results (String: the results folder on the server)
          State (String: running, finished, cancelled, error), Error (String)
          Total, Done, Failed, Cancelled (UInt32), Progress (Double, %)

A campaign ends with a ``CampaignFinishedEventType`` event (ns;s=CampaignFinishedEventType,
a subtype of BaseEventType) from its node (and Campaigns, TwinServer, Server): Message
is its summary, its own fields Run, Campaign, State, Results (String), Ok, Failed,
Cancelled (UInt32). The server keeps the nodes of the running campaign and of the last
``server.scenario_reports`` finished ones.

Status codes of RunCampaign: BadInvalidArgument for a campaign with errors (each with
file and key) or a file outside the scenario folders, BadNotFound for an unknown file,
BadResourceUnavailable while another campaign runs, BadNotSupported without Dask.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua
from asyncua.common.event_objects import BaseEvent

from twin_server.campaigns.service import CampaignRun, CampaignService
from twin_server.config.security import LimitsConfig
from twin_server.engine.session import RunState
from twin_server.errors import InvalidArgument, NotFound, TwinServerError
from twin_server.opcua import events as ev
from twin_server.opcua.methods import MethodCounter, _Call, make_callback
from twin_server.opcua.nodes import Argument, NodeBatch
from twin_server.opcua.program import (
    PROGRAM_STATE_MACHINE_TYPE,
    TRANSITIONS,
    StateView,
)
from twin_server.opcua.scenario_nodes import remove_run
from twin_server.opcua.tree import ROOT, MethodSpec, _build_program, write_program
from twin_server.opcua.units import engineering_units

CAMPAIGNS = "Campaigns"
EVENT_TYPE = "CampaignFinishedEventType"
SEVERITY = {"finished": 100, "cancelled": 300, "error": 800}

RUN_CAMPAIGN = MethodSpec(
    "RunCampaign",
    "Run a campaign (many what-if runs of a twin) on Dask in the background, as "
    "'twin-server campaign run' would: on a local cluster of worker processes at a lower "
    "priority than the live sessions, or on server.campaign_scheduler; it shows under "
    "Campaigns/<run> and ends with a CampaignFinished event",
    (Argument("Campaign", ua.VariantType.String,
              "The campaign in TOML, or the name of a campaign file relative to the "
              "scenario folders (server.scenario_dirs; default the config file's folder)"),),
    (Argument("RunNodeId", ua.VariantType.NodeId, "The campaign's node under Campaigns"),))

HALT = MethodSpec("Halt", "Cancel the runs not finished; the finished ones are kept")

_S, _D, _U = ua.VariantType.String, ua.VariantType.Double, ua.VariantType.UInt32
_VALUE = ua.AttributeIds.Value

Getter = Callable[[CampaignRun], Any]
RUN_VARIABLES: tuple[tuple[str, ua.VariantType, str, Getter], ...] = (
    ("Campaign", _S, "The campaign's name", lambda r: r.campaign.name),
    ("File", _S, "Where the campaign came from (RunCampaign: given as text)",
     lambda r: r.campaign.file),
    ("RunsOn", _S, "The Dask cluster it runs on", lambda r: r.where),
    ("Results", _S, "The results folder on the server (results.sqlite, runs.csv, "
                    "trajectories.csv)", lambda r: str(r.results)),
    ("State", _S, "running, finished, cancelled or error", lambda r: r.state),
    ("Error", _S, "Why it could not run (empty if it did)", lambda r: r.error),
    ("Total", _U, "Runs in the campaign", lambda r: r.total),
    ("Done", _U, "Runs finished (ok or failed)", lambda r: r.done),
    ("Failed", _U, "Runs failed", lambda r: r.failed),
    ("Cancelled", _U, "Runs cancelled (Halt)", lambda r: r.cancelled),
    ("Progress", _D, "Runs done, in per cent of all", lambda r: float(r.progress)),
)


@dataclass(slots=True)
class _RunNodes:
    root: ua.NodeId
    all: list[ua.NodeId]
    values: list[tuple[ua.NodeId, ua.VariantType, Getter]]
    program: Any  # tree.ProgramNodes
    sent: dict[ua.NodeId, Any] = field(default_factory=dict)


_EVENT_FIELDS: tuple[tuple[str, ua.VariantType, Any], ...] = (
    ("Run", _S, ""), ("Campaign", _S, ""), ("State", _S, ""), ("Results", _S, ""),
    ("Ok", _U, 0), ("Failed", _U, 0), ("Cancelled", _U, 0),
)


class _FinishedEvent(BaseEvent):  # type: ignore[misc]  # asyncua: untyped to mypy
    def __init__(self, event_type: ua.NodeId) -> None:
        super().__init__()
        self.EventType = event_type
        for name, vtype, default in _EVENT_FIELDS:
            self.add_property(name, default, vtype)


class CampaignNodes:
    """The RunCampaign method and the nodes of the service's campaigns."""

    def __init__(self, server: Server, namespace: int, batch: Callable[[], NodeBatch],
                 emitter: ev.Emitter, service: CampaignService, *,
                 limits: LimitsConfig) -> None:
        self._server = server
        self._ns = namespace
        self._batch = batch
        self._emitter = emitter
        self.service = service
        self._limits = limits
        self._runs: dict[str, _RunNodes] = {}
        self._event_type: ua.NodeId | None = None
        self.counter = MethodCounter()
        service.on_started.append(self._started)
        service.on_finished.append(self._finished)
        service.on_removed.append(self._removed)

    @property
    def _aspace(self) -> Any:
        return self._server.iserver.aspace

    def nodeid(self, path: str) -> ua.NodeId:
        return ua.NodeId(path, self._ns)

    async def build(self) -> None:
        """Campaigns below TwinServer, RunCampaign on TwinServer, the event type."""
        base = self._server.get_node(ua.NodeId(ua.ObjectIds.BaseEventType))
        etype = await base.add_object_type(ua.NodeId(EVENT_TYPE, self._ns),
                                           ua.QualifiedName(EVENT_TYPE, self._ns))
        for name, vtype, _ in _EVENT_FIELDS:
            await etype.add_property(ua.NodeId(f"{EVENT_TYPE}.{name}", self._ns),
                                     ua.QualifiedName(name, self._ns),
                                     ua.get_default_value(vtype), varianttype=vtype)
        self._event_type = etype.nodeid
        batch = self._batch()
        root = self.nodeid(ROOT)
        batch.folder(root, CAMPAIGNS, CAMPAIGNS,
                     "Campaigns (RunCampaign): the running one and the last finished",
                     notifier=True)
        method = batch.method(root, RUN_CAMPAIGN.name, RUN_CAMPAIGN.name,
                              RUN_CAMPAIGN.description, RUN_CAMPAIGN.inputs,
                              RUN_CAMPAIGN.outputs)
        batch.commit(self._aspace)
        call = _Call(RUN_CAMPAIGN, "TwinServer", self.counter, limits=self._limits,
                     attribute=_campaign_argument)
        self._aspace.add_method_callback(method, make_callback(call, self._run_campaign))

    async def _run_campaign(self, text: str) -> list[ua.Variant]:
        # (the one entry point of every front: POST /api/campaigns runs it too)
        run = await self.service.run_campaign(text)
        return [ua.Variant(self._runs[run.name].root, ua.VariantType.NodeId)]

    async def _started(self, run: CampaignRun) -> None:
        batch = self._batch()
        base = f"{CAMPAIGNS}.{run.name}"
        root = batch.object(self.nodeid(CAMPAIGNS), base, run.name,
                            f"Campaign {run.campaign.name!r}: {run.total} runs on {run.where}",
                            typedef=PROGRAM_STATE_MACHINE_TYPE, notifier=True)
        view = StateView(RunState.RUNNING, TRANSITIONS[(RunState.READY, RunState.RUNNING)],
                         datetime.now(UTC), 0)
        program = _build_program(batch, root, base, view)
        values = []
        for name, vtype, desc, get in RUN_VARIABLES:
            unit = "%" if name == "Progress" else None
            nodeid = batch.variable(root, f"{base}.{name}", name, get(run), vtype,
                                    description=desc, analog=unit is not None,
                                    unit=engineering_units(unit) if unit else None)
            values.append((nodeid, vtype, get))
        halt = batch.method(root, f"{base}.Halt", "Halt", HALT.description, namespace=0)
        nodes = _RunNodes(root, batch.nodeids, values, program)
        batch.commit(self._aspace)
        self._runs[run.name] = nodes
        call = _Call(HALT, run.name, self.counter, limits=self._limits,
                     log_context={"campaign": run.name})
        self._aspace.add_method_callback(halt, make_callback(call, _halter(run)))

    async def publish(self) -> int:
        """Write what changed in every running campaign's nodes; how many values."""
        written = 0
        for run in self.service:
            nodes = self._runs.get(run.name)
            if nodes is not None and run.running:
                written += await self._write(run, nodes)
        return written

    async def publish_forever(self, period: float = 0.25) -> None:
        while True:
            await self.publish()
            await asyncio.sleep(period)

    async def _write(self, run: CampaignRun, nodes: _RunNodes) -> int:
        aspace = self._aspace
        now = datetime.now(UTC)
        written = 0
        for nodeid, vtype, get in nodes.values:
            value = get(run)
            if nodes.sent.get(nodeid, _UNSENT) == value or nodeid not in aspace:
                continue
            await aspace.write_attribute_value(nodeid, _VALUE, ua.DataValue(
                ua.Variant(value, vtype), SourceTimestamp=now, ServerTimestamp=now))
            nodes.sent[nodeid] = value
            written += 1
        return written

    async def _finished(self, run: CampaignRun) -> None:
        nodes = self._runs.get(run.name)
        if nodes is None:
            return
        await self._write(run, nodes)
        await self._write_halted(nodes)
        assert self._event_type is not None
        event = _FinishedEvent(self._event_type)
        event.Run = run.name
        event.Campaign = run.campaign.name
        event.State = run.state
        event.Results = str(run.results)
        event.Ok = run.done - run.failed
        event.Failed = run.failed
        event.Cancelled = run.cancelled
        chain = (nodes.root, self.nodeid(CAMPAIGNS), self.nodeid(ROOT), ev.SERVER_OBJECT)
        await self._emitter.emit(event, chain, run.name, run.summary(),
                                 SEVERITY.get(run.state, 500))

    async def _write_halted(self, nodes: _RunNodes) -> None:
        halted = TRANSITIONS[(RunState.RUNNING, RunState.HALTED)]
        await write_program(self._aspace, nodes.program,
                            StateView(RunState.HALTED, halted, datetime.now(UTC), 0))

    async def _removed(self, run: CampaignRun) -> None:
        nodes = self._runs.pop(run.name, None)
        if nodes is None:
            return
        await remove_run(self._server, self.nodeid(CAMPAIGNS), nodes.root, nodes.all)


_UNSENT = object()


def _campaign_argument(error: TwinServerError) -> int | None:
    """The Campaign argument's refusals (read: a bad campaign, a file outside the
    folders or not there) are its own; the others the call's."""
    return 0 if isinstance(error, InvalidArgument | NotFound) else None


def _halter(run: CampaignRun) -> Callable[[], Awaitable[None]]:
    async def halt() -> None:
        run.halt()
    return halt
