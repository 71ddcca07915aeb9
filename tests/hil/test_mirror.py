"""The mirror against a real soft PLC in a subprocess, closing the loop with a tank twin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

import pytest
from asyncua import Client
from structlog.testing import capture_logs

from tests.hil.conftest import (
    CASTS,
    LOOP,
    TWIN,
    SoftPlc,
    cancel,
    free_port,
    hosted_of,
    load,
    quiet_host,
    start_clock,
    wait_for,
)
from twin_server import logs
from twin_server.engine.session import Session, VarKey
from twin_server.hil import HilMirror, LinkState
from twin_server.hil.health import PeerStatistics
from twin_server.models.base import Kind
from twin_server.runtime.compile import parse_config
from twin_server.runtime.local import frame_of
from twin_server.runtime.sinks import Pacer, Stamp
from twin_server.security.pki import TrustList


@contextlib.asynccontextmanager
async def mirrored(endpoint: str, peer: str, *, clock: bool = True, rtf: float = 4.0,
                   trust: TrustList | None = None, paced: bool = True, level: float = 0.5,
                   ) -> AsyncIterator[tuple[Session, HilMirror]]:
    """A session (ticking when ``clock``; its tank starting at ``level``), its pacer
    feeding the mirror (when ``paced``), and a running mirror of it (with ``trust`` as
    the daemon's trust list)."""
    loaded = load(endpoint, peer, rtf=rtf, level=level)
    async with quiet_host() as host:
        hosted = await hosted_of(host, loaded)
        session = host.session("s")
        mirror = HilMirror(loaded.config.hil, {"s": hosted}, trust=trust)
        tasks = [asyncio.create_task(mirror.run())]
        if paced:
            tasks.append(asyncio.create_task(Pacer(hosted, [mirror]).run()))
        if clock:
            tasks.append(start_clock(session))
        try:
            yield session, mirror
        finally:
            await cancel(*tasks)


def peer(mirror: HilMirror) -> PeerStatistics:
    return mirror.statistics().peer("plc")


INFLOW = VarKey("tank", Kind.INPUT, "inflow")
LEVEL = VarKey("tank", Kind.OUTPUT, "level")


class TestClosedLoop:
    async def test_level_settles_at_the_plcs_setpoint(self, shared_plc: SoftPlc) -> None:
        """The PLC's P controller, fed the twin's level, drives the twin's tank to 1.0 m."""
        async with mirrored(shared_plc.endpoint, LOOP) as (session, mirror):
            await wait_for(lambda: peer(mirror).connected, 5)
            await wait_for(lambda: abs(float(session.read(LEVEL)) - 1.0) < 0.005
                           and session.sim_time > 10, 20)
            assert session.forced()[INFLOW] == pytest.approx(0.05, abs=0.005)
            stats = peer(mirror)
            assert stats.binding("valve").status == "Good"
            assert stats.binding("level").datatype == "Float"
            assert stats.writes_sent > 10 and stats.values_received > 10
            assert stats.round_trip_latency > 0

    async def test_plc_nodes_receive_values_cast_to_their_types(
            self, shared_plc: SoftPlc) -> None:
        """Int16 rounds and clamps, UInt16 clamps at 0, Boolean and Float are exact."""
        async with mirrored(shared_plc.endpoint, CASTS, clock=False) as (session, mirror):
            await wait_for(lambda: peer(mirror).binding("overflow").status == "Good"
                           and peer(mirror).binding("valve_mm").status == "Good", 5)
            async with Client(shared_plc.endpoint) as client:
                values = {name: await client.get_node(f"ns=2;s=PLC.{name}").read_value()
                          for name in ("LevelMm", "Count", "Word", "Overflow")}
            assert values == {"LevelMm": 13, "Count": 32767, "Word": 0, "Overflow": False}
            stats = peer(mirror)
            assert [stats.binding(b).clamped for b in ("small", "big", "negative")] == [0, 1, 1]
            assert [stats.binding(b).status for b in ("small", "big", "negative")] == [
                "Good", "GoodClamped", "GoodClamped"]
            assert stats.binding("big").datatype == "Int16"
            # four values in batches of the PLC's MaxNodesPerWrite = 2
            assert stats.max_nodes_per_write == 2
            assert stats.write_requests >= 2
            # an Int16 command into a Double input
            scaled = session.read(VarKey("scaled", Kind.INPUT, "input"))
            assert isinstance(scaled, float) and scaled == float(round(scaled))

    async def test_only_changed_values_are_sent(self, shared_plc: SoftPlc) -> None:
        """Constants are written once; the changing level keeps being written."""
        async with mirrored(shared_plc.endpoint, CASTS, clock=False) as (session, mirror):
            await wait_for(lambda: peer(mirror).binding("small").transfers == 1, 5)
            await asyncio.sleep(0.3)  # six more publish periods
            assert peer(mirror).binding("small").transfers == 1
            session.step(10)  # the tank has no inflow yet: its level falls
            await wait_for(lambda: peer(mirror).binding("overflow").transfers == 1, 1)
            assert peer(mirror).binding("small").transfers == 1

    async def test_the_plc_gets_the_frames_delivered(self, shared_plc: SoftPlc) -> None:
        """The mirror writes the frames its session's pacer delivers (those subscribers
        and the history get) and reads nothing of the session on its own."""
        async with mirrored(shared_plc.endpoint, CASTS, clock=False,
                            paced=False) as (session, mirror):
            await wait_for(lambda: peer(mirror).connected, 5)
            mirror.deliver("other", frame_of(session), Stamp.now())  # not this peer's
            await asyncio.sleep(0.3)  # six publish periods: nothing delivered, nothing sent
            assert peer(mirror).writes_sent == 0
            mirror.deliver("s", frame_of(session), Stamp.now())
            await wait_for(lambda: peer(mirror).writes_sent == 4, 5)
            assert peer(mirror).binding("small").value == 12.6


class TestClamping:
    ECHO = """
[hil.plc.bindings.echo]
variable = "tank.inflow"
direction = "from_plc"
node = "nsu=urn:soft-plc;s=PLC.EchoOut"
"""

    async def test_a_clamped_value_is_counted_and_not_plain_good(
            self, shared_plc: SoftPlc) -> None:
        """-1.0 from the PLC into an input of range [0, inf] is applied as 0.0; the
        binding's status is GoodClamped and its counter counts it."""
        async with Client(shared_plc.endpoint) as client:
            await client.get_node("ns=2;s=PLC.EchoIn").write_value(-1.0)
        try:
            async with mirrored(shared_plc.endpoint, self.ECHO, clock=False) as (session, m):
                await wait_for(lambda: peer(m).binding("echo").status == "GoodClamped", 5)
                assert session.forced()[INFLOW] == 0.0
                assert peer(m).binding("echo").clamped == 1
                async with Client(shared_plc.endpoint) as client:
                    await client.get_node("ns=2;s=PLC.EchoIn").write_value(0.02)
                await wait_for(lambda: peer(m).binding("echo").status == "Good", 5)
                assert session.forced()[INFLOW] == 0.02
                assert peer(m).binding("echo").clamped == 1
        finally:
            async with Client(shared_plc.endpoint) as client:
                await client.get_node("ns=2;s=PLC.EchoIn").write_value(0.0)


class TestBindingErrors:
    BAD = """
[hil.plc.bindings.level]
variable = "tank.level"
direction = "to_plc"
node = "nsu=urn:soft-plc;s=PLC.Level"

[hil.plc.bindings.missing]
variable = "small.output"
direction = "to_plc"
node = "nsu=urn:soft-plc;s=PLC.NoSuchNode"

[hil.plc.bindings.read_only]
variable = "big.output"
direction = "to_plc"
node = "nsu=urn:soft-plc;s=PLC.Status"

[hil.plc.bindings.other_namespace]
variable = "negative.output"
direction = "to_plc"
node = "nsu=urn:not-here;s=PLC.Word"

[hil.plc.bindings.nowhere]
variable = "tank.inflow"
direction = "from_plc"
browse_path = "0:Objects/urn:soft-plc:PLC/urn:soft-plc:Nothing"
"""

    async def test_unresolvable_bindings_are_named_while_the_others_work(
            self, shared_plc: SoftPlc) -> None:
        """Each bad binding gets its own status and message; the good one is mirrored."""
        async with mirrored(shared_plc.endpoint, self.BAD, clock=False) as (_, mirror):
            await wait_for(lambda: peer(mirror).binding("level").status == "Good", 5)
            stats = peer(mirror)
            assert stats.connected
            missing = stats.binding("missing")
            assert missing.status == "BadNodeIdUnknown"
            assert "ns=2;s=PLC.NoSuchNode does not exist" in missing.error
            read_only = stats.binding("read_only")
            assert read_only.status == "BadNotWritable"
            assert "not writable" in read_only.error
            other = stats.binding("other_namespace")
            assert other.status == "BadNodeIdUnknown"
            assert "'urn:not-here' is not on the PLC" in other.error
            nowhere = stats.binding("nowhere")
            assert nowhere.status.startswith("Bad") and "browse path" in nowhere.error


class TestLinkLoss:
    async def test_killed_plc_marks_inputs_and_recovers_on_restart(
            self, own_plc: SoftPlc) -> None:
        """Kill: the closed connection is seen (not a missed keepalive), inputs turn
        UncertainLastUsableValue, the twin steps on holding them; restart: the mirror
        reconnects by itself."""
        async with mirrored(own_plc.endpoint, LOOP) as (session, mirror):
            await wait_for(lambda: peer(mirror).binding("valve").status == "Good", 15)
            held = session.read(INFLOW)
            own_plc.kill()
            # (awaited, not timed: a loaded machine may take seconds to run the loop;
            # what shows that the loss was seen at once is its cause, below)
            await wait_for(
                lambda: peer(mirror).binding("valve").status == "UncertainLastUsableValue", 15)
            stats = peer(mirror)
            assert not stats.connected and stats.last_error
            assert "no answer" not in stats.last_error, stats.last_error
            ticks = session.step_count
            await wait_for(lambda: session.step_count > ticks + 10, 10)  # it steps on
            assert session.read(INFLOW) == held  # holding the last value
            await asyncio.to_thread(own_plc.start)  # (the mirror runs on meanwhile)
            await wait_for(lambda: peer(mirror).connected
                           and peer(mirror).binding("valve").status == "Good", 20)
            # (more than once if a keepalive went unanswered on a loaded machine)
            assert peer(mirror).reconnect_count >= 1

    async def test_a_reset_logs_one_state_change_and_no_traceback(
            self, own_plc: SoftPlc) -> None:
        """With the daemon's logger levels, a PLC that resets the connection is one
        hil_link_lost event; asyncua's client logs nothing at ERROR about it."""
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.ERROR)
        handler.emit = records.append  # type: ignore[method-assign]
        library = logging.getLogger("asyncua")
        levels = {name: logging.getLogger(name).level for name in logs.CAPPED_LOGGERS}
        library.addHandler(handler)
        logs.cap_libraries(logging.INFO)
        try:
            with capture_logs() as events:
                async with mirrored(own_plc.endpoint, LOOP) as (_, mirror):
                    await wait_for(lambda: peer(mirror).binding("valve").status == "Good", 5)
                    own_plc.kill()
                    await wait_for(lambda: not peer(mirror).connected, 3)
                    await asyncio.sleep(1.5)  # asyncua's publish loop retries after 1 s
        finally:
            library.removeHandler(handler)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
        assert [e["event"] for e in events if e["log_level"] == "error"] == ["hil_link_lost"]
        assert [r.getMessage() for r in records] == []

    async def test_hung_plc_is_detected_within_3_seconds(self, own_plc: SoftPlc) -> None:
        """A PLC that stops answering (SIGSTOP) is a lost link after at most 2 keepalives."""
        async with mirrored(own_plc.endpoint, LOOP) as (_, mirror):
            await wait_for(lambda: peer(mirror).binding("valve").status == "Good", 5)
            own_plc.pause()
            try:
                took = await wait_for(lambda: not peer(mirror).connected, 3)
                assert took < 3.0
                assert peer(mirror).binding("valve").status == "UncertainLastUsableValue"
            finally:
                own_plc.resume()
            await wait_for(lambda: peer(mirror).connected, 10)


class TestFallback:
    FALLBACK = LOOP + "fallback = 0.01\n"

    async def test_unreachable_plc_gives_inputs_their_fallback(self) -> None:
        """With no PLC, a from_plc input takes its fallback and the peer backs off."""
        from tests.hil.conftest import free_port

        endpoint = f"opc.tcp://127.0.0.1:{free_port()}/plc"
        async with mirrored(endpoint, self.FALLBACK) as (session, mirror):
            await wait_for(lambda: peer(mirror).binding("valve").status
                           == "UncertainSubstituteValue", 3)
            assert session.read(INFLOW) == 0.01
            stats = peer(mirror)
            assert stats.state in (LinkState.BACKOFF, LinkState.CONNECTING)
            assert "cannot reach" in stats.last_error
            assert stats.binding("level").status == "BadWaitingForInitialData"

    async def test_unreachable_plc_without_fallback_leaves_inputs_alone(self) -> None:
        """Without a fallback and before any value came, the input is not forced."""
        from tests.hil.conftest import free_port

        endpoint = f"opc.tcp://127.0.0.1:{free_port()}/plc"
        async with mirrored(endpoint, LOOP) as (session, mirror):
            await wait_for(lambda: peer(mirror).binding("valve").status
                           == "BadCommunicationError", 3)
            assert INFLOW not in session.forced()


class TestReconnect:
    async def test_a_restarted_plc_sees_the_twin_before_the_twin_sees_it(
            self, own_plc: SoftPlc) -> None:
        """A PLC restarted while the loop runs gets the twin's level before its valve
        command (computed from its default level) is applied: the level does not jump."""
        # the tank comes to rest at the PLC's setpoint (valve 0.05 m^3/s: its outflow)
        async with mirrored(own_plc.endpoint, LOOP, level=1.0) as (session, mirror):
            await wait_for(lambda: peer(mirror).binding("valve").status == "Good"
                           and abs(float(session.read(LEVEL)) - 1.0) < 0.0005, 15)
            before = float(session.read(LEVEL))
            own_plc.kill()
            await wait_for(lambda: not peer(mirror).connected, 3)
            # its Level starts at 0.0: its valve command at 0.25 m^3/s, five times 0.05
            await asyncio.to_thread(own_plc.start)
            levels: list[float] = []
            recovered = False
            deadline = asyncio.get_running_loop().time() + 15
            while asyncio.get_running_loop().time() < deadline:
                levels.append(float(session.read(LEVEL)))
                if not recovered and peer(mirror).binding("valve").status == "Good":
                    recovered = True
                    deadline = asyncio.get_running_loop().time() + 1.5  # 6 s of the twin
                await asyncio.sleep(0.01)
            assert recovered
            jump = max(abs(level - before) for level in levels)
            assert jump < 0.01, f"the level moved {jump * 100:.1f} cm"

    async def test_a_plc_back_after_a_while_is_reconnected_within_2_seconds(self) -> None:
        """With the default backoff settings, a PLC that comes back while the mirror waits
        out a long backoff (6.4 s, after its fifth failed attempt) is reconnected within
        2 s of answering: it is probed while the backoff runs."""
        plc = SoftPlc()
        plc.port = free_port()
        loaded = parse_config(TWIN.format(endpoint=plc.endpoint, peer=LOOP, rtf=4.0, level=0.5)
                              .replace("reconnect_min = 0.2\nreconnect_max = 1.0\n", ""))
        assert loaded.config.hil["plc"].reconnect_max == 10.0  # the default
        async with quiet_host() as host:
            hosted = await hosted_of(host, loaded)
            mirror = HilMirror(loaded.config.hil, {"s": hosted}, rng=_LeastJitter())
            with capture_logs() as logs:
                tasks = [asyncio.create_task(mirror.run()),
                         asyncio.create_task(Pacer(hosted, [mirror]).run())]
                try:
                    # attempts at 0, 0.4, 1.2, 2.8 and 6.0 s; the next 6.4 s later
                    await wait_for(lambda: sum(e["event"] in ("hil_connect_failed",
                                                              "hil_reconnect_failed")
                                               for e in logs) >= 5, 20)
                    await asyncio.to_thread(plc.start)
                    took = await wait_for(lambda: peer(mirror).connected, 10)
                    assert took < 2.0
                finally:
                    await cancel(*tasks)
                    plc.kill()


class _LeastJitter(random.Random):
    """Backoff delays at their shortest (-20 %): the test reaches a long backoff sooner."""

    def uniform(self, a: float, b: float) -> float:
        return a
