"""Live runs: a scenario against a running daemon over OPC UA, in real time.

The run gets a session of its own and touches no other: with ``session=`` (the
CLI's ``--session``) the one it is given, as it is; else a fork of the scenario's
``session`` (``Fork``, at real-time factor 1) or a fresh session of its ``twin``
(``CreateSession``), started, and deleted at the end. HIL bindings follow their
configured session, so a test of a PLC is given that session (``--session plant``).

A sample is one Read of every watched node with the session's StepCount and State,
every ``poll`` seconds of wall time; scenario time is the session's simulated time
stepped since the run began (StepCount deltas; a Reset or Restore does not turn it
back). Writes go to the variable's node (an input is forced), ``release`` calls
ReleaseInput, ``call`` the session's method (Snapshot's id kept under its label),
``inject_fault`` InjectFault (the step's name the fault's Id), ``clear_fault``
ClearFault (``*``: ClearFaults), ``inject_link_fault`` and ``clear_link_fault`` the
peer's ``HIL/<peer>/InjectLinkFault`` and ``ClearLinkFault``; a refusal breaks the run
off with the server's status and message (``CallRefused``).

A value read with an Uncertain status (a mirrored input while its link is cut or
lost, UncertainLastUsableValue or UncertainSubstituteValue) is taken as it is; a
Bad one (a dropout fault: Bad_SensorFailure, no value on the wire) keeps the value
last read, the value the session holds (offline reads show that held value too).
PLC nodes (``plc.<alias>``) are read and written on the PLC itself: the peer's
endpoint is read from ``HIL/<peer>/Endpoint`` and a second client (anonymous, no
security: a PLC that asks for more is not reachable this way yet) connects to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from asyncua import Client, ua

from twin_server.engine.state import VarKey
from twin_server.errors import InvalidState, NotFound, TwinServerError, ValueRejected
from twin_server.models.base import Kind
from twin_server.scenarios.expr import Number
from twin_server.scenarios.names import TIME, Binding, PlcRef, Ref, bind
from twin_server.scenarios.results import ScenarioResult
from twin_server.scenarios.runner import Listener, Runner, TargetStopped
from twin_server.scenarios.schema import (
    ClearFaultStep,
    ClearLinkFaultStep,
    InjectFaultStep,
    InjectLinkFaultStep,
    ScenarioFile,
)

NAMESPACE = "urn:twin-server"
_FOLDERS = {kind.folder: kind for kind in Kind}


class CallRefused(TwinServerError):
    """A method call the daemon refused: its status and message."""


class LiveTarget:
    """A daemon's session over OPC UA as a runner's target."""

    def __init__(self, client: Client, ns: int, session: str, binding: Binding,
                 plc: Mapping[str, tuple[Client, ua.NodeId]], *, poll: float) -> None:
        self.session = session
        self._client = client
        self._ns = ns
        self._binding = binding
        self._plc = plc
        self._poll = poll
        self._reads = sorted(binding.reads.items())
        self._types: dict[str, ua.VariantType] = {}
        self._snapshots: dict[str, str] = {}
        self._values: dict[str, Number] = {}
        self.step_size = 0.01
        self.elapsed = 0.0
        self._steps = 0
        self._last_count = 0
        self._state = ""

    def node(self, path: str) -> ua.NodeId:
        return ua.NodeId(f"Sessions.{self.session}.{path}", self._ns)

    def _nodeid(self, ref: Ref) -> tuple[Client, ua.NodeId]:
        if isinstance(ref, PlcRef):
            return self._plc[ref.alias]
        return self._client, self.node(ref.path)

    async def start(self) -> None:
        self.step_size = float(await self._client.get_node(self.node("StepSize")).read_value())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while True:  # a session just created or forked has no published values yet
            try:
                await self._read(first=True)
                return
            except NotFound:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(self._poll)

    @property
    def values(self) -> Mapping[str, Number]:
        return self._values

    async def _read(self, *, first: bool = False) -> None:
        ids = [self.node("StepCount"), self.node("State")]
        own = [(name, self.node(ref.path)) for name, ref in self._reads
               if not isinstance(ref, PlcRef)]
        results = await self._client.uaclient.read_attributes(
            [*ids, *(n for _, n in own)], ua.AttributeIds.Value)
        count = int(results[0].Value.Value)
        self._state = str(results[1].Value.Value)
        if not first:
            self._steps += max(count - self._last_count, 0)
        self._last_count = count
        self.elapsed = self._steps * self.step_size
        values: dict[str, Number] = {TIME: self.elapsed}
        for (name, _), value in zip(own, results[2:], strict=True):
            values[name] = self._store(name, value)
        for name, ref in self._reads:
            if isinstance(ref, PlcRef):
                client, nodeid = self._plc[ref.alias]
                value = await client.get_node(nodeid).read_data_value()
                values[name] = self._store(name, value)
        self._values = values

    def _store(self, name: str, value: ua.DataValue) -> Number:
        """The value read (Good or Uncertain), else the one last read (module docstring)."""
        if (value.Value is None or value.Value.Value is None
                or value.StatusCode.is_bad()):
            if name in self._values:
                return self._values[name]
            raise NotFound(f"{name}: cannot be read ({value.StatusCode.name})")
        self._types.setdefault(name, value.Value.VariantType)
        found: Number = value.Value.Value
        return found

    async def sample(self) -> None:
        if self._state != "Running":
            raise TargetStopped(f"session {self.session!r} is {self._state}: time does not "
                                "pass; a call = 'Resume' (or 'Start') step must come first")
        await asyncio.sleep(self._poll)
        await self._read()

    async def write(self, ref: Ref, value: Number | str) -> None:
        client, nodeid = self._nodeid(ref)
        node = client.get_node(nodeid)
        vtype = await node.read_data_type_as_variant_type()
        if vtype in (ua.VariantType.Float, ua.VariantType.Double) and not isinstance(value, str):
            value = float(value)
        elif (vtype is not ua.VariantType.Boolean and isinstance(value, float)
              and value.is_integer()):
            value = int(value)
        try:
            await node.write_value(ua.DataValue(ua.Variant(value, vtype)))
        except ua.UaStatusCodeError as exc:
            raise ValueRejected(f"writing {value!r} to {nodeid.to_string()} was refused: "
                                f"{exc}") from None
        await self._read()

    async def release(self, ref: Ref) -> None:
        assert isinstance(ref, VarKey)
        await self.call_method("ReleaseInput", ua.Variant(f"{ref.component}.{ref.name}",
                                                    ua.VariantType.String))
        await self._read()

    async def call(self, method: str, label: str) -> None:
        if method == "Snapshot":
            (snapshot_id,) = await self.call_method("Snapshot")
            self._snapshots[label] = str(snapshot_id)
        elif method == "Restore":
            if label not in self._snapshots:
                raise NotFound(f"no snapshot labelled {label!r} taken in this scenario")
            running = self._state == "Running"
            if running:
                await self.call_method("Suspend")
            await self.call_method("Restore",
                                   ua.Variant(self._snapshots[label], ua.VariantType.String))
            if running:
                await self.call_method("Resume")
        elif method == "Reset":
            running = self._state == "Running"
            await self.call_method("Reset", ua.Variant("", ua.VariantType.String))
            if running:
                await self.call_method("Start")
        else:
            await self.call_method(method)
        await self._read(first=True)

    async def call_method(self, method: str, *args: ua.Variant) -> list[Any]:
        standard = method in ("Start", "Suspend", "Resume", "Halt", "Reset")
        request = ua.CallMethodRequest(
            ObjectId=ua.NodeId(f"Sessions.{self.session}", self._ns),
            MethodId=ua.NodeId(f"Sessions.{self.session}.{method}", self._ns),
            InputArguments=list(args))
        (result,) = await self._client.uaclient.call([request])
        if not result.StatusCode.is_good():
            info = " | ".join(d.AdditionalInfo or "" for d in
                              result.InputArgumentDiagnosticInfos or [])
            raise (InvalidState if standard else CallRefused)(
                f"{method} on session {self.session!r}: {result.StatusCode.name}: {info}")
        return [v.Value for v in result.OutputArguments or []]

    async def inject_fault(self, step: InjectFaultStep | ClearFaultStep,
                           ref: Ref | None) -> None:
        """InjectFault with the step's name as the fault's Id, or ClearFault (``*``:
        ClearFaults), as ``SessionTarget.inject_fault`` does offline."""
        if isinstance(step, InjectFaultStep):
            if not isinstance(ref, VarKey):
                raise CallRefused(f"{step.variable} is a PLC node: a fault acts on a "
                                  "variable of the session (component.variable)")
            parameters = {k: float(v) for k, v in step.parameters.items()
                          if not isinstance(v, str)}
            await self.call_method(
                "InjectFault", _text(f"{ref.component}.{ref.kind.folder}.{ref.name}"),
                _text(step.kind), _text(json.dumps(parameters)),
                ua.Variant(step.duration or 0.0, ua.VariantType.Double),
                _text(step.inject_fault))
        elif step.clear_fault == "*":
            await self.call_method("ClearFaults")
        else:
            await self.call_method("ClearFault", _text(step.clear_fault))
        await self._read()

    async def link_fault(self, step: InjectLinkFaultStep | ClearLinkFaultStep) -> None:
        """The peer's InjectLinkFault(Kind, Delay, Duration, Bindings) or
        ClearLinkFault(Bindings)."""
        bindings = ua.Variant(list(step.bindings), ua.VariantType.String, is_array=True)
        if isinstance(step, InjectLinkFaultStep):
            peer = step.inject_link_fault
            await _server_call(
                self._client, self._ns, f"HIL.{peer}.InjectLinkFault", _text(step.kind),
                ua.Variant(step.delay or 0.0, ua.VariantType.Double),
                ua.Variant(step.duration or 0.0, ua.VariantType.Double), bindings,
                obj=f"HIL.{peer}")
        else:
            peer = step.clear_link_fault
            await _server_call(self._client, self._ns, f"HIL.{peer}.ClearLinkFault", bindings,
                               obj=f"HIL.{peer}")
        await self._read()


async def _variables(client: Client, ns: int, session: str) -> list[VarKey]:
    """Every variable of a served session, browsed (Components/<c>/<Folder>/<v>)."""
    keys: list[VarKey] = []
    components = client.get_node(ua.NodeId(f"Sessions.{session}.Components", ns))
    for comp in await components.get_children():
        cname = (await comp.read_browse_name()).Name
        for folder in await comp.get_children():
            kind = _FOLDERS.get((await folder.read_browse_name()).Name)
            if kind is None:
                continue
            for var in await folder.get_children():
                keys.append(VarKey(cname, kind, (await var.read_browse_name()).Name))
    return keys


async def _server_call(client: Client, ns: int, method: str, *args: ua.Variant,
                       obj: str = "TwinServer") -> list[Any]:
    request = ua.CallMethodRequest(ObjectId=ua.NodeId(obj, ns),
                                   MethodId=ua.NodeId(method, ns), InputArguments=list(args))
    (result,) = await client.uaclient.call([request])
    if not result.StatusCode.is_good():
        info = " | ".join(d.AdditionalInfo or "" for d in result.InputArgumentDiagnosticInfos or [])
        raise CallRefused(f"{method}: {result.StatusCode.name}: {info}")
    return [v.Value for v in result.OutputArguments or []]


def _text(value: str) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.String)


async def run_live(scenarios: Sequence[ScenarioFile], endpoint: str, *,
                   session: str | None = None, listener: Listener | None = None,
                   timeout: float = 10.0, seed: int | None = None,
                   poll: float = 0.05) -> list[ScenarioResult]:
    """Run each scenario against the daemon at ``endpoint`` (ConfigErrors for a name
    the session lacks, before that scenario runs)."""
    results = []
    async with Client(endpoint, timeout=timeout) as client:
        ns = await client.get_namespace_index(NAMESPACE)
        for scenario in scenarios:
            results.append(await _run_one(client, ns, scenario, session, listener, seed, poll))
    return results


async def _run_one(client: Client, ns: int, scenario: ScenarioFile, given: str | None,
                   listener: Listener | None, seed: int | None, poll: float) -> ScenarioResult:
    header = scenario.header
    own = given is None
    name = given or f"scenario_{scenario.name}_{secrets.token_hex(3)}"[:64]
    if given is None:
        if header.session is not None:
            await _server_call(client, ns, f"Sessions.{header.session}.Fork", _text(name),
                               ua.Variant(1.0, ua.VariantType.Double),
                               obj=f"Sessions.{header.session}")
        else:
            assert header.twin is not None
            await _server_call(client, ns, "CreateSession", _text(header.twin), _text(name),
                               _text(""))
    plc_clients: list[Client] = []
    try:
        binding = bind(scenario, await _variables(client, ns, name), live=True)
        plc: dict[str, tuple[Client, ua.NodeId]] = {}
        peers: dict[str, Client] = {}
        for alias, node in scenario.plc.items():
            if node.peer not in peers:
                url = await client.get_node(ua.NodeId(f"HIL.{node.peer}.Endpoint", ns)).read_value()
                peer = Client(str(url), timeout=client.session_timeout / 1000 or 10)
                await peer.connect()
                plc_clients.append(peer)
                peers[node.peer] = peer
            plc[alias] = (peers[node.peer], await _plc_nodeid(peers[node.peer], node.node))
        target = LiveTarget(client, ns, name, binding, plc, poll=poll)
        if header.parameters:
            await target.call_method("SetParameters", _text(json.dumps(header.parameters)))
        state = await client.get_node(target.node("State")).read_value()
        if state == "Ready":
            await target.call_method("Start")
        elif state == "Suspended":
            await target.call_method("Resume")
        await target.start()
        runner = Runner(scenario, binding, target, mode="live", listener=listener, seed=seed)
        return await runner.run()
    finally:
        for peer in plc_clients:
            await peer.disconnect()
        if own:
            with contextlib.suppress(CallRefused):
                await _server_call(client, ns, "DeleteSession", _text(name))


async def _plc_nodeid(client: Client, text: str) -> ua.NodeId:
    """``nsu=<uri>;s=...`` resolved against the PLC's namespace array (or ``ns=``)."""
    if text.startswith("nsu="):
        uri, _, rest = text[4:].partition(";")
        index = await client.get_namespace_index(uri)
        text = f"ns={index};{rest}"
    return ua.NodeId.from_string(text)
