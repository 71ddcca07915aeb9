"""Loading config files: every error at once, each with its file, key path and message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.config.tiny_models import Lag, resolve
from twin_server.config import Config, describe_config, read_config
from twin_server.errors import ConfigError, ConfigErrors
from twin_server.runtime.compile import (
    LoadedConfig,
    compile_config,
    load_config,
    parse_config,
    parse_twin,
)

VALID = """
[twins.t]
connections = ["src.y -> plant.u"]

[twins.t.components.src]
model = "source"
parameters = { level = 2 }

[twins.t.components.plant]
model = "lag"

[sessions.s]
twin = "t"
"""


def write(tmp_path: Path, text: str, name: str = "twin.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def errors(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    """(path, message) of every error loading ``text``, each checked to name its file."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigErrors) as info:
        load_config(path, resolve=resolve)
    for error in info.value.exceptions:
        assert isinstance(error, ConfigError)
        assert error.file == str(path)
    return [(e.path, e.message) for e in info.value.exceptions]


class TestValid:
    def test_loads_and_compiles(self, tmp_path: Path) -> None:
        """A valid file gives its Config, compiled twins and path."""
        path = write(tmp_path, VALID)
        loaded = load_config(path, resolve=resolve)
        assert isinstance(loaded, LoadedConfig)
        assert isinstance(loaded.config, Config)
        assert loaded.path == path
        assert [c.name for c in loaded.twins["t"].components] == ["src", "plant"]
        assert loaded.twins["t"].component("plant").factory is Lag
        assert loaded.config.sessions["s"].step_size == 0.01
        assert loaded.session_parameters == {"s": {}}

    def test_empty_file(self) -> None:
        """An empty file is a valid config with defaults and no twins."""
        loaded = parse_config("", resolve=resolve)
        assert loaded.twins == {}
        assert loaded.config.server.endpoint == "opc.tcp://127.0.0.1:4840/twin-server"

    def test_session_overrides_coerced(self, tmp_path: Path) -> None:
        """Session parameter overrides are coerced against the model."""
        text = VALID + "parameters = { src = { level = 3, count = 5.0 } }\n"
        loaded = load_config(write(tmp_path, text), resolve=resolve)
        assert loaded.session_parameters == {"s": {"src": {"level": 3.0, "count": 5}}}
        assert isinstance(loaded.session_parameters["s"]["src"]["level"], float)


class TestFileErrors:
    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a ConfigError naming it."""
        path = tmp_path / "nope.toml"
        with pytest.raises(ConfigErrors) as info:
            load_config(path)
        (error,) = info.value.exceptions
        assert str(error) == f"{path}: cannot read the config file: No such file or directory"

    def test_directory(self, tmp_path: Path) -> None:
        """A directory given as the file is a ConfigError naming it."""
        with pytest.raises(ConfigErrors) as info:
            load_config(tmp_path)
        (error,) = info.value.exceptions
        assert error.file == str(tmp_path)
        assert error.message == "cannot read the config file: Is a directory"

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A file that is not UTF-8 is reported with the offending byte."""
        path = tmp_path / "latin1.toml"
        path.write_bytes(b"[server]\napplication_name = 'caf\xe9'\n")
        with pytest.raises(ConfigErrors) as info:
            load_config(path)
        assert str(info.value) == (
            f"{path}: the config file is not UTF-8 text (line 2, column 24: byte 0xe9); "
            "save it as UTF-8"
        )

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            pytest.param(
                "[server]\nendpoint = \n",
                "TOML syntax error at line 2, column 12: invalid value",
                id="missing-value",
            ),
            pytest.param(
                "a = 1\na = 2\n",
                "TOML syntax error at line 2, column 6: cannot overwrite a value",
                id="duplicate-key",
            ),
            pytest.param(
                "[twins",
                "TOML syntax error at the end of the file: "
                "expected ']' at the end of a table declaration",
                id="unclosed-table",
            ),
        ],
    )
    def test_toml_syntax(self, tmp_path: Path, text: str, message: str) -> None:
        """A TOML syntax error gives its line and column."""
        assert errors(tmp_path, text) == [("", message)]


class TestSchemaErrors:
    @pytest.mark.parametrize(
        ("text", "path", "message"),
        [
            pytest.param(
                "[twins.t.components.tank]\nmodel = 'lag'\nparamters = {}\n",
                "twins.t.components.tank",
                "unknown key 'paramters' (allowed: model, description, parameters, initial, "
                "inputs, options); did you mean 'parameters'?",
                id="unknown-key",
            ),
            pytest.param(
                "[serv]\n",
                "",
                "unknown key 'serv' (allowed: server, twins, sessions, hil, history, web, faces); "
                "did you mean 'server'?",
                id="unknown-top-level-key",
            ),
            pytest.param(
                "[twins.t.components.tank]\ndescription = 'x'\n",
                "twins.t.components.tank",
                "missing required key 'model'",
                id="missing-model",
            ),
            pytest.param(
                "[twins.t]\n",
                "twins.t",
                "missing required key 'components'",
                id="missing-components",
            ),
            pytest.param(
                "[twins.t]\ncomponents = {}\n",
                "twins.t.components",
                "a twin needs at least one component",
                id="no-components",
            ),
            pytest.param(
                "[sessions.s]\nautostart = true\n",
                "sessions.s",
                "missing required key 'twin'",
                id="missing-twin",
            ),
            pytest.param(
                "[sessions.s]\ntwin = 't'\nstep_size = -1\n",
                "sessions.s.step_size",
                "must be greater than 0 (got -1)",
                id="step-size-negative",
            ),
            pytest.param(
                "[sessions.s]\ntwin = 't'\nstep_size = 7200\n",
                "sessions.s.step_size",
                "must be at most 3600 (got 7200)",
                id="step-size-too-big",
            ),
            pytest.param(
                "[sessions.s]\ntwin = 't'\nrealtime_factor = -0.5\n",
                "sessions.s.realtime_factor",
                "must be at least 0 (got -0.5)",
                id="realtime-factor-negative",
            ),
            pytest.param(
                "[sessions.s]\ntwin = 't'\nstep_size = inf\n",
                "sessions.s.step_size",
                "must be a finite number (got inf)",
                id="infinite",
            ),
            pytest.param(
                "[sessions.s]\ntwin = 't'\nstep_size = 'abc'\n",
                "sessions.s.step_size",
                "expected a number, got string 'abc'",
                id="string-for-number",
            ),
            pytest.param(
                "[sessions.s]\ntwin = 't'\nstep_size = '0.1'\n",
                "sessions.s.step_size",
                "expected a number, got string '0.1'",
                id="numeric-string-not-converted",
            ),
            pytest.param(
                "[sessions.s]\ntwin = 't'\nstep_size = true\n",
                "sessions.s.step_size",
                "expected a number, got boolean true",
                id="bool-for-number",
            ),
            pytest.param(
                "[sessions.s]\ntwin = 't'\nautostart = 1\n",
                "sessions.s.autostart",
                "expected true or false, got integer 1",
                id="int-for-bool",
            ),
            pytest.param(
                "[sessions.s]\ntwin = 't'\noverrun_policy = 'drop'\n",
                "sessions.s.overrun_policy",
                "must be 'skip' or 'catch_up' (got 'drop')",
                id="bad-choice",
            ),
            pytest.param(
                "[sessions.s]\ntwin = 3\n",
                "sessions.s.twin",
                "expected a string, got integer 3",
                id="int-for-string",
            ),
            pytest.param(
                "[server]\napplication_name = 2024-01-01T00:00:00\n",
                "server.application_name",
                "expected a string, got date-time 2024-01-01T00:00:00",
                id="datetime-for-string",
            ),
            pytest.param(
                "twins = 3\n", "twins", "expected a table, got integer 3", id="int-for-table"
            ),
            pytest.param(
                "[server]\nendpoint = 'http://localhost:4840'\n",
                "server.endpoint",
                "must be an opc.tcp URL such as 'opc.tcp://0.0.0.0:4840/twin-server' "
                "(got 'http://localhost:4840')",
                id="bad-endpoint",
            ),
            pytest.param(
                "[server]\nlog_level = 'loud'\n",
                "server.log_level",
                "must be 'debug', 'info', 'warning' or 'error' (got 'loud')",
                id="bad-log-level",
            ),
            pytest.param(
                "[twins.'my twin'.components.a]\nmodel = 'lag'\n",
                'twins."my twin"',
                "invalid name 'my twin': a name is at most 64 letters, digits and '_', not "
                "starting with a digit (it becomes part of OPC UA NodeIds)",
                id="bad-name-key",
            ),
            pytest.param(
                "[twins.t.components.a]\nmodel = 'lag'\nparameters = { tau = [1, 2] }\n",
                "twins.t.components.a.parameters.tau",
                "expected a number, boolean or string, got an array",
                id="array-for-value",
            ),
            pytest.param(
                "[twins.t]\nconnections = ['a.y => a.u']\n[twins.t.components.a]\nmodel = 'lag'\n",
                "twins.t.connections[0]",
                "a connection is written 'component.output -> component.input' (got 'a.y => a.u')",
                id="connection-syntax",
            ),
            pytest.param(
                "[twins.t]\nconnections = [{ from = 'a.y' }]\n"
                "[twins.t.components.a]\nmodel = 'lag'\n",
                "twins.t.connections[0]",
                "expected a string 'component.output -> component.input', got a table",
                id="connection-not-a-string",
            ),
            pytest.param(
                "[twins.t]\nconnections = 'a.y -> a.u'\n[twins.t.components.a]\nmodel = 'lag'\n",
                "twins.t.connections",
                "expected an array, got string 'a.y -> a.u'",
                id="connections-not-an-array",
            ),
        ],
    )
    def test_error(self, tmp_path: Path, text: str, path: str, message: str) -> None:
        """Each structural problem is reported at its key path in plain words."""
        found = errors(tmp_path, text)
        assert (path, message) in found
        # a missing twin is the only other error those sessions may cause
        assert all(p == path or p.endswith(".twin") for p, _ in found)

    def test_str_has_file_and_path(self, tmp_path: Path) -> None:
        """``str()`` of an error reads ``file: key.path: message``."""
        path = write(tmp_path, VALID + "step_size = -1\n")
        with pytest.raises(ConfigErrors) as info:
            load_config(path, resolve=resolve)
        assert str(info.value) == f"{path}: sessions.s.step_size: must be greater than 0 (got -1)"


class TestSemanticErrors:
    def test_unknown_twin(self, tmp_path: Path) -> None:
        """A session naming an unknown twin lists the twins in the file."""
        assert errors(tmp_path, VALID + "[sessions.s2]\ntwin = 'tt'\n") == [
            ("sessions.s2.twin", "unknown twin 'tt' (twins in this file: t); did you mean 't'?")
        ]

    def test_session_overrides(self, tmp_path: Path) -> None:
        """Overrides naming unknown components or parameters, or bad values, are all reported."""
        text = VALID + "[sessions.s.parameters]\nsrc = { level = -1, lvl = 2 }\npump = { x = 1 }\n"
        assert errors(tmp_path, text) == [
            (
                "sessions.s.parameters.src.level",
                "parameter 'level' must be within [0, 10] m (got -1.0)",
            ),
            (
                "sessions.s.parameters.src.lvl",
                "unknown parameter 'lvl' of model 'source' (its parameters: level, count, "
                "enabled); did you mean 'level'?",
            ),
            (
                "sessions.s.parameters.pump",
                "unknown component 'pump' in twin 't' (its components: src, plant)",
            ),
        ]

    def test_compile_errors_located(self, tmp_path: Path) -> None:
        """compile_twin's errors come with the file and the full key path."""
        text = VALID.replace('model = "lag"', 'model = "lagg"')
        assert errors(tmp_path, text) == [
            (
                "twins.t.components.plant.model",
                "unknown model 'lagg' (known models: adder, gain, lag, picky, source, switch)",
            )
        ]

    def test_session_of_broken_twin(self, tmp_path: Path) -> None:
        """A session of a twin with errors adds no error of its own."""
        text = VALID.replace("level = 2", "level = 20") + "parameters = { src = { level = 3 } }\n"
        assert [p for p, _ in errors(tmp_path, text)] == ["twins.t.components.src.parameters.level"]


class TestAllAtOnce:
    def test_every_error_reported(self, tmp_path: Path) -> None:
        """Structural and semantic errors of all twins and sessions come together, in file order."""
        text = """
        [server]
        endpoint = "tcp://x"

        [twins.broken.components.a]
        model = "lag"
        paramters = {}

        [twins.good]
        connections = ["g1.y -> g2.u", "g2.y -> g1.u", "src.y -> g1.u"]

        [twins.good.components.g1]
        model = "gain"
        [twins.good.components.g2]
        model = "gain"
        parameters = { k = "two" }
        [twins.good.components.src]
        model = "source"

        [sessions.a]
        twin = "good"
        step_size = 0
        [sessions.b]
        twin = "missing"
        """
        assert errors(tmp_path, text) == [
            (
                "server.endpoint",
                "must be an opc.tcp URL such as 'opc.tcp://0.0.0.0:4840/twin-server' (got 'tcp://x')",
            ),
            (
                "twins.broken.components.a",
                "unknown key 'paramters' (allowed: model, description, parameters, initial, "
                "inputs, options); did you mean 'parameters'?",
            ),
            (
                "twins.good.components.g2.parameters.k",
                "parameter 'k' takes a Double (got str 'two')",
            ),
            (
                "twins.good.connections[2]",
                "input g1.u is connected twice: 'g2.y -> g1.u' (connections[1]) and "
                "'src.y -> g1.u' (connections[2]); an input takes one connection",
            ),
            (
                "twins.good.connections",
                "algebraic loop: g1.y -> g2.u -> g2.y -> g1.u (every component in it has direct "
                "feedthrough; put one with state, such as a first_order_lag, in the loop)",
            ),
            ("sessions.a.step_size", "must be greater than 0 (got 0)"),
            ("sessions.b.twin", "unknown twin 'missing' (twins in this file: broken, good)"),
        ]

    def test_group_message(self, tmp_path: Path) -> None:
        """The group counts its errors."""
        path = write(tmp_path, "[sessions.a]\ntwin = 'x'\nstep_size = 0\n")
        with pytest.raises(ConfigErrors) as info:
            load_config(path, resolve=resolve)
        assert info.value.message == "2 config errors"


class TestDescribeThenCompile:
    def test_described_without_the_models(self) -> None:
        """The config alone does not know the models: an unknown one is found by compiling."""
        described = describe_config(VALID.replace('model = "lag"', 'model = "lagg"'))
        assert described.errors == ()
        assert described.twins["t"].components["plant"].model == "lagg"
        with pytest.raises(ConfigErrors) as info:
            compile_config(described, resolve=resolve)
        assert [e.path for e in info.value.exceptions] == ["twins.t.components.plant.model"]

    def test_description_holds_its_errors(self, tmp_path: Path) -> None:
        """A description collects its errors without raising; compiling raises them with
        its own, in the file's order."""
        text = VALID.replace('model = "lag"', 'model = "lagg"') + "step_size = -1\n"
        described = read_config(write(tmp_path, text))
        assert described.config is None
        assert [e.path for e in described.errors] == ["sessions.s.step_size"]
        with pytest.raises(ConfigErrors) as info:
            compile_config(described, resolve=resolve)
        assert [e.path for e in info.value.exceptions] == [
            "twins.t.components.plant.model", "sessions.s.step_size"]


class TestParseTwin:
    BARE = """
    connections = ["src.y -> plant.u"]
    [components.src]
    model = "source"
    [components.plant]
    model = "lag"
    """

    def test_bare(self) -> None:
        """A twin's own table compiles under the given name."""
        twin = parse_twin(textwrap.dedent(self.BARE), "mine", resolve=resolve)
        assert twin.name == "mine"
        assert [c.name for c in twin.components] == ["src", "plant"]

    def test_wrapped(self) -> None:
        """A [twins.<name>] table gives its own name."""
        text = VALID.split("[sessions")[0]
        assert parse_twin(text, resolve=resolve).name == "t"

    @pytest.mark.parametrize(
        ("text", "name", "path", "message"),
        [
            pytest.param(
                BARE,
                None,
                "",
                "a twin given on its own needs a name (or write it as [twins.<name>])",
                id="no-name",
            ),
            pytest.param(
                BARE,
                "my twin",
                "",
                "invalid name 'my twin': a name is at most 64 letters, "
                "digits and '_', not starting with a digit (it becomes part of OPC UA NodeIds)",
                id="bad-name",
            ),
            pytest.param(
                VALID.split("[sessions")[0],
                "other",
                "twins.t",
                "the twin is named 't' here but 'other' was asked for",
                id="name-mismatch",
            ),
            pytest.param(
                "[twins.a.components.x]\nmodel='lag'\n[twins.b.components.x]\nmodel='lag'\n",
                None,
                "twins",
                "expected exactly one twin under [twins] (got 2)",
                id="two-twins",
            ),
            pytest.param(
                BARE.replace("lag", "lagg"),
                "mine",
                "components.plant.model",
                "unknown model 'lagg' (known models: adder, gain, lag, picky, source, switch)",
                id="compile-error-relative-path",
            ),
            pytest.param(
                BARE + "    colour = 'red'\n",
                "mine",
                "components.plant",
                "unknown key 'colour' (allowed: model, description, parameters, initial, "
                "inputs, options)",
                id="schema-error-relative-path",
            ),
            pytest.param(
                "[twins.t.components.x]\nmodel = 'lag'\nparameters = { tau = 0 }\n",
                None,
                "twins.t.components.x.parameters.tau",
                "parameter 'tau' must be within [0.001, inf] s (got 0.0)",
                id="wrapped-path",
            ),
        ],
    )
    def test_errors(self, text: str, name: str | None, path: str, message: str) -> None:
        """A twin from text is checked exactly as in a file, at paths relative to the text."""
        with pytest.raises(ConfigErrors) as info:
            parse_twin(textwrap.dedent(text), name, file="<DefineTwin>", resolve=resolve)
        assert [(e.file, e.path, e.message) for e in info.value.exceptions] == [
            ("<DefineTwin>", path, message)
        ]


class TestHistoryVariables:
    def test_pattern_matching_nothing_is_a_config_error(self, tmp_path: Path) -> None:
        """A history.variables pattern that names no variable of the twin fails `check`
        with its key path and the twin's variables."""
        config = tmp_path / "h.toml"
        config.write_text(
            '[twins.t.components.tank]\nmodel = "water_tank"\n'
            '[sessions.s]\ntwin = "t"\n'
            '[sessions.s.history]\nvariables = ["tank.level", "pump.*"]\n')
        with pytest.raises(ConfigErrors) as info:
            load_config(config)
        (error,) = info.value.exceptions
        assert error.path == "sessions.s.history.variables"
        assert "'pump.*' matches no variable of twin 't'" in error.message
        assert "tank.outflow" in error.message
