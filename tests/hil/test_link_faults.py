"""HIL link faults (issue #17, part 6) against the soft PLC in a subprocess: a link
frozen, delayed or cut on purpose through HIL/<peer>/InjectLinkFault, a cut that a
subscriber and the history cannot tell from a PLC killed, and the events of each.
One daemon and one PLC for the module (the kill test restarts the PLC)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.hil.conftest import TWIN, SoftPlc, free_port, hosted_of, quiet_host, wait_for
from tests.opcua.conftest import Connected, message, run_daemon, s, stop_daemon
from twin_server.engine.session import VarKey
from twin_server.hil import HilMirror
from twin_server.models.base import Kind
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.compile import parse_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: the tank loop, and a ramp (1/s of simulated time, run at real time) through the
#: PLC's EchoIn -> EchoOut back into a gain's input
PEER = """
[twins.tank.components.ramp]
model = "ramp"

[twins.tank.components.echo]
model = "gain"

[hil.plc.bindings.level]
variable = "tank.level"
direction = "to_plc"
node = "nsu=urn:soft-plc;s=PLC.Level"

[hil.plc.bindings.valve]
variable = "tank.inflow"
direction = "from_plc"
node = "nsu=urn:soft-plc;s=PLC.Valve"

[hil.plc.bindings.ramp_out]
variable = "ramp.output"
direction = "to_plc"
node = "nsu=urn:soft-plc;s=PLC.EchoIn"

[hil.plc.bindings.echo_back]
variable = "echo.input"
direction = "from_plc"
node = "nsu=urn:soft-plc;s=PLC.EchoOut"

[history]
batch_interval = 0.05

[sessions.s.history]
variables = ["tank.inflow"]
"""

INFLOW = "Sessions.s.Components.tank.Inputs.inflow"
ECHO = "Sessions.s.Components.echo.Inputs.input"
RAMP = VarKey("ramp", Kind.OUTPUT, "output")
ECHOED = VarKey("echo", Kind.INPUT, "input")


def twin_config(endpoint: str) -> str:
    """The test twin's config text (``tests.hil.conftest.TWIN``) with ``PEER``, at
    real time."""
    return TWIN.format(endpoint=endpoint, peer=PEER, rtf=1.0, level=0.5)


@pytest.fixture(scope="module")
def plc() -> Iterator[SoftPlc]:
    plc = SoftPlc("--scan", "0.01").start()
    try:
        yield plc
    finally:
        plc.kill()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def wire(plc: SoftPlc) -> AsyncIterator[Connected]:
    daemon, task = await run_daemon(twin_config(plc.endpoint))
    try:
        async with Client(daemon.endpoint_url, timeout=10) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            yield Connected(daemon, client, ns)
    finally:
        await stop_daemon(daemon, task)


@pytest_asyncio.fixture(loop_scope="module")
async def link(wire: Connected) -> AsyncIterator[Connected]:
    """The daemon with every binding Good, and no link fault after the test."""
    await wait_for(lambda: all(b.status == "Good" for b in _peer(wire).bindings), 20)
    yield wire
    await call(wire, "ClearLinkFault")


def _peer(c: Connected) -> Any:
    assert c.daemon.hil is not None
    return c.daemon.hil.statistics().peer("plc")


def _values(c: Connected) -> Any:
    return c.daemon.sessions["s"].session.values()


async def call(c: Connected, method: str, *args: Any) -> ua.CallMethodResult:
    variants = [a if isinstance(a, ua.Variant) else s(a) if isinstance(a, str)
                else ua.Variant(list(a), ua.VariantType.String, is_array=True)
                if isinstance(a, list) else ua.Variant(float(a), ua.VariantType.Double)
                for a in args]
    return await c.call("HIL.plc", f"HIL.plc.{method}", *variants)


async def status_of(c: Connected, path: str) -> str:
    dv = await c.node(path).read_data_value(raise_on_bad_status=False)
    return str(dv.StatusCode.name)


async def wait_status(c: Connected, path: str, name: str, timeout: float = 5.0) -> None:
    """Wait until ``path`` reads with status ``name`` (the next publish period shows a
    mark, as it shows a real link's loss)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (found := await status_of(c, path)) != name:
        assert asyncio.get_running_loop().time() < deadline, f"still {found}"
        await asyncio.sleep(0.05)


class Events:
    """The session events of a subscription, in order."""

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.messages: list[str] = []

    def event_notification(self, event: Any) -> None:
        self.kinds.append(str(getattr(event, "Kind", "")))
        self.messages.append(event.Message.Text or "")


class Statuses:
    """The status of every data change of a monitored item, in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def datachange_notification(self, node: object, val: object, data: Any) -> None:
        self.seen.append(data.monitored_item.Value.StatusCode.name)


def changes(seen: list[str]) -> list[str]:
    """``seen`` without repeats in a row."""
    return [x for i, x in enumerate(seen) if i == 0 or seen[i - 1] != x]


@dataclass
class Watch:
    statuses: Statuses
    events: Events


class TestRefusals:
    @pytest.mark.parametrize(("args", "status", "argument"), [
        pytest.param(("bogus",), "BadInvalidArgument", 0, id="kind"),
        pytest.param(("cut", 1.0), "BadInvalidArgument", 1, id="delay-on-a-cut"),
        pytest.param(("delay", 0.0), "BadInvalidArgument", 1, id="delay-missing"),
        pytest.param(("freeze", 0.0, -1.0), "BadInvalidArgument", 2, id="duration"),
        pytest.param(("freeze", 0.0, 0.0, ["nope"]), "BadNotFound", 3, id="binding"),
    ])
    async def test_bad_arguments_are_refused_by_name(
            self, link: Connected, args: tuple[Any, ...], status: str, argument: int) -> None:
        """Each bad argument is refused with its own status on that argument, and
        nothing starts."""
        result = await call(link, "InjectLinkFault", *args)
        assert result.StatusCode.name == status, message(result)
        assert result.InputArgumentResults[argument].name == status
        assert message(result)
        assert _peer(link).link_fault == ""
        assert not link.daemon.hil.link_faults("plc")  # type: ignore[union-attr]

    async def test_an_overlapping_fault_is_refused(self, link: Connected) -> None:
        """A fault on a binding a fault acts on already: BadInvalidState; the first stays."""
        assert (await call(link, "InjectLinkFault", "freeze", 0.0, 0.0, ["valve"])
                ).StatusCode.is_good()
        result = await call(link, "InjectLinkFault", "cut")
        assert result.StatusCode.name == "BadInvalidState"
        assert "freeze on bindings valve" in message(result)
        assert _peer(link).binding("valve").link_fault == "freeze"

    async def test_clearing_a_binding_without_a_fault(self, link: Connected) -> None:
        """ClearLinkFault of a binding no fault acts on: BadNotFound on Bindings."""
        result = await call(link, "ClearLinkFault", ["level"])
        assert result.StatusCode.name == "BadNotFound"
        assert result.InputArgumentResults[0].name == "BadNotFound"

class TestFreeze:
    async def test_values_stop_both_ways_and_statuses_stay_good(self, link: Connected) -> None:
        """Frozen: the PLC keeps the twin's old value and the twin the PLC's, all
        Good; cleared, both carry the values of now."""
        result = await call(link, "InjectLinkFault", "freeze")
        assert result.StatusCode.is_good(), message(result)
        assert "freeze on the whole link until cleared" in result.OutputArguments[0].Value
        assert await link.node("HIL.plc.LinkFault").read_value() == "freeze"
        held = float(_values(link)[ECHOED])
        await asyncio.sleep(1.0)
        assert float(_values(link)[RAMP]) > held + 0.7  # the twin moved on
        assert float(_values(link)[ECHOED]) == held  # the echo did not come back
        assert await status_of(link, ECHO) == "Good"
        assert _peer(link).connected
        result = await call(link, "ClearLinkFault")
        assert list(result.OutputArguments[0].Value) == [
            "freeze on the whole link until cleared"]
        await wait_for(lambda: float(_values(link)[ECHOED]) > held + 0.7, 5)
        assert await link.node("HIL.plc.LinkFault").read_value() == ""

    async def test_a_duration_ends_it(self, link: Connected) -> None:
        """A freeze of 0.3 s ends by itself."""
        result = await call(link, "InjectLinkFault", "freeze", 0.0, 0.3, ["echo_back"])
        assert result.StatusCode.is_good(), message(result)
        assert _peer(link).binding("echo_back").link_fault == "freeze"
        await wait_for(lambda: _peer(link).binding("echo_back").link_fault == "", 5)


class TestDelay:
    async def test_values_take_the_delay_each_way(self, link: Connected) -> None:
        """A delay of 0.5 s on the whole link: the ramp comes back through the PLC's
        echo about 1 s late (0.5 s each way), against well under 0.5 s without."""

        def lag() -> float:
            values = _values(link)
            return float(values[RAMP]) - float(values[ECHOED])

        await asyncio.sleep(0.3)
        before = lag()
        result = await call(link, "InjectLinkFault", "delay", 0.5)
        assert result.StatusCode.is_good(), message(result)
        await asyncio.sleep(2.0)
        during = [lag()]
        for _ in range(5):
            await asyncio.sleep(0.1)
            during.append(lag())
        assert before < 0.6, before
        assert all(0.9 < x < 2.0 for x in during), (before, during)
        assert await status_of(link, ECHO) == "Good"
        await call(link, "ClearLinkFault")
        await wait_for(lambda: lag() < 0.6, 5)


class TestBindingCut:
    async def test_only_the_binding_is_lost(self, link: Connected) -> None:
        """Cutting one from_plc binding marks its input alone as a lost link would;
        the link and the other inputs stay Good."""
        result = await call(link, "InjectLinkFault", "cut", 0.0, 0.0, ["echo_back"])
        assert result.StatusCode.is_good(), message(result)
        await wait_status(link, ECHO, "UncertainLastUsableValue")
        assert await status_of(link, INFLOW) == "Good"
        assert _peer(link).connected
        assert _peer(link).binding("echo_back").status == "UncertainLastUsableValue"
        await call(link, "ClearLinkFault", ["echo_back"])
        await wait_status(link, ECHO, "Good")


class TestCutIsALinkLoss:
    async def test_a_cut_and_a_killed_plc_look_the_same(
            self, link: Connected, plc: SoftPlc) -> None:
        """A subscriber to a mirrored input sees the same statuses, the history
        records the same, and the session the same link events, for a cut as for
        the PLC killed and restarted; the cut adds its start and end."""
        subscription = await link.client.create_subscription(10, None)

        async def watch() -> Watch:
            statuses, events = Statuses(), Events()
            sub = await link.client.create_subscription(10, statuses)
            await sub.subscribe_data_change(link.node(INFLOW), queuesize=1000)
            esub = await link.client.create_subscription(10, events)
            await esub.subscribe_events(link.node("Sessions.s"),
                                        link.node("TwinSessionEventType"))
            subscriptions.extend([sub, esub])
            return Watch(statuses, events)

        subscriptions = [subscription]

        async def recovered() -> None:
            await wait_for(lambda: _peer(link).binding("valve").status == "Good", 30)
            await asyncio.sleep(0.3)  # (the last notifications)

        async def history(since: datetime) -> list[str]:
            for _ in range(50):
                # (with the bound at ``since``: the history records changes only)
                values = await link.node(INFLOW).read_raw_history(
                    since, datetime.now(UTC), return_bounds=True)
                found = changes([v.StatusCode.name for v in values
                                 if not v.StatusCode.name.startswith("BadBound")])
                if found[-1:] == ["Good"] and len(found) > 1:
                    return found
                await asyncio.sleep(0.1)
            return found

        try:
            since = datetime.now(UTC)
            cut = await watch()
            assert (await call(link, "InjectLinkFault", "cut")).StatusCode.is_good()
            await wait_for(lambda: not _peer(link).connected, 5)
            await asyncio.sleep(0.5)  # (reconnects fail meanwhile)
            assert "cut on purpose" in _peer(link).last_error
            await wait_status(link, INFLOW, "UncertainLastUsableValue")
            assert await link.node("HIL.plc.LinkFault").read_value() == "cut"
            await call(link, "ClearLinkFault")
            await recovered()
            cut_history = await history(since)
            cut_statuses, cut_events = list(cut.statuses.seen), list(cut.events.kinds)

            since = datetime.now(UTC)
            kill = await watch()
            plc.kill()
            await wait_for(lambda: not _peer(link).connected, 5)
            await asyncio.to_thread(plc.start)
            await recovered()
            kill_history = await history(since)
        finally:
            for sub in subscriptions:
                await sub.delete()

        expected = ["Good", "UncertainLastUsableValue", "Good"]
        assert changes(cut_statuses) == changes(kill.statuses.seen) == expected
        assert cut_history == kill_history == expected
        assert kill.events.kinds == ["hil_link_lost", "hil_recovered"]
        assert cut_events == ["link_fault_injected", "hil_link_lost",
                              "link_fault_cleared", "hil_recovered"]

    async def test_the_events_are_in_the_event_history(self, link: Connected) -> None:
        """A link fault's start and end are read back through HistoryReadEvents."""
        since = datetime.now(UTC) - timedelta(seconds=1)
        await call(link, "InjectLinkFault", "freeze", 0.0, 0.0, ["level"])
        await call(link, "ClearLinkFault")
        texts: list[str] = []
        for _ in range(50):
            events = await link.node("Sessions.s").read_event_history(
                since, datetime.now(UTC))
            texts = [e.Message.Text for e in events]
            if any("link fault cleared" in t for t in texts):
                break
            await asyncio.sleep(0.1)
        assert any("link fault injected on HIL peer 'plc': freeze on bindings level" in t
                   for t in texts), texts
        assert any("link fault cleared on HIL peer 'plc' (ClearLinkFault)" in t
                   for t in texts), texts


class TestConfigured:
    async def test_a_configured_fault_acts_from_the_start(self) -> None:
        """A fault of the config is active as soon as the mirror runs, even before the
        PLC (none here) was reached."""
        text = twin_config(f"opc.tcp://127.0.0.1:{free_port()}/plc") + """
[[hil.plc.faults]]
kind = "delay"
delay = 0.2
bindings = ["valve"]
"""
        config = parse_config(text)
        async with quiet_host() as host:
            hosted = await hosted_of(host, config)
            mirror = HilMirror(config.config.hil, {"s": hosted})
            runner = asyncio.create_task(mirror.run())
            try:
                await wait_for(lambda: bool(mirror.link_faults("plc")), 5)
                (fault,) = mirror.link_faults("plc")
                assert fault.from_config and fault.bindings == ("valve",)
                assert mirror.statistics().peer("plc").binding("valve").link_fault == "delay"
            finally:
                mirror.stop()
                await asyncio.wait_for(runner, 10)
