"""The HIL mirror: session variables to and from external PLC OPC UA servers.

One ``HilMirror`` holds every configured peer; ``run`` is its task (the daemon
runs it in its TaskGroup) and owns one task per peer in its own TaskGroup. A
peer's task loops through its link states::

    connecting --ok--> connected --loss--> disconnected --> backoff --> connecting
         \\--fail----------------------------/

While connected, four tasks share one asyncua Client:

* the **writer**: takes the latest frame the session's pacer delivered to the
  mirror (``deliver``: the mirror is a sink, ``runtime.sinks``, fed the frames the
  OPC UA publisher and the history get, once per publish period), keeps the
  to_plc variables that changed beyond their deadband, casts them to each node's
  DataType and writes them with the Write service, in batches of at most the
  PLC's MaxNodesPerWrite; a frame delivered while a write is under way waits,
  and a later one replaces it (the PLC gets the latest values, never old ones);
* the **reader**: once the writer's first write of the link was answered and
  the PLC had ``settle_time`` (one cycle of its program) to act on it, subscribes
  (one monitored item per from_plc binding, created in batches of
  MaxMonitoredItemsPerCall) and forces each new value onto the session's input,
  cast to its type: it takes effect at the session's next tick. So a restarted
  PLC's outputs, computed from its default inputs, never drive the twin;
* the **keepalive**: reads ServerStatus.CurrentTime every ``keepalive_interval``
  seconds with as long a timeout (a hung PLC is detected within twice the
  interval, 2 s by default) and keeps the latest round trip;
* the **watch**: notices the transport closing (a reset PLC) at once.

The first of them to fail ends the link. Then every from_plc input is marked:
it keeps its last value (UncertainLastUsableValue) or takes its configured
fallback (UncertainSubstituteValue); the session keeps stepping. An input's
status is set on the session's front with its value (``HostedSession.mark``,
``write_marked``), so that every frame its pacer reads carries both: a client
and the history never see a value with a status that is not its own. It keeps
its lost-link status after a reconnect until the PLC's first value replaces it. Reconnects
follow an exponential backoff with jitter; the first failure is logged at
ERROR, repeats at DEBUG until the link is back; every connect resolves the
nodes afresh (a PLC may have been re-programmed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.ua.ua_binary import uatcp_to_binary
from cryptography import x509

from twin_server.config.schema import HilBinding, HilPeerConfig
from twin_server.engine.session import VarKey
from twin_server.errors import NotFound, ValueRejected
from twin_server.hil import health
from twin_server.hil.casting import changed, from_plc, to_plc
from twin_server.hil.health import (
    BindingStatistics,
    LinkState,
    MirrorStatistics,
    PeerStatistics,
)
from twin_server.hil.link_faults import (
    LINK_FAULT_CLEARED,
    LINK_FAULT_INJECTED,
    SEVERITY_CLEARED,
    SEVERITY_INJECTED,
    LinkFault,
    LinkFaultKind,
    LinkFaults,
    LinkFaultSpec,
)
from twin_server.hil.resolve import Limits, Resolved, chunks, read_limits, resolve
from twin_server.hil.security import (
    SecuritySetupFailed,
    apply_security,
    describe_policy_refusal,
    describe_refusal,
    offered_policies,
    refused_policy,
    timeout_hint,
)
from twin_server.models.base import Kind, Value, Variable
from twin_server.runtime.host import Frame, HostedSession
from twin_server.runtime.sinks import Stamp
from twin_server.security.pki import TrustList

log = structlog.get_logger(__name__)

_VALUE = ua.AttributeIds.Value
_CURRENT_TIME = ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime)
#: seconds a refused write waits before it is tried again with an unchanged value
_RETRY_REFUSED = 1.0
#: server-side session timeout we ask for: a PLC frees a dead link's session
#: after this (PLCs serve few sessions; asyncua's default is an hour)
_SESSION_TIMEOUT_MS = 30_000
#: seconds a close may take before the socket is simply dropped
_CLOSE_TIMEOUT = 1.0
#: seconds between two probes of a PLC that could not be reached (at most)
_PROBE_INTERVAL = 0.5

ClientFactory = Callable[[str, float], Client]


class _LinkLost(Exception):
    """The link to a peer ended; the message says why, for LastError."""


class _LinkCut(_LinkLost):
    """The link was cut on purpose (a link fault): it ends as a lost one does."""


def _cut_message(fault: LinkFault) -> str:
    return f"the link was cut on purpose (link fault: {fault.describe()}; ClearLinkFault ends it)"


@dataclass(slots=True, eq=False)
class _Binding:
    """A binding's configuration and what the mirror knows of it now."""

    name: str
    config: HilBinding
    key: VarKey
    variable: Variable
    fallback: Value | None
    node: str  # for health: the resolved NodeId, else as configured
    resolved: Resolved | None = None
    status: str = health.WAITING
    error: str = ""
    value: Value | None = None  # last value sent (twin side) or applied
    has_value: bool = False
    transfers: int = 0
    clamped: int = 0
    retry_at: float = 0.0
    #: ms, from_plc: the sampling interval asked for and the one the PLC revised it to
    requested_sampling: float = 0.0
    sampling_interval: float = 0.0
    logged: str = ""  # the last error logged, so that a repeat is not
    warned_clamp: bool = False
    #: from_plc: the PLC's latest value on this link, applied or not (a link fault
    #: holds it back; it is applied when the fault ends)
    latest: ua.DataValue | None = None

    @property
    def to_plc(self) -> bool:
        return self.config.direction == "to_plc"

    def statistics(self, link_fault: str = "") -> BindingStatistics:
        return BindingStatistics(
            name=self.name, variable=self.config.variable, direction=self.config.direction,
            node=self.node, datatype=self.resolved.vtype.name if self.resolved else "",
            status=self.status, error=self.error, value=self.value,
            transfers=self.transfers, clamped=self.clamped,
            sampling_interval=self.sampling_interval, link_fault=link_fault)


class HilMirror:
    """Every HIL peer of the daemon. ``run`` until ``stop`` or cancellation; the
    sessions' pacers ``deliver`` their frames."""

    def __init__(self, peers: Mapping[str, HilPeerConfig],
                 sessions: Mapping[str, HostedSession], *,
                 rng: random.Random | None = None,
                 client_factory: ClientFactory | None = None,
                 on_written: WriteHook | None = None,
                 trust: TrustList | None = None,
                 on_event: EventHook | None = None) -> None:
        """``trust``: the daemon's trust list, which checks the certificates PLCs
        announce (``HilSecurity.server_trust``). ``on_event``: told of each event a
        person should see in the peer's session log (a link lost and recovered, a
        link fault's start and end)."""
        missing = sorted({p.session for p in peers.values()} - set(sessions))
        if missing:
            raise ValueError(f"HIL peers serve sessions that do not exist: {', '.join(missing)}")
        self._rng = rng or random.Random()
        self._peers = [_Peer(name, cfg, sessions[cfg.session], self._rng,
                             client_factory or _client, trust)
                       for name, cfg in peers.items()]
        #: the peers of each session, by session name
        self._by_session: dict[str, list[_Peer]] = {}
        for peer in self._peers:
            #: told of every value written into a session: (session, key, value, "hil")
            peer.on_written = on_written
            peer.on_event = on_event
            self._by_session.setdefault(peer.config.session, []).append(peer)
        self._stop = asyncio.Event()

    @property
    def peer_names(self) -> list[str]:
        return [p.name for p in self._peers]

    async def rebind(self, session: HostedSession) -> None:
        """Mirror ``session`` from now on for every peer that serves its name (a
        session deleted and created again, by a client or a config reload). A peer
        whose session is gone from its host idles until then."""
        for peer in self._peers:
            if peer.config.session == session.name:
                peer.session = session
                await peer.on_rebind()

    async def reforce(self, session: str) -> None:
        """``session``'s forced inputs were released (Reset, ReleaseInput(s)): every
        peer serving it forces the inputs it drives again, with the PLC's last values."""
        for peer in self._by_session.get(session, ()):
            await peer.reforce()

    def wants(self, session: str) -> bool:
        """Whether a peer serving ``session`` has taken its last frame
        (``runtime.sinks.Sink``; a peer whose link is down takes none)."""
        return any(peer.wants() for peer in self._by_session.get(session, ()))

    def deliver(self, session: str, frame: Frame, stamp: Stamp) -> None:
        """A pacer's frame (``runtime.sinks.Sink``): the latest for the writer of
        every peer serving ``session``."""
        for peer in self._by_session.get(session, ()):
            peer.offer(frame)

    def statistics(self) -> MirrorStatistics:
        return MirrorStatistics(tuple(p.statistics() for p in self._peers))

    # -- link faults (``link_faults``) -----------------------------------------------
    def _peer(self, name: str) -> _Peer:
        for peer in self._peers:
            if peer.name == name:
                return peer
        raise NotFound(f"no HIL peer {name!r} (peers: {', '.join(self.peer_names) or 'none'})")

    async def inject_link_fault(self, peer: str, spec: LinkFaultSpec) -> LinkFault:
        """Start a link fault on ``peer``: ``link_faults.FieldRefused`` for a bad field,
        InvalidState when a fault acts on one of its bindings already, NotFound for
        an unknown peer."""
        return await self._peer(peer).inject(spec)

    async def clear_link_faults(self, peer: str, bindings: Sequence[str] = ()) -> list[LinkFault]:
        """End the link faults of ``peer`` acting on ``bindings`` (all when empty)."""
        return await self._peer(peer).clear(bindings)

    def link_faults(self, peer: str) -> tuple[LinkFault, ...]:
        return self._peer(peer).faults.active

    def stop(self) -> None:
        """Ask ``run`` to close every link and return."""
        self._stop.set()

    async def run(self) -> None:
        """Mirror every peer until ``stop`` is called or the task is cancelled; the
        clients are closed either way."""
        if not self._peers:
            await self._stop.wait()
            return
        log.info("hil_started", peers=self.peer_names)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(p.run(), name=f"hil:{p.name}") for p in self._peers]
                tasks += [tg.create_task(p.keep_faults(), name=f"hil:{p.name}:faults")
                          for p in self._peers]
                await self._stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            log.info("hil_stopped", peers=self.peer_names)


def _client(endpoint: str, timeout: float) -> Client:
    return Client(endpoint, timeout=timeout,
                  # asyncua's own liveness probe is replaced by ours (which also
                  # measures the round trip); its supervisor still sees a reset at once
                  watchdog_intervall=3600.0)


#: (session, key, value as the session stored it, "hil", its StatusCode: 0 for Good):
#: the history recorder's hook
WriteHook = Callable[[str, VarKey, Value, str, int], None]
#: (session, kind, message, OPC UA severity): an event of the session's log
EventHook = Callable[[str, str, str, int], None]
#: severities of the events of a link lost and recovered
SEVERITY_LINK_LOST = 700
SEVERITY_RECOVERED = 300


class _Peer:
    """One PLC: its link loop and its bindings."""

    on_written: WriteHook | None = None
    on_event: EventHook | None = None

    def __init__(self, name: str, config: HilPeerConfig, session: HostedSession,
                 rng: random.Random, client_factory: ClientFactory,
                 trust: TrustList | None = None) -> None:
        self.name = name
        self._trust = trust
        self.config = config
        self.session = session
        self._rng = rng
        self._client_factory = client_factory
        self._log = log.bind(peer=name, endpoint=config.endpoint, session=session.name)
        self.state = LinkState.DISCONNECTED
        self.last_error = ""
        self.reconnect_count = 0
        self.writes_sent = 0
        self.write_requests = 0
        self.values_received = 0
        self.round_trip = 0.0
        self.limits = Limits()
        #: ms: the publishing interval asked for, and the one the PLC revised it to
        self.requested_publishing = 0.0
        self.publishing_interval = 0.0
        self._reported: object = None  # the revision last logged
        self._ever_connected = False
        self._handles: dict[int, _Binding] = {}
        #: the latest frame delivered, and whether the writer has yet to take it
        self._frame: Frame | None = None
        self._fresh = asyncio.Event()
        #: set once the to_plc values went out on the current link (``_writer``)
        self._primed = asyncio.Event()
        self._certificate: x509.Certificate | None = None  # the client certificate in use
        layout = session.layout
        #: where each variable's value is in a frame
        self._index = {key: i for i, (key, _) in enumerate(layout.variables)}
        variables = {(k.component, k.kind, k.name): (k, v) for k, v in layout.variables}
        self.bindings: list[_Binding] = []
        for bname, bcfg in config.bindings.items():
            component, _, vname = bcfg.variable.partition(".")
            kinds = (Kind.OUTPUT, Kind.STATE) if bcfg.direction == "to_plc" else (Kind.INPUT,)
            found = next((variables[(component, k, vname)] for k in kinds
                          if (component, k, vname) in variables), None)
            if found is None:  # the loader checks this; a hand-built config may not have been
                raise ValueError(f"HIL peer {name!r}, binding {bname!r}: session "
                                 f"{session.name!r} has no {bcfg.variable!r} for {bcfg.direction}")
            key, variable = found
            fallback = None if bcfg.fallback is None else variable.coerce(bcfg.fallback)
            self.bindings.append(_Binding(bname, bcfg, key, variable, fallback,
                                          bcfg.node or bcfg.browse_path or ""))
        self._to_plc = [b for b in self.bindings if b.to_plc]
        self._from_plc = [b for b in self.bindings if not b.to_plc]
        self.faults = LinkFaults([b.name for b in self.bindings])
        #: set when the set of link faults changed (``keep_faults`` looks again)
        self._faults_changed = asyncio.Event()
        #: set while the whole link is cut (the connected link ends at once), and
        #: when a cut ends (a wait to reconnect ends at once)
        self._cut = asyncio.Event()
        self._uncut = asyncio.Event()
        #: delay faults: PLC values on their way to the twin (due, seq, binding, value)
        self._incoming: list[tuple[float, int, _Binding, ua.DataValue]] = []
        self._incoming_wake = asyncio.Event()
        self._seq = itertools.count()
        #: delay faults: the frames offered lately (monotonic time, frame), oldest first
        self._recent: deque[tuple[float, Frame]] = deque()
        for b in self._from_plc:  # no value from the PLC yet
            session.mark(b.key, _code(b.status))

    def wants(self) -> bool:
        """Whether the writer took the last frame offered (or none was)."""
        return not self._fresh.is_set()

    def offer(self, frame: Frame) -> None:
        """The latest frame of the session, for the writer (replacing one not taken)."""
        self._frame = frame
        self._fresh.set()
        if self.faults:
            self._keep_offered(frame)

    def _gone(self) -> bool:
        """Whether the session was deleted (until ``rebind`` gives another)."""
        return self.session.name not in self.session.host.names()

    async def on_rebind(self) -> None:
        """A new session under the same name: send every to_plc value again
        and put the PLC's last commands onto its inputs, with their status."""
        self._frame = None  # (the former session's: its pacer delivers the new one's)
        for b in self._to_plc:
            b.value, b.has_value = None, False
        await self.reforce()

    async def reforce(self) -> None:
        """Force every input this peer drives with the PLC's last command (or the
        fallback it took while the link is down): after a Reset or a release, which
        leave no input forced, and on a new session under the name."""
        if self._gone():
            return
        for b in self._from_plc:
            if b.has_value and b.value is not None:
                try:
                    stored = await self.session.write_marked(b.key, b.value, _code(b.status))
                except ValueRejected as exc:
                    self._binding_error(b, exc.status, f"cannot apply the PLC's value: {exc}")
                    continue
                self._written(b, stored, b.status)
            else:
                self._quality(b, b.status)

    def statistics(self) -> PeerStatistics:
        return PeerStatistics(
            name=self.name, endpoint=self.config.endpoint, session=self.session.name,
            state=self.state, last_error=self.last_error, reconnect_count=self.reconnect_count,
            writes_sent=self.writes_sent, write_requests=self.write_requests,
            values_received=self.values_received, round_trip_latency=self.round_trip,
            max_nodes_per_write=self.limits.max_nodes_per_write,
            publishing_interval=self.publishing_interval,
            requested_publishing_interval=self.requested_publishing,
            bindings=tuple(b.statistics(self._fault_kind(b)) for b in self.bindings),
            link_fault=self.faults.whole_link())

    def _fault_kind(self, b: _Binding) -> str:
        fault = self.faults.on(b.name) if self.faults else None
        return "" if fault is None else str(fault.kind)

    # -- the link loop -------------------------------------------------------------
    async def run(self) -> None:
        failures = 0
        down_since: float | None = None
        try:
            while True:
                self.state = LinkState.CONNECTING
                client: Client | None = None
                alive = unreachable = dropped = False
                try:
                    cut = self.faults.link_cut()
                    if cut is not None:  # every reconnect fails, as to a PLC gone
                        raise _LinkCut(_cut_message(cut))
                    client = self._client_factory(self.config.endpoint, self.config.timeout)
                    await self._connect(client)
                    alive = True
                    self.state = LinkState.CONNECTED
                    if self._ever_connected:
                        self.reconnect_count += 1
                    self._ever_connected = True
                    if failures:
                        down = round(time.monotonic() - (down_since or 0), 3)
                        self._log.info("hil_recovered", attempts=failures, down_seconds=down)
                        self._event("hil_recovered", f"the link to HIL peer {self.name!r} "
                                    f"({self.config.endpoint}) is back after {down:g} s",
                                    SEVERITY_RECOVERED)
                    else:
                        self._log.info("hil_connected", bindings=len(self.bindings))
                    failures, down_since = 0, None
                    await self._serve(client)
                except Exception as exc:  # every way a link can end; CancelledError passes
                    alive = alive and not isinstance(_leaf(exc), _LinkLost | OSError)
                    # (a PLC gone or silent, rather than one that answered with a refusal)
                    unreachable = isinstance(_leaf(exc), _LinkLost | OSError)
                    dropped = isinstance(_leaf(exc), _LinkCut)
                    offered = await self._offered(exc)
                    self._failed(exc, first=failures == 0, offered=offered)
                    await self._mark_lost()  # before closing: a hung peer's close takes a while
                    failures += 1
                    down_since = down_since or time.monotonic()
                finally:
                    if client is not None:
                        if dropped:
                            client.disconnect_socket()  # as a pulled cable: no CloseSession
                        else:
                            await self._close(client, alive)
                self.state = LinkState.BACKOFF
                await self._wait_to_retry(failures, probe=unreachable)
        finally:
            self.state = LinkState.DISCONNECTED

    async def _wait_to_retry(self, failures: int, *, probe: bool) -> None:
        """Wait out the backoff; after a failure to reach the PLC, probe it meanwhile
        (``probe``: TCP and the OPC UA Hello, no session) every ``_PROBE_INTERVAL``
        and end the wait as soon as it answers, so that a PLC back from a restart
        is reconnected within about that, however long it was away."""
        delay = self._backoff(failures)
        if self.faults.link_cut() is not None:  # cut: no probe (the PLC would answer)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._uncut.wait()  # (the cut ended: reconnect at once)
            return
        if not probe:
            await asyncio.sleep(delay)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        interval = min(_PROBE_INTERVAL, self.config.reconnect_min)
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(interval, left))
            if loop.time() < deadline and await probe_endpoint(
                    self.config.endpoint, min(self.config.timeout, _PROBE_INTERVAL)):
                self._log.debug("hil_probe_answered")
                return

    def _backoff(self, failures: int) -> float:
        """Exponential from ``reconnect_min`` up to ``reconnect_max``, with +-20 % jitter
        so that many mirrors restarted together do not knock in step."""
        cfg = self.config
        base = min(cfg.reconnect_max, cfg.reconnect_min * 2.0 ** max(failures - 1, 0))
        return base * self._rng.uniform(0.8, 1.2)

    async def _offered(self, exc: BaseException) -> list[str] | None:
        """What the PLC offers, when ``exc`` is its refusal of our policy or mode (None
        otherwise, or when it cannot be asked)."""
        if not refused_policy(_leaf(exc), self.config.security):
            return None
        client = self._client_factory(self.config.endpoint, self.config.timeout)
        try:
            async with asyncio.timeout(self.config.timeout):
                return await offered_policies(client)
        except Exception:  # (the message says the endpoints could not be listed)
            return None
        finally:
            client.disconnect_socket()

    def _failed(self, exc: BaseException, *, first: bool,
                offered: list[str] | None = None) -> None:
        leaf = _leaf(exc)
        table = f"hil.{self.name}.security"
        if isinstance(leaf, _LinkLost | SecuritySetupFailed):
            message = str(leaf)
        elif offered is not None:
            message = describe_policy_refusal(self.config.security, offered, table)
        else:
            message = (describe_refusal(leaf, self.config.security, self._certificate, table)
                       or _describe(leaf, self.config))
            if isinstance(leaf, TimeoutError) and self.state is LinkState.CONNECTING:
                message += timeout_hint(self.config.security)
        self.last_error = message
        if first and self.state is LinkState.CONNECTED:
            self._log.error("hil_link_lost", error=message)
            self._event("hil_link_lost", f"the link to HIL peer {self.name!r} "
                        f"({self.config.endpoint}) was lost: {message}", SEVERITY_LINK_LOST)
        elif first:
            self._log.error("hil_connect_failed", error=message)
        else:
            self._log.debug("hil_reconnect_failed", error=message)
        self.state = LinkState.DISCONNECTED

    async def _mark_lost(self) -> None:
        """The link is down: from_plc inputs keep their last value or take their fallback,
        each with the status that says so."""
        if self._gone():  # deleted: nothing to mark until rebind() gives another
            return
        for b in self.bindings:
            await self._lose(b)

    async def _lose(self, b: _Binding) -> None:
        """``b``'s link is down (the whole link's, or its own cut on purpose): its input
        keeps its last value or takes its fallback, with the status that says so."""
        if b.to_plc:
            if b.resolved is not None:
                b.status = health.COMMUNICATION_ERROR
            return
        if b.fallback is None:
            self._quality(b, health.LAST_USABLE if b.has_value else health.COMMUNICATION_ERROR)
            return
        if b.status == health.SUBSTITUTE:
            return
        try:
            stored = await self.session.write_marked(b.key, b.fallback, _code(health.SUBSTITUTE))
        except ValueRejected as exc:  # coerced at start: only a model's own check
            self._binding_error(b, exc.status, f"fallback refused: {exc}")
            return
        self._written(b, stored, health.SUBSTITUTE)
        b.value, b.has_value = b.fallback, True
        b.status = health.SUBSTITUTE

    def _quality(self, b: _Binding, status: str) -> None:
        """``b``'s status is ``status`` (a StatusCode name); for a from_plc binding,
        its input's value has it from now on (``HostedSession.mark``)."""
        b.status = status
        if not b.to_plc and not self._gone():
            self.session.mark(b.key, _code(status))

    def _written(self, b: _Binding, stored: Value, status: str) -> None:
        if self.on_written is not None:
            self.on_written(self.session.name, b.key, stored, "hil", _code(status))

    async def _close(self, client: Client, alive: bool) -> None:
        """Close the session (deleting its subscription) when the PLC still answers;
        drop the socket in any case."""
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT if alive else 0.2):
                await client.close_session()
                if alive:
                    await client.close_secure_channel()
        except Exception as exc:  # a dead peer: nothing more to say to it
            self._log.debug("hil_close_incomplete", error=repr(exc))
        finally:
            client.disconnect_socket()

    # -- link faults ---------------------------------------------------------------
    def _event(self, kind: str, message: str, severity: int) -> None:
        if self.on_event is not None and not self._gone():
            self.on_event(self.session.name, kind, message, severity)

    async def inject(self, spec: LinkFaultSpec, *, from_config: bool = False) -> LinkFault:
        """Start a link fault (``link_faults``); refusals change nothing."""
        fault = self.faults.add(spec, time.monotonic(), from_config=from_config)
        self._faults_changed.set()
        what = fault.describe()
        self._log.warning("hil_link_fault_injected", fault=what, from_config=from_config)
        self._event(LINK_FAULT_INJECTED, f"link fault injected on HIL peer {self.name!r}: "
                    f"{what}", SEVERITY_INJECTED)
        if fault.kind is LinkFaultKind.CUT and not fault.bindings:
            self._uncut.clear()
            self._cut.set()  # (``_cut_watch`` ends the link now, as a real loss)
        elif fault.kind is LinkFaultKind.CUT and not self._gone():
            for b in self._covered(fault):
                await self._lose(b)
        if fault.kind is LinkFaultKind.DELAY:
            self._recent.clear()  # (frames from before it would be sent as delayed)
            if self._frame is not None:
                self._keep_offered(self._frame)
        return fault

    async def clear(self, bindings: Sequence[str] = ()) -> list[LinkFault]:
        """End the faults acting on ``bindings`` (all when empty): NotFound for a binding
        unknown or without one."""
        ended = self.faults.remove(bindings)
        for fault in ended:
            await self._end(fault, "ClearLinkFault")
        return ended

    async def keep_faults(self) -> None:
        """Start the config's link faults, then end each whose duration runs out, until
        cancelled (a task of ``HilMirror.run``)."""
        for index, spec in enumerate(self.config.faults):
            wanted = LinkFaultSpec(spec.kind, spec.delay, spec.duration, tuple(spec.bindings))
            try:
                await self.inject(wanted, from_config=True)
            except Exception as exc:  # (the loader checked them: an overlap at most)
                self._log.error("hil_link_fault_refused", index=index, error=str(exc))
        while True:
            self._faults_changed.clear()
            end = self.faults.next_end()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if end is None
                                           else max(end - time.monotonic(), 0.0)):
                    await self._faults_changed.wait()
            for fault in self.faults.expire(time.monotonic()):
                await self._end(fault, "its duration ran out")

    async def _end(self, fault: LinkFault, why: str) -> None:
        """``fault`` ended (taken out of ``faults``): the link carries the values of now."""
        self._faults_changed.set()
        what = fault.describe()
        self._log.info("hil_link_fault_cleared", fault=what, reason=why)
        self._event(LINK_FAULT_CLEARED, f"link fault cleared on HIL peer {self.name!r} "
                    f"({why}): {what}", SEVERITY_CLEARED)
        if fault.kind is LinkFaultKind.CUT and not fault.bindings:
            self._cut.clear()
            self._uncut.set()  # the link loop reconnects at once
            return
        covered = set(self._covered(fault))
        self._incoming = [item for item in self._incoming if item[2] not in covered]
        heapq.heapify(self._incoming)
        if self.state is LinkState.CONNECTED and not self._gone():
            for b in covered:
                if b.to_plc and fault.kind is LinkFaultKind.CUT and b.resolved is not None:
                    b.status, b.value = health.WAITING, None  # sent afresh, as on a new link
                elif not b.to_plc and b.latest is not None and b.resolved is not None:
                    await self._apply_value(b, b.latest)  # the PLC's value of now
        if self._frame is not None:
            self._fresh.set()  # the writer sends the twin's values of now

    def _covered(self, fault: LinkFault) -> list[_Binding]:
        return [b for b in self.bindings if fault.covers(b.name)]

    async def _cut_watch(self) -> None:
        """End the link as soon as the whole of it is cut on purpose."""
        await self._cut.wait()
        cut = self.faults.link_cut()
        raise _LinkCut(_cut_message(cut) if cut is not None else "the link was cut on purpose")

    def _keep_offered(self, frame: Frame) -> None:
        """Keep ``frame`` for the delay faults towards the PLC, and as many older ones
        as the longest delay needs (one older than it: the value then)."""
        now = time.monotonic()
        offered = self._recent
        offered.append((now, frame))
        horizon = now - self.faults.longest_delay()
        while len(offered) > 1 and offered[1][0] <= horizon:
            offered.popleft()

    def _delayed_frame(self, delay: float, now: float) -> Frame | None:
        """The latest frame offered at least ``delay`` s before ``now`` (None: none)."""
        found = None
        for at, frame in self._recent:
            if at > now - delay:
                break
            found = frame
        return found

    async def _delayed_reader(self) -> None:
        """Apply the PLC's values held back by a delay fault once they are due."""
        while True:
            self._incoming_wake.clear()
            if not self._incoming:
                await self._incoming_wake.wait()
                continue
            due = self._incoming[0][0]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(due - time.monotonic(), 0.0)):
                    await self._incoming_wake.wait()
            now = time.monotonic()
            while self._incoming and self._incoming[0][0] <= now:
                _, _, b, dv = heapq.heappop(self._incoming)
                if not self._gone():
                    await self._apply_value(b, dv)

    # -- connecting ----------------------------------------------------------------
    async def _connect(self, client: Client) -> None:
        cfg = self.config
        client.name = client.description = f"twin-server HIL ({self.name})"
        client.application_uri = cfg.security.application_uri
        client.session_timeout = _SESSION_TIMEOUT_MS
        self._certificate = await apply_security(client, cfg.security, self._trust)
        await client.connect()
        self.limits = await read_limits(client)
        found = await resolve(client, [(b.name, b.config) for b in self.bindings], self.limits)
        for b in self.bindings:
            result = found[b.name]
            if isinstance(result, Resolved):
                b.resolved = result
                b.node = result.nodeid.to_string()
                b.error, b.logged = "", ""
                b.retry_at = 0.0
                if b.to_plc:
                    b.status = health.WAITING
                    b.value = None  # a fresh link: send every value once
                elif not b.has_value:  # (else it keeps its last value or fallback, so
                    self._quality(b, health.WAITING)  # marked, until the PLC's comes)
            else:
                b.resolved = None
                self._binding_error(b, result.status, result.message)
            b.latest = None  # (this link's subscription sends the PLC's values afresh)
        for b in self.bindings:  # a binding cut on purpose stays down
            fault = self.faults.on(b.name) if self.faults else None
            if fault is not None and fault.kind is LinkFaultKind.CUT:
                await self._lose(b)

    async def _subscribe(self, client: Client) -> Subscription | None:
        bindings = [b for b in self._from_plc if b.resolved is not None]
        if not bindings:
            return None
        period = 1000.0 / max(self.session.layout.publish_rate, 1e-3)
        subscription = await client.create_subscription(period, None, queue_maxsize=10_000)
        self._handles = {}
        requests = []
        for handle, b in enumerate(bindings, start=1):
            assert b.resolved is not None
            params = ua.MonitoringParameters(
                ClientHandle=handle, QueueSize=1, DiscardOldest=True,
                SamplingInterval=(b.config.sampling_interval
                                  if b.config.sampling_interval is not None else period))
            requests.append(ua.MonitoredItemCreateRequest(
                ItemToMonitor=ua.ReadValueId(NodeId=b.resolved.nodeid, AttributeId=_VALUE),
                MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=params))
            self._handles[handle] = b
        # (asyncua keeps the PLC's revision of the interval as the one requested)
        self.requested_publishing = period
        self.publishing_interval = float(subscription.parameters.RequestedPublishingInterval)
        for part in chunks(requests, self.limits.max_monitored_items_per_call):
            results, answers = await _create_items(subscription, part)
            for request, result, answer in zip(part, results, answers, strict=True):
                if isinstance(result, ua.StatusCode):
                    b = self._handles.pop(request.RequestedParameters.ClientHandle)
                    status = _status_name(result)
                    b.resolved = None
                    self._binding_error(b, status, f"the PLC refused to monitor node "
                                                   f"{b.node} ({status})")
                    continue
                b = self._handles[request.RequestedParameters.ClientHandle]
                b.requested_sampling = request.RequestedParameters.SamplingInterval
                b.sampling_interval = (float(answer.RevisedSamplingInterval)
                                       if answer is not None else b.requested_sampling)
        self._report_revisions()
        return subscription

    def _report_revisions(self) -> None:
        """Log the PLC's revision of our intervals once per distinct revision: it
        bounds how soon a PLC's value reaches the twin."""
        revised = {b.name: (b.requested_sampling, b.sampling_interval) for b in self._from_plc
                   if b.sampling_interval and b.sampling_interval != b.requested_sampling}
        publishing = (self.requested_publishing, self.publishing_interval)
        report = (publishing, tuple(sorted(revised.items())))
        if report == self._reported:
            return
        self._reported = report
        if publishing[0] == publishing[1] and not revised:
            return
        self._log.warning(
            "hil_intervals_revised", requested_publishing_ms=publishing[0],
            publishing_ms=publishing[1],
            sampling_ms={name: revised_ms for name, (_, revised_ms) in revised.items()},
            requested_sampling_ms={name: asked for name, (asked, _) in revised.items()},
            consequence=f"the PLC sends its values every {publishing[1]:g} ms: a value "
                        f"takes up to that long to reach the twin (the round trip grows "
                        f"by as much)")

    def _binding_error(self, b: _Binding, status: str, message: str) -> None:
        if b.to_plc or not b.has_value:
            self._quality(b, status)
        else:  # the input holds the PLC's last value
            self._quality(b, health.LAST_USABLE)
        b.error = message
        if b.logged != message:  # once per distinct problem, not at every reconnect
            b.logged = message
            self._log.error("hil_binding_failed", binding=b.name, variable=b.config.variable,
                            status=status, error=message)

    # -- connected -----------------------------------------------------------------
    async def _serve(self, client: Client) -> None:
        self._primed = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch(client), name=f"hil:{self.name}:watch")
            tg.create_task(self._keepalive(client), name=f"hil:{self.name}:keepalive")
            tg.create_task(self._writer(client), name=f"hil:{self.name}:writer")
            tg.create_task(self._cut_watch(), name=f"hil:{self.name}:cut")
            if any(b.resolved is not None for b in self._from_plc):
                tg.create_task(self._reader(client), name=f"hil:{self.name}:reader")
                tg.create_task(self._delayed_reader(), name=f"hil:{self.name}:delayed")

    async def _watch(self, client: Client) -> None:
        async with client.uaclient.subscribe_state() as states:
            if client.uaclient.state is UaClientState.CONNECTED:
                await states.wait_for_state(UaClientState.DISCONNECTED)
        raise _LinkLost("the PLC closed the connection")

    async def _keepalive(self, client: Client) -> None:
        interval = self.config.keepalive_interval
        while True:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(interval):
                    result = await client.uaclient.read_attributes([_CURRENT_TIME], _VALUE)
            except TimeoutError:
                raise _LinkLost(f"no answer to the liveness read (ServerStatus.CurrentTime) "
                                f"within {interval:g} s") from None
            except (ConnectionError, OSError, ua.UaError) as exc:
                raise _LinkLost(f"liveness read failed: {_text(exc)}") from None
            elapsed = time.perf_counter() - started
            if not result[0].StatusCode.is_good():
                raise _LinkLost(f"liveness read answered {_status_name(result[0].StatusCode)}")
            self.round_trip = elapsed * 1e3
            await asyncio.sleep(max(interval - elapsed, 0.0))

    async def _writer(self, client: Client) -> None:
        """Write each frame the pacer delivers (the latest, when writes fall behind).
        The first, on a fresh link, is the next frame delivered (else the last one):
        every to_plc value, after which ``_primed`` lets the reader start."""
        self._fresh.clear()  # (one offered while the link was down is old: the next)
        period = 1.0 / max(self.session.layout.publish_rate, 1e-3)
        try:
            async with asyncio.timeout(2 * period + 0.05):
                await self._fresh.wait()
        except TimeoutError:  # no pacer runs (tests): the last frame, if any
            pass
        self._fresh.clear()
        if self._frame is not None:
            try:
                await self._write_changes(client, self._frame)
            except (ConnectionError, OSError, TimeoutError, ua.UaError) as exc:
                raise _LinkLost(f"write failed: {_text(exc)}") from None
        self._primed.set()
        while True:
            await self._fresh.wait()
            self._fresh.clear()
            frame = self._frame
            if frame is None:
                continue
            try:
                await self._write_changes(client, frame)
            except (ConnectionError, OSError, TimeoutError, ua.UaError) as exc:
                raise _LinkLost(f"write failed: {_text(exc)}") from None

    async def _write_changes(self, client: Client, frame: Frame) -> int:
        """Write what changed in ``frame`` since the last write; return how many
        values were sent."""
        if self._gone():  # deleted: idle until rebind() gives another
            return 0
        now = time.monotonic()
        values = frame.values
        index = self._index
        batch: list[tuple[_Binding, Value, Any, bool]] = []
        for b in self._to_plc:
            resolved = b.resolved
            if resolved is None:
                continue
            fault = self.faults.on(b.name) if self.faults else None
            if fault is None:
                value = values[index[b.key]]
            elif fault.kind is LinkFaultKind.DELAY:
                found = self._delayed_frame(fault.delay, now)
                if found is None:
                    continue  # nothing offered that long ago yet
                value = found.values[index[b.key]]
            else:
                continue  # frozen or cut: the PLC keeps what it has
            ok = b.status in _DELIVERED
            if ok and not changed(value, b.value, b.config.deadband):
                continue
            if not ok and b.status != health.WAITING and now < b.retry_at:
                continue
            try:
                cast = to_plc(value, resolved.vtype)
            except ValueRejected as exc:
                self._refused(b, exc.status, f"cannot send {value!r}: {exc}", now)
                continue
            batch.append((b, value, cast.value, cast.clamped))
        sent = 0
        for part in chunks(batch, self.limits.max_nodes_per_write):
            params = ua.WriteParameters()
            params.NodesToWrite = [
                ua.WriteValue(NodeId=b.resolved.nodeid, AttributeId=_VALUE,  # type: ignore[union-attr]
                              Value=ua.DataValue(ua.Variant(v, b.resolved.vtype)))  # type: ignore[union-attr]
                for b, _, v, _ in part]
            results = await client.uaclient.write(params)
            self.write_requests += 1
            for (b, value, plc_value, clamped), status in zip(part, results, strict=True):
                if status.is_good():
                    b.value, b.has_value = value, True
                    b.status = health.CLAMPED if clamped else health.GOOD
                    b.error, b.logged = "", ""
                    b.transfers += 1
                    sent += 1
                    if clamped:
                        self._clamped(b, value, plc_value)
                else:
                    name = _status_name(status)
                    self._refused(b, name, f"the PLC refused {plc_value!r} for node {b.node} "
                                           f"({name})", now)
        self.writes_sent += sent
        return sent

    def _refused(self, b: _Binding, status: str, message: str, now: float) -> None:
        b.retry_at = now + _RETRY_REFUSED
        b.status, b.error = status, message
        if b.logged != message:
            b.logged = message
            self._log.warning("hil_write_refused", binding=b.name, variable=b.config.variable,
                              status=status, error=message)

    def _clamped(self, b: _Binding, value: Any, result: Any) -> None:
        b.clamped += 1
        if not b.warned_clamp:  # once per binding: a saturated signal repeats every cycle
            b.warned_clamp = True
            self._log.warning("hil_value_clamped", binding=b.name, variable=b.config.variable,
                              value=value, sent=result,
                              datatype=b.resolved.vtype.name if b.resolved else "")

    async def _reader(self, client: Client) -> None:
        """Once the PLC has the twin's values (``_primed``) and one cycle of its
        program to act on them (``settle_time``), subscribe to the from_plc nodes and
        apply what comes: a restarted PLC's outputs, computed from its defaults, never
        reach the twin."""
        await self._primed.wait()
        await asyncio.sleep(self.config.settle_time)
        subscription = await self._subscribe(client)
        if subscription is None:
            return
        async for event in subscription:
            if isinstance(event, DataChangeEvent):
                await self._apply(event)
            elif isinstance(event, StatusChangeEvent):
                status = event.notification.Status
                if not status.is_good():
                    raise _LinkLost(f"the PLC ended the subscription ({_status_name(status)})")
        raise _LinkLost("the subscription was closed")

    async def _apply(self, event: DataChangeEvent) -> None:
        b = self._handles.get(event.data.subscription_data.client_handle or -1)
        if b is None or self._gone():
            return
        dv = event.data.monitored_item.Value
        b.latest = dv
        fault = self.faults.on(b.name) if self.faults else None
        if fault is None:
            await self._apply_value(b, dv)
        elif fault.kind is LinkFaultKind.DELAY:  # on its way, for ``_delayed_reader``
            heapq.heappush(self._incoming, (time.monotonic() + fault.delay, next(self._seq),
                                            b, dv))
            self._incoming_wake.set()
        # (frozen or cut: held back in ``latest`` until the fault ends)

    async def _apply_value(self, b: _Binding, dv: ua.DataValue) -> None:
        """The PLC's value ``dv`` onto ``b``'s input, with its status."""
        if not dv.StatusCode.is_good():  # the PLC says the value is not usable
            name = _status_name(dv.StatusCode)
            self._binding_error(b, name, f"the PLC reports {name} for node {b.node}; the "
                                         f"input keeps its value")
            return
        self.values_received += 1
        raw = None if dv.Value is None else dv.Value.Value
        try:
            cast = from_plc(raw, b.variable)
        except ValueRejected as exc:
            self._binding_error(b, exc.status, f"cannot apply the PLC's value: {exc}")
            return
        status = health.CLAMPED if cast.clamped else health.GOOD
        if changed(cast.value, b.value, b.config.deadband) or b.status != status:
            try:
                stored = await self.session.write_marked(b.key, cast.value, _code(status))
            except ValueRejected as exc:
                self._binding_error(b, exc.status, f"cannot apply the PLC's value: {exc}")
                return
            self._written(b, stored, status)
            b.value, b.has_value = cast.value, True
            b.transfers += 1
            if cast.clamped:
                self._clamped(b, raw, cast.value)
        b.status, b.error, b.logged = status, "", ""


class _Answers:
    """Stands in for a Subscription's session while it creates monitored items and
    keeps the service's answers (their RevisedSamplingInterval), which asyncua's
    ``Subscription.create_monitored_items`` reduces to item ids."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.results: list[ua.MonitoredItemCreateResult] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    async def create_monitored_items(
            self, params: ua.CreateMonitoredItemsParameters) -> list[ua.MonitoredItemCreateResult]:
        self.results = list(await self._session.create_monitored_items(params))
        return self.results


async def _create_items(subscription: Subscription,
                        requests: Sequence[ua.MonitoredItemCreateRequest],
                        ) -> tuple[list[int | ua.StatusCode],
                                   list[ua.MonitoredItemCreateResult | None]]:
    """``subscription.create_monitored_items(requests)``, with each item's answer
    (None where asyncua did not let us see it: the revision is then unknown)."""
    answers = _Answers(subscription.server)
    subscription.server = answers
    try:
        ids = await subscription.create_monitored_items(requests)
    finally:
        subscription.server = answers._session
    kept: list[ua.MonitoredItemCreateResult | None] = list(answers.results)
    if len(kept) != len(ids):
        kept = [None] * len(ids)
    return ids, kept


async def probe_endpoint(endpoint: str, timeout: float) -> bool:
    """Whether an OPC UA server answers at ``endpoint`` (``opc.tcp://host:port/...``):
    a TCP connection and the transport's Hello answered with Acknowledge, within
    ``timeout`` seconds. No secure channel, no session: what a PLC pays for it is
    one accepted connection."""
    url = urlsplit(endpoint)
    hello = ua.Hello(EndpointUrl=endpoint)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(url.hostname, url.port or 4840)
            writer.write(uatcp_to_binary(ua.MessageType.Hello, hello))
            await writer.drain()
            header = await reader.readexactly(8)
        return header[:3] == b"ACK"
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException, config: HilPeerConfig) -> str:
    if isinstance(exc, ConnectionRefusedError | OSError) and not isinstance(exc, TimeoutError):
        return f"cannot reach {config.endpoint}: {_text(exc)}"
    if isinstance(exc, TimeoutError):
        return f"no answer from {config.endpoint} within {config.timeout:g} s"
    return _text(exc)


def _text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: the statuses of a binding whose latest value went through
_DELIVERED = frozenset({health.GOOD, health.CLAMPED})


def _code(status: str) -> int:
    """The StatusCode (an int) named ``status``; 0 for Good."""
    if status == health.GOOD:
        return 0
    code = getattr(ua.StatusCodes, status, None)
    if isinstance(code, int):
        return code
    try:
        return int(status, 16)  # an unknown code, shown as 0x80AB0000
    except ValueError:
        return int(ua.StatusCodes.BadUnexpectedError)


def _status_name(code: ua.StatusCode) -> str:
    try:
        return str(code.name)
    except Exception:  # an unknown code
        return f"0x{code.value:08X}"

