"""Run-control methods over OPC UA: state transitions, Step, and refusals with status."""

from __future__ import annotations

import pytest
from asyncua import ua
from asyncua.ua.uaerrors import BadInvalidState

from tests.opcua.conftest import MODULE_LOOP, Served
from twin_server.engine.session import RunState

pytestmark = MODULE_LOOP


async def _call(served: Served, method: str, *args: ua.Variant) -> ua.CallMethodResult:
    """Call a session method and return the raw result (status, argument results)."""
    request = ua.CallMethodRequest(ObjectId=served.var("").nodeid,
                                   MethodId=served.var(method).nodeid,
                                   InputArguments=list(args))
    (result,) = await served.client.uaclient.call([request])
    return result


class TestRunControl:
    async def test_suspend_step_resume_reset(self, served: Served) -> None:
        """Start, Suspend, Step(5), Resume and Reset move the state and the counters."""
        session = served.var("")
        state, count, sim_time = served.var("State"), served.var("StepCount"), served.var("SimTime")
        await session.call_method(served.var("Start").nodeid)
        assert await state.read_value() == "Running"
        await session.call_method(served.var("Suspend").nodeid)
        assert await state.read_value() == "Suspended"
        before = await count.read_value()
        await session.call_method(served.var("Step").nodeid, ua.Variant(5, ua.VariantType.UInt32))
        assert await count.read_value() == before + 5
        assert await sim_time.read_value() == pytest.approx((before + 5) * 0.01)
        assert served.session.step_count == before + 5
        await session.call_method(served.var("Resume").nodeid)
        assert served.session.state is RunState.RUNNING
        await session.call_method(served.var("Reset").nodeid)
        assert await state.read_value() == "Ready"
        assert await count.read_value() == 0
        assert await sim_time.read_value() == 0.0

    async def test_step_from_ready(self, served: Served) -> None:
        """Step from Ready takes the ticks, ends Suspended and publishes the outputs."""
        level = served.var("Components.tank.Outputs.level")
        result = await _call(served, "Step", ua.Variant(50, ua.VariantType.UInt32))
        assert result.StatusCode.is_good()
        assert await served.var("StepCount").read_value() == 50
        assert await served.var("State").read_value() == "Suspended"
        assert await level.read_value() != 0.5

    async def test_step_from_ready_is_start_and_suspend(self, served: Served) -> None:
        """After a Step from Ready the session shows Suspended with LastTransition
        RunningToSuspended (Part 10's Start then Suspend); Start is refused with a
        message that says to Resume, and Resume runs it."""
        result = await _call(served, "Step", ua.Variant(3, ua.VariantType.UInt32))
        assert result.StatusCode.is_good()
        await served.server.publish("tank")
        current = await served.var("CurrentState").read_value()
        last = await served.var("LastTransition").read_value()
        assert (current.Text, last.Text) == ("Suspended", "RunningToSuspended")
        refused = await _call(served, "Start")
        assert refused.StatusCode.value == ua.StatusCodes.BadInvalidState
        message = " ".join(d.AdditionalInfo or "" for d in
                           refused.InputArgumentDiagnosticInfos or [])
        assert "in state Suspended" in message and "Resume it" in message, message
        assert (await _call(served, "Resume")).StatusCode.is_good()
        assert served.session.state is RunState.RUNNING

    async def test_step_takes_any_integer_type(self, served: Served) -> None:
        """Step accepts an Int64 (what a client sends for a plain integer)."""
        await served.var("").call_method(served.var("Step").nodeid, 3)
        assert served.session.step_count == 3

    async def test_long_step(self, served: Served) -> None:
        """A Step longer than one chunk takes exactly the ticks asked for."""
        result = await _call(served, "Step", ua.Variant(2_345, ua.VariantType.UInt32))
        assert result.StatusCode.is_good()
        assert await served.var("StepCount").read_value() == 2_345

    async def test_halt(self, served: Served) -> None:
        """Halt from Running ends in Halted; only Reset leaves it."""
        await _call(served, "Start")
        await _call(served, "Halt")
        assert await served.var("State").read_value() == "Halted"
        result = await _call(served, "Resume")
        assert result.StatusCode.name == "BadInvalidState"


class TestRefusals:
    @pytest.mark.parametrize(("method", "setup"), [
        pytest.param("Resume", (), id="resume-when-ready"),
        pytest.param("Suspend", (), id="suspend-when-ready"),
        pytest.param("Halt", (), id="halt-when-ready"),
        pytest.param("Start", ("Start",), id="start-when-running"),
    ])
    async def test_wrong_state(self, served: Served, method: str, setup: tuple[str, ...]) -> None:
        """A method not allowed in the current state gets BadInvalidState, nothing changes."""
        for name in setup:
            await _call(served, name)
        state = served.session.state
        with pytest.raises(BadInvalidState):
            await served.var("").call_method(served.var(method).nodeid)
        assert served.session.state is state

    async def test_step_while_running(self, served: Served) -> None:
        """Step while Running gets BadInvalidState and takes no tick."""
        await _call(served, "Start")
        result = await _call(served, "Step", ua.Variant(5, ua.VariantType.UInt32))
        assert result.StatusCode.name == "BadInvalidState"
        assert served.session.step_count == 0

    @pytest.mark.parametrize(("count", "argument_status"), [
        pytest.param(0, "BadOutOfRange", id="zero"),
        pytest.param(1_000_001, "BadOutOfRange", id="too-many"),
    ])
    async def test_step_count_out_of_range(self, served: Served, count: int,
                                           argument_status: str) -> None:
        """Step(count) outside 1..1,000,000 gets BadOutOfRange with a message."""
        result = await _call(served, "Step", ua.Variant(count, ua.VariantType.UInt32))
        assert result.StatusCode.name == "BadOutOfRange"
        assert [r.name for r in result.InputArgumentResults] == [argument_status]
        message = result.InputArgumentDiagnosticInfos[0].AdditionalInfo
        assert "1, 1000000" in message and str(count) in message
        assert served.session.step_count == 0

    async def test_step_wrong_type(self, served: Served) -> None:
        """Step with a String count gets BadInvalidArgument; the argument BadTypeMismatch."""
        result = await _call(served, "Step", ua.Variant("five", ua.VariantType.String))
        assert result.StatusCode.name == "BadInvalidArgument"
        assert [r.name for r in result.InputArgumentResults] == ["BadTypeMismatch"]
        assert "UInt32" in result.InputArgumentDiagnosticInfos[0].AdditionalInfo

    @pytest.mark.parametrize(("method", "args", "status"), [
        pytest.param("Step", (), "BadArgumentsMissing", id="missing"),
        pytest.param("Step", (ua.Variant(1, ua.VariantType.UInt32),
                              ua.Variant(2, ua.VariantType.UInt32)),
                     "BadTooManyArguments", id="too-many"),
        pytest.param("Start", (ua.Variant(1, ua.VariantType.UInt32),),
                     "BadTooManyArguments", id="start-with-argument"),
    ])
    async def test_argument_count(self, served: Served, method: str,
                                  args: tuple[ua.Variant, ...], status: str) -> None:
        """A wrong number of arguments gets the standard status and changes nothing."""
        result = await _call(served, method, *args)
        assert result.StatusCode.name == status
        assert served.session.state is RunState.READY

    async def test_statistics_count_calls(self, served: Served) -> None:
        """The server counts method calls and refusals."""
        before = served.server.statistics()
        await _call(served, "Start")
        await _call(served, "Start")
        after = served.server.statistics()
        assert after.method_calls - before.method_calls == 2
        assert after.methods_refused - before.methods_refused == 1
