"""Routes for some clients: which client addresses get which view of a listener."""

from __future__ import annotations

import attrs

from meshcore import model as m
from meshcore.compile import CompileOptions, compile_plan

NS = "shop"


def _workload(name: str, namespace: str, address: str, mode: str = "mesh") -> m.Workload:
    return m.Workload(name, namespace, m.Identity(namespace, name), addresses=(address,), proxy_mode=mode)


def _plan(*clients: m.Workload) -> m.Snapshot:
    web = m.Service("web", NS, vips=("10.96.0.1",), ports=(m.ServicePort(80, "HTTP", "http", backends=(
        m.Backend("10.0.0.1", 8080),)),))
    admin = m.Service("admin", NS, vips=("10.96.0.2",), ports=(m.ServicePort(80, "HTTP", "http", backends=(
        m.Backend("10.0.0.2", 8080),)),))
    table = m.RouteTable(web.ref, 80, "L7", http=(
        m.HttpRoute("ops", matches=[m.HttpMatch(clients=m.ClientMatch(namespaces=["ops"]))],
                    destinations=[m.Destination(admin.ref)]),
        m.HttpRoute("rest", destinations=[m.Destination(web.ref)]),
    ))
    namespaces = {c.namespace for c in clients} | {NS}
    return m.Snapshot(namespaces=tuple(m.Namespace(n) for n in sorted(namespaces)), services=(web, admin),
                      routes=(table,), workloads=clients)


def _views(snapshot: m.Snapshot) -> list[tuple[str, ...]]:
    plan = compile_plan(snapshot, "n1", CompileOptions(proxy_enabled=True, proxy_port_base=15001,
                                                       proxy_port_range=4))
    listener = plan.envoy.listener(f"{NS}/web:80")
    assert listener is not None
    return [v.sources for v in listener.client_views]


def test_a_client_of_the_namespace_gets_its_own_chain() -> None:
    assert _views(_plan(_workload("op", "ops", "10.1.0.5"), _workload("dev", "dev", "10.1.0.6"))) == [
        ("10.1.0.5/32",)]


def test_host_network_workloads_and_shared_addresses_get_what_outsiders_get() -> None:
    # Two host-network pods share the node's address: neither is told apart by it.
    assert _views(_plan(_workload("agent-a", "ops", "192.168.1.10", "none"),
                        _workload("agent-b", "dev", "192.168.1.10", "none"))) == []
    # Two mesh workloads at one address that would see different routes: nobody's view.
    assert _views(_plan(_workload("a", "ops", "10.1.0.7"), _workload("b", "dev", "10.1.0.7"))) == []


def test_only_the_nodes_own_workloads_are_told_apart() -> None:
    # A pod on another node connects to that node's proxy, never to this one.
    here = attrs.evolve(_workload("op", "ops", "10.1.0.5"), node="n1")
    there = attrs.evolve(_workload("op2", "ops", "10.2.0.5"), node="n2")
    assert _views(_plan(here, there)) == [("10.1.0.5/32",)]


def _tcp_chains(*routes: m.TcpRoute) -> list[tuple[tuple[str, ...], str, tuple[str, ...] | None]]:
    db = m.Service("db", NS, vips=("10.96.0.9",), ports=(m.ServicePort(443, "TLS", "tls", backends=(
        m.Backend("10.0.0.9", 443),)),))
    a = m.Service("a", NS, vips=("10.96.0.10",), ports=(m.ServicePort(443, "TLS", "tls", backends=(
        m.Backend("10.0.0.10", 443),)),))
    snap = m.Snapshot(namespaces=(m.Namespace(NS), m.Namespace("ops"), m.Namespace("dev")), services=(db, a),
                      routes=(m.RouteTable(db.ref, 443, "L4", tcp=routes),),
                      workloads=(_workload("op", "ops", "10.1.0.5"), _workload("dv", "dev", "10.1.0.6")))
    plan = compile_plan(snap, "n1", CompileOptions(proxy_enabled=True, proxy_port_base=15001, proxy_port_range=4))
    listener = plan.envoy.listener(f"{NS}/db:443")
    assert listener is not None
    return [(c.sni, c.clusters[0].cluster.split("/")[1], c.sources) for c in listener.tcp]


def test_a_name_limited_to_some_clients_is_served_to_the_others_by_the_later_catch_all() -> None:
    # Envoy picks the chains of a server name first and never falls back: the catch-all
    # route must also have a chain of that name for the clients the first route leaves.
    ops = m.ClientMatch(namespaces=["ops"])
    chains = _tcp_chains(m.TcpRoute("ops-x", sni=["x.example"], clients=ops, destinations=[m.Destination(
        m.ServiceRef(NS, "a"))]), m.TcpRoute("rest", destinations=[m.Destination(m.ServiceRef(NS, "db"))]))
    named = {(cluster, "10.1.0.5/32" in (sources or ())) for sni, cluster, sources in chains if sni == ("x.example",)}
    assert named == {("a:443", True), ("db:443", False)}
    assert [(cluster, sources) for sni, cluster, sources in chains if sni == ()] == [("db:443", None)]


def test_a_catch_all_for_some_clients_comes_first_for_every_name() -> None:
    ops = m.ClientMatch(namespaces=["ops"])
    chains = _tcp_chains(m.TcpRoute("ops-all", clients=ops, destinations=[m.Destination(m.ServiceRef(NS, "a"))]),
                         m.TcpRoute("x", sni=["x.example"], destinations=[m.Destination(m.ServiceRef(NS, "db"))]))
    # ops' clients keep going to a even with SNI x.example; the others with x.example go to db.
    assert ((("x.example",), "a:443", ("10.1.0.5/32",)) in chains
            and any(sni == ("x.example",) and cluster == "db:443" for sni, cluster, _ in chains))
