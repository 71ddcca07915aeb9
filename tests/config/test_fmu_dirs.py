"""``server.fmu_dirs`` in config files: the config's own FMUs come from its folders
(by default the config file's folder), relative entries follow the config file,
``..`` and symlinks do not lead out; run-time twins parsed without the daemon's
folders, or stored before, load no FMU from anywhere."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.models.fmu import conftest as fmu_conftest
from twin_server.cli import main
from twin_server.config.fmu_files import FmuFolders
from twin_server.config.schema import ServerConfig
from twin_server.errors import ConfigErrors, InvalidArgument
from twin_server.persistence import StoredState, stored_twins
from twin_server.runtime.compile import load_config, parse_twin

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds the FMUs")

# the FMUs compiled once per test session (tests/models/fmu/conftest.py)
fmus = fmu_conftest.fmus


def plant(path: str, server: str = "") -> str:
    """A config of one FMU twin, ``server`` lines in its [server] table."""
    return (f"[server]\n{server}\n"
            f"[twins.t.components.plant]\nmodel = \"fmu\"\noptions = {{ path = \"{path}\" }}\n")


def check(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`twin-server check CONFIG`: its exit status and what it printed."""
    status = main(["check", str(config)])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


class TestConfigFile:
    @pytest.mark.parametrize("path", ["lag.fmu", "fmus/lag.fmu", "./fmus/../lag.fmu"])
    def test_beside_the_config_by_default(self, tmp_path: Path, fmus: dict[str, Path],
                                          path: str) -> None:
        """Without fmu_dirs an FMU in the config file's folder or below it loads, as before."""
        (tmp_path / "fmus").mkdir()
        shutil.copy(fmus["lag2"], tmp_path / "lag.fmu")
        shutil.copy(fmus["lag2"], tmp_path / "fmus" / "lag.fmu")
        config = tmp_path / "plant.toml"
        config.write_text(plant(path))
        loaded = load_config(config)
        assert loaded.twins["t"].component("plant").options["path"] == str(
            (tmp_path / path).resolve())
        assert loaded.config.server.fmu_dirs == (str(tmp_path.resolve()),)

    @pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink", "symlinked-folder"])
    def test_outside_exits_2_naming_file_and_key(
            self, tmp_path: Path, fmus: dict[str, Path], case: str,
            capsys: pytest.CaptureFixture[str]) -> None:
        """`check` of a config whose FMU lies outside fmu_dirs (by path, '..' or a symlink)
        exits 2 naming the file, the key and server.fmu_dirs."""
        folder = tmp_path / "etc"
        folder.mkdir()
        (folder / "link.fmu").symlink_to(fmus["lag2"])
        (folder / "elsewhere").symlink_to(fmus["lag2"].parent)
        path = {"absolute": str(fmus["lag2"]), "dotdot": "../lag.fmu", "symlink": "link.fmu",
                "symlinked-folder": "elsewhere/lag2.fmu"}[case]
        shutil.copy(fmus["lag2"], tmp_path / "lag.fmu")
        config = folder / "plant.toml"
        config.write_text(plant(path))
        status, out = check(config, capsys)
        assert status == 2
        assert f"{config}: twins.t.components.plant.options.path: FMU file" in out
        assert "is outside the folders FMUs may be loaded from" in out
        assert "server.fmu_dirs" in out

    def test_relative_entries_follow_the_config_file(self, tmp_path: Path,
                                                     fmus: dict[str, Path]) -> None:
        """fmu_dirs entries relative to the config file's folder let its FMUs load from there."""
        (tmp_path / "etc").mkdir()
        (tmp_path / "fmus").mkdir()
        shutil.copy(fmus["lag2"], tmp_path / "fmus" / "lag.fmu")
        config = tmp_path / "etc" / "plant.toml"
        config.write_text(plant("../fmus/lag.fmu", 'fmu_dirs = ["../fmus"]'))
        loaded = load_config(config)
        assert loaded.config.server.fmu_dirs == (str((tmp_path / "fmus").resolve()),)
        assert loaded.twins["t"].component("plant").options["path"] == str(
            (tmp_path / "fmus" / "lag.fmu").resolve())

    def test_no_folders_no_fmus(self, tmp_path: Path, fmus: dict[str, Path]) -> None:
        """fmu_dirs = [] refuses even an FMU beside the config."""
        shutil.copy(fmus["lag2"], tmp_path / "lag.fmu")
        config = tmp_path / "plant.toml"
        config.write_text(plant("lag.fmu", "fmu_dirs = []"))
        with pytest.raises(ConfigErrors) as info:
            load_config(config)
        assert "twins.t.components.plant.options.path" in str(info.value)
        assert "server.fmu_dirs = [] allows none" in str(info.value)

    def test_missing_folder_is_an_error(self, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
        """An fmu_dirs entry that is no folder is reported at its index (exit 2)."""
        config = tmp_path / "plant.toml"
        config.write_text('[server]\nfmu_dirs = [".", "fmus"]\n')
        status, out = check(config, capsys)
        assert status == 2
        assert f"{config}: server.fmu_dirs[1]: {str(tmp_path / 'fmus')!r} is not a folder" in out

    def test_the_config_may_choose_the_cache(self, tmp_path: Path,
                                             fmus: dict[str, Path]) -> None:
        """The operator's config may set cache_dir; without it FMUs go under state_dir."""
        shutil.copy(fmus["lag2"], tmp_path / "lag.fmu")
        config = tmp_path / "plant.toml"
        config.write_text(
            f'[server]\nstate_dir = "{tmp_path / "state"}"\n'
            '[twins.t.components.a]\nmodel = "fmu"\n'
            f'options = {{ path = "lag.fmu", cache_dir = "{tmp_path / "cache"}" }}\n'
            '[twins.t.components.b]\nmodel = "fmu"\noptions = { path = "lag.fmu" }\n')
        twin = load_config(config).twins["t"]
        assert twin.component("a").options["cache_dir"] == str(tmp_path / "cache")
        assert twin.component("b").options["cache_dir"] == str(tmp_path / "state" / "fmu-cache")


class TestRunTimeTwins:
    def test_no_folders_given_no_fmu(self, fmus: dict[str, Path]) -> None:
        """parse_twin without the daemon's folders loads no FMU, wherever it is."""
        text = f'[twins.t.components.plant]\nmodel = "fmu"\noptions = {{ path = "{fmus["lag2"]}" }}'
        with pytest.raises(InvalidArgument, match=r"server\.fmu_dirs"):
            parse_twin(text)

    def test_errors_quote_the_clients_path(self, fmus: dict[str, Path]) -> None:
        """A file inside the folders that is no FMU is reported by the client's path,
        not by where the folder lies."""
        folders = FmuFolders.of(ServerConfig(), fmus["notzip"].parent)
        text = '[twins.t.components.plant]\nmodel = "fmu"\noptions = { path = "notzip.fmu" }'
        with pytest.raises(ConfigErrors) as info:
            parse_twin(text, file="DefineTwin", fmu=folders)
        assert "FMU file 'notzip.fmu' is not an FMU" in str(info.value)
        assert str(fmus["notzip"].parent) not in str(info.value)

    def test_stored_twin_outside_is_not_brought_back(self, tmp_path: Path,
                                                     fmus: dict[str, Path]) -> None:
        """A twin stored with an FMU outside the folders (or a cache_dir) is skipped at
        start with a warning; one inside comes back."""
        allowed = tmp_path / "fmus"
        allowed.mkdir()
        shutil.copy(fmus["lag2"], allowed / "lag.fmu")
        folders = FmuFolders.of(ServerConfig(state_dir=str(tmp_path / "state")), allowed)

        def twin(name: str, options: str) -> str:
            return f'[twins.{name}.components.plant]\nmodel = "fmu"\noptions = {{ {options} }}'
        state = StoredState(twins={
            "inside": twin("inside", 'path = "lag.fmu"'),
            "outside": twin("outside", f'path = "{fmus["lag2"]}"'),
            "cached": twin("cached", f'path = "lag.fmu", cache_dir = "{tmp_path / "c"}"'),
        }, sessions={})
        with capture_logs() as logs:
            back = stored_twins(state, {}, fmu=folders)
        assert [t.name for t, _ in back] == ["inside"]
        skipped = {e["twin"]: e["reason"] for e in logs if e["event"] == "stored_twin_skipped"}
        assert set(skipped) == {"outside", "cached"}
        assert all("server.fmu_dirs" in reason for reason in skipped.values())
