"""FMU stepping: the lag2 test FMU (FMI 2.0 co-simulation, built from
``tests/models/fmu/src`` with gcc) stepped as fast as possible by a Session and by
the bare FMU component, beside a bare FMPy loop on the same FMU in the same run:
``setReal(u)``, ``doStep``, ``getReal(y, steps, above)``, which is the least any
co-simulation master does per step. Target (issue 5): the session at least half
the bare rate.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fmpy import read_model_description
from fmpy.fmi2 import FMU2Slave

from tests.models.fmu import build
from twin_server.config.schema import ComponentConfig, TwinConfig
from twin_server.engine.session import Session, SessionSettings
from twin_server.engine.twin import compile_twin
from twin_server.models.base import Kind
from twin_server.models.fmu import FMU

SECONDS = 2.0
DT = 0.01


def _rate(step: Callable[[int], None], seconds: float = SECONDS) -> float:
    """Steps per second of ``step(k)`` over about ``seconds`` (batches of 1000)."""
    k, start = 0, time.perf_counter()
    while True:
        for _ in range(1000):
            step(k)
            k += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return k / elapsed


def _bare(path: Path, unzipped: Path, *, io: bool = True) -> float:
    md = read_model_description(str(path))
    vr = {v.name: v.valueReference for v in md.modelVariables}
    fmu = FMU2Slave(guid=md.guid, unzipDirectory=str(unzipped),
                    modelIdentifier=md.coSimulation.modelIdentifier, instanceName="bare")
    fmu.instantiate()
    fmu.setupExperiment(startTime=0.0)
    fmu.enterInitializationMode()
    fmu.exitInitializationMode()

    def step(k: int) -> None:
        fmu.setReal([vr["u"]], [1.0])
        fmu.doStep(k * DT, DT)
        fmu.getReal([vr["y"]])
        fmu.getInteger([vr["steps"]])
        fmu.getBoolean([vr["above"]])

    def do_step_only(k: int) -> None:
        fmu.doStep(k * DT, DT)

    try:
        return _rate(step if io else do_step_only)
    finally:
        fmu.terminate()
        fmu.freeInstance()


def _component(path: Path, cache: Path) -> float:
    model = FMU({"path": str(path), "cache_dir": str(cache)})
    model.reset({v.name: v.default for v in model.variables if v.kind is Kind.PARAMETER}, {})
    inputs = {"u": 1.0}
    try:
        return _rate(lambda k: model.step(k * DT, DT, inputs))
    finally:
        model.close()


def _session(path: Path, cache: Path) -> float:
    twin = compile_twin("bench", TwinConfig(components={
        "plant": ComponentConfig(model="fmu", options={"path": str(path), "cache_dir": str(cache)},
                                 inputs={"u": 1.0}),
    }))
    session = Session("bench", twin, SessionSettings(step_size=DT))
    session.start()
    try:
        return _rate(lambda k: session.tick())
    finally:
        for model in session.components().values():
            model.close()


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-fmu-") as tmp:
        out = Path(tmp)
        path = build.build("lag2", out)
        cache = out / "cache"
        component = _component(path, cache)  # also unpacks the FMU for the bare loop
        unzipped = next(cache.iterdir())
        bare = _bare(path, unzipped)
        session = _session(path, cache)
        bare_again = _bare(path, unzipped)  # the machine is noisy: bracket the runs
        do_step_only = _bare(path, unzipped, io=False)
    baseline = (bare + bare_again) / 2
    return [
        {"figure": "FMU session ticks (lag2, FMI 2.0 CS)", "value": session, "unit": "ticks/s",
         "baseline": "bare FMPy setReal/doStep/get loop", "baseline_value": baseline,
         "target": ">= 0.5x baseline", "higher_is_better": True},
        {"figure": "FMU session ticks (lag2, FMI 2.0 CS)", "value": session, "unit": "ticks/s",
         "baseline": "bare FMPy doStep-only loop (no I/O)", "baseline_value": do_step_only,
         "target": "", "higher_is_better": True},
        {"figure": "FMU component steps (lag2, no session)", "value": component,
         "unit": "steps/s", "baseline": "bare FMPy setReal/doStep/get loop",
         "baseline_value": baseline, "target": "", "higher_is_better": True},
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure)
