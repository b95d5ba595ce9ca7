"""Authorization on the node proxy's TCP listeners, decided on accept by client prefixes.

Envoy's network RBAC only decides at a client's first byte, after the TCP proxy has
connected upstream; so each TCP filter chain matches only the client prefixes its
policies admit, and a connection from anywhere else matches no chain and is closed on
accept. These tests check the prefix sets: exactly what the chain's RBAC admits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from _tcp_support import DB, NS, ON_DB, PROXY_OPTIONS, db_listener_json, db_plan

from meshcore import model as m
from meshcore.compile import (
    Datapath,
    EnvoyRbac,
    Plan,
    RbacAction,
    RbacAny,
    RbacHeader,
    RbacPolicy,
    RbacSourceIp,
    TcpChain,
    compile_plan,
)
from meshcore.compile._envoy.sources import NotASourceSet, SourceSet, admitted_sources
from meshcore.proxy import LISTENER, build_resources

API = m.Workload("api", NS, m.Identity(NS, "api"), addresses=("10.0.1.1", "fd00::1:1"), labels={"app": "api"})
WORKER = m.Workload("worker", NS, m.Identity(NS, "worker"), addresses=("10.0.1.2", "fd00::1:2"),
                    labels={"app": "worker"})
INTRUDER = m.Workload("x", "evil", m.Identity("evil", "x"), addresses=("10.0.9.9", "fd00::9:9"), labels={"app": "x"})
DB1 = m.Workload("db-1", NS, m.Identity(NS, "db"), addresses=("10.0.2.1",), labels={"app": "db"})
DB2 = m.Workload("db-2", NS, m.Identity(NS, "db"), addresses=("10.0.2.2",), labels={"app": "db"})


def _plan(policies: Sequence[m.AuthorizationPolicy] = (), backends: Sequence[m.Workload] = (DB1,),
          routes: Sequence[m.RouteTable] = ()) -> Plan:
    return db_plan((API, WORKER, INTRUDER, DB1, DB2), policies, backends, routes)


def _chain(plan: Plan) -> TcpChain:
    (listener,) = [x for x in plan.envoy.listeners if x.service == DB]
    (chain,) = listener.tcp
    return chain


def _admits(sources: Sequence[str], address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == n.version and ip in n for n in map(ipaddress.ip_network, sources))


def test_allow_by_principal_admits_exactly_that_accounts_addresses() -> None:
    allow = m.AuthorizationPolicy("api-only", NS, ON_DB, "ALLOW", [
        m.PolicyRule(sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/api"])])])
    plan = _plan([allow])
    assert _chain(plan).sources == ("10.0.1.1/32", "fd00::1:1/128")
    (chain,) = db_listener_json(plan)["filter_chains"]
    assert chain["filter_chain_match"] == {"source_prefix_ranges": [
        {"address_prefix": "10.0.1.1", "prefix_len": 32}, {"address_prefix": "fd00::1:1", "prefix_len": 128}]}
    # The RBAC filter stays before the TCP proxy (it names the policy in the access log).
    assert [f["name"] for f in chain["filters"]] == ["meshcore.rbac.allow", "envoy.filters.network.tcp_proxy"]


def test_default_allow_minus_a_denied_namespace_leaves_holes() -> None:
    deny = m.AuthorizationPolicy("no-evil", NS, ON_DB, "DENY", [
        m.PolicyRule(sources=[m.PeerSelector(namespaces=["evil"])])])
    sources = _chain(_plan([deny])).sources
    assert sources is not None
    assert SourceSet.of(sources) == SourceSet.everyone() - SourceSet.of(["10.0.9.9/32", "fd00::9:9/128"])
    assert not _admits(sources, "10.0.9.9") and not _admits(sources, "fd00::9:9")
    for address in ("10.0.1.1", "10.0.9.8", "10.0.9.10", "192.0.2.1", "fd00::1:1", "2001:db8::1"):
        assert _admits(sources, address), address
    # One hole per address: the prefixes of the complement, one per bit of the address.
    assert len(sources) == 32 + 128


def test_ip_block_with_except() -> None:
    allow = m.AuthorizationPolicy("net", NS, ON_DB, "ALLOW", [m.PolicyRule(sources=[
        m.PeerSelector(ip_blocks=[m.IpBlock("10.0.0.0/16", ["10.0.1.0/24", "10.0.128.0/17"])])])])
    # As in the kernel, an ipBlock selects addresses outside the mesh: the workloads inside
    # it (db-1 10.0.2.1, db-2 10.0.2.2, x 10.0.9.9) are holes in the set.
    assert _chain(_plan([allow])).sources == (
        "10.0.0.0/24", "10.0.2.0/32", "10.0.2.3/32", "10.0.2.4/30", "10.0.2.8/29", "10.0.2.16/28", "10.0.2.32/27",
        "10.0.2.64/26", "10.0.2.128/25", "10.0.3.0/24", "10.0.4.0/22", "10.0.8.0/24", "10.0.9.0/29", "10.0.9.8/32",
        "10.0.9.10/31", "10.0.9.12/30", "10.0.9.16/28", "10.0.9.32/27", "10.0.9.64/26", "10.0.9.128/25",
        "10.0.10.0/23", "10.0.12.0/22", "10.0.16.0/20", "10.0.32.0/19", "10.0.64.0/18")


def test_not_ip_blocks_and_principals_combine_like_the_rbac() -> None:
    # The shop namespace; notIpBlocks exclude only outside addresses (as in the kernel), so
    # the worker, whose IPv4 address is 10.0.1.2, stays: a pod is always its workload identity.
    allow = m.AuthorizationPolicy("shop", NS, ON_DB, "ALLOW", [m.PolicyRule(sources=[
        m.PeerSelector(namespaces=[NS], not_ip_blocks=[m.IpBlock("10.0.1.2/32")])])])
    assert _chain(_plan([allow])).sources == (
        "10.0.1.1/32", "10.0.1.2/32", "10.0.2.1/32", "10.0.2.2/32", "fd00::1:1/128", "fd00::1:2/128")


def test_nobody_admitted_keeps_a_chain_that_matches_no_client() -> None:
    # An ALLOW rule with HTTP-only fields matches no TCP connection: the allowed set is empty.
    only_http = m.AuthorizationPolicy("get", NS, ON_DB, "ALLOW", [m.PolicyRule(operations=[m.Operation(paths=["/x"])])])
    plan = _plan([only_http])
    chain = _chain(plan)
    assert chain.sources == () and chain.rbac == (EnvoyRbac(RbacAction.ALLOW, ()),)
    body = db_listener_json(plan)
    (json_chain,) = body["filter_chains"]  # a listener needs a chain: it matches only unspecified addresses
    assert json_chain["filter_chain_match"] == {"source_prefix_ranges": [
        {"address_prefix": "0.0.0.0", "prefix_len": 32}, {"address_prefix": "::", "prefix_len": 128}]}
    assert body["access_log"][0]["name"] == "envoy.access_loggers.tcp_grpc"


def test_no_policy_matches_every_client() -> None:
    plan = _plan()
    assert _chain(plan).sources is None
    (chain,) = db_listener_json(plan)["filter_chains"]
    assert "filter_chain_match" not in chain


def test_sni_chains_combine_server_names_and_sources() -> None:
    edge = m.Service("edge", NS, vips=("10.96.0.7",), ports=(
        m.ServicePort(443, "TLS", "tls", backends=(m.Backend("10.0.2.1", 443, workload=DB1.ref),)),))
    table = m.RouteTable(edge.ref, 443, "L4", tcp=[
        m.TcpRoute("db", sni=["db.example.com"], destinations=[m.Destination(edge.ref)])])
    allow = m.AuthorizationPolicy("worker", NS, ON_DB, "ALLOW", [
        m.PolicyRule(sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/worker"])])])
    snap = m.Snapshot(namespaces=(m.Namespace(NS),), services=(edge,), workloads=(WORKER, DB1),
                      policies=(allow,), routes=(table,))
    plan = compile_plan(snap, "n1", PROXY_OPTIONS)
    (chain,) = build_resources(plan.envoy).of(LISTENER)["shop/edge:443"].body["filter_chains"]
    assert chain["filter_chain_match"] == {"server_names": ["db.example.com"], "source_prefix_ranges": [
        {"address_prefix": "10.0.1.2", "prefix_len": 32}, {"address_prefix": "fd00::1:2", "prefix_len": 128}]}


def test_destination_ip_holding_for_some_backends_keeps_the_port_in_the_kernel() -> None:
    allow = m.AuthorizationPolicy("to-one", NS, ON_DB, "ALLOW", [m.PolicyRule(
        sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/api"])],
        conditions=[m.Condition("destination.ip", values=["10.0.2.1"])])])
    plan = _plan([allow], backends=(DB1, DB2))
    (decision,) = plan.decisions
    assert decision.datapath is Datapath.EBPF
    assert "rule 0 of authorization policy shop/to-one has a destination.ip condition" in decision.reason
    assert not plan.envoy.listeners
    # Holding for every backend, it reduces to the rule's sources.
    assert _chain(_plan([allow], backends=(DB1,))).sources == ("10.0.1.1/32", "fd00::1:1/128")


def test_admitted_sources_semantics() -> None:
    allow = EnvoyRbac(RbacAction.ALLOW, (RbacPolicy("a", RbacSourceIp("10.0.0.0/8"), RbacAny()),))
    deny = EnvoyRbac(RbacAction.DENY, (RbacPolicy("d", RbacSourceIp("10.1.0.0/16"), RbacAny()),))
    audit = EnvoyRbac(RbacAction.LOG, (RbacPolicy("l", RbacSourceIp("10.2.0.0/16"), RbacAny()),))
    assert admitted_sources([audit]).is_everyone
    assert admitted_sources([deny, allow]).cidrs() == (
        "10.0.0.0/16", "10.2.0.0/15", "10.4.0.0/14", "10.8.0.0/13", "10.16.0.0/12", "10.32.0.0/11",
        "10.64.0.0/10", "10.128.0.0/9")
    assert admitted_sources([EnvoyRbac(RbacAction.ALLOW, ())]).cidrs() == ()
    with pytest.raises(NotASourceSet, match="RBAC policy h"):
        admitted_sources([EnvoyRbac(RbacAction.ALLOW, (
            RbacPolicy("h", RbacAny(), RbacHeader(":method", m.StringMatch(m.MatchKind.EXACT, "GET"))),))])

