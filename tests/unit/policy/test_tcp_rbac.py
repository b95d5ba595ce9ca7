"""Authorization on the node proxy's TCP listeners: network RBAC per filter chain.

A backend's kernel policy exempts the node proxy, so a TCP port handed to the proxy (for a
traffic policy, TLS passthrough by SNI) must check the backends' L3/L4 policies there.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from _tcp_support import DB, NS, ON_DB, TIMEOUT, db_listener_json, db_plan

from meshcore import model as m
from meshcore.compile import (
    Datapath,
    EnvoyRbac,
    Plan,
    RbacAction,
    RbacAny,
    RbacPolicy,
    RbacSourceIp,
)

API = m.Workload("api", NS, m.Identity(NS, "api"), addresses=("10.0.1.1",), labels={"app": "api"})
WORKER = m.Workload("worker", NS, m.Identity(NS, "worker"), addresses=("10.0.1.2",), labels={"app": "worker"})
INTRUDER = m.Workload("x", "evil", m.Identity("evil", "x"), addresses=("10.0.9.9",), labels={"app": "x"})
DB1 = m.Workload("db-1", NS, m.Identity(NS, "db"), addresses=("10.0.2.1",), labels={"app": "db", "role": "primary"})
DB2 = m.Workload("db-2", NS, m.Identity(NS, "db"), addresses=("10.0.2.2",), labels={"app": "db", "role": "replica"})


def _plan(policies: Sequence[m.AuthorizationPolicy] = (), backends: Sequence[m.Workload] = (DB1,),
          routes: Sequence[m.RouteTable] = (), traffic: Sequence[m.TrafficPolicy] = (TIMEOUT,),
          extra: Sequence[m.Service] = ()) -> Plan:
    return db_plan((API, WORKER, INTRUDER, DB1, DB2), policies, backends, routes, traffic, extra)


def _chain_rbac(plan: Plan) -> tuple[EnvoyRbac, ...]:
    (decision,) = [d for d in plan.decisions if d.service == DB]
    assert decision.datapath is Datapath.ENVOY, decision
    (listener,) = [x for x in plan.envoy.listeners if x.service == DB]
    (chain,) = listener.tcp
    return chain.rbac


def test_allow_by_principal_admits_that_service_accounts_addresses_only() -> None:
    allow = m.AuthorizationPolicy("api-only", NS, ON_DB, "ALLOW", [
        m.PolicyRule(sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/api"])])])
    plan = _plan([allow])
    assert _chain_rbac(plan) == (
        EnvoyRbac(RbacAction.ALLOW, (RbacPolicy("shop/api-only[0]", RbacSourceIp("10.0.1.1/32"), RbacAny()),)),)
    (chain,) = db_listener_json(plan)["filter_chains"]
    rbac, proxy = chain["filters"]
    assert proxy["name"] == "envoy.filters.network.tcp_proxy"
    assert rbac["typed_config"] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
        "stat_prefix": "shop.db.5432.default.allow.",
        "rules": {"action": "ALLOW", "policies": {"shop/api-only[0]": {
            "permissions": [{"any": True}],
            "principals": [{"direct_remote_ip": {"address_prefix": "10.0.1.1", "prefix_len": 32}}]}}},
    }
    # Each connection is logged, so a refusal shows as a flow naming the policy.
    assert db_listener_json(plan)["access_log"][0]["name"] == "envoy.access_loggers.tcp_grpc"


def test_deny_by_namespace_refuses_that_namespace_and_nothing_else() -> None:
    deny = m.AuthorizationPolicy("no-evil", NS, ON_DB, "DENY", [
        m.PolicyRule(sources=[m.PeerSelector(namespaces=["evil"])])])
    assert _chain_rbac(_plan([deny])) == (
        EnvoyRbac(RbacAction.DENY, (RbacPolicy("shop/no-evil[0]", RbacSourceIp("10.0.9.9/32"), RbacAny()),)),)


def test_deny_is_checked_before_allow() -> None:
    deny = m.AuthorizationPolicy("no-worker", NS, ON_DB, "DENY", [
        m.PolicyRule(sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/worker"])])])
    allow = m.AuthorizationPolicy("shop", NS, ON_DB, "ALLOW", [m.PolicyRule(sources=[m.PeerSelector(namespaces=[NS])])])
    filters = _chain_rbac(_plan([allow, deny]))
    assert [f.action for f in filters] == [RbacAction.DENY, RbacAction.ALLOW]
    names = [f["name"] for f in db_listener_json(_plan([allow, deny]))["filter_chains"][0]["filters"]]
    assert names == ["meshcore.rbac.deny", "meshcore.rbac.allow", "envoy.filters.network.tcp_proxy"]


def test_backends_selected_by_no_policy_allow_everyone() -> None:
    elsewhere = m.AuthorizationPolicy("api", NS, m.WorkloadSelector(NS, {"app": "api"}), "ALLOW", [m.PolicyRule()])
    plan = _plan([elsewhere])
    assert _chain_rbac(plan) == ()
    body = db_listener_json(plan)
    assert [f["name"] for f in body["filter_chains"][0]["filters"]] == ["envoy.filters.network.tcp_proxy"]
    assert "access_log" not in body


def test_allow_rule_with_http_fields_matches_no_connection() -> None:
    # As in Istio: HTTP attributes never match TCP traffic, so that rule allows nothing;
    # the other rule of the policy still applies.
    allow = m.AuthorizationPolicy("mixed", NS, ON_DB, "ALLOW", [
        m.PolicyRule(operations=[m.Operation(methods=["GET"])]),
        m.PolicyRule(sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/api"])],
                     conditions=[m.Condition("request.headers[x-user]", values=["bob"])]),
        m.PolicyRule(sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/worker"])]),
    ])
    assert _chain_rbac(_plan([allow])) == (
        EnvoyRbac(RbacAction.ALLOW, (RbacPolicy("shop/mixed[2]", RbacSourceIp("10.0.1.2/32"), RbacAny()),)),)
    only_http = m.AuthorizationPolicy("get", NS, ON_DB, "ALLOW", [m.PolicyRule(operations=[m.Operation(paths=["/x"])])])
    # An ALLOW filter without policies: every connection is refused.
    assert _chain_rbac(_plan([only_http])) == (EnvoyRbac(RbacAction.ALLOW, ()),)


def test_deny_rule_with_http_fields_applies_without_them() -> None:
    # As in Istio: for TCP traffic the HTTP-only fields of a DENY rule are ignored, so
    # the rule denies more, never less.
    deny = m.AuthorizationPolicy("no-get", NS, ON_DB, "DENY", [m.PolicyRule(
        sources=[m.PeerSelector(namespaces=["evil"], request_principals=["*"])],
        operations=[m.Operation(methods=["GET"])])])
    assert _chain_rbac(_plan([deny])) == (
        EnvoyRbac(RbacAction.DENY, (RbacPolicy("shop/no-get[0]", RbacSourceIp("10.0.9.9/32"), RbacAny()),)),)
    everyone = m.AuthorizationPolicy("no-post", NS, ON_DB, "DENY", [
        m.PolicyRule(operations=[m.Operation(methods=["POST"])])])
    assert _chain_rbac(_plan([everyone])) == (
        EnvoyRbac(RbacAction.DENY, (RbacPolicy("shop/no-post[0]", RbacAny(), RbacAny()),)),)


@pytest.mark.parametrize(("ports", "allowed"), [(["5432"], True), (["9999"], False)])
def test_port_rules_are_decided_for_the_backends_target_port(ports: list[str], allowed: bool) -> None:
    allow = m.AuthorizationPolicy("port", NS, ON_DB, "ALLOW", [
        m.PolicyRule(operations=[m.Operation(ports=[m.PortRange.single(int(p)) for p in ports])])])
    (rbac,) = _chain_rbac(_plan([allow]))
    assert [p.name for p in rbac.policies] == (["shop/port[0]"] if allowed else [])


def test_backends_governed_differently_keep_the_port_in_the_kernel() -> None:
    primary = m.AuthorizationPolicy("primary", NS, m.WorkloadSelector(NS, {"role": "primary"}), "ALLOW",
                                    [m.PolicyRule(sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/api"])])])
    plan = _plan([primary], backends=(DB1, DB2))
    (decision,) = plan.decisions
    assert decision.datapath is Datapath.EBPF
    assert "authorization policy shop/primary selects backend shop/db-1 but not shop/db-2" in decision.reason
    assert "the kernel keeps the port and enforces each backend's policy" in decision.reason
    assert not plan.envoy.listeners
    # The same policy on both backends: one check fits every destination, so the port is proxied.
    both = m.AuthorizationPolicy("both", NS, ON_DB, "ALLOW", [m.PolicyRule()])
    assert _chain_rbac(_plan([both], backends=(DB1, DB2)))[0].policies[0].name == "shop/both[0]"


def test_sni_chains_check_the_policies_of_the_service_they_send_to() -> None:
    # TLS passthrough by SNI: each chain forwards to another service, whose backends'
    # policies it carries.
    port = m.ServicePort(443, "TLS", "tls", backends=(m.Backend("10.0.2.1", 443, workload=DB1.ref),))
    other = m.Service("secure", NS, vips=("10.96.0.6",), ports=(
        m.ServicePort(443, "TLS", "tls", backends=(m.Backend("10.0.2.2", 443, workload=DB2.ref),)),))
    gateway = m.Service("edge", NS, vips=("10.96.0.7",), ports=(port,))
    table = m.RouteTable(gateway.ref, 443, "L4", tcp=[
        m.TcpRoute("replica", sni=["replica.example.com"], destinations=[m.Destination(other.ref, port=443)])])
    replica_only = m.AuthorizationPolicy("replica", NS, m.WorkloadSelector(NS, {"role": "replica"}), "ALLOW", [
        m.PolicyRule(sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/worker"])])])
    plan = _plan([replica_only], traffic=(), routes=[table], extra=[gateway, other])
    (listener,) = [x for x in plan.envoy.listeners if x.name == "shop/edge:443"]
    (chain,) = listener.tcp
    assert chain.sni == ("replica.example.com",)
    assert chain.rbac == (
        EnvoyRbac(RbacAction.ALLOW, (RbacPolicy("shop/replica[0]", RbacSourceIp("10.0.1.2/32"), RbacAny()),)),)
