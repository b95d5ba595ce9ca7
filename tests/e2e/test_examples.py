"""The runnable examples in examples/ do what docs/embedding.md says they do (the controller needs no root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _lab_support import SRC

pytestmark = pytest.mark.root

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_apply_plan_example_reaches_the_backend_through_the_vip_and_leaves_nothing() -> None:
    before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    result = subprocess.run([sys.executable, str(EXAMPLES / "apply_plan.py")], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": SRC}, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last == {"applied": True, "answer": "backend says hi"}
    after = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    assert not {n for n in after - before if n.startswith("mcex-")}


def test_controller_example_prints_the_demos_frontends_once(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "controller.py"), str(EXAMPLES / "demo"), "--once"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": SRC},
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "+ demo/api 10.96.0.10:53/UDP → 0 backends",
        "+ demo/api 10.96.0.10:8080/TCP → 0 backends",
        "+ demo/web 10.96.0.11:80/TCP → 0 backends",
        "+ demo/web fd00:10:96::a:80/TCP → 0 backends",
    ]
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: quiet}\n")
    result = subprocess.run([sys.executable, str(EXAMPLES / "controller.py"), str(tmp_path), "--once"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": SRC},
                            check=False)
    assert result.stdout.splitlines() == ["no change (0 frontends)"], result.stderr
