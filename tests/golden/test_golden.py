"""Golden tests: ``<stage>/<case>.in.yaml`` → ``<case>.out.yaml``.

Regenerate with ``pytest tests/golden --update-golden`` and read the diff before committing.
Stages: ``plan`` compiles the translated input; every other stage shows the translation
(the Snapshot and the diagnostics) of its input, and the status adapters computed, if any.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import meshcore
from meshcore._output import diagnostic_data, to_yaml
from meshcore.cli import plan_data

HERE = Path(__file__).parent
CASES = sorted(HERE.glob("*/*.in.yaml"))


def render(case: Path) -> str:
    """The golden output for one input file (read by its bare name, so sources are portable)."""
    cwd = os.getcwd()
    os.chdir(case.parent)
    try:
        result = meshcore.translate([case.name])
    finally:
        os.chdir(cwd)
    data: dict[str, Any]
    if case.parent.name == "plan":
        data = {"plan": plan_data(meshcore.compile_plan(result.snapshot, "node-1"))}
        data["plan"].pop("snapshot")
    else:
        data = {"snapshot": result.snapshot.to_data()}
    data["diagnostics"] = [diagnostic_data(d) for d in result.diagnostics]
    if result.statuses:
        data["statuses"] = [
            {"apiVersion": s.api_version, "kind": s.kind, "namespace": s.namespace, "name": s.name,
             "status": dict(s.status)}
            for s in result.statuses
        ]
    return to_yaml(data)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.parent.name}/{c.name[:-8]}" for c in CASES])
def test_golden(case: Path, request: pytest.FixtureRequest) -> None:
    expected_path = case.with_name(case.name.replace(".in.yaml", ".out.yaml"))
    actual = render(case)
    if request.config.getoption("--update-golden"):
        expected_path.write_text(actual)
        return
    assert expected_path.exists(), f"{expected_path.name} is missing: run pytest {HERE} --update-golden"
    assert actual == expected_path.read_text(), (
        f"{case.relative_to(HERE)} no longer translates to {expected_path.name}; "
        "if the change is intended, regenerate with --update-golden and read the diff"
    )
