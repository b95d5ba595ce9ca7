"""Fixtures: a stand-in for the Kubernetes API server (no real one can run here) and kubectl pointed at it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _kubectl_support import Kubectl
from standin_apiserver import StandInApiServer


@pytest.fixture
def apiserver() -> Iterator[StandInApiServer]:
    """The stand-in API server on 127.0.0.1, bookmarks every 0.3 s."""
    server = StandInApiServer(bookmark_seconds=0.3).start()
    yield server
    server.stop()


@pytest.fixture
def kubeconfig(apiserver: StandInApiServer, tmp_path: Path) -> Path:
    return apiserver.kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Kubectl:
    """Run the real kubectl against the stand-in; fails the test when kubectl fails (unless check=False)."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not installed (Debian: apt-get install kubectl; scripts/test.sh installs it)")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}

    def run(*args: str, input: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=env,
                                timeout=timeout, check=False)
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result

    return run
