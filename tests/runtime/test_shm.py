"""The data path: frames read from shared memory are never torn, values keep their
type and bits, errors cross the pipe with their class and fields."""

from __future__ import annotations

import asyncio
import pickle
import struct
import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.runtime.conftest import EventLog, wait_until
from tests.runtime.models import RAMP_OUTPUTS, ramp_twin
from twin_server.engine.session import SessionSettings
from twin_server.errors import (
    ConfigError,
    ConfigErrors,
    FMIError,
    InvalidState,
    OutOfRange,
    SessionFault,
    WorkerCrashed,
)
from twin_server.models.base import DataType, Kind, Variable
from twin_server.runtime import WorkerHost
from twin_server.runtime.shm import Codec
from twin_server.runtime.wire import decode_error, encode_error


class TestTornReads:
    async def test_frames_of_a_flat_out_session_are_never_torn(
            self, workers: WorkerHost, events: EventLog) -> None:
        """Every frame read while the worker publishes flat out is one tick: all 64
        Doubles, the Int32, the String and the Boolean agree with its step count."""
        await workers.create("ramp", ramp_twin(), SessionSettings(realtime_factor=0.0))
        await workers.call("ramp", "start")
        await wait_until(lambda: workers.frame("ramp").step_count > 100)
        seen: set[int] = set()
        reads = 0
        deadline = time.monotonic() + 10.0
        # at least 20,000 reads, and on until they overlapped many publishes (a busy
        # machine may give the worker few turns)
        while reads < 20_000 or (len(seen) <= 20 and time.monotonic() < deadline):
            i, reads = reads, reads + 1
            if i % 50 == 0:
                await asyncio.sleep(0)  # the strings come by the pipe: let it be read
            frame = workers.frame("ramp")
            k = frame.step_count
            doubles = frame.values[:RAMP_OUTPUTS]
            assert doubles == (float(k),) * RAMP_OUTPUTS
            assert frame.values[RAMP_OUTPUTS:] == (k, f"tick {k}", bool(k % 2))
            seen.add(k)
        await workers.call("ramp", "suspend")
        assert len(seen) > 20  # the reads did overlap many publishes


class TestCodec:
    @settings(deadline=None, max_examples=60)  # (a shared, busy machine: no deadline)
    @given(st.lists(st.sampled_from(list(DataType)), min_size=1, max_size=12), st.data())
    def test_values_round_trip_with_type_and_bits(self, types: list[DataType],
                                                  data: st.DataObject) -> None:
        """Doubles (any finite bits), Int32 and Booleans come back through the float64
        block exactly, strings beside them, all in layout order."""
        variables = tuple(Variable(f"v{i}", Kind.OUTPUT, datatype=t) for i, t in enumerate(types))
        strategy = {
            DataType.DOUBLE: st.floats(allow_nan=False, allow_infinity=False),
            DataType.INT32: st.integers(-(2**31), 2**31 - 1),
            DataType.BOOLEAN: st.booleans(),
            DataType.STRING: st.text(max_size=20),
        }
        values = [data.draw(strategy[t]) for t in types]
        codec = Codec(variables)
        numeric, strings = codec.split(values)
        block = np.zeros(len(codec.numeric))
        block[:] = numeric
        decoded = codec.decode(block, strings)
        assert [type(v) for v in decoded] == [type(v) for v in values]
        assert [struct.pack("<d", v) if isinstance(v, float) else v for v in decoded] == \
            [struct.pack("<d", v) if isinstance(v, float) else v for v in values]


class TestErrors:
    def test_our_exceptions_keep_class_message_and_fields(self) -> None:
        """Each of our exceptions comes back as the same class, message and fields."""
        cases: list[BaseException] = [
            OutOfRange("input 'u' must be within [0, 1] (got 2.0)"),
            InvalidState("cannot Start", session="s", state="Halted"),
            FMIError("fmi2DoStep failed", function="fmi2DoStep", fmi_status="Error"),
            SessionFault("boom", session="s", component="c", tick=3, cause=ZeroDivisionError("x")),
            WorkerCrashed("died", session="s", component="c", tick=4, signal="SIGSEGV",
                          exit_code=-11, pid=42),
            ConfigError("must be > 0", path="twins.t.area", file="a.toml"),
            KeyError("k"),
        ]
        for exc in cases:
            back = decode_error(pickle.loads(pickle.dumps(encode_error(exc))))
            assert type(back) is type(exc)
            assert str(back) == str(exc)
            assert {k: v for k, v in vars(back).items() if k != "cause"} == \
                {k: v for k, v in vars(exc).items() if k != "cause"}

    def test_unpicklable_cause_crosses_as_its_repr(self) -> None:
        """A fault whose cause cannot be pickled keeps everything else, the cause as text."""
        fault = SessionFault("boom", session="s", component="c", tick=1,
                             cause=ValueError(lambda: None))
        back = decode_error(pickle.loads(pickle.dumps(encode_error(fault))))
        assert isinstance(back, SessionFault) and back.tick == 1
        assert isinstance(back.cause, ValueError) or "ValueError" in str(back.cause)

    def test_config_errors_group(self) -> None:
        """ConfigErrors comes back as ConfigErrors holding every ConfigError."""
        group = ConfigErrors([ConfigError("a", path="x"), ConfigError("b", path="y")])
        back = decode_error(encode_error(group))
        assert isinstance(back, ConfigErrors)
        assert str(back) == str(group)

    def test_foreign_exception_becomes_runtime_error(self) -> None:
        """A class from outside our tree and the built-ins is named in a RuntimeError."""

        class Strange(Exception):
            pass

        back = decode_error(encode_error(Strange("odd")))
        assert isinstance(back, RuntimeError)
        assert "Strange" in str(back) and "odd" in str(back)
