"""What the node proxy's authorization covers: every destination a listener sends to, each backend's ALLOW, clients' egress.

The kernel exempts the node proxy in both directions, so a proxied listener must check the
ingress policies of every workload its routes or mirrors may reach (not only its port's
backends), require a request to satisfy every backend's ALLOW policies (it decides before
it picks one), and apply the clients' egress policies towards those workloads — per route,
for what that route reaches, with the listener's filters (all of them) as the fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meshcore import model as m
from meshcore.compile import (
    CompileOptions,
    Datapath,
    EnvoyListener,
    EnvoyRbac,
    EnvoyRoute,
    Plan,
    RbacAction,
    RbacAny,
    RbacHeader,
    RbacOr,
    RbacPolicy,
    RbacSourceIp,
    compile_plan,
)
from meshcore.proxy import LISTENER, ROUTE, build_resources

SHOP, SECRET = "shop", "secret"


#: A route's configuration of a listener filter that does not run for it.
FILTER_OFF = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}

def wl(name: str, ns: str, address: str, **labels: str) -> m.Workload:
    return m.Workload(name, ns, m.Identity(ns, name), addresses=(address,), labels={"app": name, **labels})


X = wl("x", SHOP, "10.0.0.10")
Y = wl("y", SHOP, "10.0.0.11")
A = wl("a", SHOP, "10.0.0.1")
A1 = wl("a1", SHOP, "10.0.0.2", tier="a")
A2 = wl("a2", SHOP, "10.0.0.3", tier="a")
B = wl("b", SECRET, "10.0.1.1")
B2 = wl("b2", SECRET, "10.0.1.2")
S = wl("s", SECRET, "10.0.1.9")
WORKLOADS = (X, Y, A, A1, A2, B, B2, S)


def svc(name: str, ns: str, *backends: m.Workload, vip: str, protocol: str = "HTTP", port: int = 80,
        target: int = 8080) -> m.Service:
    return m.Service(name, ns, vips=(vip,), ports=(m.ServicePort(port, protocol, "p", backends=tuple(
        m.Backend(w.addresses[0], target, workload=w.ref) for w in backends)),))


SVC_A = svc("a", SHOP, A, vip="10.96.0.1")
SVC_B = svc("b", SECRET, B, vip="10.96.1.1")
#: The header route of shop/a:80 that sends to secret/b.
TO_B = m.RouteTable(SVC_A.ref, 80, "L7", http=[
    m.HttpRoute("to-b", matches=[m.HttpMatch(headers=[m.HeaderMatch("x-to", m.StringMatch("Exact", "b"))])],
                destinations=[m.Destination(SVC_B.ref, 80)]),
    m.HttpRoute("rest", destinations=[m.Destination(SVC_A.ref, 80)]),
])
ONLY_SECRET = m.AuthorizationPolicy("only-secret", SECRET, m.WorkloadSelector(SECRET, {"app": "b"}), "ALLOW", [
    m.PolicyRule(sources=[m.PeerSelector(namespaces=[SECRET])])])


def compiled(services: Sequence[m.Service], routes: Sequence[m.RouteTable] = (),
             policies: Sequence[m.AuthorizationPolicy] = (),
             authns: Sequence[m.RequestAuthentication] = (),
             traffic: Sequence[m.TrafficPolicy] = ()) -> Plan:
    snap = m.Snapshot(namespaces=(m.Namespace(SHOP), m.Namespace(SECRET)), workloads=WORKLOADS,
                      services=tuple(services), routes=tuple(routes), policies=tuple(policies),
                      request_authentications=tuple(authns), traffic_policies=tuple(traffic))
    return compile_plan(snap, "n1", CompileOptions(proxy_enabled=True, proxy_port_base=15001, proxy_port_range=8))


def listener(plan: Plan, name: str) -> EnvoyListener:
    found = plan.envoy.listener(name)
    assert found is not None, [x.name for x in plan.envoy.listeners]
    return found


SECRET_PEERS = RbacOr((RbacSourceIp("10.0.1.1/32"), RbacSourceIp("10.0.1.2/32"), RbacSourceIp("10.0.1.9/32")))


# --- 1. every destination of the listener's routes and mirrors -------------------------


def routes(plan: Plan, name: str) -> dict[str, EnvoyRoute]:
    """The routes of a listener's route configuration, by route name."""
    config = next(c for c in plan.envoy.route_configs if c.name == name)
    return {r.name: r for r in config.routes()}


def route_json(plan: Plan, listener_name: str, route_name: str) -> dict[str, Any]:
    body = build_resources(plan.envoy).of(ROUTE)[listener_name].body
    return next(r for v in body["virtual_hosts"] for r in v["routes"] if r["name"] == route_name)


def test_route_to_another_service_gets_that_services_policy() -> None:
    plan = compiled([SVC_A, SVC_B], [TO_B], [ONLY_SECRET])
    only_secret = (EnvoyRbac(RbacAction.ALLOW, (RbacPolicy("secret/only-secret[0]", SECRET_PEERS, RbacAny()),)),)
    # The listener's filters (the fallback) cover everything its routes may reach.
    assert listener(plan, "shop/a:80").rbac == only_secret
    # The route to b keeps them; the route to a (no policy) turns them off.
    found = routes(plan, "shop/a:80")
    assert found["shop/a:80/to-b"].rbac is None
    assert found["shop/a:80/rest"].rbac == ()
    assert "typed_per_filter_config" not in route_json(plan, "shop/a:80", "shop/a:80/to-b")
    # Not even created for the route's requests: a filter told to pass still costs per request.
    assert route_json(plan, "shop/a:80", "shop/a:80/rest")["typed_per_filter_config"] == {
        "meshcore.rbac.allow": FILTER_OFF}
    # Each route sends to backends all selected by the policy or none: nothing to flag.
    assert "MC5102" not in [w.code for w in plan.envoy.warnings]
    # b's own port is not proxied: the kernel checks its policy on the client's identity.
    assert plan.envoy.listener("secret/b:80") is None


def test_route_overrides_with_its_own_subset_of_the_listeners_filters() -> None:
    web = svc("web", SHOP, A1, A2, vip="10.96.0.5")
    only_x = m.AuthorizationPolicy("only-x", SHOP, m.WorkloadSelector(SHOP, {"app": "a1"}), "ALLOW", [
        m.PolicyRule(sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/x"])])])
    to_b = m.RouteTable(web.ref, 80, "L7", http=[
        m.HttpRoute("to-b", matches=[m.HttpMatch(headers=[m.HeaderMatch("x-to", m.StringMatch("Exact", "b"))])],
                    destinations=[m.Destination(SVC_B.ref, 80)]),
        m.HttpRoute("rest", destinations=[m.Destination(web.ref, 80)]),
    ])
    plan = compiled([web, SVC_B], [to_b], [only_x, ONLY_SECRET])
    allow_secret, allow_x = listener(plan, "shop/web:80").rbac
    found = routes(plan, "shop/web:80")
    assert found["shop/web:80/to-b"].rbac == (allow_secret,)
    assert found["shop/web:80/rest"].rbac == (allow_x,)
    # A route's filters take the listener's of the same action in order; the rest are off.
    per_filter = route_json(plan, "shop/web:80", "shop/web:80/rest")["typed_per_filter_config"]
    assert per_filter["meshcore.rbac.allow"]["rbac"]["rules"]["policies"].keys() == {"shop/only-x[0]"}
    assert per_filter["meshcore.rbac.allow.2"] == FILTER_OFF
    # only-x selects one of the two backends of the route to web: that route fails closed.
    (warning,) = [w for w in plan.envoy.warnings if w.code == "MC5102"]
    assert "only-x selects 1 of the 2 backends" in warning.message


def test_mirror_to_another_service_gets_that_services_policy() -> None:
    mirrored = m.RouteTable(SVC_A.ref, 80, "L7", http=[m.HttpRoute(
        "m", matches=[m.HttpMatch(method="GET")], destinations=[m.Destination(SVC_A.ref, 80)],
        mirrors=[m.Mirror(m.Destination(SVC_B.ref, 80), 100.0)])])
    plan = compiled([SVC_A, SVC_B], [mirrored], [ONLY_SECRET])
    (allow,) = listener(plan, "shop/a:80").rbac
    assert allow.action is RbacAction.ALLOW and [p.name for p in allow.policies] == ["secret/only-secret[0]"]


def test_route_to_a_service_with_request_authentication_gets_its_jwt_providers() -> None:
    authn = m.RequestAuthentication("tokens", SECRET, m.WorkloadSelector(SECRET, {"app": "b"}), jwt_rules=[
        m.JwtRule("https://issuer.test", jwks='{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}')])
    needs_token = m.AuthorizationPolicy("token", SECRET, m.WorkloadSelector(SECRET, {"app": "b"}), "ALLOW", [
        m.PolicyRule(sources=[m.PeerSelector(request_principals=["*"])])])
    plan = compiled([SVC_A, SVC_B], [TO_B], [needs_token], [authn])
    found = listener(plan, "shop/a:80")
    assert found.jwt is not None and [p.issuer for p in found.jwt.providers] == ["https://issuer.test"]
    (allow,) = found.rbac
    assert [p.name for p in allow.policies] == ["secret/token[0]"]
    assert "MC5103" not in [w.code for w in plan.envoy.warnings]
    # Tokens are validated only on the route to b: the route to a (no request
    # authentication selects a) turns the JWT filter off, and b's policy with it.
    by_name = routes(plan, "shop/a:80")
    assert (by_name["shop/a:80/to-b"].jwt, by_name["shop/a:80/to-b"].rbac) == (None, None)
    assert (by_name["shop/a:80/rest"].jwt, by_name["shop/a:80/rest"].rbac) == ((), ())
    assert route_json(plan, "shop/a:80", "shop/a:80/rest")["typed_per_filter_config"] == {
        "envoy.filters.http.jwt_authn": FILTER_OFF, "meshcore.rbac.allow": FILTER_OFF}
    assert "MC5109" not in [w.code for w in plan.envoy.warnings]


def test_route_validates_tokens_with_the_providers_of_what_it_reaches() -> None:
    def authn(name: str, ns: str, app: str, issuer: str) -> m.RequestAuthentication:
        return m.RequestAuthentication(name, ns, m.WorkloadSelector(ns, {"app": app}), jwt_rules=[
            m.JwtRule(issuer, jwks='{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}')])
    plan = compiled([SVC_A, SVC_B], [TO_B], [], [authn("a-tokens", SHOP, "a", "https://a.test"),
                                                 authn("b-tokens", SECRET, "b", "https://b.test")])
    by_name = routes(plan, "shop/a:80")
    assert by_name["shop/a:80/to-b"].jwt == ("secret/b-tokens[0]",)
    assert by_name["shop/a:80/rest"].jwt == ("shop/a-tokens[0]",)
    assert route_json(plan, "shop/a:80", "shop/a:80/to-b")["typed_per_filter_config"] == {
        "envoy.filters.http.jwt_authn": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
            "requirement_name": "secret/b-tokens[0]"}}
    http = build_resources(plan.envoy).of(LISTENER)["shop/a:80"].body["filter_chains"][0]["filters"][0]
    (jwt,) = [f for f in http["typed_config"]["http_filters"] if f["name"] == "envoy.filters.http.jwt_authn"]
    assert jwt["typed_config"]["requirement_map"] == {
        name: {"requires_any": {"requirements": [{"provider_name": name}, {"allow_missing": {}}]}}
        for name in ("secret/b-tokens[0]", "shop/a-tokens[0]")}


# --- 2. each backend's ALLOW policies must hold (intersection), DENYs are unioned -------


def test_different_backends_allow_policies_are_each_required() -> None:
    web = svc("web", SHOP, A1, A2, vip="10.96.0.5")
    only_x_get = m.AuthorizationPolicy("x-get", SHOP, m.WorkloadSelector(SHOP, {"app": "a1"}), "ALLOW", [
        m.PolicyRule(sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/x"])],
                     operations=[m.Operation(methods=["GET"])])])
    only_y = m.AuthorizationPolicy("y-any", SHOP, m.WorkloadSelector(SHOP, {"app": "a2"}), "ALLOW", [
        m.PolicyRule(sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/y"])])])
    deny_1 = m.AuthorizationPolicy("no-admin", SHOP, m.WorkloadSelector(SHOP, {"app": "a1"}), "DENY", [
        m.PolicyRule(operations=[m.Operation(paths=["/admin"])])])
    deny_2 = m.AuthorizationPolicy("no-debug", SHOP, m.WorkloadSelector(SHOP, {"app": "a2"}), "DENY", [
        m.PolicyRule(operations=[m.Operation(paths=["/debug"])])])
    plan = compiled([web], [], [only_x_get, only_y, deny_1, deny_2])
    deny, allow_1, allow_2 = listener(plan, "shop/web:80").rbac
    assert deny.action is RbacAction.DENY
    assert [p.name for p in deny.policies] == ["shop/no-admin[0]", "shop/no-debug[0]"]
    # y (anything) passes a2's filter but not a1's: nobody but x with GET gets through.
    assert allow_1 == EnvoyRbac(RbacAction.ALLOW, (RbacPolicy(
        "shop/x-get[0]", RbacSourceIp("10.0.0.10/32"), RbacHeader(":method", m.StringMatch("Exact", "GET"))),))
    assert allow_2 == EnvoyRbac(RbacAction.ALLOW, (RbacPolicy("shop/y-any[0]", RbacSourceIp("10.0.0.11/32"), RbacAny()),))
    warnings = [w for w in plan.envoy.warnings if w.code == "MC5102"]
    assert len(warnings) == 4 and all("fail closed" in w.message for w in warnings)
    filters = build_resources(plan.envoy).of(LISTENER)["shop/web:80"].body["filter_chains"][0]["filters"][0]
    names = [f["name"] for f in filters["typed_config"]["http_filters"]]
    assert names == ["meshcore.rbac.deny", "meshcore.rbac.allow", "meshcore.rbac.allow.2",
                     "envoy.filters.http.router"]


def test_backends_governed_alike_keep_one_allow_filter_and_a_backend_without_allow_adds_none() -> None:
    web = svc("web", SHOP, A1, A2, A, vip="10.96.0.5")
    tier = m.AuthorizationPolicy("tier", SHOP, m.WorkloadSelector(SHOP, {"tier": "a"}), "ALLOW", [
        m.PolicyRule(sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/x"])],
                     operations=[m.Operation(methods=["GET"])])])
    plan = compiled([web], [], [tier])
    (allow,) = listener(plan, "shop/web:80").rbac
    assert allow.action is RbacAction.ALLOW and [p.name for p in allow.policies] == ["shop/tier[0]"]


# --- 3. clients' egress policies ------------------------------------------------------


NO_SECRET = m.AuthorizationPolicy("no-secret", SHOP, m.WorkloadSelector(SHOP, {"app": "x"}), "DENY", [
    m.PolicyRule(sources=[m.PeerSelector(namespaces=[SECRET])])], direction="egress")


def test_egress_deny_refuses_the_client_through_a_route_to_the_denied_namespace() -> None:
    plan = compiled([SVC_A, SVC_B], [TO_B], [NO_SECRET])
    (deny,) = listener(plan, "shop/a:80").rbac
    assert deny == EnvoyRbac(RbacAction.DENY, (RbacPolicy("shop/no-secret[0]", RbacSourceIp("10.0.0.10/32"), RbacAny()),))
    assert deny.policies[0].origins[0].what == "rule 0 of egress authorization policy shop/no-secret"
    # Only on the route to the denied namespace: the route to a turns the filter off.
    assert routes(plan, "shop/a:80")["shop/a:80/to-b"].rbac is None
    assert routes(plan, "shop/a:80")["shop/a:80/rest"].rbac == ()


def test_egress_deny_comes_first_in_the_deny_filter_and_ignores_unrelated_listeners() -> None:
    ingress = m.AuthorizationPolicy("no-admin", SECRET, m.WorkloadSelector(SECRET, {"app": "b"}), "DENY", [
        m.PolicyRule(operations=[m.Operation(paths=["/admin"])])])
    only_a = m.RouteTable(SVC_A.ref, 80, "L7", http=[m.HttpRoute(
        "get", matches=[m.HttpMatch(method="GET")], destinations=[m.Destination(SVC_A.ref, 80)])])
    plan = compiled([SVC_A, SVC_B], [TO_B], [NO_SECRET, ingress])
    (deny,) = listener(plan, "shop/a:80").rbac
    assert [p.name for p in deny.policies] == ["shop/no-secret[0]", "secret/no-admin[0]"]
    # A listener that never sends to the secret namespace is not affected.
    assert listener(compiled([SVC_A, SVC_B], [only_a], [NO_SECRET]), "shop/a:80").rbac == ()


def test_egress_allow_without_a_rule_for_the_destination_refuses_the_client() -> None:
    y_to_shop = m.AuthorizationPolicy("y-shop-only", SHOP, m.WorkloadSelector(SHOP, {"app": "y"}), "ALLOW", [
        m.PolicyRule(sources=[m.PeerSelector(namespaces=[SHOP])])], direction="egress")
    plan = compiled([SVC_A, SVC_B], [TO_B], [y_to_shop])
    (deny,) = listener(plan, "shop/a:80").rbac
    assert deny == EnvoyRbac(RbacAction.DENY, (RbacPolicy("shop/y-shop-only", RbacSourceIp("10.0.0.11/32"), RbacAny()),))
    # Allowed on b's port only when a rule names that port.
    wrong_port = attrs_evolve_rules(y_to_shop, [m.PolicyRule(
        sources=[m.PeerSelector(namespaces=[SHOP, SECRET])], operations=[m.Operation(ports=[m.PortRange.single(9999)])])])
    assert [p.name for f in listener(compiled([SVC_A, SVC_B], [TO_B], [wrong_port]), "shop/a:80").rbac
            for p in f.policies] == ["shop/y-shop-only"]
    right_port = attrs_evolve_rules(y_to_shop, [m.PolicyRule(
        sources=[m.PeerSelector(namespaces=[SHOP, SECRET])], operations=[m.Operation(ports=[m.PortRange.single(8080)])])])
    assert listener(compiled([SVC_A, SVC_B], [TO_B], [right_port]), "shop/a:80").rbac == ()


def test_egress_rules_with_l7_parts_deny_without_them_and_do_not_allow() -> None:
    l7_deny = m.AuthorizationPolicy("no-secret-get", SHOP, m.WorkloadSelector(SHOP, {"app": "x"}), "DENY", [
        m.PolicyRule(sources=[m.PeerSelector(namespaces=[SECRET])], operations=[m.Operation(methods=["GET"])])],
        direction="egress")
    l7_allow = m.AuthorizationPolicy("y-get-only", SHOP, m.WorkloadSelector(SHOP, {"app": "y"}), "ALLOW", [
        m.PolicyRule(operations=[m.Operation(methods=["GET"])])], direction="egress")
    plan = compiled([SVC_A, SVC_B], [TO_B], [l7_deny, l7_allow])
    (deny,) = listener(plan, "shop/a:80").rbac
    assert [(p.name, p.principal) for p in deny.policies] == [
        ("shop/no-secret-get[0]", RbacSourceIp("10.0.0.10/32")), ("shop/y-get-only", RbacSourceIp("10.0.0.11/32"))]


def test_egress_refusal_for_any_one_destination_refuses_the_client() -> None:
    both = svc("both", SECRET, B, B2, vip="10.96.1.5")
    not_b2 = m.AuthorizationPolicy("not-b2", SHOP, m.WorkloadSelector(SHOP, {"app": "x"}), "DENY", [
        m.PolicyRule(sources=[m.PeerSelector(workload_labels={"app": "b2"})])], direction="egress")
    routed = m.RouteTable(both.ref, 80, "L7", http=[m.HttpRoute(
        "get", matches=[m.HttpMatch(method="GET")], destinations=[m.Destination(both.ref, 80)])])
    plan = compiled([both], [routed], [not_b2])
    (deny,) = listener(plan, "secret/both:80").rbac
    assert [(p.name, p.principal) for p in deny.policies] == [("shop/not-b2[0]", RbacSourceIp("10.0.0.10/32"))]


def test_tcp_chain_refuses_egress_denied_clients_on_accept() -> None:
    db = svc("db", SECRET, B, vip="10.96.1.7", protocol="TCP", port=5432, target=5432)
    timeout = m.TrafficPolicy(db.ref, connection_pool=m.ConnectionPool(connect_timeout_ms=500))
    plan = compiled([db], [], [NO_SECRET], traffic=[timeout])
    (decision,) = plan.decisions
    assert decision.datapath is Datapath.ENVOY, decision
    (chain,) = listener(plan, "secret/db:5432").tcp
    assert chain.rbac == (EnvoyRbac(RbacAction.DENY, (
        RbacPolicy("shop/no-secret[0]", RbacSourceIp("10.0.0.10/32"), RbacAny()),)),)
    assert chain.sources is not None and "10.0.0.10/32" not in chain.sources
    assert "10.0.0.11/32" in chain.sources and "10.0.0.8/31" in chain.sources and "::/0" in chain.sources


def attrs_evolve_rules(policy: m.AuthorizationPolicy, rules: Sequence[m.PolicyRule]) -> m.AuthorizationPolicy:
    return m.AuthorizationPolicy(policy.name, policy.namespace, policy.selector, policy.action, list(rules),
                                 direction=policy.direction)
