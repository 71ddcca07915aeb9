"""Build the test FMUs from the C sources in ``src/`` with gcc and FMPy's FMI headers.

Each model file includes ``fmi2_frame.h`` or ``fmi3_frame.h`` (the FMI calls it
uses); every other FMI function of the standard is a weak stub returning Error,
generated here from the header, because FMPy resolves the whole API when it
loads a binary. Run ``python -m tests.models.fmu.build DIR`` to build them by hand.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import fmpy

SRC = Path(__file__).parent / "src"
HEADERS = Path(fmpy.__file__).parent / "c-code"

#: FMU name -> FMI major version
MODELS = {"lag2": 2, "ball2": 2, "lag3": 3, "ball3": 3, "crash2": 2, "vdp2": 2,
          "types3": 3}


def _stubs(version: int) -> str:
    """C source with a weak definition returning Error for every FMI function."""
    header = (HEADERS / f"fmi{version}Functions.h").read_text()
    names = re.findall(rf"FMI{version}_Export\s+\w+TYPE\s+(fmi{version}\w+);", header)
    lines = [f"int {name}(void) __attribute__((weak));\nint {name}(void) {{ return 3; }}"
             for name in names]
    head = "/* generated: weak stubs, overridden by the model's own definitions */\n"
    return head + "\n".join(lines)


def platform_dir(version: int) -> str:
    return fmpy.platform if version == 2 else fmpy.platform_tuple


def compile_binary(name: str, out_dir: Path) -> Path:
    """Compile ``src/<name>.c`` into ``out_dir/<name>.so``."""
    version = MODELS[name]
    out_dir.mkdir(parents=True, exist_ok=True)
    stubs = out_dir / f"stubs{version}.c"
    stubs.write_text(_stubs(version))
    library = out_dir / f"{name}.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Wno-unused-function",
         f"-I{HEADERS}", f"-I{SRC}", "-o", str(library), str(SRC / f"{name}.c"), str(stubs), "-lm"],
        check=True, capture_output=True, text=True,
    )
    return library


def package(name: str, library: Path, out: Path, *, xml: str | None = None,
            binary_dir: str | None = None) -> Path:
    """Zip ``library`` and a modelDescription (the model's own unless ``xml`` is
    given) into the FMU ``out``; ``binary_dir`` overrides the platform folder."""
    version = MODELS[name]
    xml_text = (SRC / f"{name}.xml").read_text() if xml is None else xml
    folder = binary_dir or platform_dir(version)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("modelDescription.xml", xml_text)
        zf.write(library, f"binaries/{folder}/{name}.so")
        zf.writestr("resources/README.txt", f"{name}: a twin-server test FMU\n")
    return out


def build(name: str, out_dir: Path) -> Path:
    """Compile and package the FMU ``name`` into ``out_dir/<name>.fmu``."""
    library = compile_binary(name, out_dir / "build" / name)
    return package(name, library, out_dir / f"{name}.fmu")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "build/fmus")
    for model in MODELS:
        print(build(model, target))
