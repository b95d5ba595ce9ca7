"""Calls the kernel refused for mutual TLS become DROPPED flows naming the client pod and the destination."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from meshcore.agent import _refusals
from meshcore.agent._refusals import RefusalFlows
from meshcore.agent._sidecars import PodSandbox
from meshcore.datapath import TunnelRefusal
from meshcore.model import Direction, WorkloadRef
from meshcore.observe import Enforcer, FlowFilter, KernelNames, Layer, Verdict

CLIENT = WorkloadRef("shop", "client")
OTHER = WorkloadRef("shop", "other")
HOSTNET = WorkloadRef("kube-system", "hostnet")
HOSTNET_TOO = WorkloadRef("kube-system", "hostnet-too")
SERVER = WorkloadRef("shop", "strict")
NAMES = KernelNames(addresses={"10.244.1.5": str(CLIENT), "fd00::5": str(CLIENT), "10.244.1.6": str(OTHER),
                               "10.244.2.9": str(SERVER)}, clock_offset_ns=1_700_000_000 * 10**9)
SANDBOXES = {CLIENT: PodSandbox("pods/client", "pods/client/sidecar", "/run/netns/client"),
             OTHER: PodSandbox("pods/other", "pods/other/sidecar", "/run/netns/other"),
             HOSTNET: PodSandbox("pods/hostnet", "pods/hostnet/sidecar", "/run/netns/host"),
             HOSTNET_TOO: PodSandbox("pods/hostnet-too", "pods/hostnet-too/sidecar", "/run/netns/host")}
# cgroup ids of each pod's cgroup and the cgroups below it; network namespace cookies.
CGROUPS = {"pods/client": [100, 101], "pods/other": [200], "pods/hostnet": [300], "pods/hostnet-too": [400]}
COOKIES = {"/run/netns/client": 7, "/run/netns/other": 8, "/run/netns/host": 1}


@pytest.fixture(autouse=True)
def sandboxes_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_refusals, "_cgroup_ids", lambda box: CGROUPS.get(box.cgroup, []))
    monkeypatch.setattr(_refusals, "_netns_cookie", lambda box: COOKIES.get(box.netns))


def refusal(netns: int = 7, cgroup: int = 101, address: str = "10.244.2.9", **kw: object) -> TunnelRefusal:
    fields: dict[str, object] = dict(netns=netns, cgroup=cgroup, address=address, port=9001,
                                     protocol=socket.IPPROTO_UDP, reason="mtls-strict-udp", count=3,
                                     last_ns=5 * 10**9)
    fields.update(kw)
    return TunnelRefusal(**fields)  # type: ignore[arg-type]


def test_a_refused_udp_send_is_one_dropped_flow_with_its_count_naming_both_pods() -> None:
    (flow,) = RefusalFlows("node-1", lambda: None).flows([refusal()], NAMES, SANDBOXES)
    assert (flow.node, flow.layer, flow.verdict, flow.enforcer, flow.protocol, flow.direction) == (
        "node-1", Layer.L4, Verdict.DROPPED, Enforcer.KERNEL, "UDP", Direction.EGRESS)
    assert (flow.reason, flow.count, flow.summary) == ("mtls-strict-udp", 3, False)
    assert flow.source.workload == CLIENT and flow.source.address == "10.244.1.5"
    assert flow.destination.workload == SERVER and (flow.destination.address, flow.destination.port) == (
        "10.244.2.9", 9001)
    assert flow.time.timestamp() == 1_700_000_005
    assert FlowFilter(verdict="dropped", pod="client")(flow) and FlowFilter(pod="strict")(flow)
    assert str(flow).endswith("shop/client -> shop/strict:9001  UDP egress  DROPPED (mtls-strict-udp)  x3")


def test_the_client_is_named_by_cgroup_before_its_network_namespace() -> None:
    flows = RefusalFlows("node-1", lambda: None).flows(
        [refusal(netns=8, cgroup=100), refusal(netns=8, cgroup=999), refusal(netns=1, cgroup=999),
         refusal(netns=1, cgroup=300)], NAMES, SANDBOXES)
    # The cgroup wins; an unknown cgroup falls back to the namespace. A namespace that is
    # not one pod's alone (the host's, shared by two) names nobody, but the cgroup still does.
    assert [f.source.workload for f in flows] == [CLIENT, OTHER, None, HOSTNET]
    assert flows[2].source.name == "" and flows[2].destination.workload == SERVER


def test_a_bound_source_is_kept_and_an_unbound_one_is_the_pods_address_of_the_family() -> None:
    bound, v6 = RefusalFlows("node-1", lambda: None).flows(
        [refusal(source="10.244.1.5", source_port=5353), refusal(address="fd00::9", source_port=40000)],
        NAMES, SANDBOXES)
    assert (bound.source.address, bound.source.port) == ("10.244.1.5", 5353)
    assert (v6.source.address, v6.source.port) == ("fd00::5", 40000)
    assert v6.destination.workload is None and v6.destination.address == "fd00::9"


def test_every_reason_the_kernel_gives_is_explained_in_the_docs() -> None:
    from meshcore.datapath._tunnel import REFUSAL_REASONS

    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    mtls = docs[docs.index("## Mutual TLS"):docs.index("## Ports")]
    assert [r for r in REFUSAL_REASONS.values() if f"`{r}`" not in mtls] == []


def test_refusals_are_taken_only_once_the_steering_is_attached() -> None:
    class Log:
        def __init__(self) -> None:
            self.taken = 0

        def take(self) -> list[TunnelRefusal]:
            self.taken += 1
            return [refusal()] if self.taken == 1 else []

        def close(self) -> None:
            pass

    held: list[Log] = []
    flows = RefusalFlows("node-1", lambda: held[0] if held else None)  # type: ignore[arg-type,return-value]
    assert flows.take(NAMES, SANDBOXES) == []
    held.append(Log())
    assert [f.count for f in flows.take(NAMES, SANDBOXES)] == [3]
    assert flows.take(NAMES, SANDBOXES) == []
