"""L3/L4 policy in the lab: a NetworkPolicy enforced on the pods' veths by the node agent."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _lab_support import connect, running_lab, write

from meshcore.lab import Lab

pytestmark = pytest.mark.root

APP = """
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  containers:
  - {name: web, image: meshcore/echo, args: ["--http", "8080"], ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: server}
spec:
  selector: {app: server}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  containers: [{name: main, image: busybox, command: ["sleep", "infinity"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: other, labels: {app: other}}
spec:
  containers: [{name: main, image: busybox, command: ["sleep", "infinity"]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-client}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}]
"""

@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("policy-lab")
    with running_lab([write(tmp, "app.yaml", APP)], name=f"tp{secrets.token_hex(4)}", timeout=30,
                     all_ready=True) as lab:
        yield lab


def test_network_policy_is_enforced_by_identity_and_port(lab: Lab) -> None:
    status = lab.status()
    server = next(p for p in status.pods if p.name == "server")
    vip = next(s for s in status.services if s.name == "server").cluster_ips[0]
    targets = [(a, 8080) for a in server.addresses] + [(vip, 80)]
    assert connect(lab, "client", targets) == ["ok"] * len(targets)
    assert connect(lab, "other", targets) == ["TimeoutError"] * len(targets)
    # Not selected by any policy: everyone reaches the client.
    client = next(p for p in status.pods if p.name == "client")
    assert connect(lab, "server", [(client.addresses[0], 9)]) == ["ConnectionRefusedError"]


def test_verdicts_reach_the_flow_log(lab: Lab) -> None:
    connect(lab, "other", [(next(p for p in lab.status().pods if p.name == "server").addresses[0], 8080)])
    path = Path(lab.dir) / "flows.jsonl"
    deadline = time.monotonic() + 5
    found = []
    while time.monotonic() < deadline and not found:
        lines = path.read_text().splitlines() if path.exists() else []
        found = [r["flow"] for r in map(json.loads, lines) if r.get("kind") == "l4"
                 and r["flow"]["src_pod"] == "default/other" and r["flow"]["verdict"] == "DROPPED"]
        time.sleep(0.2)
    assert found, "a dropped flow from other is logged"
    flow = found[-1]
    assert (flow["dst_pod"], flow["dst_port"], flow["reason"], flow["direction"]) == (
        "default/server", 8080, "default-deny", "ingress")
