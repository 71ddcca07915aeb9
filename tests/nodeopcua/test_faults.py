"""InjectFault and ClearFault through node-opcua (an independent stack) against the
demo: a fault injected and cleared by an operator, a bad Kind refused on its
argument with a message, a viewer refused."""

from __future__ import annotations

from typing import Any

from tests.nodeopcua import NodeOpcua
from tests.nodeopcua.test_conformance import PASSWORD, Demo, demo  # noqa: F401  (a fixture)
from tests.opcua.conftest import MODULE_LOOP

pytestmark = MODULE_LOOP


def inject(d: Demo, *args: Any) -> dict[str, Any]:
    types = ("String", "String", "String", "Double", "String")
    return {"objectId": d.node("Sessions.tank"), "methodId": d.node("Sessions.tank.InjectFault"),
            "inputArguments": [{"dataType": t, "value": v} for t, v in zip(types, args,
                                                                          strict=False)]}


class TestFaultsThroughNodeOpcua:
    async def test_inject_read_and_clear(self, nodeopcua: NodeOpcua, demo: Demo) -> None:  # noqa: F811
        """An operator's InjectFault answers its id, the level reads the stuck value,
        ClearFault ends it."""
        out = await nodeopcua.run("call.js", demo.url, calls=[
            inject(demo, "tank.Outputs.level", "stuck", '{"value": 1.25}', 0.0, "frozen")])
        assert [r["status"] for r in out["results"]] == ["Good"]
        assert out["results"][0]["outputs"] == ["frozen"]
        level = demo.node("Sessions.tank.Components.tank.Outputs.level")
        kind = demo.node("Sessions.tank.Faults.frozen.Kind")
        read = await nodeopcua.run("read.js", demo.url, nodes=[level, kind])
        assert [r["value"] for r in read] == [1.25, "stuck"]
        out = await nodeopcua.run("call.js", demo.url, calls=[{
            "objectId": demo.node("Sessions.tank"),
            "methodId": demo.node("Sessions.tank.ClearFault"),
            "inputArguments": [{"dataType": "String", "value": "frozen"}]}])
        assert [r["status"] for r in out["results"]] == ["Good"]

    async def test_a_bad_kind_and_a_viewer_are_refused(self, nodeopcua: NodeOpcua,
                                                       demo: Demo) -> None:  # noqa: F811
        """A Kind that is no fault: BadInvalidArgument with the kinds named; a viewer:
        BadUserAccessDenied."""
        bad = inject(demo, "tank.Outputs.level", "melt", "")
        out = await nodeopcua.run("call.js", demo.url, calls=[bad])
        (result,) = out["results"]
        assert result["status"] == "BadInvalidArgument"
        assert "not a kind of fault" in (result["diagnostics"][1] or "")
        out = await nodeopcua.run("call.js", demo.url, user="vera", password=PASSWORD,
                                  calls=[inject(demo, "tank.Outputs.level", "dropout", "")])
        assert [r["status"] for r in out["results"]] == ["BadUserAccessDenied"]
