"""The OPC UA server: an asyncua Server holding our address space, sessions and writes.

The daemon (``app.py``) creates one ``OpcUaServer``, starts it, adds the twins
and sessions, runs ``publish_forever`` in its TaskGroup and stops it last.
Everything session-specific is in the modules beside this one: the tree layout
(``tree``), node building (``nodes``), client writes (``writes``), methods
(``methods``) and publishing (``publisher``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import structlog
from asyncua import Server, ua

from twin_server.config.schema import ServerConfig
from twin_server.engine.session import Session, VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import OutOfRange, TypeMismatch
from twin_server.models.base import Variable
from twin_server.opcua.methods import SessionMethods, method_statistics
from twin_server.opcua.nodes import NodeBatch
from twin_server.opcua.publisher import Publisher, PublisherStatistics, PublishTarget
from twin_server.opcua.tree import (
    MAX_REALTIME_FACTOR,
    ROOT,
    SESSIONS,
    SessionNodes,
    StatisticsSource,
    build_root,
    build_session,
    build_twin,
)
from twin_server.opcua.writes import TwinAttributeService, WriteTarget

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


@dataclass(slots=True)
class _Served:
    nodes: SessionNodes
    methods: SessionMethods
    target: PublishTarget


class OpcUaServer:
    """Our address space served over opc.tcp, fed by sessions, writing back to them."""

    def __init__(self, server_config: ServerConfig, *, endpoint: str | None = None) -> None:
        self.config = server_config
        self._endpoint = endpoint or server_config.endpoint
        self._server = Server()
        self.state = ServerState.CREATED
        self.namespace = 0
        self._attributes: TwinAttributeService | None = None
        self._publisher: Publisher | None = None
        self._folders: set[ua.NodeId] = {ua.NodeId(ua.ObjectIds.ObjectsFolder)}
        self._twins: dict[str, list[ua.NodeId]] = {}
        self._sessions: dict[str, _Served] = {}
        self._nodes = 0
        self._log = log.bind(endpoint=self._endpoint)

    # -- lifecycle -----------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        """The endpoint clients connect to; after ``start`` it carries the bound port."""
        return self._endpoint

    @property
    def asyncua(self) -> Server:
        """The underlying asyncua Server (for adapters such as HistoryRead)."""
        return self._server

    async def start(self) -> None:
        """Build the base address space and bind the endpoint (port 0 picks a free one)."""
        self.state = ServerState.STARTING
        server = self._server
        await server.init()
        server.set_endpoint(self._endpoint)
        server.set_server_name(self.config.application_name)
        await server.set_application_uri(self.config.application_uri)
        # security policies and user roles are configured by the security work;
        # until then the endpoint offers no security, and says so in the log
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.namespace = await server.register_namespace(NAMESPACE_URI)
        iserver = server.iserver
        self._attributes = TwinAttributeService(iserver.aspace, self.namespace)
        iserver.attribute_service = self._attributes
        self._publisher = Publisher(iserver.aspace)
        batch = self._batch()
        build_root(batch, ua.NodeId(ua.ObjectIds.ObjectsFolder))
        self._nodes += len(batch.commit(iserver.aspace))
        await server.start()
        self._endpoint = self._bound_endpoint()
        self._log = log.bind(endpoint=self._endpoint)
        self.state = ServerState.RUNNING
        self._log.info("opcua_server_started", namespace=self.namespace, security="None")

    def _bound_endpoint(self) -> str:
        """The configured URL with the port the socket really got, also put into the
        endpoint descriptions clients read with GetEndpoints."""
        bserver = self._server.bserver
        if bserver is None or bserver._server is None or not bserver._server.sockets:
            return self._endpoint
        port = bserver._server.sockets[0].getsockname()[1]
        url = urlparse(self._endpoint)
        if url.port == port:
            return self._endpoint
        host = url.hostname or ""
        host = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
        bound = url._replace(netloc=f"{host}:{port}").geturl()
        self._server.endpoint = urlparse(bound)
        for edp in self._server.iserver.endpoints:
            edp.EndpointUrl = bound
            edp.Server.DiscoveryUrls = [bound]
        return bound

    async def stop(self) -> None:
        """Close every client connection and the listening socket."""
        if self.state in (ServerState.STOPPED, ServerState.CREATED):
            self.state = ServerState.STOPPED
            return
        self.state = ServerState.STOPPING
        # asyncua's stop waits for its CurrentTime loop to finish a 1 s sleep; end
        # that loop now so that a shutdown stage does not spend a second on it
        iserver = self._server.iserver
        time_task = getattr(iserver, "time_task", None)
        if time_task is not None:
            iserver._time_task_stop = True
            time_task.cancel()
            await asyncio.wait([time_task])
            iserver.time_task = None
        await self._server.stop()
        self.state = ServerState.STOPPED
        self._log.info("opcua_server_stopped")

    # -- twins and sessions --------------------------------------------------------
    async def add_twin(self, twin: TwinDefinition) -> None:
        """Add ``Twins.<twin>``: the definition, read-only."""
        if twin.name in self._twins:
            raise ValueError(f"twin {twin.name!r} is already served")
        batch = self._batch()
        build_twin(batch, twin)
        added = batch.commit(self._iserver.aspace)
        self._twins[twin.name] = added
        self._nodes += len(added)
        self._log.info("twin_added", twin=twin.name, nodes=len(added))

    async def add_session(self, session: Session, clock: StatisticsSource | None = None) -> None:
        """Add ``Sessions.<session>`` with every variable, its methods and write routes;
        the publisher feeds it from now on."""
        if session.name in self._sessions:
            raise ValueError(f"session {session.name!r} is already served")
        assert self._publisher is not None and self._attributes is not None, "not started"
        started = time.perf_counter()
        batch = self._batch()
        variables: list[tuple[VarKey, Variable, ua.NodeId]] = []
        with _collector_paused():
            nodes = build_session(batch, session, clock,
                                  lambda key, var, nodeid: variables.append((key, var, nodeid)))
            batch.commit(self._iserver.aspace)
        target = PublishTarget(session, clock, nodes)
        publisher = self._publisher

        async def changed() -> None:
            await publisher.publish(target)

        methods = SessionMethods(session, changed)
        aspace = self._iserver.aspace
        for name, callback in methods.callbacks().items():
            aspace.add_method_callback(nodes.methods[name], callback)
        self._route_writes(session, nodes, target, variables)
        # what the build put in the nodes counts as sent
        await publisher.publish(target)
        publisher.add(target)
        self._sessions[session.name] = _Served(nodes, methods, target)
        self._nodes += len(nodes.all)
        elapsed = time.perf_counter() - started
        self._log.info("session_added", session=session.name, twin=session.twin.name,
                       nodes=len(nodes.all), variables=len(variables),
                       seconds=round(elapsed, 4))

    def _route_writes(self, session: Session, nodes: SessionNodes, target: PublishTarget,
                      variables: list[tuple[VarKey, Variable, ua.NodeId]]) -> None:
        assert self._attributes is not None
        targets = self._attributes.targets
        for index, (key, _var, nodeid) in enumerate(variables):
            vtype = nodes.variables[index][2]
            targets[nodeid] = WriteTarget(
                vtype, _writer(session, key), session.name,
                accepted=_remember(target, index))
        targets[nodes.scalar("RealtimeFactor")] = WriteTarget(
            ua.VariantType.Double, _realtime_factor_writer(session), session.name)

    async def remove_session(self, name: str) -> None:
        """Take ``Sessions.<name>`` out of the address space (the session itself is
        the caller's to stop)."""
        served = self._sessions.pop(name, None)
        if served is None:
            raise KeyError(name)
        assert self._publisher is not None and self._attributes is not None
        self._publisher.remove(name)
        for nodeid in served.nodes.all:
            self._attributes.targets.pop(nodeid, None)
        # DeleteTargetReferences makes asyncua scan every reference of every node in
        # the server for each node deleted; the only reference into the subtree from
        # outside is the Sessions folder's, so drop that one and delete the nodes bare
        aspace = self._iserver.aspace
        folder = aspace[self.nodeid(SESSIONS)]
        folder.references[:] = [r for r in folder.references if r.NodeId != served.nodes.root]
        items = [ua.DeleteNodesItem(NodeId=n, DeleteTargetReferences=False)
                 for n in reversed(served.nodes.all)]
        results = self._iserver.node_mgt_service.delete_nodes(
            ua.DeleteNodesParameters(NodesToDelete=items))
        failed = [i.NodeId.to_string() for i, r in zip(items, results, strict=True)
                  if not r.is_good()]
        if failed:
            self._log.warning("session_nodes_not_deleted", session=name, nodes=failed[:10],
                              count=len(failed))
        self._nodes -= len(served.nodes.all)
        self._log.info("session_removed", session=name, nodes=len(served.nodes.all))

    # -- publishing ----------------------------------------------------------------
    async def publish_forever(self) -> None:
        """Publish every session at its own ``publish_rate`` until cancelled."""
        assert self._publisher is not None, "not started"
        await self._publisher.run()

    async def publish(self, name: str) -> int:
        """Publish one session now (tests, and after a change that must show at once)."""
        assert self._publisher is not None, "not started"
        return await self._publisher.publish(self._publisher.target(name))

    def statistics(self) -> ServerStatistics:
        assert self._publisher is not None and self._attributes is not None, "not started"
        pub = self._publisher.statistics()
        writes = self._attributes.statistics()
        calls = method_statistics([s.methods for s in self._sessions.values()])
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


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a subtree is built: the build
    allocates ~50 objects per node, all of which live on, and the full collections
    they would trigger each walk asyncua's whole address space (~0.2 s apiece,
    more than the build itself)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _writer(session: Session, key: VarKey) -> Any:
    def write(value: Any) -> Any:
        return session.write(key, value)
    return write


def _remember(target: PublishTarget, index: int) -> Any:
    def accepted(value: Any) -> None:
        target.accepted(index, value)
    return accepted


def _realtime_factor_writer(session: Session) -> Any:
    def write(value: Any) -> float:
        if not isinstance(value, float):
            raise TypeMismatch(f"RealtimeFactor takes a Double (got {value!r})")
        if not 0.0 <= value <= MAX_REALTIME_FACTOR:  # also refuses NaN
            raise OutOfRange(f"RealtimeFactor must be within [0, {MAX_REALTIME_FACTOR:g}] "
                             f"(got {value}); 0 runs as fast as possible")
        session.set_realtime_factor(value)
        return value
    return write
