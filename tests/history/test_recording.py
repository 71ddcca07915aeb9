"""Recording sessions: what a stepped session produced is what the store gives back."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from twin_server.config.schema import HistoryConfig, SessionHistoryConfig
from twin_server.engine.session import Session, SessionSettings, VarKey
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import InvalidArgument
from twin_server.history import HistoryStore, RetentionPolicy
from twin_server.models.base import Kind
from twin_server.recording import (
    Recorder,
    Recording,
    RecordingSettings,
    recording_settings,
    select_variables,
    series_of,
)
from twin_server.runtime.compile import parse_config
from twin_server.runtime.local import SessionFrames, layout_of
from twin_server.runtime.sinks import Pacer, Stamp

PLANT = """
[twins.plant]
connections = [
    "setpoint.output -> controller.setpoint",
    "tank.level -> controller.measurement",
    "controller.output -> tank.inflow",
]
[twins.plant.components.setpoint]
model = "step"
parameters = { initial = 0.5, final = 1.0, step_time = 0.5 }
[twins.plant.components.tank]
model = "water_tank"
parameters = { area = 0.5, outflow_coefficient = 0.02, height = 2.0, initial_level = 0.5 }
[twins.plant.components.controller]
model = "pid"
parameters = { kp = 0.2, ki = 0.004, output_min = 0.0, output_max = 0.05 }
"""

T0 = 1_700_000_000.0
LEVEL = VarKey("tank", Kind.OUTPUT, "level")
INFLOW = VarKey("tank", Kind.INPUT, "inflow")
SETPOINT_IN = VarKey("controller", Kind.INPUT, "setpoint")
KP = VarKey("controller", Kind.PARAMETER, "kp")


@functools.cache
def plant() -> TwinDefinition:
    return parse_config(PLANT).twins["plant"]


def new_session(name: str = "s", publish_rate: float = 10.0) -> Session:
    return Session(name, plant(), SessionSettings(step_size=0.01, publish_rate=publish_rate))


async def read_all(store: HistoryStore, series: str) -> list[tuple[int, object, str]]:
    page = await store.read_raw(series, 0.0, None)
    assert page.continuation is None
    return [(s.t_us, s.value, s.source) for s in page.samples]


def at(samples: list[tuple[int, object, str]], t: float) -> object:
    """The value stored last at or before ``t`` (what a historian says it was)."""
    t_us = round(t * 1e6)
    found = [value for ts, value, _ in samples if ts <= t_us]
    return found[-1]


class TestSelection:
    def test_default_is_every_output_and_state(self) -> None:
        """Without variables, every output and state is recorded, in the session's order."""
        keys = select_variables(layout_of(new_session()), None)
        assert {k.kind for k in keys} == {Kind.OUTPUT, Kind.STATE}
        assert [k.path for k in keys] == [
            "Components.setpoint.Outputs.output", "Components.tank.Outputs.level",
            "Components.tank.Outputs.outflow", "Components.tank.Outputs.overflow",
            "Components.tank.States.level", "Components.controller.Outputs.output",
            "Components.controller.States.integral"]

    @pytest.mark.parametrize(("patterns", "paths"), [
        pytest.param(("controller.kp",), ["Components.controller.Parameters.kp"], id="explicit"),
        pytest.param(("tank.*",), ["Components.tank.Inputs.inflow",
                                   "Components.tank.Outputs.level",
                                   "Components.tank.Outputs.outflow",
                                   "Components.tank.Outputs.overflow",
                                   "Components.tank.States.level",
                                   "Components.tank.Parameters.area",
                                   "Components.tank.Parameters.outflow_coefficient",
                                   "Components.tank.Parameters.height",
                                   "Components.tank.Parameters.initial_level"], id="glob"),
        pytest.param(("*.level", "tank.level"), ["Components.tank.Outputs.level",
                                                 "Components.tank.States.level"],
                     id="overlapping-once"),
    ])
    def test_patterns(self, patterns: tuple[str, ...], paths: list[str]) -> None:
        """Patterns name 'component.variable' of any kind; each variable is taken once."""
        assert [k.path for k in select_variables(layout_of(new_session()), patterns)] == paths

    def test_pattern_matching_nothing_is_an_error(self) -> None:
        """A pattern that matches nothing names itself and the twin's variables."""
        with pytest.raises(InvalidArgument, match=r"'tonk\.\*' matches no variable of twin "
                                                  r"'plant'.*tank\.level"):
            select_variables(layout_of(new_session()), ("tank.level", "tonk.*"))

    def test_settings_merge_session_over_server(self) -> None:
        """A session's own history table wins field by field; the server's fills in."""
        server = HistoryConfig(max_age=3600.0, variables=("tank.*",), record_rate=2.0)
        merged = recording_settings(server, SessionHistoryConfig(record_rate=5.0,
                                                                 max_samples=10))
        assert merged == RecordingSettings(
            enabled=True, variables=("tank.*",), record_rate=5.0, mode="change",
            retention=RetentionPolicy(max_age=3600.0, max_samples=10))
        assert recording_settings(HistoryConfig()).retention is None
        assert not recording_settings(HistoryConfig(enabled=False),
                                      SessionHistoryConfig(enabled=True)).enabled
        assert not recording_settings(HistoryConfig(), SessionHistoryConfig(enabled=False)).enabled


class TestRecorder:
    async def test_values_read_back_equal_what_the_session_produced(
            self, store: HistoryStore) -> None:
        """Stepped and recorded at 10 Hz: the value stored at or before each record time
        is exactly what the session held then, for every recorded variable."""
        session = new_session()
        recorder = Recorder(store, SessionFrames(session))
        await recorder.declare()
        produced = []
        session.start()
        for i in range(200):
            for _ in range(3):
                session.tick()
            t = T0 + i * 0.1
            recorder.record_once(t)
            produced.append((t, session.values()))
        await store.flush()
        for key in recorder.keys:
            samples = await read_all(store, series_of("s", key))
            assert {src for _, _, src in samples} == {"tick"}
            for t, values in produced:
                assert at(samples, t) == values[key], (key.path, t)
        # on change: the setpoint steps once, so it is stored twice in 200 records
        assert len(await read_all(store, "s/Components.setpoint.Outputs.output")) == 2
        assert recorder.statistics().records == 200

    async def test_every_mode_stores_each_record(self, store: HistoryStore) -> None:
        """In 'every' mode each record stores every variable, changed or not."""
        session = new_session()
        recorder = Recorder(store, SessionFrames(session), RecordingSettings(
            variables=("setpoint.output",), mode="every"))
        session.start()
        for i in range(20):
            session.tick()
            recorder.record_once(T0 + i)
        await store.flush()
        assert len(await read_all(store, "s/Components.setpoint.Outputs.output")) == 20

    async def test_nothing_is_stored_while_nothing_moves(self, store: HistoryStore) -> None:
        """A record finds the version unmoved and stores nothing, in either mode."""
        session = new_session()
        recorder = Recorder(store, SessionFrames(session), RecordingSettings(mode="every"))
        # the first stores everything (and SimTime)
        assert recorder.record_once(T0) == len(recorder.keys) + 1
        assert recorder.record_once(T0 + 1) == 0
        session.step(1)
        assert recorder.record_once(T0 + 2) == len(recorder.keys) + 1

    async def test_series_are_declared_with_their_types(self, store: HistoryStore) -> None:
        """Series exist with the model's data types before any value arrives."""
        recorder = Recorder(store, SessionFrames(new_session()))
        await recorder.declare()
        types = {i.path: i.datatype for i in await store.list_series("s")}
        assert types == {**dict.fromkeys(recorder.paths, "Double"),
                         "Components.tank.Outputs.overflow": "Boolean"}

    async def test_writes_are_stored_with_their_source(self, store: HistoryStore) -> None:
        """A client's and a HIL write to recorded variables are stored at once with their
        source, and the next record does not store them again as ticks."""
        session = new_session()
        recorder = Recorder(store, SessionFrames(session), RecordingSettings(
            variables=("controller.setpoint", "tank.inflow")), now=lambda: T0 + 5)
        recorder.record_once(T0)
        recorder.written(SETPOINT_IN, session.write(SETPOINT_IN, 1.5), "client")
        recorder.written(INFLOW, session.write(INFLOW, 0.02), "hil")
        assert recorder.record_once(T0 + 6) == 0
        await store.flush()
        assert (await read_all(store, "s/Components.controller.Inputs.setpoint"))[-1] == \
            (round((T0 + 5) * 1e6), 1.5, "client")
        assert (await read_all(store, "s/Components.tank.Inputs.inflow"))[-1] == \
            (round((T0 + 5) * 1e6), 0.02, "hil")
        assert recorder.statistics().writes == 2

    async def test_unrecorded_client_write_becomes_an_event(self, store: HistoryStore) -> None:
        """A client forcing an input that is not recorded leaves a value_written event."""
        session = new_session()
        recorder = Recorder(store, SessionFrames(session))
        recorder.written(SETPOINT_IN, session.write(SETPOINT_IN, 1.5), "client")
        recorder.written(INFLOW, session.write(INFLOW, 0.01), "hil")  # HIL: not logged
        await store.flush()
        events = (await store.read_events("s", 0.0, None)).events
        assert [(e.kind, e.message, e.severity) for e in events] == [
            ("value_written", "input 'setpoint' of component 'controller' forced to 1.5 by "
                              "a client", 200)]

    async def test_session_events_are_stored(self, store: HistoryStore) -> None:
        """Every SessionEvent reaches the store with its kind, message and severity."""
        session = new_session()
        recorder = Recorder(store, SessionFrames(session))
        # (the daemon hands over what the OPC UA server emits: the host's events)
        unsubscribe = session.subscribe(lambda e: recorder.event(e.kind, e.message, e.severity))
        session.start()
        session.suspend()
        session.write(KP, 0.3)
        recorder.event("created", "made by a test", 100)
        await store.flush()
        events = (await store.read_events("s", 0.0, None)).events
        assert [e.kind for e in events] == ["started", "suspended", "parameter_changed",
                                            "created"]
        assert events[2].severity == 200 and "kp" in events[2].message
        recorder.close()
        unsubscribe()
        session.resume()  # after close: not recorded
        await store.flush()
        assert len((await store.read_events("s", 0.0, None)).events) == 4

    async def test_events_left_to_the_owner(self, store: HistoryStore) -> None:
        """The recorder stores only the events it is handed, not the session's own."""
        session = new_session()
        recorder = Recorder(store, SessionFrames(session))
        session.start()
        recorder.event("started", "handed over by the server")
        await store.flush()
        assert [e.message for e in (await store.read_events("s", 0.0, None)).events] == [
            "handed over by the server"]

    async def test_retention_is_set_from_the_settings(self, tmp_path: Path) -> None:
        """The session's retention applies to its series in the store's bulk rounds."""
        async with await HistoryStore.open(tmp_path / "h.db", batch_interval=0.05) as store:
            session = new_session()
            recorder = Recorder(store, SessionFrames(session), RecordingSettings(
                variables=("tank.level",), mode="every",
                retention=RetentionPolicy(max_samples=5)))
            for i in range(20):
                session.step(1)
                recorder.record_once(T0 + i)
            await store.flush()
            result = await store.enforce_retention(T0 + 30)
            assert result.samples_deleted == 15 * 3  # output, state and SimTime, 15 each
            assert len(await read_all(store, "s/Components.tank.Outputs.level")) == 5

    async def test_closed_session_is_not_read(self, store: HistoryStore) -> None:
        """A session closed under the recorder ends its recording quietly."""
        session = new_session()
        recorder = Recorder(store, SessionFrames(session))
        session.close()
        assert recorder.record_once(T0) == 0


class TestSimulatedTime:
    async def test_every_sample_carries_its_simulated_time(self, store: HistoryStore
                                                           ) -> None:
        """Many ticks between two records (a session at real-time factor 0): each stored
        sample carries the simulated time of its frame, and SimTime holds one sample per
        record that stored anything, stamped like the values it came with."""
        session = new_session()
        recorder = Recorder(store, SessionFrames(session), RecordingSettings(
            variables=("tank.level",)))
        await recorder.declare()
        expected = []
        for i in range(5):
            session.step(137)
            recorder.record_once(T0 + i * 0.1)
            expected.append((round((T0 + i * 0.1) * 1e6), session.sim_time))
        recorder.record_once(T0 + 1)  # nothing moved: nothing stored, no SimTime either
        await store.flush()
        level = (await store.read_raw("s/Components.tank.Outputs.level", T0, None)).samples
        assert [(s.t_us, s.sim_t) for s in level] == expected
        sim = (await store.read_raw("s/SimTime", T0, None)).samples
        assert [(s.t_us, s.value, s.sim_t) for s in sim] == [(t, v, v) for t, v in expected]
        assert expected[-1][1] == 685 * 0.01  # t = k*dt, as the session counts it

    async def test_a_write_carries_the_latest_frames_simulated_time(
            self, store: HistoryStore) -> None:
        """A client's write is stored with the simulated time of the latest frame."""
        session = new_session()
        recorder = Recorder(store, SessionFrames(session), RecordingSettings(
            variables=("controller.setpoint",)), now=lambda: T0 + 5)
        session.step(40)
        recorder.record_once(T0)
        recorder.written(SETPOINT_IN, session.write(SETPOINT_IN, 1.5), "client")
        await store.flush()
        (*_, write) = (await store.read_raw("s/Components.controller.Inputs.setpoint",
                                            T0, None)).samples
        assert (write.value, write.source, write.sim_t) == (1.5, "client", 40 * 0.01)

    async def test_sim_time_node_is_historized(self, store: HistoryStore) -> None:
        """SimTime is among the recorded paths (its node is marked Historizing)."""
        recorder = Recorder(store, SessionFrames(new_session()))
        assert recorder.paths[-1] == "SimTime"


class TestRecording:
    async def test_pacers_feed_every_recorder_and_the_last_frame_is_recorded(
            self, store: HistoryStore) -> None:
        """Each session's pacer feeds its recorder at the session's rate; stopping the
        pacer records its last frame."""
        fast, slow = new_session("fast", 50.0), new_session("slow", 2.0)
        recording = Recording(store, HistoryConfig(variables=("tank.level",)))
        await recording.add(SessionFrames(fast))
        await recording.add(SessionFrames(slow))
        assert await recording.add(SessionFrames(new_session("off")),
                                   SessionHistoryConfig(enabled=False)) is None
        async with asyncio.TaskGroup() as tg:
            pacers = [Pacer(SessionFrames(s), [recording]) for s in (fast, slow)]
            for pacer in pacers:
                pacer.start(tg)
            for _ in range(12):
                fast.step(1)
                slow.step(1)
                await asyncio.sleep(0.025)
            fast.step(1)
            for pacer in pacers:
                await pacer.stop()
        stats = {s.session: s for s in recording.statistics()}
        assert stats["fast"].records >= 8
        assert stats["slow"].records <= 3
        await store.flush()
        level = await read_all(store, "fast/Components.tank.Outputs.level")
        assert level[-1][1] == fast.read(LEVEL)  # the last step, recorded on the way out

    async def test_record_rate_below_the_publish_rate_takes_a_subset_of_frames(
            self, store: HistoryStore) -> None:
        """At half the publish rate every other frame is recorded, at its own stamp,
        whatever the jitter of the stamps; nothing is recorded that was not delivered."""
        session = new_session("s", 20.0)
        recording = Recording(store, HistoryConfig(variables=("tank.level",), mode="every"))
        await recording.add(SessionFrames(session), SessionHistoryConfig(record_rate=10.0))
        source = SessionFrames(session)
        jitter = [0.0, 0.004, -0.003, 0.012, -0.01, 0.0, 0.02, -0.02, 0.001, 0.0]
        delivered = []
        for i in range(40):
            session.step(1)
            stamp = Stamp.at(T0 + i * 0.05 + jitter[i % len(jitter)])
            recording.deliver("s", source.frame(), stamp)
            delivered.append((stamp.us, session.read(LEVEL)))
        await store.flush()
        stored = [(t, v) for t, v, _ in await read_all(store, "s/Components.tank.Outputs.level")]
        assert set(stored) <= set(delivered)
        assert stored == delivered[::2]

    async def test_record_rate_above_the_publish_rate_is_capped(
            self, store: HistoryStore) -> None:
        """A record rate above the publish rate records every frame, no more, and says
        so in the log."""
        recording = Recording(store)
        with capture_logs() as logs:
            recorder = await recording.add(SessionFrames(new_session("s", 10.0)),
                                           SessionHistoryConfig(record_rate=100.0))
        assert recorder is not None and recorder.rate == 10.0
        capped = [e for e in logs if e["event"] == "history_record_rate_capped"]
        assert capped and capped[0]["record_rate"] == 100.0

    async def test_add_refuses_bad_variables_and_twice(self, store: HistoryStore) -> None:
        """Variables that match nothing, or a session recorded already, are refused."""
        recording = Recording(store)
        session = new_session()
        with pytest.raises(InvalidArgument, match="matches no variable"):
            await recording.add(SessionFrames(session),
                                SessionHistoryConfig(variables=("nope.x",)))
        await recording.add(SessionFrames(session))
        with pytest.raises(InvalidArgument, match="recorded already"):
            await recording.add(SessionFrames(session))
        assert recording.paths("s") == recording.recorders["s"].paths
        assert recording.paths("other") == []

    async def test_removed_session_is_retired(self, store: HistoryStore) -> None:
        """Removing a recorded session retires it in the store (its history then goes
        with retention); adding one under the name again ends that."""
        recording = Recording(store, HistoryConfig(max_age=60.0))
        await recording.add(SessionFrames(new_session()))
        recording.remove("s")
        assert "s" in store._policies.retired
        await recording.add(SessionFrames(new_session()))
        assert "s" not in store._policies.retired
        assert store._policies.sessions["s"] == RetentionPolicy(max_age=60.0)

    async def test_hooks_route_by_session(self, store: HistoryStore) -> None:
        """written() and event() reach the session's recorder; unknown sessions are ignored."""
        recording = Recording(store, HistoryConfig(variables=("controller.setpoint",)),
                              now=lambda: T0)
        session = new_session()
        await recording.add(SessionFrames(session))
        recording.written("s", SETPOINT_IN, session.write(SETPOINT_IN, 2.0), "client")
        recording.written("ghost", SETPOINT_IN, 2.0, "client")
        recording.event("s", "alarm", "overflow", 700)
        with capture_logs():
            recording.remove("s")
        recording.remove("s")
        await store.flush()
        samples = await read_all(store, "s/Components.controller.Inputs.setpoint")
        assert samples[-1] == (round(T0 * 1e6), 2.0, "client")
        assert [e.kind for e in (await store.read_events("s", 0.0, None)).events] == ["alarm"]
