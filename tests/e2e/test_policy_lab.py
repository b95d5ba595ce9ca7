"""L3/L4 policy in the lab: a NetworkPolicy enforced on the pods' veths by the node agent."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
from _lab_support import connect, connect_once, logged, running_lab, write

from meshcore.lab import Lab
from meshcore.model import Direction, WorkloadRef
from meshcore.observe import Enforcer, Layer, Verdict

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


def test_verdicts_reach_the_flow_journal(lab: Lab) -> None:
    server = next(p for p in lab.status().pods if p.name == "server").addresses[0]
    started = time.time()
    outcome, source_port = connect_once(lab, "other", server, 8080)
    assert outcome == "TimeoutError", "the policy drops other's connection to the server"
    # Only this connection's flows: the earlier test's drops from other came from other ports.
    other = WorkloadRef("default", "other")
    flows = logged(lab, lambda f: f.layer is Layer.L4 and f.source.workload == other
                   and f.source.port == source_port and f.time.timestamp() >= started - 1, at_least=2)
    # Other is selected by no policy, so its side lets the connection out; the server's side drops it.
    assert {(f.direction, f.verdict, f.reason) for f in flows} == {
        (Direction.EGRESS, Verdict.FORWARDED, "no-policy"), (Direction.INGRESS, Verdict.DROPPED, "default-deny")}, flows
    for flow in flows:
        assert (flow.destination.workload, flow.destination.address, flow.destination.port, flow.protocol,
                flow.enforcer) == (WorkloadRef("default", "server"), server, 8080, "TCP", Enforcer.KERNEL), flow
    dropped = next(f for f in flows if f.verdict is Verdict.DROPPED)
    assert "default/server-from-client" in dropped.policy, dropped
    assert "app.yaml:" in dropped.policy_source, dropped
