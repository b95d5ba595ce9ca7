"""Generations as changes: the agent applies what changed, with the result of applying everything.

Fake enforcers record what they were told; the kernel ones are driven over fakes of
the datapath objects they wrap (tests/datapath drives them against the real kernel).
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from meshcore.agent import AgentRunner, Changes, KernelLoadBalancer, KernelPolicy, NodeAgent, NodeFacts, Update
from meshcore.compile import BpfDiff, BpfPlan, PolicyPlan, diff_bpf
from meshcore.kube import KubeObject, make_object
from meshcore.model import WorkloadRef
from meshcore_gateway import adapter as gateway

SHOP = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}


def service(name: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def endpoint_slice(name: str, for_service: str, *addresses: str) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "-".join(addresses),
                         "labels": {"kubernetes.io/service-name": for_service}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses]}


def objects(*bodies: dict[str, Any]) -> list[KubeObject]:
    return [make_object(copy.deepcopy(b), file="node.yaml", line=10 * i + 1,
                        cluster_scoped=b["kind"] == "Namespace") for i, b in enumerate(bodies)]


CLUSTER = [SHOP, service("web", "10.96.0.10"), endpoint_slice("web-1", "web", "10.1.0.1"),
           service("api", "10.96.0.11"), endpoint_slice("api-1", "api", "10.1.0.2")]


@attrs.define
class Written:
    what: str
    changed: bool = True

    def summary(self) -> str:
        return self.what


@attrs.define
class ChangingLB:
    """Records whole plans and the changes it is told."""

    applied: list[BpfPlan] = attrs.field(factory=list)
    told: list[tuple[BpfPlan, BpfPlan, BpfDiff]] = attrs.field(factory=list)

    def apply(self, plan: BpfPlan) -> Written:
        self.applied.append(plan)
        return Written(f"{len(plan.services)} frontends")

    def apply_change(self, plan: BpfPlan, since: BpfPlan, diff: BpfDiff) -> Written:
        self.told.append((plan, since, diff))
        return Written(f"{len(diff.changed)} changed")

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


@attrs.define
class Policy:
    applied: list[PolicyPlan] = attrs.field(factory=list)
    attached: list[dict[WorkloadRef, str] | None] = attrs.field(factory=list)

    def apply(self, plan: PolicyPlan, interfaces: Mapping[WorkloadRef, str]) -> Written:
        self.applied.append(plan)
        self.attached.append(None if interfaces is None else dict(interfaces))
        return Written("policy")

    def flows(self, timeout: float, *, follow: bool) -> Iterator[object]:
        return iter(())

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


@pytest.fixture
def facts(tmp_path: Path) -> NodeFacts:
    return NodeFacts("node-a", "meshcore/test", tmp_path, ipv4="10.244.0.1")


def agent_for(facts: NodeFacts) -> tuple[NodeAgent, ChangingLB, Policy]:
    lb, policy = ChangingLB(), Policy()
    return NodeAgent(facts, load_balancer=lb, policy=policy, adapters=[gateway], write_reports=False), lb, policy


def whole_plan(facts: NodeFacts, bodies: list[dict[str, Any]]) -> BpfPlan:
    """What an agent that never saw an earlier generation applies for ``bodies``."""
    agent, lb, _ = agent_for(facts)
    assert agent.apply_objects(objects(*bodies)).applied
    [plan] = lb.applied
    return plan


def test_an_endpoint_change_is_written_as_its_frontend_alone(facts: NodeFacts) -> None:
    agent, lb, policy = agent_for(facts)
    first = agent.apply_objects(objects(*CLUSTER))
    assert first.applied and len(lb.applied) == 1 and first.scope == "whole"
    changed = objects(endpoint_slice("web-1", "web", "10.1.0.1", "10.1.0.3"))
    changed[0] = attrs.evolve(changed[0], source=attrs.evolve(changed[0].source, line=21))  # where web-1 is read
    report = agent.apply_changes(changed)
    assert report.applied and report.changes[0] == "kernel 1 changed"
    assert report.scope == "1 service" and "applied (1 service)" in report.summary
    [(plan, since, diff)] = lb.told
    assert since is lb.applied[0]
    assert [(s.service.name, [b.address for b in s.backends]) for s in diff.changed] == [
        ("web", ["10.1.0.1", "10.1.0.3"])]
    assert diff == diff_bpf(since, plan)
    after = [*CLUSTER[:2], endpoint_slice("web-1", "web", "10.1.0.1", "10.1.0.3"), *CLUSTER[3:]]
    assert plan == whole_plan(facts, after)
    assert policy.applied[0] is policy.applied[1], "the policy plan is reused as it is"


def test_a_full_list_is_applied_as_the_change_it_makes(facts: NodeFacts) -> None:
    agent, lb, _ = agent_for(facts)
    agent.apply_objects(objects(*CLUSTER))
    after = [*CLUSTER[:4], endpoint_slice("api-1", "api", "10.1.0.4")]
    report = agent.apply_objects(objects(*after))
    assert report.applied
    [(plan, _, diff)] = lb.told
    assert [s.service.name for s in diff.changed] == ["api"]
    assert plan == whole_plan(facts, after)
    assert agent.apply_objects(objects(*after)).changes[0] == "kernel 0 changed", "nothing changed, nothing written"


def test_a_change_beyond_endpoints_applies_the_whole_plan(facts: NodeFacts) -> None:
    agent, lb, _ = agent_for(facts)
    agent.apply_objects(objects(*CLUSTER))
    report = agent.apply_changes(objects(service("api", "10.96.0.12")), [])
    assert report.applied and not lb.told and report.scope == "whole"
    assert lb.applied[-1] == whole_plan(facts, [*CLUSTER[:3], service("api", "10.96.0.12"), CLUSTER[4]])
    removed = agent.apply_changes(deleted=[("discovery.k8s.io/v1", "EndpointSlice", "shop", "web-1")])
    assert removed.applied
    [(plan, _, diff)] = lb.told
    assert [(s.service.name, s.backends) for s in diff.changed] == [("web", ())]


def test_a_node_label_change_compiles_everything_for_the_new_labels(facts: NodeFacts) -> None:
    agent, lb, _ = agent_for(facts)
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "labels": {"zone": "a"}}}
    agent.apply_objects([*objects(*CLUSTER), make_object(copy.deepcopy(node), cluster_scoped=True)])
    node["metadata"]["labels"] = {"zone": "b"}
    report = agent.apply_changes([make_object(node, cluster_scoped=True)])
    # A Node is part of the model (its addresses are identities) and raw Envoy configs select
    # nodes by label: the change is translated and compiled again, as a whole.
    assert report.applied and report.scope == "whole" and not lb.told


def test_an_empty_change_with_new_interfaces_attaches_policy_to_them(facts: NodeFacts) -> None:
    agent, lb, policy = agent_for(facts)
    web = WorkloadRef("shop", "web-0")
    assert agent.apply_objects(objects(*CLUSTER), interfaces={}).applied
    report = agent.apply_changes(interfaces={web: "veth1"})  # a pod found on the node, no object changed
    assert report.applied and len(lb.applied) == 1
    assert policy.attached[-1] == {web: "veth1"}


@attrs.define
class ChangeSource:
    updates: list[Update]

    def poll(self) -> Update | None:
        return self.updates.pop(0) if self.updates else None


def test_the_runner_applies_a_source_that_hands_out_changes(facts: NodeFacts) -> None:
    agent, lb, _ = agent_for(facts)
    slice_change = objects(endpoint_slice("api-1", "api", "10.1.0.9"))
    source = ChangeSource([Update(1, tuple(objects(*CLUSTER))), Update(2, changes=Changes(tuple(slice_change)))])
    runner = AgentRunner(agent, source, metrics_address="off")
    assert runner.step() is not None
    report = runner.step()
    assert report is not None and report.applied and report.generation == 2
    [(_, _, diff)] = lb.told
    assert [b.address for s in diff.changed for b in s.backends] == ["10.1.0.9"]


def test_the_agents_process_keeps_a_whole_configuration_out_of_later_collections(facts: NodeFacts) -> None:
    agent, _, _ = agent_for(facts)
    source = ChangeSource([Update(1, tuple(objects(*CLUSTER))),
                           Update(2, changes=Changes(tuple(objects(endpoint_slice("api-1", "api", "10.1.0.9")))))])
    runner = AgentRunner(agent, source, metrics_address="off", settle_heap=True)
    gc.unfreeze()
    try:
        assert runner.step() is not None
        frozen = gc.get_freeze_count()
        assert frozen > 0, "what the whole generation built is out of the collector's passes"
        report = runner.step()
        assert report is not None and report.scope == "1 service"
        # A change settles nothing (it built little); what it replaced is freed even though frozen.
        assert gc.get_freeze_count() < frozen
    finally:
        gc.unfreeze()


@attrs.define
class FakeSocketLB:
    """What KernelLoadBalancer calls on a SocketLB."""

    calls: list[str] = attrs.field(factory=list)
    fail: bool = False

    def open(self) -> None:
        pass

    def apply(self, plan: BpfPlan) -> Written:
        self.calls.append(f"apply {len(plan.services)}")
        return Written("apply")

    def apply_diff(self, diff: BpfDiff) -> Written:
        if self.fail:
            self.fail = False
            raise OSError("write failed")
        self.calls.append(f"diff {len(diff.added)}/{len(diff.changed)}/{len(diff.removed)}")
        return Written("diff")


def plans() -> tuple[BpfPlan, BpfPlan, BpfPlan]:
    agent, lb, _ = agent_for(NodeFacts("node-a", "meshcore/test", Path("/nonexistent")))
    agent.apply_objects(objects(*CLUSTER))
    agent.apply_changes(objects(endpoint_slice("web-1", "web", "10.1.0.7")))
    agent.apply_changes(objects(endpoint_slice("web-1", "web", "10.1.0.8")))
    return lb.applied[0], lb.told[0][0], lb.told[1][0]


def test_the_kernel_lb_writes_a_told_change_only_over_the_plan_it_holds() -> None:
    one, two, three = plans()
    socket_lb = FakeSocketLB()
    kernel = KernelLoadBalancer(socket_lb)  # type: ignore[arg-type]
    kernel.apply(one)
    kernel.apply_change(two, one, diff_bpf(one, two))
    assert socket_lb.calls == ["apply 2", "diff 0/1/0"]
    # Told a change from a plan it does not hold (a generation it never applied): it diffs itself.
    kernel.apply_change(three, one, BpfDiff())
    assert socket_lb.calls[-1] == "diff 0/1/0"
    socket_lb.fail = True
    with pytest.raises(OSError):
        kernel.apply_change(one, three, diff_bpf(three, one))
    kernel.apply_change(two, one, diff_bpf(one, two))
    assert socket_lb.calls[-1] == "apply 2", "after a failed write everything is reconciled"


@attrs.define
class FakeEnforcer:
    interfaces: dict[str, WorkloadRef] = attrs.field(factory=dict)
    written: int = 0

    def open(self) -> None:
        pass

    def apply(self, plan: PolicyPlan) -> Written:
        self.written += 1
        return Written("written")

    def attach(self, interface: str, ref: WorkloadRef) -> None:
        self.interfaces[interface] = ref

    def forget(self, ref: WorkloadRef) -> None:
        self.interfaces = {i: r for i, r in self.interfaces.items() if r != ref}


def test_the_kernel_policy_writes_nothing_for_the_plan_and_interfaces_it_applied_last() -> None:
    enforcer = FakeEnforcer()
    policy = KernelPolicy(enforcer)  # type: ignore[arg-type]
    plan, web = PolicyPlan(), {WorkloadRef("shop", "web-0"): "veth0"}
    policy.apply(plan, web)
    policy.apply(plan, web)
    assert enforcer.written == 1
    policy.apply(plan, {})
    policy.apply(PolicyPlan(), {})
    assert enforcer.written == 3, "other interfaces, or another plan, are applied"
