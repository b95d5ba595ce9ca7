"""The core needs no extra; a part used without its extra says which one to install."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from meshcore import _extras

ROOT = Path(__file__).resolve().parents[2]
CONTROLLER = ROOT / "tests" / "fixtures" / "controller.py"
SHOP = ROOT / "tests" / "fixtures" / "shop.yaml"

#: Makes the named top-level packages unimportable, as on a machine without them.
WITHOUT = """\
import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {absent!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Absent())
"""


def _python(code: str, *args: str, absent: set[str] = set()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT.format(absent=absent) + code, *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_translate_and_compile_load_no_part_that_needs_an_extra() -> None:
    run = subprocess.run([sys.executable, str(CONTROLLER), str(SHOP), "--no-adapters"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["frontends"] == [{"vip": "10.96.0.10", "port": 80,
                                 "backends": ["10.244.1.5:8080", "10.244.1.6:8080"]}]
    assert out["diagnostics"] == []
    assert out["loaded"] == []


def _command(*argv: str, absent: set[str]) -> subprocess.CompletedProcess[str]:
    return _python("from meshcore._console import main\nmain()",
                   *argv, absent=absent)


def test_commands_without_their_extra_name_it() -> None:
    agent = _command("agent", "--node", "n1", absent={"grpc"})
    assert agent.returncode == 1
    assert ("meshcore agent needs the 'agent' extra: pip install 'meshcore[agent]' (missing: grpcio)"
            in agent.stderr)
    assert "Traceback" not in agent.stderr

    demo = _command("demo", absent={"pyroute2"})
    assert demo.returncode == 1
    assert "meshcore demo needs the 'lab' extra: pip install 'meshcore[lab]' (missing: pyroute2)" in demo.stderr

    listed = _command("--help", absent={"grpc", "pyroute2"})
    assert "(not installed: pip install 'meshcore[agent]')" in listed.stdout

    plan = _command("plan", "-f", str(SHOP), "-o", "json", absent={"grpc", "pyroute2"})
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["bpf"]["services"][0]["vip"] == "10.96.0.10"

    bare = _command("plan", "-f", str(SHOP), absent={"click"})
    assert bare.returncode == 1
    assert bare.stderr == ("meshcore: the meshcore command needs the 'cli' extra: "
                           "pip install 'meshcore[cli]' (missing: click)\n")


def test_importing_the_agent_without_its_extra_names_it() -> None:
    run = _python("import meshcore.agent", absent={"prometheus_client", "grpc"})
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last == ("meshcore._extras.MissingExtra: meshcore.agent needs the 'agent' extra: "
                    "pip install 'meshcore[agent]' (missing: prometheus-client, grpcio)")


def _requirement_name(spec: str) -> str:
    return re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower()


def test_extras_hints_match_the_distribution() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def expand(extra: str) -> set[str]:
        names: set[str] = set()
        for spec in extras[extra]:
            if spec.startswith("meshcore["):
                for included in spec[len("meshcore["):spec.index("]")].split(","):
                    names |= expand(included.strip())
            else:
                names.add(_requirement_name(spec))
        return names

    for extra, provided in _extras.EXTRAS.items():
        assert {dist for _, dist in provided} == expand(extra), extra
