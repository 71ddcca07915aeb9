"""What every built-in model owes the engine: declarations, reset/step shapes, snapshots."""

from __future__ import annotations

import math

import pytest

from tests.models.support import BUILTIN, defaults, make
from twin_server.models import registry
from twin_server.models.base import DataType, Kind, Model, Value

UNITS = {"", "m", "m^2", "m^3/s", "m^2.5/s", "s", "1/s", "degC", "K/W", "J/K", "W", "Hz", "rad",
         "%"}
FEEDTHROUGH = {"pid": True, "gain": True, "sum": True, "noisy_sensor": True}
MODELS = [pytest.param(registry.get(name), id=name) for name in BUILTIN]


def wiggle(cls: type[Model], k: int) -> dict[str, Value]:
    """An in-range, time-varying input set for tick k."""
    values: dict[str, Value] = {}
    for v in cls.declared(Kind.INPUT):
        low = 0.0 if v.low is None else v.low
        values[v.name] = low + 0.01 + 0.5 * (1 + math.sin(0.1 * k + len(v.name)))
    return values


class TestDeclarations:
    @pytest.mark.parametrize("cls", MODELS)
    def test_variables_are_described(self, cls: type[Model]) -> None:
        """Every variable has a description, a known unit symbol and an in-range default."""
        for v in cls.variables:
            assert v.description, v.name
            assert v.unit in UNITS, (v.name, v.unit)
            assert v.coerce(v.default) == v.default, v.name
        assert cls.description

    @pytest.mark.parametrize("cls", MODELS)
    def test_names_are_unique_within_a_kind(self, cls: type[Model]) -> None:
        """No two variables of one kind share a name."""
        keys = [(v.kind, v.name) for v in cls.variables]
        assert len(keys) == len(set(keys))

    @pytest.mark.parametrize(("name", "cls"), [pytest.param(n, registry.get(n), id=n)
                                               for n in BUILTIN])
    def test_direct_feedthrough(self, name: str, cls: type[Model]) -> None:
        """Only models whose outputs react to this tick's inputs claim direct feedthrough."""
        assert cls.direct_feedthrough is FEEDTHROUGH.get(name, False)


class TestStepping:
    @pytest.mark.parametrize("cls", MODELS)
    def test_reset_and_step_return_declared_outputs(self, cls: type[Model]) -> None:
        """reset and step return exactly the declared outputs, typed and in range."""
        model = make(cls)
        outputs = cls.declared(Kind.OUTPUT)
        results = [model.reset(model.parameters, {})]
        results += [model.step(k * 0.01, 0.01, wiggle(cls, k)) for k in range(50)]
        for result in results:
            assert set(result) == {v.name for v in outputs}
            for v in outputs:
                assert v.coerce(result[v.name]) == result[v.name]
                assert isinstance(result[v.name], bool) == (v.datatype is DataType.BOOLEAN)

    @pytest.mark.parametrize("cls", MODELS)
    def test_parameters_are_stored_whole(self, cls: type[Model]) -> None:
        """reset keeps the full parameter dict in self.parameters."""
        assert make(cls).parameters == defaults(cls, Kind.PARAMETER)

    @pytest.mark.parametrize("cls", MODELS)
    def test_states_round_trip(self, cls: type[Model]) -> None:
        """get_states returns the declared states; writing them back changes nothing ahead."""
        model, twin = make(cls), make(cls)
        for k in range(20):
            model.step(k * 0.01, 0.01, wiggle(cls, k))
            twin.step(k * 0.01, 0.01, wiggle(cls, k))
        states = model.get_states()
        assert set(states) == {v.name for v in cls.declared(Kind.STATE)}
        model.set_states(states)
        for k in range(20, 40):
            assert model.step(k * 0.01, 0.01, wiggle(cls, k)) == twin.step(k * 0.01, 0.01,
                                                                          wiggle(cls, k))

    @pytest.mark.parametrize("cls", MODELS)
    def test_snapshot_restore_is_bit_identical(self, cls: type[Model]) -> None:
        """After restore, the same inputs give bit-identical outputs; the snapshot is a copy."""
        model = make(cls)
        for k in range(30):
            model.step(k * 0.01, 0.01, wiggle(cls, k))
        snap = model.snapshot()
        first = [model.step(k * 0.01, 0.01, wiggle(cls, k)) for k in range(30, 330)]
        model.restore(snap)
        again = [model.step(k * 0.01, 0.01, wiggle(cls, k)) for k in range(30, 330)]
        assert again == first
        model.restore(snap)  # restoring twice from one snapshot works: it was not consumed
        assert [model.step(k * 0.01, 0.01, wiggle(cls, k)) for k in range(30, 330)] == first

    @pytest.mark.parametrize("cls", MODELS)
    def test_tunable_parameters_apply(self, cls: type[Model]) -> None:
        """set_parameter with each tunable parameter's own default is accepted and stored."""
        model = make(cls)
        for v in cls.declared(Kind.PARAMETER):
            if v.tunable:
                model.set_parameter(v.name, v.default)
                assert model.parameters[v.name] == v.default
        model.step(0.0, 0.01, wiggle(cls, 0))
