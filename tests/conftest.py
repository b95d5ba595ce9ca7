"""Suite-wide options and checks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Shared test helpers (e.g. testcerts, which makes certificates at test time).
sys.path.insert(0, str(Path(__file__).parent / "fixtures"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", default=False,
        help="Rewrite tests/golden/**/<case>.out.yaml from the current output (read the diff!).",
    )


@pytest.fixture(autouse=True)
def _require_root(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("root") and os.geteuid() != 0:
        pytest.fail("this test needs root and the real kernel (network namespaces, BPF, cgroups); run the suite as root")
