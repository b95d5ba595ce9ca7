"""Build hook: compile the BPF objects (bpf/*.bpf.c) before packaging meshcore.

Everything else about the distribution lives in pyproject.toml, which ships
``meshcore/datapath/_bpf/*.o`` as package data. The objects are built into the source tree,
so editable installs (``pip install -e .``) find them there too.

Only the node agent loads the objects; translating and compiling do not. So a machine
without the toolchain (a controller) still builds and installs meshcore: the objects are
left out with a warning, and the datapath says how to add them when it is used.
``MESHCORE_BUILD_BPF`` chooses:

- ``auto`` (default): build them when ``make`` and ``clang`` are on PATH, else leave them out;
- ``yes``: build them or fail (release wheels, node images);
- ``no``: do not build; package whatever objects the source tree already has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BPF_DIR = ROOT / "bpf"
OUT_DIR = ROOT / "src" / "meshcore" / "datapath" / "_bpf"
DEBIAN_PACKAGES = "clang llvm libbpf-dev linux-libc-dev make"
MODE_ENV = "MESHCORE_BUILD_BPF"
MODES = ("auto", "yes", "no")


class BuildPyWithBpf(build_py):
    """build_py that first runs ``make -C bpf`` so the wheel carries fresh .bpf.o files."""

    def run(self) -> None:
        self._build_bpf(_mode())
        super().run()

    def _build_bpf(self, mode: str) -> None:
        if mode == "no":
            return
        if not BPF_DIR.is_dir():
            # An sdist without bpf/ sources must already carry the objects.
            if not any(OUT_DIR.glob("*.bpf.o")):
                _leave_out(mode, f"neither bpf/ sources nor built objects in {OUT_DIR}")
            return
        missing = [tool for tool in ("make", "clang") if shutil.which(tool) is None]
        if missing:
            _leave_out(mode, f"building them needs {' and '.join(missing)}; "
                             f"on Debian/Ubuntu: apt-get install {DEBIAN_PACKAGES}")
            return
        result = subprocess.run(["make", "-C", str(BPF_DIR), f"OUT={OUT_DIR}"], check=False)
        if result.returncode != 0:
            raise SystemExit(
                "meshcore: compiling the BPF objects failed (see the compiler output above); "
                f"needed Debian packages: {DEBIAN_PACKAGES}; {MODE_ENV}=no builds meshcore without them"
            )


def _mode() -> str:
    mode = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise SystemExit(f"meshcore: {MODE_ENV}={mode!r}; expected one of {', '.join(MODES)}")
    return mode


def _leave_out(mode: str, why: str) -> None:
    """Fail when the objects are required, else warn that this build carries none."""
    if mode == "yes":
        raise SystemExit(f"meshcore: {MODE_ENV}=yes but the BPF objects cannot be built: {why}")
    print(
        f"meshcore: WARNING: building without the BPF objects ({why}). Translating and compiling "
        "work; the node agent's datapath will not load until meshcore is reinstalled with them.",
        file=sys.stderr,
    )


setup(cmdclass={"build_py": BuildPyWithBpf})
