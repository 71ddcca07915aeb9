"""The pacer: one frame of a session per publish period, with one stamp, to every sink."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from tests.runtime.models import echo_twin
from twin_server.engine.session import Session, SessionSettings
from twin_server.runtime.clock import Ticks
from twin_server.runtime.host import Frame
from twin_server.runtime.local import SessionFrames
from twin_server.runtime.sinks import Pacer, Stamp


class Taken:
    """A sink that keeps what it is given (and wants frames while ``wanted``)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Frame, Stamp]] = []
        self.arrived = asyncio.Event()
        self.wanted = True

    def wants(self, session: str) -> bool:
        return self.wanted

    def deliver(self, session: str, frame: Frame, stamp: Stamp) -> None:
        self.items.append((session, frame, stamp))
        self.arrived.set()


class Broken:
    def wants(self, session: str) -> bool:
        return True

    def deliver(self, session: str, frame: Frame, stamp: Stamp) -> None:
        raise RuntimeError("this sink is broken")


def session(rate: float = 50.0) -> Session:
    return Session("s", echo_twin(), SessionSettings(step_size=0.01, publish_rate=rate))


class TestStamp:
    def test_one_instant_in_three_forms(self) -> None:
        """A stamp's microseconds, seconds and datetime are the same instant, exactly."""
        stamp = Stamp.at(1_700_000_000.123456)
        assert stamp.us == 1_700_000_000_123_456
        assert round(stamp.seconds * 1_000_000) == stamp.us
        assert stamp.datetime == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)

    def test_now_is_the_wall_clock(self) -> None:
        """Stamp.now is the wall-clock time, to the microsecond."""
        before = time.time()
        assert before - 1e-6 <= Stamp.now().seconds <= time.time() + 1e-6


class TestPulse:
    def test_every_sink_gets_the_same_frame_and_stamp(self) -> None:
        """One pulse hands the same frame object and stamp to every sink, in order."""
        sinks = [Taken(), Taken()]
        pacer = Pacer(SessionFrames(session()), sinks, stamp=lambda: Stamp(42))
        frame = pacer.pulse()
        assert frame is not None
        assert [item for sink in sinks for item in sink.items] == [("s", frame, Stamp(42))] * 2

    def test_a_failing_sink_is_logged_and_the_others_still_get_the_frame(self) -> None:
        """A sink that raises is logged as sink_failed and counted; the next sink gets
        the frame all the same."""
        taken = Taken()
        pacer = Pacer(SessionFrames(session()), [Broken(), taken])
        with capture_logs() as logs:
            pacer.pulse()
        assert len(taken.items) == 1
        assert [e["sink"] for e in logs if e["event"] == "sink_failed"] == ["Broken"]
        assert pacer.statistics().failures == 1

    def test_a_closed_session_delivers_nothing(self) -> None:
        """A session gone from under its pacer (deleted meanwhile) gives no frame."""
        closing = session()
        taken = Taken()
        pacer = Pacer(SessionFrames(closing), [taken])
        closing.close()
        assert pacer.pulse() is None
        assert taken.items == []


class TestRun:
    async def test_paces_at_the_publish_rate(self) -> None:
        """run delivers about publish_rate frames a second, each with a later stamp."""
        taken = Taken()
        async with asyncio.TaskGroup() as tg:
            pacer = Pacer(SessionFrames(session(rate=50.0)), [taken])
            pacer.start(tg)
            await asyncio.sleep(0.5)
            await pacer.stop()
        # 25 periods in 0.5 s (and the last frame of stop); generous for a busy machine
        assert 12 <= len(taken.items) <= 28
        stamps = [stamp.us for _, _, stamp in taken.items]
        assert stamps == sorted(stamps)

    async def test_stop_delivers_a_last_frame_once(self) -> None:
        """stop ends the task, then delivers the session's frame as it is now; a
        second stop does nothing."""
        stepped = session()
        taken = Taken()
        async with asyncio.TaskGroup() as tg:
            pacer = Pacer(SessionFrames(stepped), [taken])
            pacer.start(tg)
            await asyncio.wait_for(taken.arrived.wait(), 5)
            stepped.step(3)
            await pacer.stop()
            count = len(taken.items)
            await pacer.stop()
        assert len(taken.items) == count
        assert taken.items[-1][1].step_count == 3

    async def test_a_period_no_sink_wants_reads_nothing(self) -> None:
        """While no sink wants a frame (each still has its last to take), periods pass
        without reading one; a sink that wants one gets it at the next period."""
        idle, taken = Taken(), Taken()
        idle.wanted = taken.wanted = False
        async with asyncio.TaskGroup() as tg:
            pacer = Pacer(SessionFrames(session(rate=100.0)), [idle, taken])
            pacer.start(tg)
            await asyncio.sleep(0.1)
            assert taken.items == [] and pacer.statistics().idle >= 3
            taken.wanted = True
            await asyncio.wait_for(taken.arrived.wait(), 5)
            await pacer.stop()
        assert len(idle.items) == len(taken.items)  # (what is read goes to every sink)

    async def test_wake_delivers_at_once(self) -> None:
        """wake has the pacer deliver a frame at once, well before its period ends,
        even while no sink wants one."""
        taken = Taken()
        async with asyncio.TaskGroup() as tg:
            pacer = Pacer(SessionFrames(session(rate=0.1)), [taken])  # a 10 s period
            pacer.start(tg)
            await asyncio.wait_for(taken.arrived.wait(), 5)
            taken.arrived.clear()
            taken.wanted = False
            pacer.wake()
            await asyncio.wait_for(taken.arrived.wait(), 2)
            await pacer.stop()
        assert len(taken.items) == 3  # the first period, the woken one, stop's

    async def test_waits_for_a_tick_before_reading(self) -> None:
        """Before each frame the pacer asks Ticks to clear as long as its last pulse
        took (with a margin): a tick due meanwhile runs first."""
        asked: list[float] = []

        class Asked(Ticks):
            async def clear(self, seconds: float, patience: float = 0.05) -> None:
                asked.append(seconds)

        taken = Taken()
        async with asyncio.TaskGroup() as tg:
            pacer = Pacer(SessionFrames(session(rate=100.0)), [taken], ticks=Asked())
            pacer.start(tg)
            while len(taken.items) < 3:
                taken.arrived.clear()
                await asyncio.wait_for(taken.arrived.wait(), 5)
            await pacer.stop()
        assert asked[0] == 0.0  # nothing measured yet
        assert all(seconds > 0 for seconds in asked[1:3])

    @pytest.mark.parametrize("rate", [pytest.param(0.5, id="slow"), pytest.param(5.0, id="fast")])
    async def test_period_follows_the_publish_rate(self, rate: float) -> None:
        """The period is one over the session's publish rate."""
        pacer = Pacer(SessionFrames(session(rate=rate)), [])
        assert pacer.period == pytest.approx(1.0 / rate)
