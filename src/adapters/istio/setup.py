"""Build hook: generate the Istio API message modules from proto/ before packaging.

Every ``.proto`` under ``proto/`` is compiled with grpcio-tools (a build requirement)
into ``src/meshcore_istio/_gen/`` (``*_pb2.py`` and ``*_pb2.pyi``). protoc writes absolute
imports (``from istio.networking.v1alpha3 import ...``); they are rewritten to
``meshcore_istio._gen.istio...`` so no top-level ``istio`` package is installed. The
code is generated into the source tree, so editable installs (``pip install -e``) find it
there and wheels pick it up as ordinary packages.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_DIR = ROOT / "proto"
SRC_DIR = ROOT / "src"
GEN_PACKAGE = "meshcore_istio._gen"
GEN_DIR = SRC_DIR / "meshcore_istio" / "_gen"
STAMP = ".generated"
_IMPORT = re.compile(r"^from istio((?:\.\w+)*) import ", re.MULTILINE)


def generate() -> list[str]:
    """Compile every proto under proto/ into _gen/ and return the generated packages."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    if not protos:
        if GEN_DIR.is_dir():
            return _packages()  # an sdist without proto/ ships the generated code
        raise SystemExit(f"meshcore-istio: no .proto files under {PROTO_DIR}")
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        raise SystemExit("meshcore-istio: generating the Istio messages needs grpcio-tools "
                         "(a build requirement: pip install grpcio-tools)") from None
    stamp = _stamp(protos, getattr(grpc_tools, "__version__", ""))
    if (GEN_DIR / STAMP).is_file() and (GEN_DIR / STAMP).read_text() == stamp:
        return _packages()  # the same protos and generator: the code in place is current
    # Generate beside _gen/ and swap it in, so a process importing the installed code
    # never sees a half-written tree (and a removed .proto leaves no module behind).
    fresh = GEN_DIR.with_name("_gen.new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{well_known}",
            f"--python_out={fresh}", f"--pyi_out={fresh}", *protos]
    if protoc.main(args) != 0:
        shutil.rmtree(fresh, ignore_errors=True)
        raise SystemExit("meshcore-istio: protoc failed on the Istio protos (see its output above)")
    for path in sorted(fresh.rglob("*_pb2.py*")):
        text = path.read_text()
        path.write_text(_IMPORT.sub(lambda m: f"from {GEN_PACKAGE}.istio{m.group(1)} import ", text))
    for folder in [fresh, *(p for p in fresh.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    (fresh / STAMP).write_text(stamp)
    stale = GEN_DIR.with_name("_gen.old")
    shutil.rmtree(stale, ignore_errors=True)
    if GEN_DIR.is_dir():
        GEN_DIR.rename(stale)
    fresh.rename(GEN_DIR)
    shutil.rmtree(stale, ignore_errors=True)
    return _packages()


def _stamp(protos: list[str], generator: str) -> str:
    digest = hashlib.sha256(generator.encode())
    for name in protos:
        digest.update(name.encode() + b"\0" + (PROTO_DIR / name).read_bytes())
    return digest.hexdigest()


def _packages() -> list[str]:
    return sorted(".".join(p.parent.relative_to(SRC_DIR).parts) for p in GEN_DIR.rglob("__init__.py"))


class BuildPyWithProtos(build_py):
    """build_py that first generates the Istio messages, so wheels and editable installs carry them."""

    def run(self) -> None:
        packages = generate()
        if not self.editable_mode:
            # Package discovery ran before the code existed: add the generated packages.
            self.packages = sorted({*(self.packages or []), *packages})
            for package in packages:
                self.package_data.setdefault(package, []).append("*.pyi")
            self.data_files = self._get_data_files()
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})
