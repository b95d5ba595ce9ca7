"""Build hook: compile the BPF objects (bpf/*.bpf.c) before packaging meshcore.

Everything else about the distribution lives in pyproject.toml, which ships
``meshcore/datapath/_bpf/*.o`` as package data. The objects are built into the source tree,
so editable installs (``pip install -e .``) find them there too.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BPF_DIR = ROOT / "bpf"
OUT_DIR = ROOT / "src" / "meshcore" / "datapath" / "_bpf"
DEBIAN_PACKAGES = "clang llvm libbpf-dev linux-libc-dev make"


class BuildPyWithBpf(build_py):
    """build_py that first runs ``make -C bpf`` so the wheel carries fresh .bpf.o files."""

    def run(self) -> None:
        self._build_bpf()
        super().run()

    def _build_bpf(self) -> None:
        if not BPF_DIR.is_dir():
            # An sdist without bpf/ sources must already carry the objects.
            if not any(OUT_DIR.glob("*.bpf.o")):
                raise SystemExit(f"meshcore: neither bpf/ sources nor built objects in {OUT_DIR}")
            return
        missing = [tool for tool in ("make", "clang") if shutil.which(tool) is None]
        if missing:
            raise SystemExit(
                f"meshcore: building the BPF objects needs {' and '.join(missing)}; "
                f"on Debian/Ubuntu: apt-get install {DEBIAN_PACKAGES}"
            )
        result = subprocess.run(["make", "-C", str(BPF_DIR), f"OUT={OUT_DIR}"], check=False)
        if result.returncode != 0:
            raise SystemExit(
                "meshcore: compiling the BPF objects failed (see the compiler output above); "
                f"needed Debian packages: {DEBIAN_PACKAGES}"
            )


setup(cmdclass={"build_py": BuildPyWithBpf})
