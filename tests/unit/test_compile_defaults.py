"""Compile plans for a node running the node proxy unless told otherwise."""

from __future__ import annotations

import pytest

from meshcore import model as m
from meshcore.compile import CompileOptions, Datapath, compile_plan

DB = m.Workload("db", "a", m.Identity("a", "db"), addresses=("10.0.0.3",), labels={"app": "db"})


def _routed(vips: tuple[str, ...] = ("10.96.0.1",), assignment: str = "given") -> m.Snapshot:
    """A service whose HTTP port has a path route: a port only the node proxy serves as asked."""
    web = m.Service("web", "shop", vips=vips, ports=[m.ServicePort(80, "HTTP", "http")], vip_assignment=assignment)
    route = m.HttpRoute(matches=[m.HttpMatch(path=m.StringMatch(m.MatchKind.PREFIX, "/api"))],
                        destinations=[m.Destination(web.ref)])
    return m.Snapshot(services=[web], routes=[m.RouteTable(web.ref, 80, m.RouteKind.L7, http=[route])])


def test_an_l7_route_goes_to_the_node_proxy_by_default() -> None:
    plan = compile_plan(_routed())
    [decision] = plan.decisions
    assert decision.datapath is Datapath.ENVOY
    assert decision.reason == "route 0 (unnamed) matches on path Prefix:/api"
    [frontend] = plan.bpf.services
    assert frontend.proxy_port is not None
    assert [listener.proxy_port for listener in plan.envoy.listeners] == [frontend.proxy_port]


def test_without_the_node_proxy_the_decision_says_what_is_not_applied() -> None:
    plan = compile_plan(_routed(), options=CompileOptions(proxy_enabled=False))
    [decision] = plan.decisions
    assert decision.reason.endswith("no node proxy is running, so L7 features are not applied")
    assert [f.proxy_port for f in plan.bpf.services] == [None] and not plan.envoy.listeners


def _gated(assignment: str) -> str:
    """The decision on a JWT-gated port of a service without VIPs, ``assignment`` saying why it has none."""
    db = m.Service("db", "a", [], [m.ServicePort(80, "HTTP", "http", [m.Backend("10.0.0.3", 8080, workload=DB.ref)])],
                   vip_assignment=assignment)
    authn = m.RequestAuthentication("jwt", "a", m.WorkloadSelector("a", {"app": "db"}), [m.JwtRule("https://issuer.test")])
    [decision] = compile_plan(m.Snapshot(workloads=[DB], services=[db], request_authentications=[authn])).decisions
    return decision.reason


def test_a_gated_port_of_a_service_awaiting_its_clusterip_is_not_said_to_refuse() -> None:
    assert "refused" not in _gated("pending")
    headless = _gated("headless")
    assert "no virtual IP, so clients dial the pods directly" in headless and "refused" in headless


def test_only_a_service_with_given_addresses_has_vips() -> None:
    with pytest.raises(m.ModelError, match="vip_assignment: a pending service has no virtual IPs"):
        m.Service("web", "shop", vips=["10.96.0.1"], vip_assignment="pending")
