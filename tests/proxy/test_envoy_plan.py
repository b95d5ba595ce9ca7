"""Compile → EnvoyPlan → Envoy resources, without running Envoy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import pytest

from meshcore import model as m
from meshcore.compile import (
    RBAC_NEVER,
    CompileOptions,
    Datapath,
    EnvoyPlan,
    RbacAction,
    RbacAnd,
    RbacAny,
    RbacHeader,
    RbacNot,
    RbacOr,
    RbacPath,
    RbacSourceIp,
    compile_plan,
)
from meshcore.proxy import CLUSTER, LISTENER, ROUTE, ProxyConfigError, ProxySettings, build_resources

NS = "shop"
SRC = m.Source("HTTPRoute", NS, "web", file="routes.yaml", line=3)


def wl(name: str, address: str, ns: str = NS, sa: str | None = None, **labels: str) -> m.Workload:
    return m.Workload(name, ns, m.Identity(ns, sa or name), addresses=(address,), labels={"app": name, **labels})


def svc(name: str, *backends: m.Workload, port: int = 80, protocol: str = "HTTP", target: int = 8080,
        vip: str = "10.96.0.1") -> m.Service:
    return m.Service(name, NS, vips=(vip,), ports=(m.ServicePort(port, protocol, "http", backends=tuple(
        m.Backend(w.addresses[0], target, workload=w.ref) for w in backends)),))


def to(name: str, weight: int = 1, **kw: Any) -> m.Destination:
    return m.Destination(m.ServiceRef(NS, name), weight=weight, **kw)


def plan_for(services: Sequence[m.Service], routes: Sequence[m.RouteTable] = (), workloads: Sequence[m.Workload] = (),
             policies: Sequence[m.AuthorizationPolicy] = (), namespaces: Sequence[m.Namespace] = ()) -> Any:
    snap = m.Snapshot(namespaces=tuple(namespaces) or (m.Namespace(NS),), services=tuple(services),
                      routes=tuple(routes), workloads=tuple(workloads), policies=tuple(policies))
    return compile_plan(snap, "n1", CompileOptions(proxy_enabled=True, proxy_port_base=15001, proxy_port_range=1))


A, B, C = wl("a", "10.0.0.1", version="v1"), wl("b", "10.0.0.2", version="v2"), wl("c", "10.0.0.3")


def test_only_l7_ports_get_listeners_with_allocated_ports() -> None:
    web, api = svc("web", A, B), svc("api", C, vip="10.96.0.2")
    rt = m.RouteTable(web.ref, 80, "L7", http=[m.HttpRoute("r", matches=[m.HttpMatch(method="GET")], destinations=[to("web")])])
    plan = plan_for([web, api], [rt], [A, B, C])
    assert [(d.service.name, d.datapath) for d in plan.decisions] == [("api", Datapath.EBPF), ("web", Datapath.ENVOY)]
    assert [(x.name, x.proxy_port) for x in plan.envoy.listeners] == [("shop/web:80", 15001)]
    assert [s.proxy_port for s in plan.bpf.services if s.service == web.ref] == [15001]
    assert [c.name for c in plan.envoy.clusters] == ["shop/web:80"]
    (cluster,) = plan.envoy.clusters
    assert [(e.address, e.port, e.workload) for e in cluster.endpoints] == [("10.0.0.1", 8080, "shop/a"), ("10.0.0.2", 8080, "shop/b")]
    without = compile_plan(m.Snapshot(services=(web, api), routes=(rt,)), "n1", CompileOptions(proxy_enabled=False))
    assert without.envoy == EnvoyPlan() and not without.envoy
    assert without.decisions[1].reason == ("route 0 (r) matches on method GET; "
                                           "no node proxy is running, so L7 features are not applied")


def test_routes_expand_alternatives_and_resolve_destinations() -> None:
    web = svc("web", A, B)
    backend_svc = svc("backend", C, vip="10.96.0.3")
    route = m.HttpRoute(
        "split", source=SRC,
        matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/a")), m.HttpMatch(headers=[m.HeaderMatch("x-b", m.StringMatch("Exact", "1"))])],
        destinations=[to("web", 3, subset="v1", subset_labels={"version": "v1"}), to("backend", 1, port=80), to("web", 0)],
        mirrors=[m.Mirror(to("missing"), 25.0)],
    )
    rt = m.RouteTable(web.ref, 80, "L7", http=[route], source=SRC)
    plan = plan_for([web, backend_svc], [rt], [A, B, C])
    (rc,) = plan.envoy.route_configs
    routes = list(rc.routes())
    assert [r.name for r in routes] == ["shop/web:80/split", "shop/web:80/split"]
    assert routes[0].match.path == m.StringMatch("Prefix", "/a") and routes[1].match.headers[0].name == "x-b"
    assert [(c.cluster, c.weight) for c in routes[0].clusters] == [("shop/web:80/v1", 3), ("shop/backend:80", 1)]
    subset = plan.envoy.cluster("shop/web:80/v1")
    assert subset is not None and [e.workload for e in subset.endpoints] == ["shop/a"]
    assert [(x.cluster, x.percent) for x in routes[0].mirrors] == [("shop/missing:80", 25.0)]
    missing = plan.envoy.cluster("shop/missing:80")
    assert missing is not None and missing.endpoints == ()
    (warning,) = plan.envoy.warnings
    assert warning.code == "MC5104" and warning.source == SRC and "service shop/missing" in warning.message
    assert routes[0].origins[0].source == SRC


def test_virtual_hosts_from_hostnames_and_zero_weights() -> None:
    web = svc("web", A)
    named = m.RouteTable(web.ref, 80, "L7", hostnames=["a.example", "b.example"],
                         http=[m.HttpRoute("named", destinations=[to("web")], timeout_ms=100)])
    anyhost = m.RouteTable(web.ref, 80, "L7", http=[m.HttpRoute("zero", destinations=[to("web", 0)])])
    plan = plan_for([web], [named, anyhost], [A])
    (rc,) = plan.envoy.route_configs
    hosts = {v.domains: [r.name for r in v.routes] for v in rc.virtual_hosts}
    # Each table is complete for its hostnames; the table without hostnames is the catch-all.
    assert hosts == {("a.example", "b.example"): ["shop/web:80/named"], ("*",): ["shop/web:80/zero"]}
    zero = rc.virtual_hosts[-1].routes[0]
    assert zero.direct_response == m.DirectResponse(500, "no destination with a weight above 0\n")
    assert [w.code for w in plan.envoy.warnings] == ["MC5105"]


def test_l7_table_with_weights_only_stays_in_the_kernel() -> None:
    web, other = svc("web", A), svc("other", B, vip="10.96.0.9")
    rt = m.RouteTable(web.ref, 80, "L7", http=[m.HttpRoute("w", destinations=[to("web", 3), to("other", 1)])])
    plan = plan_for([web, other], [rt], [A, B])
    decision = next(d for d in plan.decisions if d.service == web.ref)
    assert decision.datapath is Datapath.EBPF and decision.reason == "routes only split traffic by weight at L4"
    (frontend,) = [s for s in plan.bpf.services if s.service == web.ref]
    assert [(b.address, b.weight) for b in frontend.backends] == [("10.0.0.1", 750), ("10.0.0.2", 250)]
    assert not plan.envoy


def test_sni_routes_become_filter_chains() -> None:
    tls = svc("tls", A, port=443, protocol="TLS")
    alt = svc("alt", B, port=443, protocol="TLS", vip="10.96.0.5")
    rt = m.RouteTable(tls.ref, 443, "L4", tcp=[
        m.TcpRoute("a", sni=["a.example"], destinations=[to("alt")]),
        m.TcpRoute("again", sni=["a.example"], destinations=[to("tls")]),  # unreachable: a.example is taken
        m.TcpRoute("rest", destinations=[to("tls", 1), to("alt", 1)]),
    ])
    plan = plan_for([tls, alt], [rt], [A, B])
    (listener,) = plan.envoy.listeners
    assert not listener.is_http and [(c.name, c.sni) for c in listener.tcp] == [
        ("shop/tls:443/a", ("a.example",)), ("shop/tls:443/rest", ())]
    body = build_resources(plan.envoy).of(LISTENER)["shop/tls:443"].body
    assert body["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    assert body["filter_chains"][0]["filter_chain_match"] == {"server_names": ["a.example"]}


def _rbac(policies: Sequence[m.AuthorizationPolicy], workloads: Sequence[m.Workload] | None = None,
          namespaces: Sequence[m.Namespace] = ()) -> Any:
    web = svc("web", A)
    plan = plan_for([web], [], workloads or [A, B, C], policies, namespaces)
    (listener,) = plan.envoy.listeners
    return listener.rbac, plan.envoy.warnings, plan.decisions[0]


SEL = m.WorkloadSelector(NS, {"app": "a"})


def test_policy_sources_become_peer_addresses() -> None:
    other_ns = wl("d", "10.1.0.4", ns="other", sa="robot")
    policy = m.AuthorizationPolicy("p", NS, SEL, "ALLOW", [m.PolicyRule(
        sources=[
            m.PeerSelector(principals=["cluster.local/ns/shop/sa/b"]),
            m.PeerSelector(namespace_labels={"team": "x"}, not_principals=["*/sa/robot-2"]),
            m.PeerSelector(ip_blocks=[m.IpBlock("192.168.0.0/16", except_=["192.168.1.0/24"])]),
        ],
        operations=[m.Operation(methods=["GET"], paths=["/api/*", "*.css", "/exact"], not_hosts=["admin.*"])],
    )])
    rbac, warnings, decision = _rbac([policy], [A, B, C, other_ns], [m.Namespace(NS), m.Namespace("other", {"team": "x"})])
    assert decision.reason == "authorization policy shop/p rule 0 matches on HTTP methods GET"
    ((action, (p,)),) = [(f.action, f.policies) for f in rbac]
    assert action is RbacAction.ALLOW and p.name == "shop/p[0]" and not warnings
    assert p.principal == RbacOr((
        RbacSourceIp("10.0.0.2/32"),
        RbacSourceIp("10.1.0.4/32"),
        RbacAnd((RbacSourceIp("192.168.0.0/16"), RbacNot(RbacSourceIp("192.168.1.0/24")))),
    ))
    assert p.permission == RbacAnd((
        RbacHeader(":method", m.StringMatch("Exact", "GET")),
        RbacOr((RbacPath(m.StringMatch("Prefix", "/api/")), RbacPath(m.StringMatch("Suffix", ".css")),
                RbacPath(m.StringMatch("Exact", "/exact")))),
        RbacNot(RbacHeader(":authority", m.StringMatch("RegularExpression", "(?i)admin\\..*"))),
    ))


def test_ports_are_decided_at_compile_time_and_allow_without_rules_refuses_all() -> None:
    other_port = m.AuthorizationPolicy("other-port", NS, SEL, "ALLOW", [m.PolicyRule(
        operations=[m.Operation(ports=[m.PortRange.single(9090)], methods=["GET"])])])
    nothing = m.AuthorizationPolicy("nothing", NS, SEL, "ALLOW")
    rbac, _, _ = _rbac([other_port, nothing])
    assert [(f.action, f.policies) for f in rbac] == [(RbacAction.ALLOW, ())]
    this_port = m.AuthorizationPolicy("this-port", NS, SEL, "DENY", [m.PolicyRule(
        operations=[m.Operation(ports=[m.PortRange(8000, 8100)], paths=["/admin"])])])
    rbac, _, _ = _rbac([this_port])
    ((deny, (p,)),) = [(f.action, f.policies) for f in rbac]
    assert deny is RbacAction.DENY and p.permission == RbacPath(m.StringMatch("Exact", "/admin"))
    assert p.principal == RbacAny()


def test_conditions_and_what_the_proxy_cannot_check() -> None:
    rules = [m.PolicyRule(conditions=[
        m.Condition("request.headers[X-User]", values=["alice", "bob*"]),
        m.Condition("source.ip", not_values=["10.9.0.0/16"]),
        m.Condition("destination.port", values=["8080"]),
    ])]
    allow = m.AuthorizationPolicy("cond", NS, SEL, "ALLOW", rules)
    unknown = m.AuthorizationPolicy("unknown", NS, SEL, "ALLOW", [m.PolicyRule(conditions=[m.Condition("experimental.x", ["1"])])])
    deny_unknown = m.AuthorizationPolicy("deny-unknown", NS, SEL, "DENY", [m.PolicyRule(
        operations=[m.Operation(paths=["/x"])], conditions=[m.Condition("experimental.x", ["1"])])])
    jwt = m.AuthorizationPolicy("jwt", NS, SEL, "ALLOW", [m.PolicyRule(sources=[m.PeerSelector(request_principals=["*"])])])
    rbac, warnings, _ = _rbac([allow, unknown, deny_unknown, jwt])
    deny, allow_filter = rbac
    assert [p.name for p in allow_filter.policies] == ["shop/cond[0]"]
    (cond,) = allow_filter.policies
    assert cond.permission == RbacOr((RbacHeader("x-user", m.StringMatch("Exact", "alice")),
                                      RbacHeader("x-user", m.StringMatch("Prefix", "bob"))))
    assert cond.principal == RbacNot(RbacSourceIp("10.9.0.0/16"))
    (d,) = deny.policies
    assert d.name == "shop/deny-unknown[0]" and d.permission == RbacPath(m.StringMatch("Exact", "/x"))
    assert sorted(w.code for w in warnings) == ["MC5101", "MC5101", "MC5103"]
    assert all(w.field.startswith("rules[0].") for w in warnings)


def test_policy_selecting_some_backends_is_flagged() -> None:
    web = svc("web", A, B)
    policy = m.AuthorizationPolicy("only-a", NS, SEL, "ALLOW", [m.PolicyRule(operations=[m.Operation(methods=["GET"])])])
    plan = plan_for([web], [], [A, B], [policy])
    assert [w.code for w in plan.envoy.warnings] == ["MC5102"]
    assert RBAC_NEVER == RbacNot(RbacAny())


# --- resources -------------------------------------------------------------------------


def _resources(route: m.HttpRoute, settings: ProxySettings | None = None) -> Any:
    web = svc("web", A, protocol="GRPC")
    plan = plan_for([web], [m.RouteTable(web.ref, 80, "L7", http=[route])], [A])
    return build_resources(plan.envoy, settings)


def test_route_json_covers_the_vocabulary() -> None:
    route = m.HttpRoute(
        "all", destinations=[to("web")],
        matches=[m.HttpMatch(path=m.StringMatch("RegularExpression", "/v[0-9]+/.*"), method="PUT",
                             headers=[m.HeaderMatch("x-a", m.StringMatch("Suffix", "z"), invert=True)],
                             query=[m.QueryMatch("q", m.StringMatch("Present"))],
                             authority=m.StringMatch("Exact", "web.shop"))],
        rewrite=m.Rewrite(host="h", path="/p"), timeout_ms=1500,
        retries=m.RetryPolicy(attempts=2, per_try_timeout_ms=300, retry_on=["connect-failure"], status_codes=[502]),
        fault=m.FaultInjection(delay_ms=100, delay_percent=12.5, abort_grpc_status=14, abort_percent=1),
        request_headers=m.HeaderModifier(set=[("x-s", "1")], remove=["x-r"]),
        cors=m.CorsPolicy(allow_origins=["*"], allow_credentials=True),
    )
    res = _resources(route, ProxySettings(listen_ipv4="10.244.0.1", listen_ipv6="fd00::1", access_log=False))
    (rc,) = res.of(ROUTE).values()
    (r,) = rc.body["virtual_hosts"][0]["routes"]
    assert r["match"] == {
        "safe_regex": {"regex": "/v[0-9]+/.*"},
        "headers": [{"name": "x-a", "string_match": {"suffix": "z"}, "invert_match": True},
                    {"name": ":method", "string_match": {"exact": "PUT"}},
                    {"name": ":authority", "string_match": {"exact": "web.shop"}}],
        "query_parameters": [{"name": "q", "present_match": True}],
    }
    action = r["route"]
    assert action["timeout"] == "1.5s" and action["host_rewrite_literal"] == "h"
    assert action["regex_rewrite"] == {"pattern": {"regex": "^.*$"}, "substitution": "/p"}
    assert action["retry_policy"]["retry_on"] == "connect-failure,retriable-status-codes"
    assert action["retry_policy"]["retriable_status_codes"] == [502] and action["retry_policy"]["per_try_timeout"] == "0.3s"
    fault = r["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["delay"]["percentage"] == {"numerator": 125000, "denominator": "MILLION"}
    assert fault["abort"] == {"grpc_status": 14, "percentage": {"numerator": 10000, "denominator": "MILLION"}}
    (listener,) = res.of(LISTENER).values()
    assert listener.body["address"]["socket_address"] == {"address": "10.244.0.1", "port_value": 15001}
    assert listener.body["additional_addresses"][0]["address"]["socket_address"]["address"] == "fd00::1"
    hcm = listener.body["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.cors", "envoy.filters.http.fault", "envoy.filters.http.router"]
    assert "access_log" not in hcm and listener.needs == ("shop/web:80",)
    (cluster,) = res.of(CLUSTER).values()
    assert "http2_protocol_options" in str(cluster.body["typed_extension_protocol_options"])


@pytest.mark.parametrize(("route", "message"), [
    (m.HttpRoute("r", redirect=m.Redirect(path="/x", status=300)), "redirect status 300"),
    (m.HttpRoute("r", destinations=[to("web")], rewrite=m.Rewrite(path="/a", prefix="/b")), "both a full path and a prefix"),
])
def test_unexpressible_routes_name_their_source(route: m.HttpRoute, message: str) -> None:
    with pytest.raises(ProxyConfigError, match=message) as raised:
        _resources(attrs.evolve(route, source=SRC))
    assert raised.value.origin is not None and raised.value.origin.source == SRC
    assert str(raised.value).startswith("routes.yaml:3 HTTPRoute shop/web: HTTP route 0 (r)")


def test_settings_need_an_address() -> None:
    with pytest.raises(ProxyConfigError, match="listen_ipv4 or listen_ipv6"):
        ProxySettings(listen_ipv4=None)


def test_http_policies_leave_non_http_ports_in_the_kernel() -> None:
    both = m.Service("db", NS, vips=("10.96.0.7",), ports=(
        m.ServicePort(80, "HTTP", "http", backends=(m.Backend("10.0.0.1", 8080, workload=A.ref),)),
        m.ServicePort(5432, "TCP", "pg", backends=(m.Backend("10.0.0.1", 5432, workload=A.ref),)),
        m.ServicePort(53, "UDP", "dns", backends=(m.Backend("10.0.0.1", 53, workload=A.ref),)),
    ))
    policy = m.AuthorizationPolicy("get", NS, SEL, "ALLOW", [m.PolicyRule(operations=[m.Operation(methods=["GET"])])])
    plan = plan_for([both], [], [A], [policy])
    got = {(d.port, d.datapath) for d in plan.decisions}
    assert got == {(80, Datapath.ENVOY), (5432, Datapath.EBPF), (53, Datapath.EBPF)}
    pg = next(d for d in plan.decisions if d.port == 5432)
    assert pg.reason == ("authorization policy shop/get rule 0 matches on HTTP methods GET, but the port speaks TCP, "
                         "not HTTP, so the node proxy cannot check it there (the kernel admits only the node "
                         "proxy for that rule, so it allows nothing on this port)")
    assert [x.name for x in plan.envoy.listeners] == ["shop/db:80"]


def test_destinations_sharing_a_cluster_add_up() -> None:
    web = svc("web", A)
    rt = m.RouteTable(web.ref, 80, "L7", http=[m.HttpRoute("r", matches=[m.HttpMatch(method="GET")],
                                                           destinations=[to("web", 1), to("web", 2)])])
    (route,) = plan_for([web], [rt], [A]).envoy.route_configs[0].routes()
    assert [(c.cluster, c.weight) for c in route.clusters] == [("shop/web:80", 3)]
