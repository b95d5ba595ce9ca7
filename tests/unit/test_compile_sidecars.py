"""Compile's sidecar plans: what a workload's own Envoy serves, what it leaves to the node proxy, what it checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

import meshcore
from meshcore.compile import CompileOptions, EnvoySecret, Plan, PolicyVerdict, compile_plan
from meshcore.model import Direction, ProxyMode, Redacted, ReservedIdentity, WorkloadRef
from meshcore.proxy import ProxySettings, sidecar_resources

CASE = Path(__file__).parents[1] / "golden" / "plan" / "proxy-modes.in.yaml"
CLIENT = WorkloadRef("tenant", "client")


def _plan(options: CompileOptions | None = None, node: str = "node-1") -> Plan:
    result = meshcore.translate([CASE])
    assert not result.diagnostics, result.diagnostics
    return compile_plan(result.snapshot, node, options)


def _resources(plan: Plan, secrets: tuple[EnvoySecret, ...] = ()) -> dict[str, Any]:
    (sidecar,) = plan.sidecars
    return sidecar_resources(sidecar, secrets, ProxySettings()).to_json()


def test_a_sidecar_serves_routing_and_kernel_ports_and_leaves_checked_ones_to_the_node_proxy() -> None:
    (sidecar,) = _plan().sidecars
    assert sidecar.workload == CLIENT and sidecar.node_id == "sidecar/tenant/client"
    assert [(str(o.service), o.port, o.vips) for o in sidecar.outbound] == [
        ("shop/web", 80, ("10.96.1.1",)), ("shop/web-v2", 80, ("10.96.1.2",)), ("shop/db", 5432, ("10.96.1.3",))]
    passed = {(str(p.service), p.port): p.reason for p in sidecar.passed}
    # guarded's L7 policy is checked by the node proxy, which the sidecar must not skip (istio/istio#57729).
    assert passed[("shop/guarded", 80)].startswith("the node proxy checks authorization")
    # Its own service too: its own L7 policy, as seen from any client of the node proxy.
    assert ("tenant/client", 80) in passed
    # The node proxies are trusted on the way in, as the kernel trusts them.
    assert sidecar.trusted == ("10.0.0.2", "10.0.1.2")


def test_the_sidecar_routes_with_its_own_view_of_routes_matching_on_the_client() -> None:
    plan = _plan()
    web = next(o for o in plan.sidecars[0].outbound if str(o.service) == "shop/web")
    node_listener = plan.envoy.listener("shop/web:80")
    assert node_listener is not None and node_listener.client_views
    # The sidecar takes the view of its own address (the sourceLabels route), not the default one.
    view = next(v for v in node_listener.client_views if "10.244.1.1/32" in v.sources)
    assert web.listener.route_config == view.route_config and not web.listener.client_views
    config = next(c for c in plan.sidecars[0].route_configs if c.name == view.route_config)
    # The sourceLabels route (http[1]) is in its view; the default view, for other clients, lacks it.
    assert [r.name.rpartition("/")[2] for r in config.routes()] == ["web.http[0]", "web.http[1]", "web.http[2]"]
    default = plan.envoy.route_config(node_listener.route_config or "")
    assert default is not None and [r.name.rpartition("/")[2] for r in default.routes()] == [
        "web.http[0]", "web.http[2]"]
    # And the L4 port is the kernel's backends with the kernel's weights.
    db = next(c for c in plan.sidecars[0].clusters if c.name == "shop/db:5432")
    assert [(e.address, e.port) for e in db.endpoints] == [("10.244.2.3", 5432)]


def test_the_sidecar_checks_its_own_l7_policy_on_its_http_port() -> None:
    (sidecar,) = _plan().sidecars
    (inbound,) = sidecar.inbound
    assert (inbound.name, inbound.port) == ("inbound|8080", 8080)
    assert [f.action.value for f in inbound.rbac] == ["ALLOW"]
    assert [p.name for p in inbound.rbac[0].policies] == ["tenant/client-get[0]"]


def test_a_sidecar_that_does_not_serve_yet_leaves_its_workload_in_node_mode() -> None:
    waiting = _plan(CompileOptions(sidecars_serving=frozenset()))
    serving = _plan(CompileOptions(sidecars_serving={CLIENT}))
    assert not waiting.sidecars[0].serving and serving.sidecars[0].serving
    modes = {str(m.workload): (m.mode, m.reason) for m in waiting.modes}
    assert modes["tenant/client"] == (ProxyMode.NODE, "annotation meshcore.io/proxy-mode on Namespace tenant asks for "
                                      "a sidecar, which does not serve yet: node until it does")

    def gated(plan: Plan) -> set[int]:
        endpoint = plan.policy.endpoint(CLIENT)
        assert endpoint is not None
        origins = {o.index for o in plan.policy.origins if o.action == "PROXY-ONLY"}
        return {e.port for e in plan.policy.entries if e.endpoint == endpoint.identity and e.policy_index in origins
                and e.verdict is PolicyVerdict.DENY}

    # Until its sidecar serves, only the node proxy may reach its checked port; then its sidecar checks it.
    assert gated(waiting) == {8080} and gated(serving) == set()
    assert waiting.policy.endpoint(CLIENT).identity != serving.policy.endpoint(CLIENT).identity  # type: ignore[union-attr]


def test_an_allow_rule_with_l7_parts_admits_its_peers_in_the_kernel_when_a_sidecar_checks_the_rest() -> None:
    serving = _plan(CompileOptions(sidecars_serving={CLIENT}))
    waiting = _plan(CompileOptions(sidecars_serving=frozenset()))

    def ingress_remotes(plan: Plan) -> set[int]:
        endpoint = plan.policy.endpoint(CLIENT)
        assert endpoint is not None
        allow = {o.index for o in plan.policy.origins if o.policy == "tenant/client-get"}
        return {e.remote for e in plan.policy.entries if e.endpoint == endpoint.identity and e.policy_index in allow
                and e.direction is Direction.INGRESS and e.verdict is PolicyVerdict.ALLOW}

    assert ingress_remotes(waiting) == {int(ReservedIdentity.NODE_PROXY)}
    assert int(ReservedIdentity.NODE_PROXY) not in ingress_remotes(serving) and ingress_remotes(serving)


def test_tunnels_deliver_nothing_to_the_ports_a_sidecar_checks() -> None:
    plan = _plan(CompileOptions(mtls=True, sidecars_serving={CLIENT}))
    assert plan.tunnel is not None
    client = next(w for w in plan.tunnel.workloads if w.workload == CLIENT)
    assert any(r.first <= 8080 <= r.last and not r.sources for r in client.deny), client.deny


def test_sidecar_resources_steer_by_virtual_ip_and_port_and_pass_the_rest_through() -> None:
    found = _resources(_plan())
    outbound = found["Listener"]["sidecar_outbound"]
    assert outbound["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15001}
    assert outbound["additional_addresses"][0]["address"]["socket_address"]["address"] == "::1"
    assert outbound["listener_filters"][0]["name"] == "envoy.filters.listener.original_dst"
    matches = {c["name"]: c["filter_chain_match"] for c in outbound["filter_chains"]}
    assert matches["shop/db:5432"] == {"prefix_ranges": [{"address_prefix": "10.96.1.3", "prefix_len": 32}],
                                       "destination_port": 5432}
    assert outbound["default_filter_chain"]["filters"][0]["typed_config"]["cluster"] == "passthrough"
    assert found["Cluster"]["passthrough"]["type"] == "ORIGINAL_DST"
    inbound = found["Listener"]["sidecar_inbound"]
    assert inbound["address"]["socket_address"] == {"address": "10.244.1.1", "port_value": 15006}
    assert inbound["enable_reuse_port"] is False
    trusted, trusted_here, checked = inbound["filter_chains"]
    assert [r["address_prefix"] for r in trusted["filter_chain_match"]["source_prefix_ranges"]] == [
        "10.0.0.2", "10.0.1.2"]
    # Envoy chooses by destination port before source: the node proxies pass on the checked port too
    # (they applied its checks already, and consumed the tokens they validated).
    assert trusted_here["filter_chain_match"] == {**trusted["filter_chain_match"], "destination_port": 8080}
    assert trusted_here["filters"][0]["typed_config"]["cluster"] == "passthrough"
    assert checked["filter_chain_match"] == {"destination_port": 8080}
    filters = [f["name"] for f in checked["filters"][0]["typed_config"]["http_filters"]]
    assert filters == ["meshcore.rbac.allow", "envoy.filters.http.router"]


def test_sidecar_tunnels_present_its_own_svid_on_every_port_the_service_chains_use() -> None:
    plan = _plan(CompileOptions(mtls=True))
    spiffe = plan.sidecars[0].spiffe_id
    secrets = (EnvoySecret(f"svid/{spiffe}", "CHAIN", Redacted("KEY")),
               EnvoySecret("bundle/cluster.local", "", Redacted(""), trusted_ca="CA"))
    found = _resources(plan, secrets)
    chains = found["Listener"]["sidecar_outbound"]["filter_chains"]
    tunnels = [c for c in chains if c["name"].startswith("tunnel|")]
    # Envoy picks chains by port before address: a copy for each port a service chain uses.
    ports = sorted(c["filter_chain_match"].get("destination_port", 0) for c in tunnels)
    assert ports == [0, 80, 5432]
    header = tunnels[0]["filters"][0]["typed_config"]["tunneling_config"]["headers_to_add"][0]["header"]
    assert header == {"key": "x-forwarded-for", "value": "10.244.1.1"}
    cluster = found["Cluster"][tunnels[0]["filters"][0]["typed_config"]["cluster"]]
    tls = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["tls_certificate_sds_secret_configs"][0]["name"] == f"svid/{spiffe}"
    # Named like the node proxy's tunnels (client, server, node): the flows read the server's identity from it.
    server = tls["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"][0][
        "matcher"]["exact"]
    assert cluster["name"].split("|")[1:3] == [spiffe, server]
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"] == {"address": "10.0.1.1", "port_value": 15008}
    # Only its own SVID and the bundle are served to it.
    assert set(found["Secret"]) == {f"svid/{spiffe}", "bundle/cluster.local"}
    # Without its SVID it has no tunnel chain (such connections pass through, and the kernel refuses what
    # must not be clear text).
    assert not [c for c in _resources(plan)["Listener"]["sidecar_outbound"]["filter_chains"]
                if c["name"].startswith("tunnel|")]
    json.dumps(found)  # the whole is plain JSON


KEYS = """
---
apiVersion: v1
kind: Pod
metadata: {name: keys-1, namespace: shop, labels: {app: keys}}
spec:
  nodeName: node-2
  containers: [{name: c, image: echo, ports: [{name: http, containerPort: 8080}]}]
status: {podIPs: [{ip: 10.244.2.5}]}
---
apiVersion: v1
kind: Service
metadata: {name: keys, namespace: shop}
spec:
  selector: {app: keys}
  clusterIP: 10.96.1.5
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: tokens, namespace: tenant}
spec:
  selector: {matchLabels: {app: client}}
  jwtRules:
  - {issuer: https://idp.test, jwksUri: "http://keys.shop.svc.cluster.local/jwks.json"}
  - {issuer: https://elsewhere.test, jwksUri: "https://keys.elsewhere.test/jwks.json"}
"""

REDIRECT = """
---
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {name: canary, namespace: shop}
spec:
  services: [{name: web-v2, ports: [80]}]
  resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: canary
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: canary
          cluster: shop/web:80
"""


def _plan_with(tmp_path: Path, extra: str, options: CompileOptions | None = None) -> Plan:
    case = tmp_path / "case.yaml"
    case.write_text(CASE.read_text() + extra)
    result = meshcore.translate([case])
    assert not [d for d in result.diagnostics if d.severity.value == "error"], result.diagnostics
    return compile_plan(result.snapshot, "node-1", options)


def test_a_sidecar_fetches_key_sets_a_mesh_service_serves_itself(tmp_path: Path) -> None:
    plan = _plan_with(tmp_path, KEYS)
    (sidecar,) = plan.sidecars
    (inbound,) = sidecar.inbound
    assert inbound.jwt is not None
    mesh, elsewhere = inbound.jwt.providers
    # Through the keys service's cluster, which the sidecar has: the same one its own connections there use.
    assert (mesh.jwks_uri, mesh.jwks_cluster, mesh.jwks) == (
        "http://keys.shop.svc.cluster.local/jwks.json", "shop/keys:80", "")
    keys = next(c for c in sidecar.clusters if c.name == "shop/keys:80")
    assert [(e.address, e.port) for e in keys.endpoints] == [("10.244.2.5", 8080)]
    assert [c.name for c in sidecar.clusters].count("shop/keys:80") == 1
    # A host outside the mesh is not fetched: its issuer's tokens are refused, never accepted unchecked.
    assert not elsewhere.jwks_cluster and elsewhere.jwks and not elsewhere.jwks_uri
    found = _resources(plan)
    checked = found["Listener"]["sidecar_inbound"]["filter_chains"][-1]
    jwt = next(f for f in checked["filters"][0]["typed_config"]["http_filters"]
               if f["name"] == "envoy.filters.http.jwt_authn")
    remote = jwt["typed_config"]["providers"]["tenant/tokens[0]"]["remote_jwks"]["http_uri"]
    assert (remote["uri"], remote["cluster"]) == ("http://keys.shop.svc.cluster.local/jwks.json", "shop/keys:80")
    assert "shop/keys:80" in found["Cluster"]


def test_a_sidecar_leaves_a_port_a_raw_envoy_config_redirects_to_the_node_proxy(tmp_path: Path) -> None:
    plan = _plan_with(tmp_path, REDIRECT)
    (sidecar,) = plan.sidecars
    passed = {(str(p.service), p.port): p.reason for p in sidecar.passed}
    # The raw listener runs on the node proxy only: the sidecar passes such connections on, so they get its behaviour.
    assert passed[("shop/web-v2", 80)] == ("redirected to Envoy listener shop/canary/canary by CiliumEnvoyConfig "
                                           "shop/canary, which the node proxy runs")
    assert ("shop/web-v2", 80) not in {(str(o.service), o.port) for o in sidecar.outbound}
    chains = _resources(plan)["Listener"]["sidecar_outbound"]["filter_chains"]
    assert not [c for c in chains if "10.96.1.2" in json.dumps(c.get("filter_chain_match", {}))]
    # Without a node proxy nothing is redirected: the sidecar balances the port as the kernel would.
    (alone,) = _plan_with(tmp_path, REDIRECT, CompileOptions(proxy_enabled=False)).sidecars
    assert ("shop/web-v2", 80) in {(str(o.service), o.port) for o in alone.outbound}


def test_sidecar_tunnels_refuse_what_the_workloads_egress_policy_refuses() -> None:
    from meshcore.model import AuthorizationPolicy, Operation, PolicyRule, PortRange, WorkloadSelector

    result = meshcore.translate([CASE])
    # An ALLOW egress policy admitting only port 80: every other port of every steered pod is refused.
    only_80 = AuthorizationPolicy("only-80", "tenant", WorkloadSelector("tenant", {}), "ALLOW",
                                  [PolicyRule(operations=[Operation(ports=[PortRange(80, 80)])])],
                                  direction=Direction.EGRESS)
    snapshot = attrs.evolve(result.snapshot, policies=(*result.snapshot.policies, only_80))
    plan = compile_plan(snapshot, "node-1", CompileOptions(mtls=True))
    (sidecar,) = plan.sidecars
    steered = sorted({d.address for d in sidecar.tunnel if d.steer and d.port == 0})
    assert steered and {(r.address, r.first, r.last, r.policy) for r in sidecar.egress} == {
        (a, first, last, "tenant/only-80") for a in steered for first, last in ((1, 79), (81, 65535))}
    spiffe = sidecar.spiffe_id
    secrets = (EnvoySecret(f"svid/{spiffe}", "CHAIN", Redacted("KEY")),
               EnvoySecret("bundle/cluster.local", "", Redacted(""), trusted_ca="CA"))
    chains = _resources(plan, secrets)["Listener"]["sidecar_outbound"]["filter_chains"]
    tunnels = [c for c in chains if c["name"].startswith("tunnel|")]
    assert tunnels
    for chain in tunnels:
        rbac = next(f["typed_config"] for f in chain["filters"] if f["name"] == "meshcore.tunnel.egress")
        assert rbac["rules"]["action"] == "DENY" and list(rbac["rules"]["policies"]) == ["tenant/only-80"]
        ranges = [r["and_rules"]["rules"][1] for r in rbac["rules"]["policies"]["tenant/only-80"]["permissions"]]
        assert {(r["destination_port_range"]["start"], r["destination_port_range"]["end"]) for r in ranges} == {
            (1, 80), (81, 65536)}
    # An ALLOW egress policy without rules admits nothing: the tunnel chains never connect.
    nothing = attrs.evolve(only_80, name="nothing", rules=())
    plan = compile_plan(attrs.evolve(snapshot, policies=(*result.snapshot.policies, nothing)), "node-1",
                        CompileOptions(mtls=True))
    chains = _resources(plan, secrets)["Listener"]["sidecar_outbound"]["filter_chains"]
    tunnels = [c for c in chains if c["name"].startswith("tunnel|")]
    assert tunnels and all(c["name"].endswith("|refused") for c in tunnels)
    assert all(c["filters"][-1]["typed_config"]["upstream_connect_mode"] == "ON_DOWNSTREAM_DATA" for c in tunnels)
