"""The agent's HTTP endpoint: /readyz says not ready until a generation is applied, /healthz and /metrics answer."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
import pytest

from meshcore.agent import AgentRunner, ManifestFiles, NodeAgent, NodeFacts
from meshcore.compile import BpfPlan, PolicyPlan
from meshcore.model import WorkloadRef
from meshcore.observe import Flow

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


@attrs.define
class Written:
    changed: bool = True

    def summary(self) -> str:
        return "written"


class Kernel:
    """Stands in for the socket LB and the policy enforcer; ``fail`` makes every apply fail."""

    fail = False

    def apply(self, plan: BpfPlan | PolicyPlan, interfaces: Mapping[WorkloadRef, str] | None = None) -> Written:
        if self.fail:
            raise OSError("the kernel refused the map update")
        return Written()

    def flows(self, timeout: float, *, follow: bool) -> Iterator[Flow]:
        return iter(())

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[AgentRunner, Kernel, str, Path]]:
    kernel = Kernel()
    agent = NodeAgent(NodeFacts("node-a", "meshcore/test", tmp_path / "state"), load_balancer=kernel, policy=kernel,
                      adapters=[])
    config = tmp_path / "config"
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runner = AgentRunner(agent, ManifestFiles([config]), poll=0.05, metrics_address=f"127.0.0.1:{port}")
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while runner.endpoint.address is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runner.endpoint.address is not None
    host, port = runner.endpoint.address
    yield runner, kernel, f"http://{host}:{port}", config
    stop.set()
    thread.join(timeout=5)


def wait_status(url: str, code: int, saying: str = "") -> str:
    """The body of the first answer with ``code`` whose body holds ``saying``."""
    deadline = time.monotonic() + 5
    answer = get(url)
    while (answer[0] != code or saying not in answer[1]) and time.monotonic() < deadline:
        time.sleep(0.05)
        answer = get(url)
    assert answer[0] == code and saying in answer[1], answer
    return answer[1]


def test_not_ready_until_a_generation_is_applied_then_ready(running: tuple[AgentRunner, Kernel, str, Path]) -> None:
    _, kernel, url, config = running
    why = wait_status(f"{url}/readyz", 503)
    assert "no generation applied yet" in why and "no such file or directory" in why
    assert get(f"{url}/healthz") == (200, "ok\n"), "alive while not ready"

    kernel.fail = True
    config.mkdir()
    (config / "web.yaml").write_text(SERVICE)
    why = wait_status(f"{url}/readyz", 503, "the kernel refused the map update")
    assert "no generation applied yet (kernel: " in why, "a failed generation is not ready"

    kernel.fail = False
    (config / "web.yaml").write_text(SERVICE.replace("10.96.0.10", "10.96.0.11"))
    assert wait_status(f"{url}/readyz", 200).startswith("ready: generation 2 applied")
    code, metrics = get(f"{url}/metrics")
    assert code == 200 and 'meshcore_applies_total{result="ok"} 1.0' in metrics
    assert get(f"{url}/other")[0] == 404


def test_ready_stays_once_applied_while_a_later_generation_fails(
        running: tuple[AgentRunner, Kernel, str, Path]) -> None:
    _, kernel, url, config = running
    config.mkdir()
    (config / "web.yaml").write_text(SERVICE)
    wait_status(f"{url}/readyz", 200)
    kernel.fail = True
    (config / "web.yaml").write_text(SERVICE.replace("10.96.0.10", "10.96.0.11"))
    wait_status(f"{url}/readyz", 200, "ready: generation 1 applied; generation 2 was not (kernel), the previous state keeps enforcing")
