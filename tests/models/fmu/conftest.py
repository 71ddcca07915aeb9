"""Test FMUs compiled once per test session from ``src/`` (gcc, FMPy's FMI headers),
plus broken variants for the error tests."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.models.fmu import build
from twin_server.models.base import Kind, Value
from twin_server.models.fmu import FMU

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build FMUs")


@pytest.fixture(scope="session")
def fmus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of the built FMUs: lag2 (FMI 2.0 CS), ball2 (FMI 2.0 ME), lag3 (FMI 3.0 CS),
    ball3 (FMI 3.0 ME), crash2 (FMI 2.0 CS and ME: segfaults, aborts or hangs at
    crash_at, for the worker tests), vdp2 (FMI 2.0 ME), types3 (FMI 3.0 CS) and
    variants: lag2_nostate, lag2_noserialize, lag2_enum (substeps an FMI 2.0
    enumeration), lag2_win64 (no Linux binary), lag2_badxml (malformed
    modelDescription), notzip."""
    out = tmp_path_factory.mktemp("fmus")
    result = {name: build.build(name, out) for name in build.MODELS}
    library = out / "build" / "lag2" / "lag2.so"
    xml = (build.SRC / "lag2.xml").read_text()
    result["lag2_nostate"] = build.package(
        "lag2", library, out / "lag2_nostate.fmu",
        xml=xml.replace('canGetAndSetFMUstate="true" canSerializeFMUstate="true"',
                        'canGetAndSetFMUstate="false" canSerializeFMUstate="false"'))
    result["lag2_noserialize"] = build.package(
        "lag2", library, out / "lag2_noserialize.fmu",
        xml=xml.replace('canSerializeFMUstate="true"', 'canSerializeFMUstate="false"'))
    result["lag2_win64"] = build.package("lag2", library, out / "lag2_win64.fmu",
                                         binary_dir="win64")
    result["lag2_enum"] = build.package(  # substeps as an FMI 2.0 enumeration
        "lag2", library, out / "lag2_enum.fmu", xml=xml.replace(
            "  </TypeDefinitions>",
            '    <SimpleType name="Substeps"><Enumeration><Item name="one" value="1"/>'
            '<Item name="two" value="2"/><Item name="five" value="5"/></Enumeration>'
            "</SimpleType>\n  </TypeDefinitions>").replace(
            '<Integer start="1" min="1" max="1000"/>',
            '<Enumeration declaredType="Substeps" start="1"/>'))
    result["lag2_badxml"] = build.package(
        "lag2", library, out / "lag2_badxml.fmu", xml=xml.replace("</ModelVariables>", ""))
    notzip = out / "notzip.fmu"
    notzip.write_text("this is not an FMU\n")
    result["notzip"] = notzip
    return result


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fmu-cache")


def defaults(model: FMU, kind: Kind) -> dict[str, Value]:
    return {v.name: v.default for v in model.variables if v.kind is kind}


def open_fmu(path: Path, cache_dir: Path, **options: Any) -> FMU:
    return FMU({"path": str(path), "cache_dir": str(cache_dir), **options})


def started(path: Path, cache_dir: Path, parameters: Mapping[str, Value] | None = None,
            initial: Mapping[str, Value] | None = None, **options: Any) -> FMU:
    """An FMU component reset with its default parameters updated by ``parameters``."""
    model = open_fmu(path, cache_dir, **options)
    model.reset({**defaults(model, Kind.PARAMETER), **(parameters or {})}, dict(initial or {}))
    return model
