"""The one Flow type: its JSON form, its text line, the filters `observe` applies, the metrics, and the
kernel's decoder producing it."""

from __future__ import annotations

import ctypes
import socket
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest

from meshcore.compile import compile_plan
from meshcore.datapath import FlowDecoder
from meshcore.datapath.maps._base import set_addr
from meshcore.datapath.maps.pol_events import Event
from meshcore.model import (
    AuthorizationPolicy,
    Direction,
    Identity,
    Namespace,
    Operation,
    PeerSelector,
    PolicyRule,
    PortRange,
    Snapshot,
    Source,
    Workload,
    WorkloadRef,
    WorkloadSelector,
)
from meshcore.observe import AgentMetrics, Enforcer, Flow, FlowFilter, L7Details, Layer, Peer, Verdict

WHEN = datetime(2026, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)
CLIENT = Peer("10.244.0.5", 40000, WorkloadRef("shop", "client"), "shop", 1001)
SERVER = Peer("10.244.0.9", 8080, WorkloadRef("shop", "web-1"), "shop", 1002)


def l4(verdict: Verdict = Verdict.DROPPED, reason: str = "default-deny", **kw: object) -> Flow:
    fields: dict[str, object] = dict(
        time=WHEN, node="node-a", layer=Layer.L4, verdict=verdict, enforcer=Enforcer.KERNEL, source=CLIENT,
        destination=SERVER, protocol="TCP", direction=Direction.INGRESS, reason=reason,
        policy="shop/web-allow (no rule allows it)", policy_source="policy.yaml:3 AuthorizationPolicy shop/web-allow")
    fields.update(kw)
    return Flow(**fields)  # type: ignore[arg-type]


def l7(**kw: object) -> Flow:
    fields: dict[str, object] = dict(
        time=WHEN, node="node-a", layer=Layer.L7, verdict=Verdict.FORWARDED, enforcer=Enforcer.PROXY,
        source=CLIENT, destination=SERVER, protocol="HTTP/1.1",
        l7=L7Details("GET", "/api", "web", 200, 3.25, "shop/web:80", "shop/web:80/0", "shop/web:80", ("URX",),
                     "via_upstream", 3, 120))
    fields.update(kw)
    return Flow(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("flow", [l4(), l4(Verdict.FORWARDED, "policy-allowed", direction=None), l7(),
                                  l7(destination=Peer(), verdict=Verdict.DROPPED, reason="policy-denied"),
                                  l7(mtls=True, peer_principal="spiffe://cluster.local/ns/shop/sa/client")])
def test_json_form_round_trips(flow: Flow) -> None:
    assert Flow.from_data(flow.to_data()) == flow


def test_json_form_is_the_flat_record_observe_prints() -> None:
    data = l4().to_data()
    assert (data["layer"], data["verdict"], data["reason"], data["direction"], data["enforcer"]) == (
        "l4", "DROPPED", "default-deny", "ingress", "kernel")
    assert (data["source"], data["sourceNamespace"], data["sourceIdentity"], data["sourceAddress"],
            data["sourcePort"]) == ("shop/client", "shop", 1001, "10.244.0.5", 40000)
    assert data["time"] == "2026-05-01T12:00:00.250000+00:00"
    assert (data["method"], data["status"], data["flags"]) == ("", 0, [])
    # A request no upstream answered is shown going to the service port it asked for.
    refused = l7(destination=Peer()).to_data()
    assert (refused["destination"], refused["destinationAddress"], refused["listener"]) == (
        "shop/web:80", "", "shop/web:80")
    assert l7().to_data()["latencyMs"] == 3.25


def test_from_data_refuses_what_is_not_a_flow() -> None:
    with pytest.raises(ValueError):
        Flow.from_data({**l4().to_data(), "verdict": "MAYBE"})
    with pytest.raises(KeyError):
        Flow.from_data({"verdict": "DROPPED"})


def test_text_line_shows_ends_verdict_and_policy() -> None:
    line = str(l4())
    assert "shop/client:40000 (ID:1001) -> shop/web-1:8080 (ID:1002)  TCP ingress  DROPPED (default-deny)" in line
    assert line.endswith("by shop/web-allow (no rule allows it) at policy.yaml:3 AuthorizationPolicy shop/web-allow")
    assert "FORWARDED  by" in str(l4(Verdict.FORWARDED, "policy-allowed")), "forwarded flows show no reason"
    request = str(l7())
    assert "HTTP/1.1 GET /api 200  3.2ms  FORWARDED [URX]" in request
    unknown = str(l7(source=Peer("fd00::5", 41000)))
    assert "[fd00::5]:41000 -> shop/web-1:8080" in unknown


def test_text_line_names_the_node_after_the_time_when_asked() -> None:
    flow = l4()
    time = f"{WHEN.astimezone():%H:%M:%S.%f}"[:-3]
    assert flow.line(node=True).startswith(f"{time}  node-a  shop/client:40000 (ID:1001) -> ")
    assert str(flow) == flow.line() == flow.line(node=True).replace("  node-a", "", 1)
    assert l7().line(node=True).startswith(f"{time}  node-a  shop/client:40000")


def test_a_mutually_authenticated_flow_names_its_peer_in_text_and_json() -> None:
    peer = "spiffe://cluster.local/ns/shop/sa/client"
    tunnelled = l7(protocol="TCP", mtls=True, peer_principal=peer)
    assert str(tunnelled).endswith(f"FORWARDED [URX]  mtls {peer}")
    assert (tunnelled.to_data()["mtls"], tunnelled.to_data()["peerPrincipal"]) == (True, peer)
    # Flows without it (every kernel verdict) say so in JSON and nothing in text.
    assert "mtls" not in str(l4()) and (l4().to_data()["mtls"], l4().to_data()["peerPrincipal"]) == (False, "")
    # Journals written before the fields existed read back as not mutually authenticated.
    old = {k: v for k, v in l7().to_data().items() if k not in ("mtls", "peerPrincipal")}
    assert Flow.from_data(old).mtls is False


def test_filters_combine() -> None:
    other = Peer("10.244.1.7", 5000, WorkloadRef("other", "intruder"), "other", 1003)
    flows = [l4(), l7(), l4(source=other, verdict=Verdict.FORWARDED, reason="no-policy"), l7(verdict=Verdict.AUDIT)]
    assert [f for f in flows if FlowFilter(pod="intruder")(f)] == [flows[2]]
    assert [f for f in flows if FlowFilter(pod="shop/client")(f)] == [flows[0], flows[1], flows[3]]
    assert [f for f in flows if FlowFilter(pod="10.244.1.7")(f)] == [flows[2]]
    assert [f for f in flows if FlowFilter(namespace="other")(f)] == [flows[2]]
    assert [f for f in flows if FlowFilter(verdict="dropped")(f)] == [flows[0]]
    assert [f for f in flows if FlowFilter(verdict="audit", layer="L7")(f)] == [flows[3]]
    assert [f for f in flows if FlowFilter(namespace="shop", layer="l4", verdict="forwarded")(f)] == [flows[2]]
    assert all(FlowFilter()(f) for f in flows)


def test_metrics_count_what_the_source_gives_at_each_scrape() -> None:
    metrics = AgentMetrics()
    pending = [l4(), l4(), l7(verdict=Verdict.DROPPED, reason="policy-denied", direction=None), l7()]
    metrics.count_from(lambda: [pending.pop() for _ in range(len(pending))])
    text = generate_latest(metrics.registry).decode()
    assert 'meshcore_flows_total{direction="ingress",layer="l4",verdict="dropped"} 2.0' in text
    assert 'meshcore_flows_total{direction="",layer="l7",verdict="forwarded"} 1.0' in text
    assert 'meshcore_drops_total{direction="ingress",reason="default-deny"} 2.0' in text
    assert 'meshcore_drops_total{direction="",reason="policy-denied"} 1.0' in text
    pending.append(l4())
    again = generate_latest(metrics.registry).decode()
    assert 'meshcore_flows_total{direction="ingress",layer="l4",verdict="dropped"} 3.0' in again


def test_kernel_decoder_resolves_workloads_identities_and_the_default_deny_policy() -> None:
    client = Workload("client", "shop", Identity("shop", "client"), ("10.244.0.5",), {"app": "client"})
    server = Workload("web-1", "shop", Identity("shop", "web"), ("10.244.0.9", "fd00::9"), {"app": "web"})
    allow = AuthorizationPolicy(
        "web-allow", "shop", WorkloadSelector("shop", {"app": "web"}), "ALLOW",
        [PolicyRule(sources=[PeerSelector(workload_labels={"app": "client"})],
                    operations=[Operation(ports=[PortRange.single(80)])])],
        source=Source("AuthorizationPolicy", "shop", "web-allow", "policy.yaml", 3))
    plan = compile_plan(Snapshot(namespaces=[Namespace("shop")], workloads=[client, server], policies=[allow])).policy
    decoder = FlowDecoder(plan, node="node-a")
    ids = {e.workload.name: e.identity for e in plan.endpoints}

    ev = Event(verdict=2, reason=4, direction=1, proto=socket.IPPROTO_TCP, src_identity=ids["client"],
               dst_identity=ids["web-1"], sport=socket.htons(40000), dport=socket.htons(8080), ts_ns=1)
    set_addr(ev.saddr, "10.244.0.5")
    set_addr(ev.daddr, "10.244.0.9")
    flow = decoder.decode(bytes(ev))
    assert (flow.layer, flow.enforcer, flow.node, flow.verdict, flow.reason, flow.direction, flow.protocol) == (
        Layer.L4, Enforcer.KERNEL, "node-a", Verdict.DROPPED, "default-deny", Direction.INGRESS, "TCP")
    assert flow.source == Peer("10.244.0.5", 40000, WorkloadRef("shop", "client"), "shop", ids["client"])
    assert flow.destination == Peer("10.244.0.9", 8080, WorkloadRef("shop", "web-1"), "shop", ids["web-1"])
    assert flow.policy == "shop/web-allow (no rule allows it)" and "policy.yaml:3" in flow.policy_source
    assert flow.l7 is None and flow.time.tzinfo is UTC

    with pytest.raises(ValueError, match="verdict 9"):
        decoder.decode(bytes(Event(verdict=9)))
    with pytest.raises(ValueError, match="bytes"):
        decoder.decode(bytes(ctypes.sizeof(Event) - 1))
