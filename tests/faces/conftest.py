"""Where the faces' tests find NodeSet2 files: DI committed under configs/faces/, the
other companion specifications from the node-opcua-nodesets package that
tests/nodeopcua installs (``make test`` runs ``npm ci`` there first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.nodeopcua import ensure_installed, node

ROOT = Path(__file__).resolve().parents[2]
FACES = ROOT / "configs" / "faces"
DI = FACES / "Opc.Ua.Di.NodeSet2.xml"
NODESETS = ROOT / "tests" / "nodeopcua" / "node_modules" / "node-opcua-nodesets" / "nodesets"
#: the example machine's NodeSet (configs/faces.toml) and its namespace
TANK = FACES / "TankMachine.NodeSet2.xml"
TANK_URI = "urn:twin-server:examples:TankMachine"

#: a daemon (in-process, no history, anonymous operating) serving the example tank
#: twin's session ``tank`` as the face ``machine``, its level bound; a test adds its
#: bindings and methods (format it with state, tank and di)
TANK_FACE = """
[server]
endpoint = "opc.tcp://127.0.0.1:0/twin-server"
state_dir = "{state}"
workers = 0

[server.security]  # tests: the None endpoint, anonymous may operate
policies = ["None"]
anonymous = "operator"

[history]
enabled = false

[twins.tank.components.tank]
model = "water_tank"
parameters = {{ area = 0.5, outflow_coefficient = 0.02, initial_level = 0.5 }}

[twins.tank.components.source]
model = "constant"
parameters = {{ value = 0.01 }}

[twins.tank]
connections = ["source.output -> tank.inflow"]

[sessions.tank]
twin = "tank"
autostart = false
publish_rate = 20.0

[faces.machine]
nodesets = ["{tank}", "{di}"]
session = "tank"

[faces.machine.bindings]
"DeviceSet/Tank1/Level" = "tank.level"
"""


@pytest.fixture(scope="session")
def published() -> Path:
    """The folder of the OPC Foundation's NodeSets that node-opcua-nodesets ships."""
    if not NODESETS.is_dir():
        if node() is None:
            pytest.skip("node-opcua-nodesets needs npm (tests/nodeopcua): install Node.js")
        ensure_installed()
    assert NODESETS.is_dir(), f"no {NODESETS} after npm ci"
    return NODESETS
