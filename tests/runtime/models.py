"""Test models for the runtime tests: importable by name, so that a spawned worker
process can unpickle the twins made of them (a model class crosses by reference)."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Mapping
from typing import Any

from tests.engine.conftest import component, twin
from twin_server.engine.twin import TwinDefinition
from twin_server.models.base import DataType, Kind, Model, Value, Variable

#: outputs of ``Ramp``: enough to make a frame's copy take a while
RAMP_OUTPUTS = 64


class Echo(Model):
    """y = u (direct feedthrough): an input's value shows in the output of the tick
    that used it."""

    variables = (
        Variable("u", Kind.INPUT, low=-100.0, high=100.0, default=0.0),
        Variable("y", Kind.OUTPUT),
    )

    def reset(self, parameters: Mapping[str, Value],
              initial: Mapping[str, Value]) -> dict[str, Value]:
        self.parameters = dict(parameters)
        return {"y": 0.0}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        return {"y": float(inputs["u"])}


class Ramp(Model):
    """Every output is the number of ticks taken (a Double, an Int32, a String, a
    Boolean for its parity): a frame whose values disagree is torn."""

    variables = (
        *(Variable(f"d{i}", Kind.OUTPUT) for i in range(RAMP_OUTPUTS)),
        Variable("count", Kind.OUTPUT, datatype=DataType.INT32, default=0),
        Variable("label", Kind.OUTPUT, datatype=DataType.STRING, default=""),
        Variable("odd", Kind.OUTPUT, datatype=DataType.BOOLEAN, default=False),
    )

    def reset(self, parameters: Mapping[str, Value],
              initial: Mapping[str, Value]) -> dict[str, Value]:
        self.parameters = dict(parameters)
        self.k = 0
        return self._outputs()

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        self.k += 1
        return self._outputs()

    def _outputs(self) -> dict[str, Value]:
        k = self.k
        out: dict[str, Value] = {f"d{i}": float(k) for i in range(RAMP_OUTPUTS)}
        out.update(count=k, label=f"tick {k}", odd=bool(k % 2))
        return out


class Crash(Model):
    """Passes u through; at tick ``at`` it reads address 0 (mode 0: SIGSEGV), aborts
    (mode 1: SIGABRT) or spins forever (mode 2: a hang)."""

    variables = (
        Variable("u", Kind.INPUT, default=0.0),
        Variable("y", Kind.OUTPUT),
        Variable("at", Kind.PARAMETER, datatype=DataType.INT32, low=0, default=10),
        Variable("mode", Kind.PARAMETER, datatype=DataType.INT32, low=0, high=2, default=0),
        Variable("crash_on_restore", Kind.PARAMETER, datatype=DataType.BOOLEAN, default=False),
    )

    def reset(self, parameters: Mapping[str, Value],
              initial: Mapping[str, Value]) -> dict[str, Value]:
        self.parameters = dict(parameters)
        self.k = 0
        return {"y": 0.0}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        if self.k == self.parameters["at"]:
            mode = self.parameters["mode"]
            if mode == 0:
                ctypes.string_at(0)
            elif mode == 1:
                import os

                os.abort()
            else:
                while True:
                    pass
        self.k += 1
        return {"y": float(inputs["u"])}

    def snapshot(self) -> Any:
        return dict(self.__dict__)

    def restore(self, snapshot: Any) -> None:
        if snapshot["parameters"]["crash_on_restore"]:
            ctypes.string_at(0)
        self.__dict__.update(snapshot)


class Burn(Model):
    """Passes u through after burning ``seconds`` of this thread's CPU time a tick: a
    session that needs more of a core than its period gives, whatever else runs."""

    variables = (
        Variable("u", Kind.INPUT, default=0.0),
        Variable("y", Kind.OUTPUT),
        Variable("seconds", Kind.PARAMETER, low=0.0, high=1.0, default=0.001),
    )

    def reset(self, parameters: Mapping[str, Value],
              initial: Mapping[str, Value]) -> dict[str, Value]:
        self.parameters = dict(parameters)
        return {"y": 0.0}

    def step(self, t: float, dt: float, inputs: Mapping[str, Value]) -> dict[str, Value]:
        until = time.thread_time() + float(self.parameters["seconds"])
        while time.thread_time() < until:
            pass
        return {"y": float(inputs["u"])}


def burn_twin(seconds: float) -> TwinDefinition:
    """One component burning ``seconds`` of CPU a tick."""
    return twin("burn", component("burn", Burn, parameters={"seconds": seconds}))


def echo_twin() -> TwinDefinition:
    return twin("echo", component("echo", Echo))


def ramp_twin() -> TwinDefinition:
    return twin("ramp", component("ramp", Ramp))


def crash_twin(at: int, mode: int = 0, *, crash_on_restore: bool = False) -> TwinDefinition:
    """A source, the crashing component, and one after it: the fault must name the middle."""
    return twin("crashing", component("before", Echo),
                component("crash", Crash, parameters={
                    "at": at, "mode": mode, "crash_on_restore": crash_on_restore}),
                component("after", Echo),
                connections=("before.y -> crash.u", "crash.y -> after.u"))
