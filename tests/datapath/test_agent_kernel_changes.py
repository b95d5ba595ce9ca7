"""The node agent's endpoint changes against the real kernel: only the change is written, and
connections reach exactly the new backends."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from _datapath_support import PORT, V4, Clients
from meshcore.agent import KernelLoadBalancer, NodeAgent, NodeFacts
from meshcore.compile import BpfPlan, PolicyPlan
from meshcore.datapath import ApplyReport, SocketLB
from meshcore.kube import KubeObject, make_object
from meshcore.model import WorkloadRef

pytestmark = pytest.mark.root

VIP = "10.96.78.10"


def objects(*backends: str) -> list[KubeObject]:
    bodies: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "test"},
         "spec": {"clusterIP": VIP, "ports": [{"name": "http", "port": 80, "targetPort": PORT}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1", "namespace": "test", "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
         "endpoints": [{"addresses": [V4[b]], "conditions": {"ready": True}} for b in backends]},
    ]
    return [make_object(b, file="web.yaml", line=1 + 10 * i) for i, b in enumerate(bodies)]


@attrs.define
class Nothing:
    changed: bool = False

    def summary(self) -> str:
        return "nothing"


@attrs.define
class NoPolicy:
    """These tests have no pod interfaces to enforce policy on."""

    def apply(self, plan: PolicyPlan, interfaces: Mapping[WorkloadRef, str]) -> Nothing:
        return Nothing()

    def flows(self, timeout: float, *, follow: bool) -> Iterator[object]:
        return iter(())

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


def test_an_endpoint_change_reaches_the_kernel_as_that_frontend_alone(
        lb: SocketLB, clients: Clients, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = NodeAgent(NodeFacts("node-a", "meshcore/test", tmp_path), load_balancer=KernelLoadBalancer(lb),
                      policy=NoPolicy(), adapters=[], write_reports=False)
    assert agent.apply_objects(objects("b1")).applied
    assert clients.run({"op": "tcp_count", "host": VIP, "port": 80, "n": 10})["counts"] == {"b1": 10}

    whole: list[BpfPlan] = []
    full_apply = lb.apply

    def counted(plan: BpfPlan) -> ApplyReport:
        whole.append(plan)
        return full_apply(plan)

    monkeypatch.setattr(lb, "apply", counted)
    [changed] = [o for o in objects("b1", "b3") if o.kind == "EndpointSlice"]
    report = agent.apply_changes([changed])
    assert report.applied, report
    assert not whole, "the change was written as a diff, not as a whole plan"
    assert report.changes[0].startswith("kernel"), report.changes
    counts = clients.run({"op": "tcp_count", "host": VIP, "port": 80, "n": 40})["counts"]
    assert set(counts) == {"b1", "b3"}, counts
    monkeypatch.undo()
    recorder = _Recorder()
    fresh = NodeAgent(NodeFacts("node-b", "meshcore/test", tmp_path), load_balancer=recorder, policy=NoPolicy(),
                      adapters=[], write_reports=False)
    fresh.apply_objects(objects("b1", "b3"))
    assert not lb.apply(recorder.plans[-1]).changed, "the maps hold what a whole apply writes"


@attrs.define
class _Recorder:
    plans: list[BpfPlan] = attrs.field(factory=list)

    def apply(self, plan: BpfPlan) -> Nothing:
        self.plans.append(plan)
        return Nothing()

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass
