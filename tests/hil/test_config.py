"""The [hil.<peer>] tables: what the loader accepts and every error it reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin_server.config.schema import NodeRef, parse_browse_path
from twin_server.errors import ConfigErrors
from twin_server.runtime.compile import load_config, parse_config

BASE = """
[twins.t]
[twins.t.components.tank]
model = "water_tank"
[twins.t.components.c]
model = "constant"

[sessions.s]
twin = "t"

[hil.plc]
endpoint = "opc.tcp://127.0.0.1:4840"
session = "s"
"""


def errors(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(BASE + text)
    return [(e.path, e.message) for e in info.value.exceptions]


class TestValid:
    def test_full_peer(self) -> None:
        """A peer with security, NodeId and browse-path bindings, deadband and fallback loads."""
        loaded = parse_config(BASE + """
security = { username = "op", password_env = "PLC_PW" }
keepalive_interval = 0.5
[hil.plc.bindings.level]
variable = "tank.level"
direction = "to_plc"
node = "nsu=urn:plc;s=Level"
deadband = 0.001
[hil.plc.bindings.valve]
variable = "tank.inflow"
direction = "from_plc"
browse_path = "0:Objects/2:PLC/urn:plc:Valve"
sampling_interval = 50.0
fallback = 0.0
""")
        peer = loaded.config.hil["plc"]
        assert peer.security.username == "op"
        assert peer.bindings["valve"].fallback == 0.0
        assert peer.bindings["level"].deadband == 0.001


class TestErrors:
    @pytest.mark.parametrize(("text", "path", "message"), [
        pytest.param('[hil.plc.bindings.b]\nvariable = "tank.nope"\ndirection = "to_plc"\n'
                     'node = "ns=2;s=X"\n', "hil.plc.bindings.b.variable",
                     "component 'tank' has no 'nope'", id="unknown-variable"),
        pytest.param('[hil.plc.bindings.b]\nvariable = "tonk.level"\ndirection = "to_plc"\n'
                     'node = "ns=2;s=X"\n', "hil.plc.bindings.b.variable",
                     "has no component 'tonk'", id="unknown-component"),
        pytest.param('[hil.plc.bindings.b]\nvariable = "tank.inflow"\ndirection = "to_plc"\n'
                     'node = "ns=2;s=X"\n', "hil.plc.bindings.b.variable",
                     "use direction = 'from_plc'", id="input-to-plc"),
        pytest.param('[hil.plc.bindings.b]\nvariable = "tank.level"\ndirection = "from_plc"\n'
                     'node = "ns=2;s=X"\n', "hil.plc.bindings.b.variable",
                     "use direction = 'to_plc'", id="output-from-plc"),
        pytest.param('[hil.plc.bindings.b]\nvariable = "tank.area"\ndirection = "to_plc"\n'
                     'node = "ns=2;s=X"\n', "hil.plc.bindings.b.variable",
                     "parameters are not mirrored", id="parameter"),
        pytest.param('[hil.plc.bindings.b]\nvariable = "tank.level"\ndirection = "to_plc"\n',
                     "hil.plc.bindings.b", "exactly one of 'node'", id="no-node"),
        pytest.param('[hil.plc.bindings.b]\nvariable = "tank.level"\ndirection = "to_plc"\n'
                     'node = "Level"\n', "hil.plc.bindings.b.node",
                     "a PLC node is written", id="bad-nodeid"),
        pytest.param('[hil.plc.bindings.b]\nvariable = "tank.level"\ndirection = "to_plc"\n'
                     'browse_path = "Objects//Level"\n', "hil.plc.bindings.b.browse_path",
                     "a browse path is written", id="bad-browse-path"),
        pytest.param('[hil.plc.bindings.b]\nvariable = "tank.level"\ndirection = "sideways"\n'
                     'node = "ns=2;s=X"\n', "hil.plc.bindings.b.direction",
                     "must be 'to_plc' or 'from_plc'", id="bad-direction"),
        pytest.param('[hil.plc.bindings.b]\nvariable = "tank.level"\ndirection = "to_plc"\n'
                     'node = "ns=2;s=X"\nfallback = 1.0\n', "hil.plc.bindings.b.fallback",
                     "only a from_plc binding has a fallback", id="fallback-to-plc"),
        pytest.param('[hil.plc.bindings.b]\nvariable = "tank.inflow"\ndirection = "from_plc"\n'
                     'node = "ns=2;s=X"\nfallback = -1.0\n', "hil.plc.bindings.b.fallback",
                     "must be within [0, inf]", id="fallback-out-of-range"),
        pytest.param('[hil.plc.bindings.b]\nvariable = "tank.inflow"\ndirection = "from_plc"\n'
                     'node = "ns=2;s=X"\n[hil.plc.bindings.c]\nvariable = "tank.inflow"\n'
                     'direction = "from_plc"\nnode = "ns=2;s=Y"\n', "hil.plc.bindings.c.variable",
                     "already bound from the PLC by binding 'b'", id="input-bound-twice"),
        pytest.param('[hil.plc.bindings.b]\nvariable = "tank.level"\ndirection = "to_plc"\n'
                     'node = "ns=2;s=X"\ndeadband = -1.0\n', "hil.plc.bindings.b.deadband",
                     "must be at least 0", id="negative-deadband"),
        pytest.param('security = { password = "x" }\n[hil.plc.bindings.b]\n'
                     'variable = "tank.level"\ndirection = "to_plc"\nnode = "ns=2;s=X"\n',
                     "hil.plc.security.username", "a password needs a username",
                     id="password-without-user"),
        pytest.param('security = { policy = "Basic256Sha256", mode = "SignAndEncrypt" }\n'
                     '[hil.plc.bindings.b]\nvariable = "tank.level"\ndirection = "to_plc"\n'
                     'node = "ns=2;s=X"\n', "hil.plc.security",
                     "needs the client's 'certificate' and 'private_key'", id="policy-no-cert"),
        pytest.param('security = { policy = "Basic256Sha256" }\n'
                     '[hil.plc.bindings.b]\nvariable = "tank.level"\ndirection = "to_plc"\n'
                     'node = "ns=2;s=X"\n', "hil.plc.security",
                     "either both are 'None'", id="policy-mode-mismatch"),
        pytest.param("bindings = {}\n", "hil.plc.bindings",
                     "a HIL peer needs at least one binding", id="no-bindings"),
    ])
    def test_error(self, text: str, path: str, message: str) -> None:
        """Each problem is reported at its key path with what to do about it."""
        found = errors(text)
        assert any(p == path and message in m for p, m in found), found

    def test_unknown_session(self) -> None:
        """A peer serving a session the file does not declare is named with the known ones."""
        with pytest.raises(ConfigErrors) as info:
            parse_config(BASE.replace('session = "s"', 'session = "x"') + (
                '[hil.plc.bindings.b]\nvariable = "tank.level"\ndirection = "to_plc"\n'
                'node = "ns=2;s=X"\n'))
        assert [(e.path, e.message) for e in info.value.exceptions] == [
            ("hil.plc.session", "unknown session 'x' (sessions in this file: s)")]


class TestAddresses:
    @pytest.mark.parametrize(("text", "expected"), [
        pytest.param("ns=2;s=PLC.Level", NodeRef(2, "s", "PLC.Level"), id="index"),
        pytest.param("nsu=urn:plc;i=7", NodeRef("urn:plc", "i", "7"), id="uri"),
        pytest.param("i=2258", NodeRef(0, "i", "2258"), id="ns0"),
    ])
    def test_node(self, text: str, expected: NodeRef) -> None:
        """NodeIds take an index or a namespace URI."""
        assert NodeRef.parse(text) == expected

    def test_browse_path(self) -> None:
        """Browse path elements take an index or a URI (the name after its last ':')."""
        assert parse_browse_path("0:Objects/urn:plc:PLC/2:Level") == (
            (0, "Objects"), ("urn:plc", "PLC"), (2, "Level"))


class TestFilePaths:
    def test_certificate_paths_resolve_against_the_config_folder(self, tmp_path: Path) -> None:
        """Relative HIL certificate and key paths are taken from the config file's folder."""
        folder = tmp_path / "plant"
        folder.mkdir()
        config = folder / "plant.toml"
        config.write_text(
            '[twins.t.components.tank]\nmodel = "water_tank"\n'
            '[sessions.s]\ntwin = "t"\n'
            '[hil.plc]\nendpoint = "opc.tcp://127.0.0.1:4841"\nsession = "s"\n'
            'security = { policy = "Basic256Sha256", mode = "SignAndEncrypt", '
            'certificate = "pki/client.der", private_key = "pki/client.pem", '
            'server_certificate = "/abs/plc.der" }\n'
            '[hil.plc.bindings.level]\nvariable = "tank.level"\ndirection = "to_plc"\n'
            'node = "ns=2;s=Level"\n')
        security = load_config(config).config.hil["plc"].security
        assert security.certificate == str(folder / "pki" / "client.der")
        assert security.private_key == str(folder / "pki" / "client.pem")
        assert security.server_certificate == "/abs/plc.der"


class TestAllAtOnce:
    def test_every_error_of_a_binding_in_one_round(self) -> None:
        """A binding with an unknown variable, a malformed node and a negative deadband
        gets the three errors from one check."""
        found = errors('[hil.plc.bindings.b]\nvariable = "tank.nope"\ndirection = "to_plc"\n'
                       'node = "Level"\ndeadband = -1.0\n')
        paths = [p for p, _ in found]
        assert "hil.plc.bindings.b.variable" in paths
        assert "hil.plc.bindings.b.node" in paths
        assert "hil.plc.bindings.b.deadband" in paths

    def test_a_variable_of_two_kinds_is_listed_once(self) -> None:
        """The outputs and states a to_plc binding could take name each variable once
        (a tank's level is both)."""
        (message,) = [m for p, m in errors('[hil.plc.bindings.b]\nvariable = "tank.nope"\n'
                                           'direction = "to_plc"\nnode = "ns=2;s=X"\n')
                      if p == "hil.plc.bindings.b.variable"]
        assert "it has: level, outflow, overflow)" in message


class TestPolicySpelling:
    @pytest.mark.parametrize("spelling", ["Aes128_Sha256_RsaOaep", "Aes128Sha256RsaOaep"])
    def test_both_spellings_everywhere(self, spelling: str) -> None:
        """[hil.*.security] and [server.security] take a policy with or without '_';
        both hold the OPC UA name (the policy URI's)."""
        loaded = parse_config(f'[server.security]\npolicies = ["{spelling}"]\n' + BASE + (
            f'security = {{ policy = "{spelling}", mode = "SignAndEncrypt", '
            f'certificate = "c.der", private_key = "k.pem" }}\n'
            '[hil.plc.bindings.b]\nvariable = "tank.level"\ndirection = "to_plc"\n'
            'node = "ns=2;s=X"\n'))
        assert loaded.config.server.security.policies == ("Aes128_Sha256_RsaOaep",)
        assert loaded.config.hil["plc"].security.policy == "Aes128_Sha256_RsaOaep"

    def test_an_unknown_policy_names_the_known_ones(self) -> None:
        """A misspelt policy is refused with the names that are taken."""
        found = errors('security = { policy = "Aes128", mode = "Sign" }\n'
                       '[hil.plc.bindings.b]\nvariable = "tank.level"\ndirection = "to_plc"\n'
                       'node = "ns=2;s=X"\n')
        assert any(p == "hil.plc.security.policy" and "Aes128_Sha256_RsaOaep" in m
                   for p, m in found), found


class TestDrivenInput:
    CONNECTED = """
[twins.t]
connections = ["c.output -> tank.inflow"]
[twins.t.components.tank]
model = "water_tank"
[twins.t.components.c]
model = "constant"

[sessions.s]
twin = "t"

[hil.plc]
endpoint = "opc.tcp://127.0.0.1:4840"
session = "s"
[hil.plc.bindings.valve]
variable = "tank.inflow"
direction = "from_plc"
node = "ns=2;s=Valve"
"""

    def test_a_from_plc_binding_onto_a_connected_input_is_a_warning(self) -> None:
        """The config loads (a PLC may take a twin component's place) with a warning at
        the binding that names the connection."""
        loaded = parse_config(self.CONNECTED)
        (warning,) = loaded.warnings
        assert warning.path == "hil.plc.bindings.valve.variable"
        assert "driven by the connection 'c.output -> tank.inflow'" in warning.message

    def test_check_prints_the_warning_and_passes(self, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
        """'twin-server check' exits 0 and prints the warning with its key path."""
        from twin_server.cli import main

        config = tmp_path / "hil.toml"
        config.write_text(self.CONNECTED)
        assert main(["check", str(config)]) == 0
        out, err = capsys.readouterr()
        assert "warning: " in err and "hil.plc.bindings.valve.variable" in err
        assert out.rstrip().endswith(", 1 warning)"), out

    def test_an_unconnected_input_gives_no_warning(self) -> None:
        """Binding an input nothing drives is what a from_plc binding is for: no warning."""
        loaded = parse_config(BASE + '[hil.plc.bindings.valve]\nvariable = "tank.inflow"\n'
                                     'direction = "from_plc"\nnode = "ns=2;s=Valve"\n')
        assert loaded.warnings == ()
