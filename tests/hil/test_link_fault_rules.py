"""HIL link faults without a PLC: the registry's rules, the config's checks, the roles."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua import ua

from tests.hil.test_link_faults import twin_config
from twin_server.errors import ConfigErrors, InvalidState, NotFound
from twin_server.hil.link_faults import FieldRefused, LinkFaults, LinkFaultSpec
from twin_server.runtime.compile import parse_config
from twin_server.security.roles import Role, method_role

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class TestRoles:
    def test_the_methods_are_an_operators(self) -> None:
        """InjectLinkFault and ClearLinkFault need the operator role."""
        for name in ("InjectLinkFault", "ClearLinkFault"):
            assert method_role(ua.NodeId(f"HIL.plc.{name}", 2), 2) is Role.OPERATOR


class TestRegistry:
    def test_overlaps_are_refused(self) -> None:
        """A fault on the whole link overlaps any other; on distinct bindings none."""
        faults = LinkFaults(["a", "b"])
        faults.add(LinkFaultSpec("freeze", bindings=("a",)), 0.0)
        faults.add(LinkFaultSpec("delay", 0.2, bindings=("b",)), 0.0)
        with pytest.raises(InvalidState):
            faults.add(LinkFaultSpec("cut"), 0.0)
        assert [str(f.kind) for f in faults.remove(["b"])] == ["delay"]
        with pytest.raises(NotFound):
            faults.remove(["b"])

    def test_durations_expire_in_order(self) -> None:
        """expire() ends the faults whose duration ran out, and only those."""
        faults = LinkFaults(["a", "b"])
        faults.add(LinkFaultSpec("freeze", duration=1.0, bindings=("a",)), 10.0)
        faults.add(LinkFaultSpec("cut", duration=0, bindings=("b",)), 10.0)  # until cleared
        assert faults.next_end() == 11.0
        assert faults.expire(10.9) == []
        assert [f.bindings for f in faults.expire(11.0)] == [("a",)]
        assert faults.next_end() is None

    @pytest.mark.parametrize(("spec", "field"), [
        pytest.param(LinkFaultSpec("stuck"), "kind", id="kind"),
        pytest.param(LinkFaultSpec("delay", 61.0), "delay", id="delay-too-long"),
        pytest.param(LinkFaultSpec("freeze", duration=float("nan")), "duration", id="nan"),
        pytest.param(LinkFaultSpec("cut", bindings=("z",)), "bindings", id="binding"),
    ])
    def test_each_field_is_checked(self, spec: LinkFaultSpec, field: str) -> None:
        """A bad field is refused by name."""
        with pytest.raises(FieldRefused) as refused:
            LinkFaults(["a"]).add(spec, 0.0)
        assert refused.value.field == field


class TestConfig:
    def test_errors_name_the_key(self) -> None:
        """[[hil.<peer>.faults]]: a delay on a cut, an unknown binding and an overlap,
        all at once, each with its key."""
        text = twin_config("opc.tcp://127.0.0.1:4840/plc") + """
[[hil.plc.faults]]
kind = "cut"
delay = 1.0

[[hil.plc.faults]]
kind = "freeze"
bindings = ["nope"]
"""
        with pytest.raises(ConfigErrors) as raised:
            parse_config(text)
        paths = {e.path for e in raised.value.exceptions}
        assert {"hil.plc.faults[0].delay", "hil.plc.faults[1].bindings"} <= paths


def uncommented(path: Path, table: str) -> str:
    """``path``'s text with its commented-out ``table`` (and the lines after it, up to
    the first that is not a comment) uncommented."""
    lines = path.read_text().splitlines()
    start = lines.index(f"# {table}")
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("#")),
               len(lines))
    for i in range(start, end):
        lines[i] = lines[i].removeprefix("# ")
    return "\n".join(lines) + "\n"


class TestShippedExamples:
    @pytest.mark.parametrize(("config", "table"), [
        pytest.param("demo.toml", "[[sessions.tank.faults]]", id="demo"),
        pytest.param("hil.toml", "[[hil.plc.faults]]", id="hil"),
    ])
    def test_the_commented_fault_loads(self, config: str, table: str) -> None:
        """The fault each shipped config has commented out loads once uncommented."""
        loaded = parse_config(uncommented(CONFIGS / config, table))
        if config == "hil.toml":
            (fault,) = loaded.config.hil["plc"].faults
            assert (fault.kind, fault.duration) == ("cut", 10)
        else:
            (fault,) = loaded.config.sessions["tank"].faults
            assert (fault.kind, fault.target) == ("stuck", "controller.Inputs.measurement")
