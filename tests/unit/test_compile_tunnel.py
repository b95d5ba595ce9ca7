"""Compile's tunnel plan: which destinations a node steers, which identities it needs, where STRICT gates."""

from __future__ import annotations

import json
from typing import Any

from meshcore.compile import CompileOptions, EnvoySecret, compile_plan, tunnel_sni
from meshcore.model import (
    Identity,
    Node,
    PeerAuthentication,
    PeerAuthMode,
    PortMode,
    Redacted,
    Snapshot,
    Workload,
    WorkloadSelector,
)
from meshcore.proxy import ProxySettings, build_resources
from meshcore.proxy._als import TUNNEL_CLUSTER_PREFIX as CLUSTER_PREFIX

NODES = (Node("node-1", addresses=("10.0.1.1",)), Node("node-2", addresses=("10.0.2.1",)))
MTLS = CompileOptions(mtls=True)


def _w(name: str, node: str, address: str, sa: str | None = None) -> Workload:
    return Workload(name, "default", Identity("default", sa or name), addresses=(address,), labels={"app": name},
                    node=node)


def _pa(name: str, mode: str, *, app: str | None = None, ports: dict[int, str] | None = None) -> PeerAuthentication:
    selector = WorkloadSelector("default", {"app": app} if app else {})
    return PeerAuthentication(name, "default", selector, mode,
                              [PortMode(p, m) for p, m in (ports or {}).items()])


def _snapshot(*pas: PeerAuthentication) -> Snapshot:
    return Snapshot(nodes=NODES, workloads=(_w("client", "node-1", "10.1.1.5"), _w("db", "node-2", "10.1.2.5"),
                                            _w("cache", "node-1", "10.1.1.6")),
                    peer_authentications=pas)


def _dests(snapshot: Snapshot, node: str = "node-1") -> dict[tuple[str, int], tuple[bool, bool]]:
    tunnel = compile_plan(snapshot, node, MTLS).tunnel
    assert tunnel is not None
    return {(d.address, d.port): (d.steer, d.strict) for d in tunnel.destinations}


def test_without_mutual_tls_there_is_no_tunnel_and_peer_authentication_gates_nothing() -> None:
    plan = compile_plan(_snapshot(_pa("db", "STRICT", app="db")), "node-2")
    assert plan.tunnel is None and not plan.envoy.needs_proxy
    assert not any(o.action == "MTLS-STRICT" for o in plan.policy.origins)


def test_meshed_workloads_on_other_nodes_are_steered_and_same_node_ones_stay_in_the_kernel() -> None:
    assert _dests(_snapshot()) == {("10.1.2.5", 0): (True, False)}  # PERMISSIVE by default
    tunnel = compile_plan(_snapshot(), "node-1", MTLS).tunnel
    assert tunnel is not None
    assert tunnel.spiffe_ids == ("spiffe://cluster.local/ns/default/sa/cache",
                                 "spiffe://cluster.local/ns/default/sa/client")
    assert {d.node_addresses for d in tunnel.destinations} == {("10.0.2.1",)}


def test_disable_is_never_steered_and_a_port_override_makes_an_exception_of_its_own() -> None:
    assert _dests(_snapshot(_pa("db", "DISABLE", app="db"))) == {}
    got = _dests(_snapshot(_pa("db", "PERMISSIVE", app="db", ports={5432: "DISABLE"})))
    assert got == {("10.1.2.5", 0): (True, False), ("10.1.2.5", 5432): (False, False)}


def test_strict_same_node_workloads_are_steered_too_and_the_most_specific_peer_authentication_wins() -> None:
    # Namespace-wide STRICT, but cache's own selector says PERMISSIVE.
    got = _dests(_snapshot(_pa("ns", "STRICT"), _pa("cache", "PERMISSIVE", app="cache")))
    assert got == {("10.1.2.5", 0): (True, True), ("10.1.1.5", 0): (True, True)}


def test_strict_ports_admit_only_the_node_proxy_in_the_kernel() -> None:
    plan = compile_plan(_snapshot(_pa("db", "PERMISSIVE", app="db", ports={5432: "STRICT"})), "node-2", MTLS)
    gate = next(o for o in plan.policy.origins if o.action == "MTLS-STRICT")
    assert gate.policy == "default/db"
    db = plan.policy.endpoint(_w("db", "node-2", "10.1.2.5").ref)
    assert db is not None
    denied = {(e.protocol, e.port, e.port_bits) for e in plan.policy.entries
              if e.endpoint == db.identity and e.policy_index == gate.index}
    assert denied == {(6, 5432, 16), (17, 5432, 16)}


def test_the_envoy_resources_present_the_clients_svid_and_accept_only_the_servers() -> None:
    plan = compile_plan(_snapshot(_pa("db", "STRICT", app="db")), "node-1", MTLS)
    client = "spiffe://cluster.local/ns/default/sa/client"
    db = "spiffe://cluster.local/ns/default/sa/db"
    secrets = (EnvoySecret(f"svid/{client}", "CHAIN", Redacted("KEY")),
               EnvoySecret("bundle/cluster.local@abc", "", Redacted(""), trusted_ca="CA"))
    resources = build_resources(plan.envoy.__class__(tunnel=plan.tunnel, secrets=secrets),
                                ProxySettings(listen_ipv4="10.0.1.1")).to_json()
    cluster = resources["Cluster"][f"tunnel|{client}|{db}|node-2"]
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == tunnel_sni(db)
    assert tls["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["name"] == f"svid/{client}"
    validation = tls["common_tls_context"]["combined_validation_context"]
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": db}}]
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "10.0.2.1", "port_value": 15008}}
    outbound = resources["Listener"]["tunnel_outbound"]
    chains = {c["name"]: c["filter_chain_match"] for c in outbound["filter_chains"]}
    # cache has no SVID here: its connections match no chain and are closed.
    assert list(chains) == [f"tunnel|{client}|{db}|node-2"]
    assert chains[f"tunnel|{client}|{db}|node-2"]["source_prefix_ranges"] == [
        {"address_prefix": "10.1.1.5", "prefix_len": 32}]
    inbound = resources["Listener"]["tunnel_inbound"]
    assert [c["name"] for c in inbound["filter_chains"]] == [client]
    downstream = inbound["filter_chains"][0]["transport_socket"]["typed_config"]
    assert downstream["require_client_certificate"] is True
    assert "KEY" not in json.dumps(resources)


def test_without_a_trust_bundle_no_identity_gets_a_chain() -> None:
    plan = compile_plan(_snapshot(), "node-1", MTLS)
    secrets = (EnvoySecret("svid/spiffe://cluster.local/ns/default/sa/client", "CHAIN", Redacted("KEY")),)
    resources = build_resources(plan.envoy.__class__(tunnel=plan.tunnel, secrets=secrets),
                                ProxySettings(listen_ipv4="10.0.1.1")).to_json()
    assert resources["Listener"]["tunnel_outbound"]["filter_chains"] == []
    assert resources["Listener"]["tunnel_inbound"]["filter_chains"] == []


def test_the_tunnel_applies_the_servers_kernel_ingress_policy_by_client_address_and_port() -> None:
    from meshcore.model import AuthorizationPolicy, Operation, PeerSelector, PolicyRule, PortRange

    allow = AuthorizationPolicy("db-from-client", "default", WorkloadSelector("default", {"app": "db"}), "ALLOW",
                                [PolicyRule(sources=[PeerSelector(principals=["cluster.local/ns/default/sa/client"])],
                                            operations=[Operation(ports=[PortRange(5000, 5999)])])])
    snapshot = Snapshot(nodes=NODES, workloads=_snapshot().workloads, policies=(allow,),
                        peer_authentications=(_pa("db", "STRICT", app="db"),))
    tunnel = compile_plan(snapshot, "node-2", MTLS).tunnel
    assert tunnel is not None
    db = next(w for w in tunnel.workloads if w.workload.name == "db")
    # The STRICT gate (only the proxy) is not the tunnel's to apply; the ALLOW policy is.
    assert db.deny == ()
    assert db.allow is not None and [(r.sources, r.first, r.last) for r in db.allow] == [(("10.1.1.5/32",), 5000, 5999)]


def test_port_regexes_match_exactly_their_range() -> None:
    import re

    from meshcore.proxy._xds_tunnel import port_regex

    for first, last in [(1, 65535), (80, 80), (999, 1000), (5000, 5999), (8080, 8095), (65530, 65535), (9, 10)]:
        pattern = re.compile(f"^({port_regex(first, last)})$")
        around = [*range(max(1, first - 20), first + 20), *range(max(1, last - 20), min(65536, last + 20)), 1, 65535]
        assert [p for p in around if pattern.match(str(p))] == [p for p in around if first <= p <= last]


def _proxied_db(snapshot: Snapshot, secrets: tuple[EnvoySecret, ...],
                sources: tuple[tuple[str, ...] | None, ...] = (("10.1.1.5/32", "fd00::5/128"),)) -> dict[str, Any]:
    """Node-1's resources with a TCP listener of the node proxy sending to db (node-2) and cache (node-1).

    The listener has a chain per entry of ``sources`` (the clients it admits; None: everyone).
    """
    from meshcore.compile import ClusterWeight, EnvoyCluster, EnvoyEndpoint, EnvoyListener, TcpChain
    from meshcore.model import Protocol, ServiceRef

    plan = compile_plan(snapshot, "node-1", MTLS)
    service = ServiceRef("default", "db")
    cluster = EnvoyCluster("default/db:5432", service, 5432, Protocol.TCP,
                           endpoints=(EnvoyEndpoint("10.1.2.5", 5432), EnvoyEndpoint("10.1.1.6", 5432)))
    listener = EnvoyListener("default/db:5432", service, 5432, Protocol.TCP, 20000, tcp=tuple(
        TcpChain(f"chain-{i}", (), (ClusterWeight(cluster.name, 1),), sources=clients)
        for i, clients in enumerate(sources)))
    envoy = plan.envoy.__class__(clusters=(cluster,), listeners=(listener,), tunnel=plan.tunnel, secrets=secrets)
    return build_resources(envoy, ProxySettings(listen_ipv4="10.0.1.1")).to_json()


CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"
DB_ID = "spiffe://cluster.local/ns/default/sa/db"
SECRETS = (EnvoySecret(f"svid/{CLIENT_ID}", "CHAIN", Redacted("KEY")),
           EnvoySecret("bundle/cluster.local@abc", "", Redacted(""), trusted_ca="CA"))


def test_the_proxys_own_connections_to_other_nodes_pods_go_through_the_internal_tunnel_listener() -> None:
    resources = _proxied_db(_snapshot(_pa("db", "STRICT", app="db")), SECRETS)
    endpoints = [e for g in resources["ClusterLoadAssignment"]["default/db:5432"]["endpoints"] for e in g["lb_endpoints"]]
    [remote] = [e for e in endpoints if "envoy_internal_address" in e["endpoint"]["address"]]
    [local] = [e for e in endpoints if e is not remote]
    # db is on node-2: an internal address naming it and the identity it must present.
    assert remote["endpoint"]["address"] == {"envoy_internal_address": {
        "server_listener_name": "tunnel_internal", "endpoint_id": f"10.1.2.5:5432 {DB_ID}"}}
    assert remote["metadata"]["filter_metadata"]["envoy.filters.listener.original_dst"] == {"local": "10.1.2.5:5432"}
    # cache is on this node: reached directly (the kernel admits the node proxy even where STRICT).
    assert local["endpoint"]["address"] == {"socket_address": {"address": "10.1.1.6", "port_value": 5432}}
    [match] = resources["Cluster"]["default/db:5432"]["transport_socket_matches"]
    assert match["transport_socket"]["typed_config"]["passthrough_metadata"][0]["name"] == \
        "envoy.filters.listener.original_dst"
    # The listener records the client's address (port 0), once per family of its clients.
    chains = resources["Listener"]["default/db:5432"]["filter_chains"]
    recorded = [(c["filter_chain_match"]["source_prefix_ranges"],
                 c["filters"][0]["typed_config"]["on_new_connection"][0]["format_string"]["text_format_source"])
                for c in chains]
    assert recorded == [
        ([{"address_prefix": "10.1.1.5", "prefix_len": 32}],
         {"inline_string": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%:0"}),
        ([{"address_prefix": "fd00::5", "prefix_len": 128}],
         {"inline_string": "[%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%]:0"})]
    assert chains[0]["filters"][-1]["name"] == "envoy.filters.network.tcp_proxy"
    # The access log says which clients those are (only for them a tunnelled endpoint means mutual TLS).
    common = resources["Listener"]["default/db:5432"]["access_log"][0]["typed_config"]["common_config"]
    assert common["filter_state_objects_to_log"] == ["meshcore.tunnel.client"]
    # The internal listener: the client tunnels as itself (saying its node proxy made the stream),
    # cache has no SVID and is closed, anyone else passes in clear text.
    internal = {c["name"]: c for c in resources["Listener"]["tunnel_internal"]["filter_chains"]}
    tunnel = internal[f"tunnel|{CLIENT_ID}|{DB_ID}|node-2"]
    assert tunnel["filter_chain_match"]["source_prefix_ranges"] == [{"address_prefix": "10.1.1.5", "prefix_len": 32}]
    headers = tunnel["filters"][0]["typed_config"]["tunneling_config"]["headers_to_add"]
    assert {h["header"]["key"] for h in headers} == {"x-forwarded-for", "x-meshcore-via-proxy"}
    closed = internal[f"tunnel|spiffe://cluster.local/ns/default/sa/cache|{DB_ID}|node-2|no-svid"]
    assert closed["filters"][0]["name"] == "envoy.filters.network.direct_response"
    anyone = internal[f"tunnel_passthrough|{DB_ID}|node-2"]
    assert "source_prefix_ranges" not in anyone["filter_chain_match"]
    assert anyone["filters"][0]["typed_config"]["cluster"] == "tunnel_passthrough"
    assert resources["Cluster"]["tunnel_passthrough"]["type"] == "ORIGINAL_DST"


def test_an_endpoint_on_a_disable_port_stays_in_clear_text() -> None:
    resources = _proxied_db(_snapshot(_pa("db", "PERMISSIVE", app="db", ports={5432: "DISABLE"})), SECRETS)
    endpoints = [e for g in resources["ClusterLoadAssignment"]["default/db:5432"]["endpoints"] for e in g["lb_endpoints"]]
    assert all("socket_address" in e["endpoint"]["address"] for e in endpoints), endpoints


def test_a_stream_the_client_nodes_proxy_made_skips_the_pods_kernel_policy_as_the_kernel_does() -> None:
    plan = compile_plan(_snapshot(_pa("db", "STRICT", app="db")), "node-2", MTLS)
    secrets = (EnvoySecret(f"svid/{DB_ID}", "CHAIN", Redacted("KEY")),
               EnvoySecret("bundle/cluster.local@abc", "", Redacted(""), trusted_ca="CA"))
    resources = build_resources(plan.envoy.__class__(tunnel=plan.tunnel, secrets=secrets),
                                ProxySettings(listen_ipv4="10.0.2.1")).to_json()
    [chain] = resources["Listener"]["tunnel_inbound"]["filter_chains"]
    routes = chain["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["name"] for r in routes] == ["tunnel_inbound/default/db"] * 2
    via, direct = routes
    # The marked stream comes first and admits everyone; the client guard (certificate ↔ address) still applies.
    assert {"name": "x-meshcore-via-proxy", "present_match": True} in via["match"]["headers"]
    assert via["typed_per_filter_config"]["meshcore.tunnel.allow"]["rbac"]["rules"]["policies"]["node-proxy"][
        "principals"] == [{"any": True}]
    assert not any(h["name"] == "x-meshcore-via-proxy" for h in direct["match"]["headers"])


def test_a_chain_for_everyone_records_only_this_nodes_meshed_clients_others_keep_sharing_connections() -> None:
    # chain-0 names cache (by its subnet); chain-1 serves everyone else.
    resources = _proxied_db(_snapshot(), SECRETS, sources=(("10.1.1.6/31",), None))
    chains = resources["Listener"]["default/db:5432"]["filter_chains"]

    def recorded(chain: dict[str, Any]) -> bool:
        return chain["filters"][0]["name"] == "envoy.filters.network.set_filter_state"

    assert [(c["name"], c.get("filter_chain_match", {}).get("source_prefix_ranges"), recorded(c)) for c in chains] == [
        ("chain-0|ipv4", [{"address_prefix": "10.1.1.6", "prefix_len": 31}], True),
        # client is a meshed workload of this node no other chain names; cache keeps chain-0.
        ("chain-1|meshed|ipv4", [{"address_prefix": "10.1.1.5", "prefix_len": 32}], True),
        ("chain-1", None, False),
    ]


def _egress(name: str, action: str, *rules: Any, app: str = "client") -> Any:
    from meshcore.model import AuthorizationPolicy, Direction, Source

    return AuthorizationPolicy(name, "default", WorkloadSelector("default", {"app": app}), action, list(rules),
                               direction=Direction.EGRESS,
                               source=Source("AuthorizationPolicy", "default", name, f"{name}.yaml", 3, 1))


def _to(app: str | None = None, *ports: tuple[int, int]) -> Any:
    from meshcore.model import Operation, PeerSelector, PolicyRule, PortRange

    peers = [PeerSelector(workload_labels={"app": app})] if app else []
    return PolicyRule(sources=peers, operations=[Operation(ports=[PortRange(a, b) for a, b in ports])] if ports else [])


def _egress_snapshot(*policies: Any, pas: tuple[PeerAuthentication, ...] = ()) -> Snapshot:
    workloads = (*_snapshot().workloads, _w("web", "node-2", "10.1.2.6"), _w("peer", "node-1", "10.1.1.7", sa="client"))
    return Snapshot(nodes=NODES, workloads=workloads, policies=policies, peer_authentications=pas)


def _refusals(snapshot: Snapshot, name: str = "client") -> list[tuple[str, int, int, str]]:
    tunnel = compile_plan(snapshot, "node-1", MTLS).tunnel
    assert tunnel is not None
    workload = next(w for w in tunnel.workloads if w.workload.name == name)
    return [(r.address, r.first, r.last, r.policy) for r in workload.egress]


def test_a_clients_egress_default_deny_refuses_every_steered_destination_but_what_it_allows() -> None:
    # client may reach web on 9000 only; db (another node) and its other ports are refused, port range by port range.
    snapshot = _egress_snapshot(_egress("only-web", "ALLOW", _to("web", (9000, 9000))))
    assert _refusals(snapshot) == [("10.1.2.5", 1, 65535, "default/only-web"),
                                   ("10.1.2.6", 1, 8999, "default/only-web"),
                                   ("10.1.2.6", 9001, 65535, "default/only-web")]
    # peer shares client's SPIFFE ID but no egress policy selects it: it may reach everything.
    assert _refusals(snapshot, "peer") == []
    # The policy's source travels with the refusal (flows name where it was written).
    tunnel = compile_plan(snapshot, "node-1", MTLS).tunnel
    assert tunnel is not None
    client = next(w for w in tunnel.workloads if w.workload.name == "client")
    assert {str(r.source) for r in client.egress} == {str(_egress("only-web", "ALLOW").source)}


def test_an_egress_allow_of_one_pod_on_every_port_leaves_it_reachable() -> None:
    snapshot = _egress_snapshot(_egress("to-db", "ALLOW", _to("db")))
    assert _refusals(snapshot) == [("10.1.2.6", 1, 65535, "default/to-db")]


def test_an_egress_deny_rule_refuses_its_ports_and_names_the_rule() -> None:
    snapshot = _egress_snapshot(_egress("no-db-admin", "DENY", _to("db", (5000, 5999))))
    assert _refusals(snapshot) == [("10.1.2.5", 5000, 5999, "default/no-db-admin[0]")]
    # DENY wins over an ALLOW of the same pod.
    both = _egress_snapshot(_egress("no-db-admin", "DENY", _to("db", (5000, 5999))), _egress("to-db", "ALLOW", _to("db")))
    assert _refusals(both) == [("10.1.2.5", 5000, 5999, "default/no-db-admin[0]"),
                               ("10.1.2.6", 1, 65535, "default/to-db")]


def test_an_address_steered_on_some_ports_only_is_refused_on_those_ports_only() -> None:
    # db is DISABLE but for port 5432 (STRICT): only 5432 goes through the tunnel; the kernel judges the rest.
    snapshot = _egress_snapshot(_egress("only-web", "ALLOW", _to("web")),
                                pas=(_pa("db", "DISABLE", app="db", ports={5432: "STRICT"}),))
    assert _dests(snapshot)[("10.1.2.5", 0)] == (False, False)
    assert _refusals(snapshot) == [("10.1.2.5", 5432, 5432, "default/only-web")]


def test_a_same_node_strict_destination_reached_through_the_proxy_is_judged_too() -> None:
    snapshot = _egress_snapshot(_egress("only-web", "ALLOW", _to("web")), pas=(_pa("cache", "STRICT", app="cache"),))
    assert ("10.1.1.6", 1, 65535, "default/only-web") in _refusals(snapshot)


def test_without_an_egress_policy_nothing_is_refused_and_a_changed_policy_is_recompiled() -> None:
    from meshcore.compile import CompiledPlan

    compiled = CompiledPlan.compile(_egress_snapshot(), "node-1", MTLS)
    assert compiled.plan.tunnel is not None
    assert all(w.egress == () for w in compiled.plan.tunnel.workloads)
    changed = compiled.recompile(_egress_snapshot(_egress("to-db", "ALLOW", _to("db"))))
    assert changed.plan.tunnel is not None
    client = next(w for w in changed.plan.tunnel.workloads if w.workload.name == "client")
    assert [(r.address, r.policy) for r in client.egress] == [("10.1.2.6", "default/to-db")]


def test_the_outbound_listener_refuses_what_a_clients_egress_policy_refuses_naming_it() -> None:
    from meshcore.proxy._names import plan_names

    snapshot = _egress_snapshot(_egress("only-web", "ALLOW", _to("web", (9000, 9000))))
    plan = compile_plan(snapshot, "node-1", MTLS)
    client = "spiffe://cluster.local/ns/default/sa/client"
    secrets = (EnvoySecret(f"svid/{client}", "CHAIN", Redacted("KEY")),
               EnvoySecret("bundle/cluster.local@abc", "", Redacted(""), trusted_ca="CA"))
    resources = build_resources(plan.envoy.__class__(tunnel=plan.tunnel, secrets=secrets),
                                ProxySettings(listen_ipv4="10.0.1.1")).to_json()
    name = f"{CLUSTER_PREFIX}{client}|spiffe://cluster.local/ns/default/sa/db|node-2"
    web = f"{CLUSTER_PREFIX}{client}|spiffe://cluster.local/ns/default/sa/web|node-2"
    chains = {c["name"]: c for c in resources["Listener"]["tunnel_outbound"]["filter_chains"]}
    # peer (same SPIFFE ID, no egress policy) keeps the plain chains; client gets its own.
    assert chains[name]["filter_chain_match"]["source_prefix_ranges"] == [{"address_prefix": "10.1.1.7", "prefix_len": 32}]
    assert [f["name"] for f in chains[name]["filters"]] == ["envoy.filters.network.tcp_proxy"]
    # db: refused on every port, so the chain never connects and names the policy at the first byte.
    refused = chains[f"{name}|egress-0|refused"]
    assert refused["filter_chain_match"] == {"source_prefix_ranges": [{"address_prefix": "10.1.1.5", "prefix_len": 32}],
                                             "prefix_ranges": [{"address_prefix": "10.1.2.5", "prefix_len": 32}]}
    marker, rbac, proxy = (f["typed_config"] for f in refused["filters"])
    # The connection's flow names the destination dialled (the TCP proxy names no cluster before connecting).
    assert marker["on_new_connection"][0]["object_key"] == "meshcore.tunnel.refused"
    assert rbac["rules"] == {"action": "DENY", "policies": {"default/only-web": {
        "permissions": [{"destination_ip": {"address_prefix": "10.1.2.5", "prefix_len": 32}}],
        "principals": [{"any": True}]}}}
    assert proxy["upstream_connect_mode"] == "ON_DOWNSTREAM_DATA"
    # web: only 9000 is admitted, every other port refused (port ranges, not a list of ports).
    rbac, proxy = (f["typed_config"] for f in chains[f"{web}|egress-0"]["filters"])
    assert rbac["rules"]["policies"]["default/only-web"]["permissions"] == [
        {"and_rules": {"rules": [{"destination_ip": {"address_prefix": "10.1.2.6", "prefix_len": 32}},
                                 {"destination_port_range": {"start": p, "end": e}}]}}
        for p, e in ((1, 9000), (9001, 65536))]
    assert "upstream_connect_mode" not in proxy
    # Flows of the refused connections name where the policy was written.
    assert plan_names(plan.envoy)["policies"]["default/only-web"].startswith("only-web.yaml:3")
