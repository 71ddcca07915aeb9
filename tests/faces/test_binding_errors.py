"""Bindings that do not resolve are named with file, key and the node or element that
does not: by the config check, by ``twin-server check`` and at the daemon's start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.faces.test_bindings import TANK_URI, write_config
from twin_server import cli
from twin_server.errors import ConfigError, ConfigErrors
from twin_server.faces.serve import check_faces
from twin_server.runtime.compile import load_config
from twin_server.runtime.daemon import Daemon

BAD = f'''"DeviceSet/Tank1/Levl" = "tank.level"
"nsu=urn:nope;i=6001" = "tank.level"
"nsu={TANK_URI};i=9999" = "tank.level"
"DeviceSet/Tank1" = "tank.level"
"DeviceSet/Tank1/Inflow" = "tank.level"
"nsu={TANK_URI};i=6001" = "tank.level"
"DeviceSet/Tank1/Level" = "tank.level"
'''
BAD_METHOD = '"DeviceSet/Tank1/Start" = "Start"\n"DeviceSet/Tank1/Level" = "Start"\n'


def _bad(folder: Path) -> Path:
    """The test config with the machine face's bindings and methods replaced by bad ones."""
    text = write_config(folder).read_text()
    head, _, rest = text.partition("[faces.machine.bindings]\n")
    _, _, rest = rest.partition("\n\n")
    rest_head, _, tail = rest.partition("[faces.machine.methods]\n")
    _, _, tail = tail.partition("\n\n")
    path = folder / "bad.toml"
    path.write_text(f"{head}[faces.machine.bindings]\n{BAD}\n{rest_head}"
                    f"[faces.machine.methods]\n{BAD_METHOD}\n{tail}")
    return path


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The errors of one check of the bad config, by key path."""
    path = _bad(tmp_path_factory.mktemp("bad"))
    loaded = load_config(path)
    errors = asyncio.run(check_faces(loaded.config, loaded.twins, base=path.parent,
                                     file=str(path)))
    assert all(e.file == str(path) for e in errors)
    return {e.path: e.message for e in errors}


def _key(node: str, table: str = "bindings") -> str:
    return f'faces.machine.{table}."{node}"'


class TestResolution:
    def test_missing_element_named(self, checked: dict[str, str]) -> None:
        """A browse path names the element that is not there and what is."""
        message = checked[_key("DeviceSet/Tank1/Levl")]
        assert "Objects/DeviceSet/Tank1 has no child 'Levl'" in message
        assert "Level" in message

    def test_unknown_namespace_named(self, checked: dict[str, str]) -> None:
        """A NodeId in a namespace no NodeSet has names the namespace."""
        assert "namespace 'urn:nope'" in checked[_key("nsu=urn:nope;i=6001")]

    def test_missing_nodeid_named(self, checked: dict[str, str]) -> None:
        """A NodeId no node has is named with the server's index."""
        assert "no node ns=" in checked[_key(f"nsu={TANK_URI};i=9999")]

    def test_not_a_variable(self, checked: dict[str, str]) -> None:
        """An object bound as a variable says what it is."""
        assert "is an Object, not a variable" in checked[_key("DeviceSet/Tank1")]

    def test_units_of_other_quantity(self, checked: dict[str, str]) -> None:
        """A flow in l/min cannot show a level in m."""
        message = checked[_key("DeviceSet/Tank1/Inflow")]
        assert "'m' is a length" in message and "'l/min' a flow" in message

    def test_bound_twice(self, checked: dict[str, str]) -> None:
        """One node named by a NodeId and by a browse path is bound twice."""
        assert "bound once" in checked[_key("DeviceSet/Tank1/Level")]

    def test_method_not_a_method(self, checked: dict[str, str]) -> None:
        """A variable bound as a method says so; a method resolves."""
        assert "not a method" in checked[_key("DeviceSet/Tank1/Level", "methods")]
        assert _key("DeviceSet/Tank1/Start", "methods") not in checked

    def test_only_the_bad_ones(self, checked: dict[str, str]) -> None:
        """Every error at once, and none for the bindings that resolve."""
        assert len(checked) == 7


class TestConfig:
    def test_unknown_session(self, tmp_path: Path) -> None:
        """A face's session that the file does not declare is named."""
        path = write_config(tmp_path, **{'session = "tank"\nendpoint': 'session = "tnak"\n'
                                                                        'endpoint'})
        with pytest.raises(ConfigErrors) as caught:
            load_config(path)
        assert "faces.remote.session: no session 'tnak'" in str(caught.value)

    def test_unknown_variable(self, tmp_path: Path) -> None:
        """A binding's variable its twin lacks is named at the binding's key."""
        path = write_config(tmp_path, **{'= "tank.outflow"': '= "tank.outflw"'})
        with pytest.raises(ConfigErrors) as caught:
            load_config(path)
        assert ('faces.machine.bindings."DeviceSet/Tank1/Outflow": component \'tank\' of '
                "twin 'tank' has no variable 'outflw'") in str(caught.value)

    def test_session_required(self, tmp_path: Path) -> None:
        """Bindings without a session are refused."""
        path = write_config(tmp_path, **{'session = "tank"\n\n[faces.machine.bindings]':
                                         '\n[faces.machine.bindings]'})
        with pytest.raises(ConfigErrors) as caught:
            load_config(path)
        assert "faces.machine: a face with bindings or methods needs 'session'" in str(
            caught.value)


class TestReported:
    def test_check_command(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``twin-server check`` loads the faces and names each binding that does not
        resolve, with the file; a good config is ok with its faces counted."""
        good = write_config(tmp_path)
        assert cli.main(["check", str(good)]) == 0
        assert "2 faces" in capsys.readouterr().out
        bad = _bad(tmp_path)
        assert cli.main(["check", str(bad)]) != 0
        err = capsys.readouterr().err
        assert f'{bad}: faces.machine.bindings."DeviceSet/Tank1/Levl"' in err
        assert "7 config errors" in err

    def test_example_checks(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The example (configs/faces.toml) loads and every binding resolves."""
        example = Path(__file__).resolve().parents[2] / "configs" / "faces.toml"
        assert cli.main(["check", str(example)]) == 0, capsys.readouterr().err
        assert "1 face)" in capsys.readouterr().out

    def test_missing_nodeset(self, tmp_path: Path) -> None:
        """A NodeSet file that is not there is named at the face's nodesets key."""
        path = write_config(tmp_path)
        path.write_text(path.read_text().replace("TankMachine.NodeSet2.xml", "Gone.xml"))
        loaded = load_config(path)
        errors = asyncio.run(check_faces(loaded.config, loaded.twins, base=path.parent,
                                         file=str(path)))
        assert {e.path for e in errors} == {"faces.machine.nodesets", "faces.remote.nodesets"}
        assert "Gone.xml" in str(errors[0])

    async def test_daemon_start_refused(self, tmp_path: Path) -> None:
        """A daemon whose face bindings do not resolve does not start, naming them."""
        daemon = Daemon(load_config(_bad(tmp_path)))
        with pytest.raises(ConfigErrors) as caught:
            await asyncio.wait_for(daemon.run(), 60)
        errors: list[ConfigError] = list(caught.value.exceptions)
        assert len(errors) == 7 and all(e.path.startswith("faces.machine.") for e in errors)
