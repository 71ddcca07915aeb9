"""FMI 3.0 values through OPC UA: a real daemon serving the types3 test FMU (every
integer width, Float32, an enumeration, a structural parameter), written to and
reconfigured by a real asyncua client. A value its FMI type or declared range
cannot hold is refused with BadOutOfRange (a fraction into an integer with
BadTypeMismatch), nothing changes, and the session steps on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.ua.uaerrors import BadOutOfRange, BadTypeMismatch

from tests.models.fmu import conftest as fmu_conftest
from tests.opcua.conftest import (
    MODULE_LOOP,
    Connected,
    in_process,
    message,
    run_daemon,
    s,
    stop_daemon,
)
from twin_server.engine.session import VarKey
from twin_server.models.base import Kind
from twin_server.opcua.server import NAMESPACE_URI
from twin_server.runtime.daemon import Daemon

pytestmark = [MODULE_LOOP, fmu_conftest.pytestmark]

# the FMUs compiled once per test session (tests/models/fmu/conftest.py)
fmus = fmu_conftest.fmus
cache_dir = fmu_conftest.cache_dir

CONFIG = """
[server]
session_idle_timeout = 0
fmu_dirs = ["{fmu.parent}"]

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[twins.typed.components.plant]
model = "fmu"
options = {{ path = "{fmu}", cache_dir = "{cache}" }}

[sessions.main]
twin = "typed"
step_size = 0.1
autostart = false
"""

INPUTS = "Sessions.main.Components.plant.Inputs"
TOTAL = VarKey("plant", Kind.OUTPUT, "total")


def _dv(value: Any, vtype: ua.VariantType) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vtype))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(fmus: dict[str, Path], cache_dir: Path) -> AsyncIterator[Daemon]:
    daemon, task = await run_daemon(CONFIG.format(fmu=fmus["types3"], cache=cache_dir))
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)


@pytest_asyncio.fixture(loop_scope="module")
async def ua_client(daemon: Daemon) -> AsyncIterator[Connected]:
    try:
        async with Client(daemon.endpoint_url, timeout=10) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            yield Connected(daemon, client, ns)
    finally:
        main = in_process(daemon, "main")
        for name in list(main.forced()):
            main.release(name)
        main.reset()


class TestWrites:
    @pytest.mark.parametrize(("name", "value", "vtype", "error"), [
        pytest.param("i8", 200, ua.VariantType.Int32, BadOutOfRange, id="Int8-200"),
        pytest.param("u8", -1, ua.VariantType.Int32, BadOutOfRange, id="UInt8--1"),
        pytest.param("i16", 40000, ua.VariantType.Int32, BadOutOfRange, id="Int16-40000"),
        pytest.param("u32", -1.0, ua.VariantType.Double, BadOutOfRange, id="UInt32--1.0"),
        pytest.param("u32", 1.5, ua.VariantType.Double, BadTypeMismatch, id="UInt32-1.5"),
        pytest.param("i64", 1e19, ua.VariantType.Double, BadOutOfRange, id="Int64-1e19"),
        pytest.param("f32", 1e39, ua.VariantType.Double, BadOutOfRange, id="Float32-1e39"),
        pytest.param("mode", 3, ua.VariantType.Int32, BadOutOfRange, id="Enumeration-3"),
    ])
    async def test_refused_with_nothing_changed(self, ua_client: Connected, name: str,
                                                value: Any, vtype: ua.VariantType,
                                                error: type[Exception]) -> None:
        """A write its FMI type cannot hold is refused with its status; the input keeps
        its value and the session steps on."""
        node = ua_client.node(f"{INPUTS}.{name}")
        before = await node.read_value()
        main = in_process(ua_client.daemon, "main")
        with pytest.raises(error):
            await node.write_value(_dv(value, vtype))
        assert await node.read_value() == before
        assert main.read(VarKey("plant", Kind.INPUT, name)) == before
        result = await ua_client.session_call(
            "main", "Step", ua.Variant(2, ua.VariantType.UInt32))
        assert result.StatusCode.is_good(), message(result)
        assert main.fault is None and main.read(TOTAL) == 1.0  # mode Off = 1

    async def test_edge_value_is_taken(self, ua_client: Connected) -> None:
        """Int8 127 written over OPC UA reaches the FMU as 127."""
        await ua_client.node(f"{INPUTS}.i8").write_value(_dv(127, ua.VariantType.Int32))
        main = in_process(ua_client.daemon, "main")
        main.step(1)
        assert main.fault is None and main.read(TOTAL) == 128.0


class TestParameters:
    @pytest.mark.parametrize("parameters", [
        pytest.param('{"plant": {"n": 9}}', id="structural-n-9"),
        pytest.param('{"plant": {"level": 11}}', id="declared-Int8-range"),
    ])
    async def test_out_of_range_is_refused(self, ua_client: Connected, parameters: str) -> None:
        """SetParameters with a value outside the declared range: BadOutOfRange naming
        it, nothing changed."""
        result = await ua_client.session_call("main", "SetParameters", s(parameters))
        assert result.StatusCode.name == "BadOutOfRange"
        assert "must be within" in message(result)
        main = in_process(ua_client.daemon, "main")
        assert main.read(VarKey("plant", Kind.PARAMETER, "n")) == 2.0
        assert main.read(VarKey("plant", Kind.PARAMETER, "level")) == 0

    async def test_structural_parameter_at_reset(self, ua_client: Connected) -> None:
        """Reset with n = 4 sets it in Configuration Mode: the FMU reports size 4."""
        result = await ua_client.session_call("main", "Reset", s('{"plant": {"n": 4}}'))
        assert result.StatusCode.is_good(), message(result)
        main = in_process(ua_client.daemon, "main")
        main.step(1)
        assert main.fault is None
        assert main.read(VarKey("plant", Kind.OUTPUT, "size")) == 4.0
        await ua_client.session_call("main", "Reset", s('{"plant": {"n": 2}}'))
