"""The OPC UA server: an asyncua Server holding our address space, sessions and writes.

The daemon (``runtime/daemon.py``) creates one ``OpcUaServer``, starts it, adds
the twins and its hosted sessions (``runtime.HostedSession``: the server reads
their frames and sends them commands, wherever they step), hands it the host's
events (``session_event``), runs ``publish_forever`` in its TaskGroup and stops it last.
Everything session-specific is in the modules beside this one: the tree layout
(``tree``), node building (``nodes``), client writes (``writes``), methods
(``methods``) and publishing (``publisher``).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import itertools
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlparse

import structlog
from asyncua import Server, ua

from twin_server.campaigns.service import CampaignService
from twin_server.config.schema import ServerConfig
from twin_server.engine.session import RunState, SessionEvent, VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import NotFound, TwinServerError
from twin_server.hil import HilMirror
from twin_server.history import HistoryStore
from twin_server.models.base import DataType, Kind, Variable
from twin_server.opcua import events as ev
from twin_server.opcua import history_read, identity
from twin_server.opcua.alarms import AlarmConditions, LogEvent
from twin_server.opcua.campaign_nodes import CampaignNodes
from twin_server.opcua.faults import FaultNodes
from twin_server.opcua.hil_methods import HilMethods
from twin_server.opcua.hil_nodes import HilNodes, build_hil
from twin_server.opcua.methods import ServerMethods, SessionMethods, method_statistics
from twin_server.opcua.nodes import NodeBatch, add_reference
from twin_server.opcua.patches import aspace_cache, browse, fastpath, internals, monitoring
from twin_server.opcua.program import ProgramState, StateView
from twin_server.opcua.publisher import Publisher, PublisherStatistics, PublishTarget
from twin_server.opcua.ranges import RangeFollower
from twin_server.opcua.runtime import Runtime
from twin_server.opcua.scenario_nodes import ScenarioNodes
from twin_server.opcua.tree import (
    BUILD_STEP,
    ROOT,
    SESSIONS,
    TWINS,
    ProgramNodes,
    SessionNodes,
    build_root,
    build_session_steps,
    build_twin_steps,
    write_program,
)
from twin_server.opcua.worker_nodes import WorkerNodes, build_session_health, build_workers
from twin_server.opcua.writes import TwinAttributeService, WriteTarget, session_of
from twin_server.runtime import checks
from twin_server.runtime.clock import TICKS
from twin_server.runtime.collector import collector_paused
from twin_server.runtime.host import Frame, HostedSession, HostStatistics
from twin_server.runtime.sinks import Pacer
from twin_server.scenarios.service import ScenarioService
from twin_server.security import SecurityContext, configure_security
from twin_server.security.pki import TrustList

log = structlog.get_logger(__name__)

NAMESPACE_URI = "urn:twin-server"


class ServerState(enum.StrEnum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """An immutable snapshot of the server's work."""

    state: ServerState
    twins: int
    sessions: int
    nodes: int  # nodes we added (twins and sessions)
    publish_cycles: int
    values_published: int
    writes_accepted: int
    writes_refused: int
    method_calls: int
    methods_refused: int
    publisher: PublisherStatistics


_HAS_NOTIFIER = ua.NodeId(ua.ObjectIds.HasNotifier)
_FOLDER_TYPE = ua.NodeId(ua.ObjectIds.FolderType)
_OBJECT_TYPE = ua.NodeId(ua.ObjectIds.BaseObjectType)
_PROGRAM_TYPE = ua.NodeId(ua.ObjectIds.ProgramStateMachineType)
_VALUE = ua.AttributeIds.Value


@dataclass(slots=True)
class _Served:
    session: HostedSession
    nodes: SessionNodes
    methods: SessionMethods
    target: PublishTarget
    program: ProgramState
    #: the session's pacer: pulsed when a method call must show at once
    pacer: Pacer


@dataclass(frozen=True, slots=True)
class _Pending:
    """A session event waiting to be emitted (the session's listener is synchronous)."""

    served: _Served
    kind: str
    message: str
    severity: int
    state: RunState
    sim_time: float
    step_count: int
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: an alarm transition's condition (``opcua/alarms.py`` emits it)
    alarm: Any = None


#: session events after which the session is Halted, whatever its last frame says
_HALTING = frozenset({"fault", "recovered"})
#: session events a publish itself raises (the edges of Boolean outputs): what they
#: say is in the nodes already
_FROM_PUBLISH = frozenset({"alarm", "alarm_cleared"})


class OpcUaServer:
    """Our address space served over opc.tcp, fed by sessions, writing back to them."""

    def __init__(self, server_config: ServerConfig, *, endpoint: str | None = None,
                 runtime: Runtime | None = None) -> None:
        self.config = server_config
        self._endpoint = endpoint or server_config.endpoint
        self._server = Server()
        self.state = ServerState.CREATED
        self.security: SecurityContext | None = None
        self.namespace = 0
        #: the daemon: serves the TwinServer methods and Snapshot/Restore/Fork, and is
        #: told of client activity on sessions (without it those methods refuse)
        self.runtime = runtime
        self._attributes: TwinAttributeService | None = None
        self._publisher: Publisher | None = None
        self._emitter: ev.Emitter | None = None
        #: the sessions' alarms as Part 9 conditions (``alarms.py``), from ``start``
        self.alarms: AlarmConditions | None = None
        self._server_methods: ServerMethods | None = None
        self._folders: set[ua.NodeId] = {ua.NodeId(ua.ObjectIds.ObjectsFolder)}
        self._twins: dict[str, list[ua.NodeId]] = {}
        self._sessions: dict[str, _Served] = {}
        self._pending: collections.deque[_Pending] = collections.deque()
        self._pending_wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        #: HistoryRead from the store (``install_history``), None without history
        self.history: history_read.TwinHistoryManager | None = None
        #: told of every accepted client write: (session, key, stored value, "client")
        self.on_written: Callable[[str, VarKey, Any, str], None] | None = None
        #: told of every session log event this server emits: (session, kind, message,
        #: severity) -- the session's own, created, deleted, expired; an alarm
        #: transition's once emitted, with its time and fields (``alarms.LogEvent``)
        self.on_log_event: LogEvent | None = None
        self._nodes = 0
        self._hil: HilNodes | None = None
        #: Diagnostics/Workers and each session's worker health (``worker_nodes``)
        self.worker_nodes: WorkerNodes | None = None
        self._log = log.bind(endpoint=self._endpoint)

    # -- lifecycle -----------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        """The endpoint clients connect to; after ``start`` it carries the bound port."""
        return self._endpoint

    @property
    def attributes(self) -> TwinAttributeService:
        """Our write routing (machine faces add their variables' routes to it)."""
        assert self._attributes is not None, "not started"
        return self._attributes

    @property
    def asyncua(self) -> Server:
        """The underlying asyncua Server (for adapters such as HistoryRead)."""
        return self._server

    async def start(self) -> None:
        """Build the base address space and bind the endpoint (port 0 picks a free one)."""
        self.state = ServerState.STARTING
        server = self._server
        # the standard address space from a cache ($CACHE_DIRECTORY, else state_dir/cache)
        await aspace_cache.init_server(server, aspace_cache.cache_dir(self.config.state_dir))
        await identity.set_build_info(server)  # (asyncua's init wrote its own)
        server.set_endpoint(self._endpoint)
        server.set_server_name(self.config.application_name)
        await server.set_application_uri(self.config.application_uri)
        self.namespace = await server.register_namespace(NAMESPACE_URI)
        iserver = server.iserver
        browse.install(iserver)  # (reference subtypes looked up once, not per reference)
        self._attributes = TwinAttributeService(iserver.aspace, self.namespace,
                                                on_activity=self._touch)
        iserver.attribute_service = self._attributes
        self._publisher = Publisher(iserver.aspace)
        # sampling intervals, deadbands, items that outlive their node (before security
        # wraps the same services: its ownership check comes first)
        monitoring.install(iserver)
        self._emitter = ev.Emitter(server, await ev.register_event_type(server, self.namespace))
        self.alarms = AlarmConditions(iserver, self.namespace, after=self.flush_events)
        self.alarms.install()
        batch = self._batch()
        server_methods = build_root(batch, ua.NodeId(ua.ObjectIds.ObjectsFolder))
        self.worker_nodes = build_workers(batch, self.nodeid(ROOT))
        aspace = iserver.aspace
        self._nodes += len(batch.commit(aspace))
        # the notifier chain (events.py): Server --HasNotifier--> TwinServer
        add_reference(aspace, ev.SERVER_OBJECT, self.nodeid(ROOT), _HAS_NOTIFIER)
        if self.runtime is not None:
            self._server_methods = ServerMethods(
                self.runtime, session_nodeid=self.session_nodeid,
                twin_nodeid=lambda name: self.nodeid(f"{TWINS}.{name}"),
                after=self.flush_events, limits=self.config.limits)
            for name, callback in self._server_methods.callbacks().items():
                aspace.add_method_callback(server_methods[name], callback)
        # endpoints, certificates, users and roles, limits (twin_server.security); last
        # before binding: it wraps the attribute and method services set up above
        self.security = await configure_security(server, self.config, self.config.state_dir)
        identity.set_capabilities(aspace, self.config.limits)
        await server.start()
        self._endpoint = self._bound_endpoint()
        self._log = log.bind(endpoint=self._endpoint)
        self.state = ServerState.RUNNING
        self._log.info("opcua_server_started", namespace=self.namespace,
                       endpoints=list(self.security.statistics().endpoints),
                       anonymous=self.config.security.anonymous)

    def _bound_endpoint(self) -> str:
        return bound_endpoint(self._server, self._endpoint)

    async def stop(self) -> None:
        """Close every client connection and the listening socket."""
        if self.state in (ServerState.STOPPED, ServerState.CREATED):
            self.state = ServerState.STOPPED
            return
        self.state = ServerState.STOPPING
        await stop_server(self._server)
        self.state = ServerState.STOPPED
        self._log.info("opcua_server_stopped")

    def install_history(self, store: HistoryStore) -> None:
        """Serve HistoryRead of our sessions from ``store`` (after ``start``)."""
        self.history = history_read.install(
            self._server, store, self.namespace,
            limits=history_read.HistoryLimits.of(self.config.limits), on_activity=self._touch)

    # -- twins and sessions --------------------------------------------------------
    async def add_twin(self, twin: TwinDefinition) -> ua.NodeId:
        """Add ``Twins.<twin>``: the definition, read-only; return its NodeId."""
        if twin.name in self._twins:
            raise ValueError(f"twin {twin.name!r} is already served")
        batch = self._batch()
        with collector_paused():  # (in slices: a twin of 20,000 components is 60,000 nodes)
            root = await in_slices(build_twin_steps(batch, twin))
            added = await in_slices(batch.commit_steps(self._iserver.aspace))
        await monitoring.reattach(self._iserver.aspace, added)
        self._twins[twin.name] = added
        self._nodes += len(added)
        self._log.info("twin_added", twin=twin.name, nodes=len(added))
        await self._model_changed(TWINS, root, _OBJECT_TYPE, added=True,
                                  message=f"twin {twin.name!r} added")
        return root

    async def remove_twin(self, name: str) -> None:
        """Take ``Twins.<name>`` out of the address space."""
        added = self._twins.pop(name, None)
        if added is None:
            raise KeyError(name)
        await self._delete_subtree(TWINS, added, name)
        self._folders.difference_update(added)
        self._nodes -= len(added)
        self._log.info("twin_removed", twin=name, nodes=len(added))
        await self._model_changed(TWINS, added[0], _OBJECT_TYPE, added=False,
                                  message=f"twin {name!r} removed")

    async def add_session(self, session: HostedSession, twin: TwinDefinition, *,
                          pacer: Pacer, created: str | None = None,
                          historized: Sequence[str] | None = None) -> ua.NodeId:
        """Add ``Sessions.<session>`` (a session of ``twin`` in the daemon's host) with
        every variable, its methods and write routes; the publisher (``publisher``)
        publishes the frames ``pacer`` delivers to it from now on (the caller runs the
        pacer; the server pulses it after a method call, so that the call's effect
        shows when it returns), and the events its host reports (``session_event``)
        become OPC UA events.
        ``created`` is the message of its ``created`` event (none if None).
        ``historized``: the ``VarKey.path``s whose history is recorded (their nodes are
        marked Historizing, the session node gets event history); None: none is. Returns
        the session's NodeId."""
        if session.name in self._sessions:
            raise ValueError(f"session {session.name!r} is already served")
        assert self._publisher is not None and self._attributes is not None, "not started"
        started = time.perf_counter()
        batch = self._batch()
        variables: list[tuple[VarKey, Variable, ua.NodeId]] = []
        program = ProgramState(session.frame().state)
        alarm_definitions = await session.alarm_definitions()
        alarm_states = await session.alarm_states() if alarm_definitions else ()
        assert self.alarms is not None
        # in slices of BUILD_SLICE seconds between which the loop serves the others (a
        # session of 20,000 components is 100,000s of nodes: seconds of building); its
        # subtree becomes reachable by browsing once it is whole (``commit_steps``)
        with collector_paused():
            nodes = await in_slices(build_session_steps(
                batch, session, twin,
                lambda key, var, nodeid: variables.append((key, var, nodeid)), program.view()))
            health = build_session_health(batch, session.name)
            nodes.all += health
            first = len(batch)
            conditions = self.alarms.build(
                batch, session, nodes.root,
                (nodes.root, self.nodeid(SESSIONS), self.nodeid(ROOT), ev.SERVER_OBJECT),
                alarm_definitions, alarm_states,
                lambda d: self.session_nodeid(session.name, d.variable.path))
            nodes.all += batch.nodeids[first:]
            await in_slices(batch.commit_steps(self._iserver.aspace))
        aspace = self._iserver.aspace
        if historized is not None:
            await in_slices(_each(historized, lambda path: history_read.mark_historizing(
                aspace, (self.session_nodeid(session.name, path),))))
            history_read.mark_event_history(aspace, [nodes.root])
        target = PublishTarget(session, nodes)
        target.on_forces = _forces_shower(session, nodes, aspace)
        target.fault_nodes = FaultNodes(
            aspace, self._batch, session, nodes.root, nodes.all,
            lambda path: self.session_nodeid(session.name, f"Components.{path}"),
            self._iserver.node_mgt_service.delete_nodes)
        publisher = self._publisher

        async def changed() -> None:
            pacer.pulse()
            await publisher.publish(target)
            await self.flush_events()

        methods = SessionMethods(session, changed, runtime=self.runtime,
                                 session_nodeid=self.session_nodeid, limits=self.config.limits)
        for name, callback in methods.callbacks().items():
            aspace.add_method_callback(nodes.methods[name], callback)
        self.alarms.link(session.name, conditions)
        flags = await in_slices(self._route_writes(session, nodes, target, variables))
        served = _Served(session, nodes, methods, target, program, pacer)
        self._watch_flags(served, twin, variables, flags)
        # what the build put in the nodes counts as sent
        publisher.add(target)
        assert self.worker_nodes is not None
        self.worker_nodes.add_session(session, health)
        pacer.pulse()
        await publisher.publish(target)
        self._sessions[session.name] = served
        self._nodes += len(nodes.all)
        # items on these NodeIds from before (the session deleted, or restarted by a
        # reload) watch the new nodes
        await monitoring.reattach(aspace, nodes.all)
        elapsed = time.perf_counter() - started
        self._log.info("session_added", session=session.name, twin=twin.name,
                       nodes=len(nodes.all), variables=len(variables),
                       seconds=round(elapsed, 4))
        if created is not None:
            self._queue(served, "created", created, ev.SEVERITY_LIFECYCLE)
        await self.flush_events()
        await self._model_changed(SESSIONS, nodes.root, _PROGRAM_TYPE, added=True,
                                  message=f"session {session.name!r} added")
        return nodes.root

    def _watch_flags(self, served: _Served, twin: TwinDefinition,
                     variables: list[tuple[VarKey, Variable, ua.NodeId]],
                     alarms: frozenset[int]) -> None:
        """Boolean outputs are alarm flags (a tank's ``overflow``; ``alarms``: their
        indexes, from ``_route_writes``): each edge the publisher sees becomes an
        ``alarm`` / ``alarm_cleared`` event. A change of a parameter that bounds other
        variables (a tank's height) rewrites their EURange (``ranges.py``)."""
        ranges = RangeFollower(twin, variables, served.session.frame().values)
        flags = alarms | ranges.watched
        if not flags:
            return

        def on_flag(key: VarKey, value: Any,
                    frame: Frame) -> list[tuple[ua.NodeId, ua.DataValue]]:
            if key.kind is Kind.PARAMETER:
                return ranges.changed(key, frame.values)
            where = (f"output {key.name!r} of component {key.component!r}")
            at = f"at t={frame.sim_time:g} s (tick {frame.step_count})"
            if value:
                self._queue(served, "alarm", f"{where} turned true {at}", ev.SEVERITY_ALARM)
            else:
                self._queue(served, "alarm_cleared", f"{where} turned false again {at}",
                            ev.SEVERITY_ALARM_CLEARED)
            return []

        served.target.flags = flags
        served.target.on_flag = on_flag

    def _route_writes(self, session: HostedSession, nodes: SessionNodes, target: PublishTarget,
                      variables: list[tuple[VarKey, Variable, ua.NodeId]],
                      ) -> Generator[None, None, frozenset[int]]:
        """The write route of every writable node (in steps, for ``in_slices``);
        returns the indexes of the alarm flags (``_watch_flags``)."""
        assert self._attributes is not None
        targets = self._attributes.targets
        flags: list[int] = []
        for index, (key, var, nodeid) in enumerate(variables):
            vtype = nodes.variables[index][2]
            targets[nodeid] = WriteTarget(
                vtype, _writer(self, session, key), session.name,
                accepted=_remember(target, index))
            if key.kind is Kind.OUTPUT and var.datatype is DataType.BOOLEAN:
                flags.append(index)
            if not index % BUILD_STEP:
                yield
        targets[nodes.scalar("RealtimeFactor")] = WriteTarget(
            ua.VariantType.Double, _realtime_factor_writer(session), session.name)
        return frozenset(flags)

    async def remove_session(self, name: str, *, kind: str = "deleted",
                             message: str | None = None,
                             severity: int = ev.SEVERITY_LIFECYCLE) -> None:
        """Take ``Sessions.<name>`` out of the address space (the session itself is
        the caller's to stop and close). Its pending events go out first, then a
        last one of ``kind`` with ``message`` (none if None)."""
        served = self._sessions.get(name)
        if served is None:
            raise KeyError(name)
        assert self._publisher is not None and self._attributes is not None
        if message is not None:
            self._queue(served, kind, message, severity)
        await self.flush_events()
        if self.alarms is not None:
            await self.alarms.remove_session(name, self.on_log_event)
        del self._sessions[name]
        self._publisher.remove(name)
        if self.worker_nodes is not None:
            self.worker_nodes.remove_session(name)
        targets, history, folders = self._attributes.targets, self.history, self._folders

        def forget(nodeid: ua.NodeId) -> None:
            targets.pop(nodeid, None)
            if history is not None:
                history.forget((nodeid,))
            # (the folders among them: kept, they would pile up with every new name)
            folders.discard(nodeid)

        await in_slices(_each(served.nodes.all, forget))
        await self._delete_subtree(SESSIONS, served.nodes.all, name)
        self._nodes -= len(served.nodes.all)
        self._log.info("session_removed", session=name, nodes=len(served.nodes.all))
        await self._model_changed(SESSIONS, served.nodes.root, _PROGRAM_TYPE, added=False,
                                  message=f"session {name!r} removed")

    async def _delete_subtree(self, folder: str, nodeids: list[ua.NodeId], name: str) -> None:
        # DeleteTargetReferences makes asyncua scan every reference of every node in
        # the server for each node deleted; the only references into the subtree from
        # outside is its folder's Organizes, so drop that one (the subtree is out of
        # sight from then on) and delete the nodes bare, children first, in slices
        aspace = self._iserver.aspace
        # the nodes' monitored items hear BadNodeIdUnknown and wait for the NodeIds to
        # come back (asyncua's delete would drop them, unawaited: patches/monitoring.py)
        await monitoring.detach(aspace, nodeids)
        root = nodeids[0]
        data = aspace[self.nodeid(folder)]
        data.references[:] = [r for r in data.references if r.NodeId != root]
        failed: list[str] = []

        def deleting() -> Generator[None, None, None]:
            for end in range(len(nodeids), 0, -DELETE_STEP):  # (children first)
                items = [ua.DeleteNodesItem(NodeId=n, DeleteTargetReferences=False)
                         for n in reversed(nodeids[max(0, end - DELETE_STEP):end])]
                results = self._iserver.node_mgt_service.delete_nodes(
                    ua.DeleteNodesParameters(NodesToDelete=items))
                failed.extend(i.NodeId.to_string() for i, r in zip(items, results, strict=True)
                              if not r.is_good())
                yield

        await in_slices(deleting())
        if failed:
            self._log.warning("nodes_not_deleted", folder=folder, name=name,
                              nodes=failed[:10], count=len(failed))

    async def _model_changed(self, folder: str, root: ua.NodeId, root_type: ua.NodeId, *,
                             added: bool, message: str) -> None:
        """A GeneralModelChangeEvent from ``folder`` (and up the notifier chain)."""
        if self._emitter is None or self.state is not ServerState.RUNNING:
            return
        folder_id = self.nodeid(folder)
        node_verb = ev.NODE_ADDED if added else ev.NODE_DELETED
        ref_verb = ev.REFERENCE_ADDED if added else ev.REFERENCE_DELETED
        await self._emitter.model_change(
            (folder_id, self.nodeid(ROOT), ev.SERVER_OBJECT), folder,
            [(root, root_type, node_verb), (folder_id, _FOLDER_TYPE, ref_verb)], message)

    # -- session events ------------------------------------------------------------
    def session_event(self, name: str, event: SessionEvent) -> None:
        """The session host's listener (``runtime.EventListener``): synchronous (it
        may run inside a tick), so the event waits in a queue for ``flush_events``.
        Events of a session not served (yet, or any more) are not ours to show."""
        served = self._sessions.get(name)
        if served is not None:
            self._queue(served, event.kind, event.message, event.severity, event.alarm)

    def _queue(self, served: _Served, kind: str, message: str, severity: int,
               alarm: Any = None) -> None:
        session = served.session
        try:
            frame = session.frame()
            state, sim_time, step_count = frame.state, frame.sim_time, frame.step_count
        except NotFound:  # its host let go of it already
            state, sim_time, step_count = RunState.HALTED, 0.0, 0
        if kind in _HALTING:
            # a fault halts the session, and a recovered one stays Halted; the frame may
            # still be the one from before (a worker's death, or its replacement's
            # first frame not read yet) and show it Running
            state = RunState.HALTED
        self._pending.append(_Pending(served, kind, message, severity, state,
                                      sim_time, step_count, alarm=alarm))
        self._pending_wake.set()
        if self.on_log_event is not None and alarm is None:
            # an alarm's is recorded as it goes out, with its fields (flush_events)
            self.on_log_event(session.name, kind, message, severity)

    async def announce(self, name: str, kind: str, message: str, severity: int) -> None:
        """A log event about session ``name``, which is not served (its creation in
        the background failed), from the Sessions folder up (TwinServer, Server)."""
        if self.on_log_event is not None:
            self.on_log_event(name, kind, message, severity)
        if self._emitter is None or self.state is not ServerState.RUNNING:
            return
        await self._emitter.session_event(
            (self.nodeid(SESSIONS), self.nodeid(ROOT), ev.SERVER_OBJECT), name, kind,
            message, severity, 0.0, 0)

    async def flush_events(self, count: int | None = None) -> None:
        """Emit the queued session events (the first ``count`` of them; every one if
        None) and update the state machine nodes."""
        if not self._pending:
            return
        async with self._flush_lock:
            emitter = self._emitter
            while self._pending and (count is None or count > 0):
                if count is not None:
                    count -= 1
                item = self._pending.popleft()
                served = item.served
                if served.program.follow(item.kind, item.state):
                    await self._write_program(served.nodes.program, served.program.view())
                if item.alarm is not None:
                    await self._alarm_event(item, emitting=emitter is not None)
                    continue
                if emitter is None:
                    continue
                root = served.nodes.root
                try:
                    await emitter.session_event(
                        (root, self.nodeid(SESSIONS), self.nodeid(ROOT), ev.SERVER_OBJECT),
                        served.session.name, item.kind, item.message, item.severity,
                        item.sim_time, item.step_count, item.time)
                except Exception:
                    self._log.exception("event_failed", session=served.session.name,
                                        kind=item.kind)
                if item.kind == "recovered" and self.alarms is not None:
                    await self._resync_alarms(served)

    async def _alarm_event(self, item: _Pending, *, emitting: bool) -> None:
        """An alarm transition: its condition's event (when events go out), and the
        history's record of it, with that event's fields (without them if none went
        out)."""
        name = item.served.session.name
        fields = None
        if emitting and self.alarms is not None:
            try:
                fields = await self.alarms.transition(name, item.alarm, item.time)
            except Exception:
                self._log.exception("alarm_event_failed", session=name, alarm=item.alarm.name)
        if self.on_log_event is not None:
            self.on_log_event(name, item.kind, item.message, item.severity, fields=fields,
                              t=item.time.timestamp())

    async def _resync_alarms(self, served: _Served) -> None:
        """After a worker's death its session is back from a snapshot: each condition
        the engine holds now that is not what clients were shown (another state, or a
        new EventId) goes out as an ``alarm_restored`` event, so that a client's next
        Acknowledge names the EventId the engine expects."""
        assert self.alarms is not None
        try:
            states = await served.session.alarm_states()
        except TwinServerError as exc:
            self._log.warning("alarm_resync_failed", session=served.session.name,
                              error=str(exc))
            return
        for state in self.alarms.differing(served.session.name, states):
            self._queue(served, f"alarm_{state.transition}", state.message, state.severity,
                        state)

    async def _write_program(self, nodes: ProgramNodes, view: StateView) -> None:
        await write_program(self._iserver.aspace, nodes, view)

    async def _pump_events(self) -> None:
        """Emit the events of ticks and of the host (faults, a worker's return, a Step's
        end, alarm flags) as they come, each once its session's nodes show what it
        changed (``_show``)."""
        while True:
            await self._pending_wake.wait()
            self._pending_wake.clear()
            while self._pending:
                count = len(self._pending)
                await self._show([item.served for item in itertools.islice(self._pending, count)
                                  if item.kind not in _FROM_PUBLISH])
                await self.flush_events(count)

    async def _show(self, sessions: list[_Served]) -> None:
        """Publish each of ``sessions`` now, a frame its pacer delivers to every sink, so
        that a client that gets an event reads what the event changed (a fault's Halted
        and Bad values, a worker's return) and not the values of the last period (a
        method call's ``changed`` does the same before its events go out)."""
        assert self._publisher is not None
        done: set[int] = set()
        for served in sessions:
            if id(served) in done or self._sessions.get(served.session.name) is not served:
                continue  # (removed meanwhile: its last frame went out with its removal)
            done.add(id(served))
            served.pacer.pulse()
            await self._publisher.publish(served.target)

    # -- activity ------------------------------------------------------------------
    def _touch(self, session: str) -> None:
        if self.runtime is not None and session in self._sessions:
            self.runtime.touch(session)

    def trust_list(self) -> TrustList:
        """The daemon's trust list (``SecurityContext.trust_list``)."""
        assert self.security is not None, "not started"
        return self.security.trust_list()

    def client_count(self) -> int:
        """Open client connections (for the service manager's STATUS line)."""
        bserver = self._server.bserver
        return len(bserver.clients) if bserver is not None else 0

    def subscribed_sessions(self) -> set[str]:
        """Sessions some client monitors (a value, or events on the session node).
        Walks asyncua's monitored items (``MonitoredItemService._monitored_items``):
        a cost per monitored item in the server, paid by the expiry check only."""
        names: set[str] = set()
        ns = self.namespace
        for sub in list(self._iserver.subscription_service.subscriptions.values()):
            for mdata in list(internals.monitored_items(sub).values()):
                rvid = mdata.read_value_id
                if rvid is not None:
                    name = session_of(rvid.NodeId, ns)
                    if name:
                        names.add(name)
        return names

    # -- hardware in the loop ------------------------------------------------------
    async def add_hil(self, mirror: HilMirror) -> None:
        """Add ``HIL/<peer>`` health nodes below TwinServer."""
        batch = self._batch()
        self._hil = hil = build_hil(batch, self.nodeid(ROOT), mirror.statistics())
        aspace = self._iserver.aspace
        self._nodes += len(batch.commit(aspace))

        async def shown() -> None:  # (a link fault's call returns with its effect shown)
            await hil.publish(aspace, mirror.statistics())

        for peer, methods in hil.methods.items():
            for name, callback in HilMethods(mirror, peer, shown).callbacks().items():
                aspace.add_method_callback(methods[name], callback)

    async def publish_hil_forever(self, mirror: HilMirror, period: float = 0.5) -> None:
        """Keep the HIL health nodes current until cancelled. (The quality of each
        input a PLC feeds travels with its value, in the session's frames:
        ``HostedSession.mark``.)"""
        assert self._hil is not None, "add_hil first"
        await self._hil.run(self._iserver.aspace, mirror.statistics, period)

    # -- scenario runs -------------------------------------------------------------
    async def add_scenarios(self, service: ScenarioService) -> ScenarioNodes:
        """RunScenario on TwinServer and ``Scenarios/<run>`` for ``service``'s runs
        (``scenario_nodes``); the caller runs its ``publish_forever``."""
        assert self._emitter is not None, "not started"
        nodes = ScenarioNodes(self._server, self.namespace, self._batch, self._emitter,
                              service, limits=self.config.limits)
        await nodes.build()
        return nodes

    # -- campaigns -------------------------------------------------------------------
    async def add_campaigns(self, service: CampaignService) -> CampaignNodes:
        """RunCampaign on TwinServer and ``Campaigns/<run>`` for ``service``'s campaigns
        (``campaign_nodes``); the caller runs its ``publish_forever``."""
        assert self._emitter is not None, "not started"
        nodes = CampaignNodes(self._server, self.namespace, self._batch, self._emitter,
                              service, limits=self.config.limits)
        await nodes.build()
        return nodes

    # -- worker health -------------------------------------------------------------
    async def publish_workers_forever(self, statistics: Callable[[], HostStatistics],
                                      period: float = 0.5) -> None:
        """Keep Diagnostics/Workers and each session's worker health current from the
        host's ``statistics`` (``worker_nodes``), until cancelled."""
        assert self.worker_nodes is not None, "not started"
        await self.worker_nodes.run(self._iserver.aspace, statistics, period)

    # -- publishing ----------------------------------------------------------------
    @property
    def publisher(self) -> Publisher:
        """The OPC UA sink (``runtime.sinks.Sink``) every session's pacer feeds."""
        assert self._publisher is not None, "not started"
        return self._publisher

    async def publish_forever(self) -> None:
        """Publish the frames the pacers deliver, and emit the events of ticks as they
        come, until cancelled."""
        assert self._publisher is not None, "not started"
        sampler = fastpath.sampler(self._iserver.aspace)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._publisher.run(), name="publisher")
            tg.create_task(self._pump_events(), name="events")
            if self.alarms is not None:  # (the shelvings' ends by time)
                tg.create_task(self.alarms.run_shelving(), name="shelving")
            if sampler is not None:  # (the items with a sampling interval of their own)
                tg.create_task(sampler.run(), name="sampler")

    async def publish(self, name: str) -> int:
        """Publish one session now, a frame its pacer delivers to every sink (tests,
        and after a change that must show at once); how many values were written."""
        assert self._publisher is not None, "not started"
        served = self._sessions[name]
        served.pacer.pulse()
        return await self._publisher.publish(served.target)

    def statistics(self) -> ServerStatistics:
        assert self._publisher is not None and self._attributes is not None, "not started"
        pub = self._publisher.statistics()
        writes = self._attributes.statistics()
        calls = method_statistics(
            [s.methods for s in self._sessions.values()]
            + ([self._server_methods] if self._server_methods is not None else []))
        return ServerStatistics(
            state=self.state, twins=len(self._twins), sessions=len(self._sessions),
            nodes=self._nodes, publish_cycles=pub.publish_cycles,
            values_published=pub.values_published, writes_accepted=writes.accepted,
            writes_refused=writes.refused, method_calls=calls.calls,
            methods_refused=calls.refused, publisher=pub)

    # -- helpers -------------------------------------------------------------------
    @property
    def _iserver(self) -> Any:
        return self._server.iserver

    def _batch(self) -> NodeBatch:
        return NodeBatch(self.namespace, self._folders)

    def nodeid(self, path: str) -> ua.NodeId:
        """The NodeId of a dotted path below TwinServer (``Sessions.tank.State``)."""
        return ua.NodeId(path, self.namespace)

    def session_nodeid(self, session: str, path: str = "") -> ua.NodeId:
        return self.nodeid(".".join(p for p in (SESSIONS, session, path) if p))

    @staticmethod
    def root_path() -> str:
        return ROOT


#: seconds of node building between two yields to the event loop
BUILD_SLICE = 0.01
#: nodes deleted in one step of ``_delete_subtree``
DELETE_STEP = 256

T = TypeVar("T")


def bound_endpoint(server: Server, endpoint: str) -> str:
    """The configured URL ``endpoint`` of the started ``server`` with the port its
    socket really got, also put into the endpoint descriptions clients read with
    GetEndpoints."""
    bserver = server.bserver
    sockets = internals.listening_sockets(bserver) if bserver is not None else []
    if not sockets:
        return endpoint
    port = sockets[0].getsockname()[1]
    url = urlparse(endpoint)
    if url.port == port:
        return endpoint
    host = url.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    bound = url._replace(netloc=f"{host}:{port}").geturl()
    server.endpoint = urlparse(bound)
    for edp in server.iserver.endpoints:
        edp.EndpointUrl = bound
        edp.Server.DiscoveryUrls = [bound]
    return bound


async def stop_server(server: Server) -> None:
    """Close every client connection of the started ``server`` and its socket."""
    # asyncua's stop waits for its CurrentTime loop to finish a 1 s sleep; end
    # that loop now so that a shutdown stage does not spend a second on it
    iserver = server.iserver
    time_task = getattr(iserver, "time_task", None)
    if time_task is not None:
        internals.request_time_task_stop(iserver)
        time_task.cancel()
        await asyncio.wait([time_task])
        iserver.time_task = None
    await server.stop()


async def in_slices(steps: Generator[None, None, T], budget: float = BUILD_SLICE) -> T:
    """Run a generator of steps (``tree.build_session_steps``,
    ``NodeBatch.commit_steps``, ...) to its end, letting the event loop run every
    ``budget`` seconds (and a clock tick that falls due first: ``Ticks.clear``)."""
    perf = time.perf_counter
    deadline = perf() + budget
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result
        if perf() >= deadline:
            await asyncio.sleep(0)
            await TICKS.clear(budget)
            deadline = perf() + budget


def _each(items: Iterable[T], action: Callable[[T], object],
          step: int = 4 * BUILD_STEP) -> Generator[None, None, None]:
    """``action`` on every item, in steps for ``in_slices``."""
    for i, item in enumerate(items, 1):
        action(item)
        if not i % step:
            yield




def _writer(server: OpcUaServer, session: HostedSession, key: VarKey) -> Any:
    async def write(value: Any) -> Any:
        return await checks.write_value(session, key, value, server.on_written)
    return write


def _forces_shower(session: HostedSession, nodes: SessionNodes,
                   aspace: Any) -> Callable[[], Awaitable[None]]:
    """What writes a session's ForcedInputs: its forced inputs, in layout order."""
    order = {key: i for i, (key, _, _) in enumerate(nodes.variables)}

    async def show() -> None:
        if nodes.forced is None or nodes.forced not in aspace:
            return
        try:
            forced = await session.forced()
        except NotFound:
            return  # deleted meanwhile
        names = [f"{k.component}.{k.name}" for k in sorted(forced, key=lambda k: order.get(k, 0))]
        now = datetime.now(UTC)
        await aspace.write_attribute_value(nodes.forced, _VALUE, ua.DataValue(
            ua.Variant(names, ua.VariantType.String, is_array=True),
            SourceTimestamp=now, ServerTimestamp=now))
    return show


def _remember(target: PublishTarget, index: int) -> Any:
    def accepted(value: Any) -> None:
        target.accepted(index, value)
    return accepted


def _realtime_factor_writer(session: HostedSession) -> Any:
    async def write(value: Any) -> float:
        factor = checks.realtime_factor(value)
        await session.set_realtime_factor(factor)
        return factor
    return write
