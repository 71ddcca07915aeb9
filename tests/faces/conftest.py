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


@pytest.fixture(scope="session")
def published() -> Path:
    """The folder of the OPC Foundation's NodeSets that node-opcua-nodesets ships."""
    if not NODESETS.is_dir():
        if node() is None:
            pytest.skip("node-opcua-nodesets needs npm (tests/nodeopcua): install Node.js")
        ensure_installed()
    assert NODESETS.is_dir(), f"no {NODESETS} after npm ci"
    return NODESETS
