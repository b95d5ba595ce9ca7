"""L3/L4 identity policy on pod veths, with real traffic between pod namespaces.

Topology (prefix ``mcpol-``): a node namespace with a bridge; pods a (front/client),
b (back/server) and c (other/other) each in a namespace with a veth whose host side is a
bridge port in the node namespace, where the enforcer attaches. Every pod serves TCP and
UDP echo on ports 80, 81 and 53, IPv4 and IPv6.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from meshcore.compile import PolicyPlan, compile_plan
from meshcore import linux
from meshcore.datapath import DatapathError, PolicyEnforcer
from meshcore.model import (
    AuthorizationPolicy,
    Identity,
    Namespace,
    Operation,
    PeerSelector,
    PolicyRule,
    PortRange,
    Snapshot,
    Workload,
    WorkloadRef,
    WorkloadSelector,
)
from meshcore.observe import Enforcer, Flow, Layer

pytestmark = pytest.mark.root

PEER = str(Path(__file__).with_name("_polpeer.py"))
HOST = "10.77.0.254"  # the node's address: the HOST identity
PODS = {"a": ("front", "client", 1), "b": ("back", "server", 2), "c": ("other", "other", 3)}


def v4(pod: str) -> str:
    return f"10.77.0.{PODS[pod][2]}"


def v6(pod: str) -> str:
    return f"fd77::{PODS[pod][2]}"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@attrs.define
class Topo:
    tag: str
    enforcer: PolicyEnforcer
    procs: list[subprocess.Popen[str]] = attrs.field(factory=list)

    def ns(self, pod: str) -> str:
        return f"mcpol-{self.tag}-{pod}"  # "n" is the node

    def probe(self, src: str, proto: str, host: str, port: int, bind: str | None = None) -> bool:
        cmd = ["ip", "netns", "exec", self.ns(src), sys.executable, PEER, "probe", proto, host, str(port)]
        out = subprocess.run([*cmd, *([bind] if bind else [])], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() == "ok"

    def flows(self) -> list[Flow]:
        return list(self.enforcer.flows(timeout=0.05))

    def apply(self, *policies: AuthorizationPolicy) -> PolicyPlan:
        plan = compile_plan(snapshot(*policies)).policy
        self.enforcer.apply(plan)
        self.flows()  # drain events of earlier tests
        return plan


def workloads() -> list[Workload]:
    return [
        Workload(p, ns, Identity(ns, "sa-" + app), (v4(p), v6(p)), {"app": app})
        for p, (ns, app, _) in PODS.items()
    ]


def snapshot(*policies: AuthorizationPolicy) -> Snapshot:
    namespaces = [Namespace(ns, {"team": ns}) for ns, _, _ in PODS.values()]
    return Snapshot(namespaces=namespaces, workloads=workloads(), policies=policies)


def allow_server(*rules: PolicyRule, name: str = "allow-client") -> AuthorizationPolicy:
    return AuthorizationPolicy(name, "back", WorkloadSelector("back", {"app": "server"}), "ALLOW", rules)


FROM_CLIENT = PeerSelector(workload_labels={"app": "client"}, namespaces=["front"])
WEB_AND_DNS = Operation(ports=[PortRange.single(80), PortRange.single(53, "UDP")])


@pytest.fixture(scope="module")
def topo() -> Iterator[Topo]:
    if os.geteuid() != 0:
        pytest.fail("the policy tests need root and the real kernel; run them as root")
    tag = secrets.token_hex(3)
    node = f"mcpol-{tag}-n"
    pin_root = linux.bpffs() / f"mcpol-{tag}"
    made: list[str] = []
    enforcer = PolicyEnforcer(f"mcpol-{tag}", pin_root, netns=node, host_addresses=(HOST,))
    t = Topo(tag, enforcer)
    try:
        sh("ip", "netns", "add", node)
        made.append(node)
        sh("ip", "-n", node, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", node, "link", "set", "br0", "up")
        sh("ip", "-n", node, "addr", "add", f"{HOST}/24", "dev", "br0")
        for pod in PODS:
            ns = t.ns(pod)
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", node, "link", "add", f"h{pod}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", node, "link", "set", f"h{pod}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{v4(pod)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "addr", "add", f"{v6(pod)}/64", "dev", "eth0", "nodad")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, PEER, "serve", v4(pod), v6(pod), "80", "81", "53"],
                stdout=subprocess.PIPE, text=True,
            )
            t.procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        enforcer.open()
        enforcer.apply(compile_plan(snapshot()).policy)
        for pod, (ns_name, _, _) in PODS.items():
            enforcer.attach(f"h{pod}", WorkloadRef(ns_name, pod))
        yield t
    finally:
        for proc in t.procs:
            proc.kill()
            proc.wait()
        try:
            enforcer.destroy()
        finally:
            for ns in reversed(made):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            leftover = list(pin_root.rglob("*")) if pin_root.exists() else []
            if pin_root.exists():
                for p in sorted(leftover, key=lambda p: len(p.parts), reverse=True):
                    p.unlink() if not p.is_dir() else p.rmdir()
                pin_root.rmdir()
            assert not leftover, f"pins left behind: {leftover}"


#: How ``find`` reads each condition from a flow.
_READ = {
    "src_address": lambda f: f.source.address, "dst_address": lambda f: f.destination.address,
    "dst_port": lambda f: f.destination.port, "dst_pod": lambda f: str(f.destination.workload or ""),
}


def find(flows: list[Flow], **want: object) -> Flow:
    """The first flow meeting every condition (``src_address``, ``dst_port``... or a Flow attribute)."""
    for f in flows:
        if all((_READ[k](f) if k in _READ else getattr(f, k)) == v for k, v in want.items()):
            assert f.layer is Layer.L4 and f.enforcer is Enforcer.KERNEL and f.node.startswith("mcpol-"), f
            return f
    raise AssertionError(f"no flow with {want} among {[f.to_data() for f in flows]}")


def test_no_policy_allows_everything(topo: Topo) -> None:
    topo.apply()
    assert topo.probe("c", "tcp", v4("b"), 81)
    flow = find(topo.flows(), src_address=v4("c"), dst_address=v4("b"), dst_port=81, direction="ingress")
    assert flow.verdict == "FORWARDED" and flow.reason == "no-policy"


def test_allow_by_identity_port_and_protocol(topo: Topo) -> None:
    plan = topo.apply(allow_server(PolicyRule(sources=[FROM_CLIENT], operations=[WEB_AND_DNS])))
    assert topo.probe("a", "tcp", v4("b"), 80), "client → server:80/TCP is allowed"
    assert topo.probe("a", "udp", v4("b"), 53), "client → server:53/UDP is allowed, replies pass"
    assert not topo.probe("a", "tcp", v4("b"), 81), "port 81 is allowed by no rule"
    assert not topo.probe("a", "tcp", v4("b"), 53), "53 is allowed for UDP only"
    assert not topo.probe("c", "tcp", v4("b"), 80), "other identity is not allowed"
    assert topo.probe("b", "tcp", v4("a"), 81), "the policy governs ingress of b only"
    flows = topo.flows()
    ok = find(flows, src_address=v4("a"), dst_port=80, protocol="TCP", direction="ingress", dst_pod="back/b")
    assert ok.verdict == "FORWARDED" and ok.reason == "policy-allowed"
    assert ok.policy.startswith("back/allow-client rule 0")
    server = plan.endpoint(WorkloadRef("back", "b"))
    client = plan.endpoint(WorkloadRef("front", "a"))
    assert server and client and (ok.source.identity, ok.destination.identity) == (client.identity, server.identity)
    assert (str(ok.source.workload), ok.source.namespace, ok.destination.namespace) == ("front/a", "front", "back")
    denied = find(flows, src_address=v4("a"), dst_port=81, direction="ingress")
    # Default deny is the ALLOW policy's: the flow names it.
    assert (denied.verdict, denied.reason, denied.policy) == (
        "DROPPED", "default-deny", "back/allow-client (no rule allows it)")
    find(flows, src_address=v4("c"), dst_port=80, verdict="DROPPED", reason="default-deny")
    find(flows, src_address=v4("a"), dst_port=53, protocol="UDP", verdict="FORWARDED")


def test_ipv6(topo: Topo) -> None:
    topo.apply(allow_server(PolicyRule(sources=[FROM_CLIENT], operations=[WEB_AND_DNS])))
    assert topo.probe("a", "tcp", v6("b"), 80)
    assert topo.probe("a", "udp", v6("b"), 53)
    assert not topo.probe("a", "tcp", v6("b"), 81)
    assert not topo.probe("c", "tcp", v6("b"), 80)
    flows = topo.flows()
    find(flows, src_address=v6("a"), dst_address=v6("b"), dst_port=80, verdict="FORWARDED")
    find(flows, src_address=v6("a"), dst_port=81, verdict="DROPPED", reason="default-deny")


def test_deny_wins_over_allow(topo: Topo) -> None:
    deny = AuthorizationPolicy("no-80", "back", WorkloadSelector("back", {"app": "server"}), "DENY",
                               [PolicyRule(operations=[Operation(ports=[PortRange.single(80)])])])
    topo.apply(allow_server(PolicyRule(sources=[FROM_CLIENT], operations=[WEB_AND_DNS])), deny)
    assert not topo.probe("a", "tcp", v4("b"), 80)
    assert topo.probe("a", "udp", v4("b"), 53)
    flow = find(topo.flows(), src_address=v4("a"), dst_port=80, verdict="DROPPED")
    assert flow.reason == "policy-denied" and flow.policy.startswith("back/no-80 rule 0 (DENY)")


def test_egress_direction(topo: Topo) -> None:
    egress = AuthorizationPolicy(
        "client-out", "front", WorkloadSelector("front", {"app": "client"}), "ALLOW",
        [PolicyRule(sources=[PeerSelector(namespace_labels={"team": "back"})],
                    operations=[Operation(ports=[PortRange.single(80)])])], direction="egress",
    )
    topo.apply(egress)
    assert topo.probe("a", "tcp", v4("b"), 80)
    assert not topo.probe("a", "tcp", v4("c"), 80), "egress to namespace other is not allowed"
    assert topo.probe("c", "tcp", v4("a"), 80), "ingress of the client is unaffected"
    flow = find(topo.flows(), src_address=v4("a"), dst_address=v4("c"), verdict="DROPPED")
    assert flow.direction == "egress" and flow.reason == "default-deny"


def test_node_is_exempt(topo: Topo) -> None:
    topo.apply(allow_server(name="nothing-allowed"))
    assert not topo.probe("a", "tcp", v4("b"), 80)
    assert topo.probe("n", "tcp", v4("b"), 81), "the node (and its proxy) always reach pods"
    flow = find(topo.flows(), src_address=HOST, dst_address=v4("b"))
    assert (flow.verdict, flow.reason, flow.direction) == ("FORWARDED", "from-host", "ingress")


def test_spoofed_source_dropped(topo: Topo) -> None:
    topo.apply()
    assert not topo.probe("a", "tcp", v4("b"), 80, bind="10.77.0.99")
    assert topo.probe("a", "tcp", v4("b"), 80)
    flow = find(topo.flows(), src_address="10.77.0.99", verdict="DROPPED")
    assert flow.reason == "spoofed-source" and flow.direction == "egress"


def test_allowed_flows_past_the_event_rate_are_counted_per_identity_pair_and_drops_still_reported(
        topo: Topo) -> None:
    plan = topo.apply(allow_server(PolicyRule(sources=[FROM_CLIENT], operations=[WEB_AND_DNS])))
    topo.enforcer.drain_sums()
    before = topo.enforcer.event_stats()
    topo.enforcer.set_event_rate(0)  # no allowed flow is an event: all are counted
    try:
        for _ in range(3):
            assert topo.probe("a", "tcp", v4("b"), 80)
        assert not topo.probe("c", "tcp", v4("b"), 80)
        flows = topo.flows()
        sums = topo.enforcer.decoder.decode_sums(topo.enforcer.drain_sums())
        after = topo.enforcer.event_stats()
    finally:
        topo.enforcer.set_event_rate(None)
    assert not [f for f in flows if f.verdict == "FORWARDED" and f.destination.port == 80], flows
    find(flows, src_address=v4("c"), dst_port=80, verdict="DROPPED", reason="default-deny")
    server = plan.endpoint(WorkloadRef("back", "b"))
    client = plan.endpoint(WorkloadRef("front", "a"))
    assert server and client
    into_server = [f for f in sums if f.direction == "ingress" and f.destination.port == 80]
    assert len(into_server) == 1, sums
    summary = into_server[0]
    assert summary.summary and summary.count == 3 and summary.verdict == "FORWARDED"
    assert (summary.source.identity, summary.source.namespace) == (client.identity, "front")
    assert summary.destination.workload == WorkloadRef("back", "b") and summary.reason == "policy-allowed"
    assert summary.policy.startswith("back/allow-client rule 0")
    assert after.sampled - before.sampled >= 6, "both veths counted each connection"
    assert after.lost == before.lost
    assert topo.enforcer.decoder.decode_sums(topo.enforcer.drain_sums()) == [], "a drain takes the counts out"
    # Back to every flow an event.
    assert topo.probe("a", "tcp", v4("b"), 80)
    find(topo.flows(), src_address=v4("a"), dst_port=80, verdict="FORWARDED", direction="ingress")


def test_change_keeps_established_connections(topo: Topo) -> None:
    topo.apply(allow_server(PolicyRule(sources=[FROM_CLIENT], operations=[WEB_AND_DNS])))
    hold = subprocess.Popen(
        ["ip", "netns", "exec", topo.ns("a"), sys.executable, PEER, "hold", v4("b"), "80"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert hold.stdin and hold.stdout and hold.stdout.readline().strip() == "connected"
        hold.stdin.write("one\n")
        hold.stdin.flush()
        assert hold.stdout.readline().strip() == "ok"
        # An ALLOW policy without rules: the server now accepts nothing new.
        topo.apply(allow_server(name="allow-client"))
        assert not topo.probe("a", "tcp", v4("b"), 80), "new connections follow the new policy"
        hold.stdin.write("two\n")
        hold.stdin.flush()
        assert hold.stdout.readline().strip() == "ok", "the established connection keeps working"
    finally:
        hold.kill()
        hold.wait()


def test_unknown_endpoint_fails_closed(topo: Topo) -> None:
    topo.apply()
    topo.enforcer.attach("hc", WorkloadRef("other", "not-in-plan"))
    try:
        assert not topo.probe("c", "tcp", v4("b"), 80)
        find(topo.flows(), src_address=v4("c"), verdict="DROPPED", reason="unknown-endpoint")
    finally:
        topo.enforcer.attach("hc", WorkloadRef("other", "c"))
        topo.apply()
    assert topo.probe("c", "tcp", v4("b"), 80)


def test_full_map_refused_keeps_previous_policy(topo: Topo) -> None:
    node = f"{topo.enforcer.node}-small"
    small = PolicyEnforcer(node, topo.enforcer.pin_dir.parent.parent, capacities={"pol_policy": 8})
    try:
        with small:
            plan = compile_plan(snapshot(allow_server(PolicyRule(sources=[FROM_CLIENT])))).policy
            assert 0 < len(plan.entries) <= 8
            small.apply(plan)
            before = small.counts()
            wide = allow_server(PolicyRule(operations=[Operation(ports=[PortRange(1001, 2000)])]))
            too_big = compile_plan(snapshot(wide)).policy
            assert len(too_big.entries) > 8
            with pytest.raises(DatapathError, match="holds 8; nothing was written"):
                small.apply(too_big)
            assert small.counts() == before
            assert small.plan is plan
    finally:
        small.destroy()


def test_restart_writes_nothing_and_keeps_enforcing(topo: Topo) -> None:
    plan = topo.apply(allow_server(PolicyRule(sources=[FROM_CLIENT], operations=[WEB_AND_DNS])))
    topo.enforcer.close()
    again = PolicyEnforcer(topo.enforcer.node, topo.enforcer.pin_dir.parent.parent, netns=topo.enforcer.netns,
                           host_addresses=(HOST,))
    topo.enforcer = again
    with again:
        assert not topo.probe("c", "tcp", v4("b"), 80), "enforcement survives the agent"
        for pod, (ns_name, _, _) in PODS.items():
            again.attach(f"h{pod}", WorkloadRef(ns_name, pod))
        assert topo.probe("a", "tcp", v4("b"), 80)
        assert not again.apply(plan).changed
        assert not topo.probe("c", "tcp", v4("b"), 80)
    again.open()


def test_a_restarted_agent_that_applies_before_attaching_adopts_the_interfaces(topo: Topo) -> None:
    plan = topo.apply(allow_server(PolicyRule(sources=[FROM_CLIENT], operations=[WEB_AND_DNS])))
    topo.enforcer.close()
    again = PolicyEnforcer(topo.enforcer.node, topo.enforcer.pin_dir.parent.parent, netns=topo.enforcer.netns,
                           host_addresses=(HOST,))
    topo.enforcer = again
    with again:
        # The new process applies first and attaches nothing (its source does not know the
        # interfaces): the earlier attachments must be kept, not left without their endpoints.
        report = again.apply(plan)
        assert not report.changed, f"nothing to rewrite: {report.summary()}"
        assert set(again.interfaces.values()) == {WorkloadRef(ns_name, pod) for pod, (ns_name, _, _) in PODS.items()}
        assert topo.probe("a", "tcp", v4("b"), 80), "the allowed client still gets through"
        assert not topo.probe("c", "tcp", v4("b"), 80), "and the others are still refused"
    again.open()
