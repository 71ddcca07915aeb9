"""Shared memory between a worker and the main process: one value block per
session, one status block per worker. Both are named by the main process, which
unlinks them whatever happened to the worker.

A session's ``ValueBlock`` (created by the worker, which knows its size) holds::

    ints[16]    int64   seqlock, step count, version, run state, strings seq,
                        steps left of a running Step, forces, ...
                        and, outside the seqlock, the live step count (the hang check's)
    floats[16]  float64 real-time factor, clock lateness, step durations, ...
    counts[64]  int64   the clock's ticks by lateness (``ClockStatistics.lateness_counts``)
    values[n]   float64 every Double, Int32 and Boolean variable, in layout order

A worker's ``StatusBlock`` (created by the main process before it starts the
worker) holds what the main process reads after the worker died: the slot
number of the session the worker is working on, and the index of the component
being stepped (``Session(progress=...)`` writes it before each component's step,
one store; -1 between ticks and commands). A worker steps one session at a time,
so one pair of slots tells the whole story.

Int32 and Boolean values are exact in a float64; ``decode`` turns them back
into ``int`` and ``bool``, so a frame read here is bit-identical to the values
in the worker. String variables do not fit: the worker sends those that changed
over the pipe *before* it writes the frame that counts them (``strings`` is
the number of such updates sent so far), so the reader can tell whether it has
them yet.

The statuses of values that are not Good (a dropout's, ``Session.quality``) travel
with the strings: a ``strings`` message carries them whenever they changed.

The seqlock: the writer makes ``ints[SEQ]`` odd, writes, makes it even again;
the reader copies everything between two reads of an equal, even ``SEQ``, else
tries again (a bounded number of times; the caller keeps the last good frame).
Stores become visible in program order on x86-64 (TSO); on a weakly ordered CPU
this needs fences, which numpy does not give (not supported there).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from twin_server.engine.session import RunState
from twin_server.models.base import DataType, Value, Variable
from twin_server.runtime.clock import LATENESS_BUCKETS

# -- int slots -------------------------------------------------------------------------
SEQ = 0  # seqlock: odd while the worker writes a frame
STEP = 1  # the frame's step count
VERSION = 2  # the frame's version
STATE = 3  # the frame's run state (STATES index)
STRINGS = 4  # string updates sent so far, as of this frame
TICKS = 5  # ticks the clock took
OVERRUNS = 6
STEPS_LEFT = 7  # ticks the running Step has still to take (0: none runs)
FORCES = 8  # the session's count of changes to its set of forced inputs
FAULTS = 10  # the session's count of changes to its set of injected faults
# written outside the seqlock (one aligned 8-byte store):
LIVE_STEP = 9  # the step count after every tick (frames may be published less often)
# -- status block slots ----------------------------------------------------------------
PROGRESS = 0  # index of the component being stepped; -1 between ticks and commands
CURRENT = 1  # slot number of the session being worked on; -1 when idle
# -- float slots -----------------------------------------------------------------------
FACTOR = 0
LATENESS_P50 = 1
LATENESS_P99 = 2
LATENESS_MAX = 3
DURATION_MEAN = 4
DURATION_MAX = 5

_INTS = 16
_FLOATS = 16
_COUNTS = 64
assert LATENESS_BUCKETS <= _COUNTS
_HEADER = 8 * (_INTS + _FLOATS + _COUNTS)
#: run states by their code in ``ints[STATE]``
STATES: tuple[RunState, ...] = tuple(RunState)
STATE_CODES: dict[RunState, int] = {state: code for code, state in enumerate(STATES)}
#: how often a reader retries a frame the writer is changing under it
SPINS = 200


def block_size(numeric: int) -> int:
    return _HEADER + 8 * max(numeric, 1)


class ValueBlock:
    """A mapped block: ``ints``, ``floats``, ``counts`` and ``values`` are numpy views
    of it."""

    def __init__(self, shm: shared_memory.SharedMemory, numeric: int) -> None:
        self.shm = shm
        self.name = shm.name
        buf = shm.buf
        self.ints = np.ndarray((_INTS,), dtype=np.int64, buffer=buf, offset=0)
        self.floats = np.ndarray((_FLOATS,), dtype=np.float64, buffer=buf, offset=8 * _INTS)
        self.counts = np.ndarray((LATENESS_BUCKETS,), dtype=np.int64, buffer=buf,
                                 offset=8 * (_INTS + _FLOATS))
        self.values = np.ndarray((numeric,), dtype=np.float64, buffer=buf, offset=_HEADER)

    @classmethod
    def create(cls, name: str, numeric: int) -> ValueBlock:
        shm = shared_memory.SharedMemory(name=name, create=True, size=block_size(numeric))
        block = cls(shm, numeric)
        block.ints[:] = 0
        block.counts[:] = 0
        return block

    @classmethod
    def attach(cls, name: str, numeric: int) -> ValueBlock:
        return cls(shared_memory.SharedMemory(name=name), numeric)

    def close(self) -> None:
        """Unmap (the views must go first: a live export keeps the mapping)."""
        del self.ints, self.floats, self.counts, self.values
        with contextlib.suppress(BufferError):
            self.shm.close()


class StatusBlock:
    """A worker's status: ``ints[PROGRESS]``, ``ints[CURRENT]``; ``progress`` is the
    one-slot view the sessions write the component index into."""

    def __init__(self, shm: shared_memory.SharedMemory) -> None:
        self.shm = shm
        self.name = shm.name
        self.ints = np.ndarray((_INTS,), dtype=np.int64, buffer=shm.buf, offset=0)
        buf = shm.buf
        assert buf is not None  # (None only once the block is closed)
        self.progress = buf[8 * PROGRESS: 8 * PROGRESS + 8].cast("q")

    @classmethod
    def create(cls, name: str) -> StatusBlock:
        block = cls(shared_memory.SharedMemory(name=name, create=True, size=8 * _INTS))
        block.ints[:] = -1
        return block

    @classmethod
    def attach(cls, name: str) -> StatusBlock:
        return cls(shared_memory.SharedMemory(name=name))

    def close(self) -> None:
        self.progress.release()
        del self.ints
        with contextlib.suppress(BufferError):
            self.shm.close()


def unlink(name: str) -> None:
    """Remove a block's name (the memory goes with its last mapping); a name
    already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        block = shared_memory.SharedMemory(name=name)
        block.close()
        block.unlink()


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A consistent copy of a block's frame (``read``)."""

    ints: np.ndarray
    floats: np.ndarray
    values: np.ndarray


def read(block: ValueBlock) -> RawFrame | None:
    """Copy one consistent frame, or None when the writer kept changing it."""
    ints, floats, values = block.ints, block.floats, block.values
    for _ in range(SPINS):
        seq = int(ints[SEQ])
        if seq & 1:
            continue
        i, f, v = ints.copy(), floats.copy(), values.copy()
        if int(ints[SEQ]) == seq and int(i[SEQ]) == seq:
            return RawFrame(i, f, v)
    return None


class Codec:
    """Where each variable's value lives (``values`` or the strings), and its type."""

    def __init__(self, variables: tuple[Variable, ...]) -> None:
        self.count = len(variables)
        self.numeric = [i for i, v in enumerate(variables) if v.datatype is not DataType.STRING]
        self.strings = [i for i, v in enumerate(variables) if v.datatype is DataType.STRING]
        #: positions in ``values`` of Int32 and of Boolean variables
        self.ints = [j for j, i in enumerate(self.numeric)
                     if variables[i].datatype is DataType.INT32]
        self.bools = [j for j, i in enumerate(self.numeric)
                      if variables[i].datatype is DataType.BOOLEAN]
        self.all_numeric = not self.strings

    def split(self, values: list[Value]) -> tuple[list[Value], list[Value]]:
        """(numeric values in block order, string values in ``strings`` order)."""
        if self.all_numeric:
            return values, []
        return [values[i] for i in self.numeric], [values[i] for i in self.strings]

    def decode(self, values: np.ndarray, strings: list[str]) -> tuple[Value, ...]:
        """The values in layout order, typed as the session gives them."""
        numbers: list[Value] = values.tolist()
        for j in self.ints:
            numbers[j] = int(numbers[j])
        for j in self.bools:
            numbers[j] = numbers[j] != 0.0
        if self.all_numeric:
            return tuple(numbers)
        result: list[Value] = [""] * self.count
        for j, i in enumerate(self.numeric):
            result[i] = numbers[j]
        for j, i in enumerate(self.strings):
            result[i] = strings[j]
        return tuple(result)
