"""Face methods bound to routines (short scenarios) run live on the face's session by a
real daemon and called by real asyncua clients; their config errors; and a reload
that changes [faces]."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua

from tests.faces.conftest import DI, FACES, TANK, TANK_FACE, TANK_URI
from twin_server.errors import ConfigError, ConfigErrors
from twin_server.faces.serve import check_faces
from twin_server.runtime.compile import load_config
from twin_server.runtime.daemon import Daemon

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
START, STOP, RESET, FILL = 7001, 7002, 7003, 7004

CONFIG = TANK_FACE + """
[faces.machine.methods]
"DeviceSet/Tank1/Start" = "Start"
"DeviceSet/Tank1/Stop" = "Suspend"
"DeviceSet/Tank1/Reset" = {{ scenario = "routines/drain.toml" }}

[[faces.machine.methods."DeviceSet/Tank1/Fill".steps]]
set = "source.value"
value = 0.02
[[faces.machine.methods."DeviceSet/Tank1/Fill".steps]]
check = "tank.inflow > 0.015"
within = 2.0
"""

#: a routine whose check cannot hold: the level does not fall below zero in 0.5 s
DRAIN = """
[scenario]
session = "tank"

[[steps]]
set = "source.value"
value = 0.0
[[steps]]
name = "empty"
check = "tank.level < 0"
within = 0.5
"""


def write_config(folder: Path, drain: str = DRAIN, **changes: str) -> Path:
    text = CONFIG.format(state=folder / "state", tank=TANK, di=DI)
    for old, new in changes.items():
        text = text.replace(old, new)
    (folder / "routines").mkdir(exist_ok=True)
    (folder / "routines" / "drain.toml").write_text(drain)
    path = folder / "twin.toml"
    path.write_text(text)
    return path


class Served:
    def __init__(self, daemon: Daemon, client: Client, other: Client, ns: int, twins: int,
                 config: Path) -> None:
        self.daemon, self.client, self.other = daemon, client, other
        self.ns, self.twins, self.config = ns, twins, config

    def twin(self, path: str) -> Any:
        return self.client.get_node(ua.NodeId(f"Sessions.tank.{path}", self.twins))

    async def call(self, method: int, client: Client | None = None
                   ) -> tuple[ua.StatusCode, str]:
        """The status of a call of the face method ``method`` and its message."""
        request = ua.CallMethodRequest(ObjectId=ua.NodeId(5001, self.ns),
                                       MethodId=ua.NodeId(method, self.ns))
        (result,) = await (client or self.client).uaclient.call([request])
        info = " | ".join(d.AdditionalInfo or "" for d in
                          result.InputArgumentDiagnosticInfos or [])
        return result.StatusCode, info

    async def state(self, wanted: str) -> None:
        """Bring the session to ``wanted`` (Ready or Running) through the twin tree."""
        session = self.client.get_node(ua.NodeId("Sessions.tank", self.twins))
        if await self.twin("State").read_value() != "Ready":
            await session.call_method(ua.NodeId("Sessions.tank.Reset", self.twins),
                                      ua.Variant("", ua.VariantType.String))
        if wanted == "Running":
            await session.call_method(ua.NodeId("Sessions.tank.Start", self.twins))
        await self.shows(wanted)

    async def shows(self, wanted: str) -> None:
        """Wait until the twin tree's State reads ``wanted``: the node shows a change at
        the session's next publish, not when the method returns."""
        async with asyncio.timeout(10):
            while await self.twin("State").read_value() != wanted:
                await asyncio.sleep(0.01)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    """One daemon with the tank face and its routines on its endpoint; two clients."""
    folder = tmp_path_factory.mktemp("routines")
    config = write_config(folder)
    daemon = Daemon(load_config(config))
    runner = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.wait_ready(), 30)
        async with Client(daemon.endpoint_url, timeout=10) as client, \
                Client(daemon.endpoint_url, timeout=10) as other:
            yield Served(daemon, client, other, await client.get_namespace_index(TANK_URI),
                         await client.get_namespace_index("urn:twin-server"), config)
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 30)


@MODULE_LOOP
class TestRoutine:
    async def test_passing_routine_good(self, served: Served) -> None:
        """Fill (inline steps) on the running session answers Good once its check held,
        the session's source value set by it."""
        await served.state("Running")
        status, info = await served.call(FILL)
        assert status.is_good(), info
        assert await served.twin("Components.source.Parameters.value").read_value() == 0.02
        assert await served.twin("State").read_value() == "Running"

    async def test_failing_check_bad_invalid_state(self, served: Served) -> None:
        """Reset (a scenario file) whose check fails answers BadInvalidState with the
        check's name, condition and the values seen."""
        await served.state("Running")
        status, info = await served.call(RESET)
        assert status.value == ua.StatusCodes.BadInvalidState
        assert "'empty'" in info and "tank.level < 0" in info and "did not hold" in info
        assert "tank.level in [" in info

    async def test_stopped_session_refused(self, served: Served) -> None:
        """A routine needing time on a session that does not run answers BadInvalidState
        saying so."""
        await served.state("Ready")
        status, info = await served.call(FILL)
        assert status.value == ua.StatusCodes.BadInvalidState
        assert "session 'tank' is Ready: time does not pass" in info

    async def test_second_call_while_running_refused(self, served: Served) -> None:
        """A call of a routine under way (from another client) is BadInvalidState; the
        first call still ends with its verdict."""
        await served.state("Running")
        first = asyncio.create_task(served.call(RESET))
        assert served.daemon.faces is not None
        running = served.daemon.faces.running
        async with asyncio.timeout(10):
            while ("machine", "DeviceSet/Tank1/Reset") not in running:
                await asyncio.sleep(0.005)
        status, info = await served.call(RESET, served.other)
        assert status.value == ua.StatusCodes.BadInvalidState
        assert "runs already" in info
        status, _ = await first
        assert status.value == ua.StatusCodes.BadInvalidState  # (its failing check)
        assert not running

    async def test_session_methods_still_mapped(self, served: Served) -> None:
        """Plain session methods beside routines keep calling the session's method."""
        await served.state("Ready")
        status, _ = await served.call(START)
        assert status.is_good()
        await served.shows("Running")
        status, _ = await served.call(STOP)
        assert status.is_good()
        await served.shows("Suspended")


@MODULE_LOOP
class TestReload:
    async def test_faces_change_needs_restart(self, served: Served) -> None:
        """A reload whose [faces] changed reports it as needing a restart and leaves the
        served face as it was."""
        text = served.config.read_text()
        served.config.write_text(text.replace(
            '"DeviceSet/Tank1/Level" = "tank.level"\n',
            '"DeviceSet/Tank1/Level" = "tank.level"\n"DeviceSet/Tank1/Inflow" = "tank.inflow"\n'))
        try:
            summary = await served.daemon.reload_config()
        finally:
            served.config.write_text(text)
        assert "needs a restart to apply: [faces]" in summary
        assert served.daemon.faces is not None
        assert len(served.daemon.faces.bindings["machine"].variables) == 1

    async def test_unchanged_faces_not_reported(self, served: Served) -> None:
        """A reload with [faces] as it was does not name it."""
        summary = await served.daemon.reload_config()
        assert "[faces]" not in summary


def _errors(folder: Path, drain: str = DRAIN, **changes: str) -> dict[str, ConfigError]:
    path = write_config(folder, drain, **changes)
    try:
        loaded = load_config(path)
    except ConfigErrors as group:
        return {e.path: e for e in group.exceptions if isinstance(e, ConfigError)}
    errors = asyncio.run(check_faces(loaded.config, loaded.twins, base=path.parent,
                                     file=str(path)))
    return {e.path: e for e in errors}


FILL_KEY = 'faces.machine.methods."DeviceSet/Tank1/Fill"'
RESET_KEY = 'faces.machine.methods."DeviceSet/Tank1/Reset"'


class TestRoutineConfig:
    def test_inline_step_error_names_config_key(self, tmp_path: Path) -> None:
        """An unknown name in an inline step is an error of the config file at the
        step's key, with the name meant."""
        errors = _errors(tmp_path, **{"tank.inflow > 0.015": "tank.inflw > 0.015"})
        error = errors[f"{FILL_KEY}.steps[1].check"]
        assert error.file == str(tmp_path / "twin.toml")
        assert "did you mean 'tank.inflow'" in error.message

    def test_missing_file_names_scenario_key(self, tmp_path: Path) -> None:
        """A scenario file not in the scenario folders is an error at the method's
        scenario key, naming the folders."""
        errors = _errors(tmp_path, **{"routines/drain.toml": "routines/nope.toml"})
        error = errors[f"{RESET_KEY}.scenario"]
        assert error.file == str(tmp_path / "twin.toml")
        assert "no scenario file 'routines/nope.toml'" in error.message

    def test_scenario_file_error_names_its_file(self, tmp_path: Path) -> None:
        """A problem in the scenario file names that file and its key."""
        errors = _errors(tmp_path, DRAIN.replace("value = 0.0", "valu = 0.0"))
        error = errors["steps[0]"]
        assert error.file is not None and error.file.endswith("routines/drain.toml")

    def test_bad_verb_and_both_sources(self, tmp_path: Path) -> None:
        """A method bound to no session method, and a routine with both a file and
        steps, are errors at the method's key (no union member in the path)."""
        errors = _errors(tmp_path, **{
            '"DeviceSet/Tank1/Start" = "Start"': '"DeviceSet/Tank1/Start" = "Strat"',
            '{ scenario = "routines/drain.toml" }':
                '{ scenario = "routines/drain.toml", steps = [{ wait = 1.0 }] }'})
        assert "must be 'Start'" in errors['faces.machine.methods."DeviceSet/Tank1/Start"'
                                           ].message
        assert "give exactly one" in errors[RESET_KEY].message

    def test_example_checks(self) -> None:
        """configs/faces.toml with its Fill routine passes the check."""
        path = FACES.parent / "faces.toml"
        loaded = load_config(path)
        assert asyncio.run(check_faces(loaded.config, loaded.twins, base=path.parent,
                                       file=str(path))) == []
