"""Injected faults behave alike in both hosts: bit-identical to the engine alone,
a dropout's status in the frame, kept by a snapshot that a new session restores."""

from __future__ import annotations

import pytest

from tests.engine.conftest import noisy_loop_twin
from tests.runtime.conftest import EventLog, wait_until
from tests.runtime.test_hosts import bits
from twin_server.engine.faults import BAD_SENSOR_FAILURE, FaultSpec
from twin_server.engine.session import Session, SessionSettings, VarKey
from twin_server.errors import AlreadyExists, InvalidArgument, NotFound
from twin_server.models.base import Kind
from twin_server.runtime import HostedSession, LocalHost, WorkerHost

Host = LocalHost | WorkerHost
SETTINGS = SessionSettings(step_size=0.01)
LEVEL = VarKey("tank", Kind.OUTPUT, "level")
SPECS = (
    FaultSpec("tank.Outputs.level", "noise", {"sigma": 0.01, "seed": 5}, id="noise"),
    FaultSpec("pid.Inputs.measurement", "delay", {"delay": 0.2}, id="lag"),
    FaultSpec("tank.Inputs.inflow", "spike", {"amplitude": 0.1, "rate": 5.0, "seed": 2}),
    FaultSpec("pid.Outputs.output", "drift", {"rate": 0.001}, duration=3.0),
)


def engine_alone(ticks: int) -> tuple[list[object], Session]:
    session = Session("reference", noisy_loop_twin(), SETTINGS)
    session.step(100)
    for spec in SPECS:
        session.inject_fault(spec)
    session.step(ticks)
    return bits(session.value_list()), session


class TestHosts:
    async def test_faulted_values_are_bit_identical_to_the_engine(self, host: Host) -> None:
        """Seeded faults injected through a host give exactly the engine's own values."""
        await host.create("s", noisy_loop_twin(), SETTINGS)
        session = HostedSession(host, "s")
        await session.step(100)
        ids = [await session.inject_fault(spec) for spec in SPECS]
        assert ids == ["noise", "lag", "f1", "f2"]
        await session.step(500)
        expected, reference = engine_alone(500)
        assert bits(session.frame().values) == expected
        assert await session.faults() == reference.faults()

    async def test_a_snapshot_restored_elsewhere_goes_on_alike(self, host: Host) -> None:
        """A new session created from a faulted session's snapshot continues bit for bit."""
        await host.create("s", noisy_loop_twin(), SETTINGS)
        session = HostedSession(host, "s")
        await session.step(100)
        for spec in SPECS:
            await session.inject_fault(spec)
        await session.step(50)
        snapshot = await session.snapshot()
        await host.create("copy", noisy_loop_twin(), SETTINGS, snapshot=snapshot)
        copy = HostedSession(host, "copy")
        await session.step(300)
        await copy.step(300)
        assert bits(copy.frame().values) == bits(session.frame().values)

    async def test_a_dropout_marks_its_value_in_the_frame(self, host: Host,
                                                          events: EventLog) -> None:
        """A dropout's status reaches the frame with the value, and leaves with it."""
        await host.create("s", noisy_loop_twin(), SETTINGS)
        session = HostedSession(host, "s")
        await session.step(10)
        before = session.frame().faults
        await session.inject_fault(FaultSpec("tank.Outputs.level", "dropout", duration=0.05))
        index = [key for key, _ in session.layout.variables].index(LEVEL)
        await wait_until(lambda: session.frame().quality == {index: BAD_SENSOR_FAILURE})
        assert session.frame().faults != before
        await session.step(5)
        await events.wait("s", "fault_cleared")
        await wait_until(lambda: not session.frame().quality)

    async def test_refusals_come_back_as_the_engines(self, host: Host) -> None:
        """A bad spec, a taken id, an unknown fault: the engine's exceptions."""
        await host.create("s", noisy_loop_twin(), SETTINGS)
        session = HostedSession(host, "s")
        await session.inject_fault(FaultSpec("tank.Outputs.level", "dropout", id="d"))
        with pytest.raises(InvalidArgument, match="not a kind of fault"):
            await session.inject_fault(FaultSpec("tank.Outputs.level", "melt"))
        with pytest.raises(AlreadyExists, match="'d'"):
            await session.inject_fault(FaultSpec("tank.Outputs.level", "dropout", id="d"))
        with pytest.raises(NotFound, match="active: d"):
            await session.clear_fault("zz")
        assert await session.clear_faults() == ["d"]
