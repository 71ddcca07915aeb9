"""Hostile method arguments and config files: huge strings, deep nesting, floods.

A real daemon on 127.0.0.1 (port 0) and a real asyncua client send what an
attacker would: a 3 MiB Parameters string, JSON or TOML nested 10,000 levels
deep, a thousand refused calls. Each is refused with BadInvalidArgument and a
short message naming the limit and its setting, nothing changes, the daemon's
own log (its real structlog chain, JSON lines, captured from the root handler)
grows by a bounded amount, and a new client is served within a second.
``twin-server check`` and ``run`` refuse a deeply nested config file with exit 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.opcua.conftest import (
    MODULE_LOOP,
    PLANT,
    Connected,
    message,
    run_daemon,
    s,
    stop_daemon,
)
from twin_server import logs
from twin_server.app import Daemon
from twin_server.config.security import LimitsConfig
from twin_server.engine.session import VarKey
from twin_server.models.base import Kind
from twin_server.opcua.server import NAMESPACE_URI

LOG_BURST = 5
CONFIG = PLANT + f"""
[server]
session_idle_timeout = 0

[server.security]  # tests: the None endpoint, anonymous may do everything
policies = ["None"]
anonymous = "admin"

[server.limits]
log_burst = {LOG_BURST}

[sessions.main]
twin = "plant"
autostart = false
"""
AREA = VarKey("tank", Kind.PARAMETER, "area")
LIMITS = LimitsConfig()
MIB = 1024 * 1024
DEEP = 10_000
#: most bytes the daemon may log for one hostile call
LOG_PER_CALL = 4096
#: a legitimate twin definition for DefineTwin
TANK_TWIN = """
[twins.lonely_tank]
[twins.lonely_tank.components.tank]
model = "water_tank"
parameters = { area = 2.0 }
"""
CLI = [sys.executable, "-m", "twin_server"]
ROOT = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon() -> AsyncIterator[Daemon]:
    daemon, task = await run_daemon(CONFIG)
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)


@pytest_asyncio.fixture(loop_scope="module")
async def ua_client(daemon: Daemon) -> AsyncIterator[Connected]:
    """A connected client; afterwards only the config session is left."""
    try:
        async with Client(daemon.endpoint_url, timeout=10) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            yield Connected(daemon, client, ns)
    finally:
        for name in list(daemon.manager.sessions):
            if daemon.manager.origin(name) == "client":
                await daemon.delete_session(name)
        for name in list(daemon.manager.twins):
            if daemon.manager.twin_origin(name) == "client":
                await daemon.remove_twin(name)


@contextlib.contextmanager
def daemon_log() -> Iterator[io.StringIO]:
    """What the daemon writes to its log from here on, as it writes it: the real
    structlog chain (rate limit, bounds), JSON lines. (tests/conftest.py puts the
    test suite's logging back afterwards.)"""
    logs.configure("info", json=True)
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    yield stream


def events(stream: io.StringIO, name: str | None = None) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line]
    return [e for e in lines if name is None or e.get("event") == name]


async def served_within_a_second(daemon: Daemon, *, call: bool = True) -> None:
    """A new client connects, reads and (``call``) calls a method within a second."""
    async with asyncio.timeout(1.0), Client(daemon.endpoint_url, timeout=1) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        assert await client.get_node(ua.NodeId("Sessions.main.State", ns)).read_value()
        if not call:
            return
        other = Connected(daemon, client, ns)
        result = await other.session_call("main", "Step", ua.Variant(1, ua.VariantType.UInt32))
        assert result.StatusCode.is_good(), message(result)


def area(daemon: Daemon) -> object:
    """The main session's tank area, as its latest frame holds it."""
    return daemon.session("main").values()[AREA]


def nested_json(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def nested_array(depth: int) -> str:
    return "[" * depth + "]" * depth


TWIN_HEAD = '[twins.deep.components.tank]\nmodel = "water_tank"\n'


@MODULE_LOOP
class TestArgumentSize:
    @pytest.mark.parametrize(("method", "index", "limit"), [
        pytest.param("SetParameters", 0, "max_argument_size", id="set-parameters"),
        pytest.param("Reset", 0, "max_argument_size", id="reset"),
        pytest.param("CreateSession", 2, "max_argument_size", id="create-session-parameters"),
        pytest.param("CreateSession", 1, "max_argument_size", id="create-session-name"),
        pytest.param("DefineTwin", 0, "max_definition_size", id="define-twin"),
    ])
    async def test_huge_argument_refused(self, ua_client: Connected, method: str, index: int,
                                         limit: str) -> None:
        """A 3 MiB String argument: BadInvalidArgument naming the limit and its setting,
        nothing changed, a few KB logged, and a new client served within a second."""
        huge = '{"tank": {"area": 1.5}, "pad": "' + "x" * (3 * MIB) + '"}'
        daemon = ua_client.daemon
        sessions, twins = list(daemon.manager.sessions), list(daemon.manager.twins)
        with daemon_log() as log:
            if method == "CreateSession":
                args = [s("plant"), s("big"), s("")]
                args[index] = s(huge)
                result = await ua_client.server_call(method, *args)
            elif method == "DefineTwin":
                result = await ua_client.server_call(method, s(TWIN_HEAD + "#" + huge))
            else:
                result = await ua_client.session_call("main", method, s(huge))
        assert result.StatusCode.name == "BadInvalidArgument"
        assert result.InputArgumentResults[index].name == "BadInvalidArgument"
        text = result.InputArgumentDiagnosticInfos[index].AdditionalInfo
        assert f"server.limits.{limit}" in text and str(getattr(LIMITS, limit)) in text
        assert len(text) < 1000
        assert area(daemon) == 0.5
        assert list(daemon.manager.sessions) == sessions
        assert list(daemon.manager.twins) == twins
        assert 0 < len(log.getvalue()) < LOG_PER_CALL
        await served_within_a_second(daemon)

    async def test_largest_legal_parameters_parsed(self, ua_client: Connected) -> None:
        """Parameters just under the limit are parsed whole and answered on their merits."""
        entries = []
        size = 2
        i = 0
        while True:
            entry = f'"tank.p{i}": {i}.5'
            if size + len(entry) + 2 > LIMITS.max_argument_size:
                break
            entries.append(entry)
            size += len(entry) + 2
            i += 1
        text = "{" + ", ".join(entries) + "}"
        assert LIMITS.max_argument_size - 40 < len(text) <= LIMITS.max_argument_size
        result = await ua_client.session_call("main", "SetParameters", s(text))
        # refused on its merits (no such parameter), after parsing all of it (how long
        # that takes: tests/bench/bench_arguments.py)
        assert result.StatusCode.name == "BadNotFound", message(result)

    @pytest.mark.parametrize("parameters", [
        pytest.param('{"tank.area": ' + "9" * 5000 + "}", id="5000-digit-integer"),
        pytest.param('{"tank.area": "' + "x" * 60_000 + '"}', id="long-string-value"),
        pytest.param('{"' + "k" * 60_000 + '": 1}', id="long-key"),
        pytest.param('{"tank": {"' + "k" * 60_000 + '": 1}}', id="long-parameter-name"),
    ])
    async def test_long_values_not_echoed(self, ua_client: Connected, parameters: str) -> None:
        """A value or key as long as the argument allows: refused on its merits with a
        short message (an excerpt of it), nothing changed, a few KB logged."""
        with daemon_log() as log:
            result = await ua_client.session_call("main", "SetParameters", s(parameters))
        assert result.StatusCode.name in ("BadInvalidArgument", "BadNotFound"), message(result)
        assert len(message(result)) < 1000
        assert area(ua_client.daemon) == 0.5
        assert "Traceback" not in log.getvalue()
        assert 0 < len(log.getvalue()) < LOG_PER_CALL

    async def test_wrong_type_value_not_echoed(self, ua_client: Connected) -> None:
        """A 3 MiB String where a number belongs: BadTypeMismatch, with an excerpt only."""
        result = await ua_client.session_call("main", "Step", s("9" * (3 * MIB)))
        assert result.StatusCode.name == "BadInvalidArgument"
        assert result.InputArgumentResults[0].name == "BadTypeMismatch"
        assert len(message(result)) < 1000


@MODULE_LOOP
class TestNesting:
    @pytest.mark.parametrize("text", [
        pytest.param(nested_json(DEEP), id="objects"),
        pytest.param(nested_array(DEEP), id="arrays"),
        pytest.param('{"a": "[[[[", "b": ' + nested_array(DEEP) + "}", id="after-a-string"),
    ])
    @pytest.mark.parametrize(("method", "index"), [
        pytest.param("SetParameters", 0, id="set-parameters"),
        pytest.param("Reset", 0, id="reset"),
        pytest.param("CreateSession", 2, id="create-session"),
    ])
    async def test_deep_json_refused(self, ua_client: Connected, method: str, index: int,
                                     text: str) -> None:
        """JSON nested 10,000 deep: BadInvalidArgument naming the depth limit and its
        setting, nothing changed, no traceback logged, a new client served at once."""
        daemon = ua_client.daemon
        sessions = list(daemon.manager.sessions)
        with daemon_log() as log:
            if method == "CreateSession":
                result = await ua_client.server_call(method, s("plant"), s("deep"), s(text))
            else:
                result = await ua_client.session_call("main", method, s(text))
        assert result.StatusCode.name == "BadInvalidArgument"
        assert result.InputArgumentResults[index].name == "BadInvalidArgument"
        diagnostic = result.InputArgumentDiagnosticInfos[index].AdditionalInfo
        assert "server.limits.max_nesting_depth" in diagnostic
        assert str(LIMITS.max_nesting_depth) in diagnostic
        assert len(diagnostic) < 1000
        assert list(daemon.manager.sessions) == sessions
        assert area(daemon) == 0.5
        assert "Traceback" not in log.getvalue()
        assert 0 < len(log.getvalue()) < LOG_PER_CALL
        await served_within_a_second(daemon)

    async def test_nesting_within_the_limit_parsed(self, ua_client: Connected) -> None:
        """Nesting at the limit is parsed and refused on its merits, as before."""
        text = nested_json(LIMITS.max_nesting_depth)
        result = await ua_client.session_call("main", "SetParameters", s(text))
        assert result.StatusCode.name == "BadInvalidArgument"
        assert "max_nesting_depth" not in message(result)
        assert "must be a number" in message(result)

    @pytest.mark.parametrize("definition", [
        pytest.param(TWIN_HEAD + "options = { a = " + nested_array(DEEP) + " }\n",
                     id="inline-arrays"),
        pytest.param(TWIN_HEAD + "options = " + "{a=" * DEEP + "1" + "}" * DEEP + "\n",
                     id="inline-tables"),
        pytest.param(TWIN_HEAD + "options." + ".".join(["a"] * DEEP) + " = 1\n",
                     id="dotted-keys"),
        pytest.param("[twins.deep.components.tank." + ".".join(["a"] * DEEP) + "]\nx = 1\n",
                     id="table-header"),
        pytest.param('[twins.deep.components.tank]\nmodel = "water_tank"\n'
                     'description = """ [[[ { """\noptions = { a = ' + nested_array(DEEP)
                     + " }\n", id="after-a-multiline-string"),
    ])
    async def test_deep_toml_refused(self, ua_client: Connected, definition: str) -> None:
        """A twin definition nested 10,000 deep: BadInvalidArgument naming the depth
        limit and its setting, no twin added, no traceback logged."""
        daemon = ua_client.daemon
        twins = list(daemon.manager.twins)
        with daemon_log() as log:
            result = await ua_client.server_call("DefineTwin", s(definition))
        assert result.StatusCode.name == "BadInvalidArgument", message(result)
        assert result.InputArgumentResults[0].name == "BadInvalidArgument"
        diagnostic = result.InputArgumentDiagnosticInfos[0].AdditionalInfo
        assert "server.limits.max_nesting_depth" in diagnostic
        assert len(diagnostic) < 1000
        assert list(daemon.manager.twins) == twins
        assert "Traceback" not in log.getvalue()
        assert 0 < len(log.getvalue()) < LOG_PER_CALL
        await served_within_a_second(daemon)

    async def test_legitimate_definition_still_defined(self, ua_client: Connected) -> None:
        """A normal twin definition passes the checks and is defined."""
        result = await ua_client.server_call("DefineTwin", s(TANK_TWIN))
        assert result.StatusCode.is_good(), message(result)
        assert "lonely_tank" in ua_client.daemon.manager.twins


@MODULE_LOOP
class TestLogVolume:
    async def test_flood_of_refusals(self, ua_client: Connected) -> None:
        """1,000 refused calls log the burst of method_refused, then one summary when
        the minute is over; the client is still served."""
        limit = logs.EVENT_LIMIT
        clock = [0.0]
        saved = limit.clock
        with daemon_log() as log:
            limit.clock = lambda: clock[0]
            limit.reset()
            try:
                await ua_client.create("flood")  # Ready: Resume is refused
                requests = [ua.CallMethodRequest(
                    ObjectId=ua.NodeId("Sessions.flood", ua_client.ns),
                    MethodId=ua.NodeId("Sessions.flood.Resume", ua_client.ns))
                    for _ in range(100)]
                for _ in range(10):
                    results = await ua_client.client.uaclient.call(requests)
                    assert {r.StatusCode.name for r in results} == {"BadInvalidState"}
                assert len(events(log, "method_refused")) == LOG_BURST
                clock[0] = limit.window + 1
                await ua_client.session_call("flood", "Resume")
            finally:
                limit.clock = saved
        summaries = events(log, "log_events_suppressed")
        assert len(summaries) == 1
        assert summaries[0]["events"] == {"method_refused": 1000 - LOG_BURST}
        assert len(events(log, "method_refused")) == LOG_BURST + 1
        assert len(log.getvalue()) < (LOG_BURST + 2) * 1024
        await served_within_a_second(ua_client.daemon)

    async def test_called_arguments_logged_as_excerpts(self, ua_client: Connected) -> None:
        """An accepted call with a long argument logs an excerpt of it, not all of it."""
        with daemon_log() as log:
            result = await ua_client.session_call(
                "main", "SetParameters", s('{"tank": {"area": 1.5}}' + " " * 60_000))
            assert result.StatusCode.is_good(), message(result)
        (called,) = events(log, "method_called")
        assert called["method"] == "SetParameters"
        assert len(log.getvalue()) < LOG_PER_CALL


class TestConfigFiles:
    @pytest.mark.parametrize(("command", "body"), [
        pytest.param("check", "a = " + nested_array(DEEP), id="check-arrays"),
        pytest.param("check", "a = " + "{ b = " * DEEP + "1" + " }" * DEEP,
                     id="check-inline-tables"),
        pytest.param("check", ".".join(["a"] * DEEP) + " = 1", id="check-dotted-keys"),
        pytest.param("check", "[" + ".".join(["a"] * DEEP) + "]", id="check-table-header"),
        pytest.param("run", "a = " + nested_array(DEEP), id="run-arrays"),
    ])
    def test_deep_config_file(self, tmp_path: Path, command: str, body: str) -> None:
        """A config file nested 10,000 deep: exit 2, the file named, no traceback."""
        config = tmp_path / "deep.toml"
        config.write_text(PLANT + "\n[server]\n" + body + "\n")
        result = subprocess.run([*CLI, command, str(config)], capture_output=True, text=True,
                                timeout=60, check=False, cwd=ROOT)
        assert result.returncode == 2, result.stderr[-2000:]
        assert str(config) in result.stderr
        assert "nest" in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr) < 2000


OPERATOR_CONFIG = CONFIG.replace('anonymous = "admin"', 'anonymous = "operator"')


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def operator_daemon() -> AsyncIterator[Daemon]:
    """A daemon where an anonymous client is an operator: its calls of admin methods
    and writes of admin nodes are refused by role (call_refused, write_refused)."""
    daemon, task = await run_daemon(OPERATOR_CONFIG)
    try:
        yield daemon
    finally:
        await stop_daemon(daemon, task)


@MODULE_LOOP
class TestRefusedByRole:
    async def test_flood_of_refused_calls(self, operator_daemon: Daemon) -> None:
        """1,000 calls refused by role log the burst of call_refused, no more."""
        async with Client(operator_daemon.endpoint_url, timeout=10) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            with daemon_log() as log:
                requests = [ua.CallMethodRequest(
                    ObjectId=ua.NodeId("TwinServer", ns),
                    MethodId=ua.NodeId("DeleteSession", ns),
                    InputArguments=[s("main")]) for _ in range(100)]
                for _ in range(10):
                    results = await client.uaclient.call(requests)
                    assert {r.StatusCode.name for r in results} == {"BadUserAccessDenied"}
        assert len(events(log, "call_refused")) == LOG_BURST
        assert len(log.getvalue()) < (LOG_BURST + 1) * 1024
        assert "main" in operator_daemon.manager.sessions
        await served_within_a_second(operator_daemon)

    async def test_huge_node_ids_logged_as_excerpts(self, operator_daemon: Daemon) -> None:
        """A call and a write naming a 3 MiB NodeId are refused (no such method; no
        right to write); the log holds an excerpt of each, not the NodeId."""
        huge = "Sessions.main." + "x" * (3 * MIB)
        async with Client(operator_daemon.endpoint_url, timeout=10) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            with daemon_log() as log:
                (called,) = await client.uaclient.call([ua.CallMethodRequest(
                    ObjectId=ua.NodeId("Sessions.main", ns), MethodId=ua.NodeId(huge, ns))])
                written = await client.uaclient.write(ua.WriteParameters(NodesToWrite=[
                    ua.WriteValue(NodeId=ua.NodeId(huge, ns),
                                  AttributeId=ua.AttributeIds.Value,
                                  Value=ua.DataValue(ua.Variant(1.0)))]))
        assert called.StatusCode.name == "BadMethodInvalid"
        assert [s.name for s in written] == ["BadUserAccessDenied"]
        assert len(events(log, "call_refused")) == 1
        assert len(events(log, "write_refused")) == 1
        assert len(log.getvalue()) < 2 * LOG_PER_CALL
        await served_within_a_second(operator_daemon)
