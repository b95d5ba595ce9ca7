"""Sidecar: which workloads a REGISTRY_ONLY Sidecar applies to, and what it lets them reach."""

from __future__ import annotations

from _istio_support import codes, find, istio, pod, service, translate

from meshcore.model import AuthorizationPolicy, Direction

NS_OTHER = "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n"
APPS = (
    pod("api-0", "{app: api}", "10.1.0.1"), service("api", selector="{app: api}", vip="10.96.0.1"),
    pod("db-0", "{app: db}", "10.1.0.2"),
    service("db", selector="{app: db}", vip="10.96.0.2", ports="[{name: tcp, port: 5432}, {name: http, port: 8080}]"),
    pod("job-0", "{app: job}", "10.1.0.3", namespace="other"),
)


def _egress(result: object) -> list[AuthorizationPolicy]:
    return [p for p in result.snapshot.policies if p.direction is Direction.EGRESS]  # type: ignore[attr-defined]


def _allowed(policy: AuthorizationPolicy) -> set[tuple[str, int]]:
    """(peer app label, port) pairs a policy's TCP rules allow."""
    out = set()
    for rule in policy.rules:
        for peer in rule.sources:
            for op in rule.operations:
                for r in op.ports:
                    out.add((dict(peer.workload_labels or {}).get("app", ""), r.first))
    return out


def test_a_root_default_applies_to_namespaces_without_their_own() -> None:
    root = istio("Sidecar", "default", """
        egress:
        - hosts: ["default/db.default.svc.cluster.local"]
          port: {number: 5432, protocol: TCP, name: tcp}
        outboundTrafficPolicy: {mode: REGISTRY_ONLY}
    """, namespace="istio-system")
    own = istio("Sidecar", "default", """
        outboundTrafficPolicy: {mode: ALLOW_ANY}
    """, namespace="other")
    result = translate(*APPS, NS_OTHER, "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n", root, own)
    [policy] = _egress(result)
    # Namespace "other" has its own (ALLOW_ANY) Sidecar; default takes the root's.
    assert (policy.namespace, policy.selector.namespace, policy.name) == (
        "default", "default", "sidecar:istio-system.default")
    # The listener's port limits its host to that service port: db's HTTP port stays closed.
    assert _allowed(policy) == {("db", 5432)}


def test_registry_only_without_egress_imports_everything_visible_and_tilde_nothing() -> None:
    everything = istio("Sidecar", "default", "outboundTrafficPolicy: {}")  # mode defaults to REGISTRY_ONLY
    [policy] = _egress(translate(*APPS, everything))
    assert _allowed(policy) == {("api", 80), ("db", 5432), ("db", 8080)}
    nothing = istio("Sidecar", "default", """
        egress: [{hosts: ["~/*"]}]
        outboundTrafficPolicy: {mode: REGISTRY_ONLY}
    """)
    [policy] = _egress(translate(*APPS, nothing))
    assert _allowed(policy) == set()
    # UDP and SCTP stay open: Istio's sidecars capture only TCP.
    assert {r.protocol for rule in policy.rules for op in rule.operations for r in op.ports} == {"UDP", "SCTP"}


def test_allow_any_restricts_nothing_and_ingress_is_reported() -> None:
    result = translate(*APPS, istio("Sidecar", "default", """
        egress: [{hosts: ["./*"]}]
        ingress: [{port: {number: 80, protocol: HTTP, name: http}, defaultEndpoint: "127.0.0.1:8080"}]
    """))
    assert _egress(result) == []
    assert {(d.code, d.field) for d in result.diagnostics if d.code == "MC7013"} == {("MC7013", "spec.ingress")}


def test_the_oldest_selecting_sidecar_wins_and_the_other_is_reported() -> None:
    first = istio("Sidecar", "first", """
        workloadSelector: {labels: {app: api}}
        egress: [{hosts: ["./db.default.svc.cluster.local"]}]
        outboundTrafficPolicy: {mode: REGISTRY_ONLY}
    """, extra_meta='creationTimestamp: "2024-01-01T00:00:00Z"')
    second = istio("Sidecar", "second", """
        workloadSelector: {labels: {app: api}}
        outboundTrafficPolicy: {mode: ALLOW_ANY}
    """, extra_meta='creationTimestamp: "2024-02-01T00:00:00Z"')
    result = translate(*APPS, second, first)
    [policy] = _egress(result)
    assert policy.name == "sidecar:default.first" and dict(policy.selector.labels) == {"app": "api"}
    assert find(result, "MC7016").source.name == "second"


def test_a_host_without_namespace_is_an_error_naming_the_field() -> None:
    result = translate(*APPS, istio("Sidecar", "default", """
        egress: [{hosts: ["db.default.svc.cluster.local"]}]
        outboundTrafficPolicy: {mode: REGISTRY_ONLY}
    """))
    error = find(result, "MC7002")
    assert error.field == "spec.egress[0].hosts[0]" and "namespace/dnsName" in error.message
    assert _egress(result) == [] and "MC7014" not in codes(result)


def test_dot_in_a_root_sidecar_is_the_workloads_namespace() -> None:
    # Istio's documented mesh-wide default: each workload may reach its own namespace.
    root = istio("Sidecar", "default", """
        egress: [{hosts: ["./*"]}]
        outboundTrafficPolicy: {mode: REGISTRY_ONLY}
    """, namespace="istio-system")
    jobs = service("jobs", namespace="other", selector="{app: job}", vip="10.96.0.3")
    result = translate(*APPS, jobs, NS_OTHER, "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n",
                       root)
    allowed = {p.namespace: _allowed(p) for p in _egress(result)}
    assert allowed == {"default": {("api", 80), ("db", 5432), ("db", 8080)}, "other": {("job", 80)}}


def test_an_external_service_entry_is_allowed_by_its_addresses_and_one_by_dns_is_reported() -> None:
    static = istio("ServiceEntry", "payments", """
        hosts: [payments.example.com]
        addresses: [192.0.2.10]
        location: MESH_EXTERNAL
        resolution: NONE
        ports: [{number: 443, name: tls, protocol: TLS}]
    """)
    dns = istio("ServiceEntry", "maps", """
        hosts: [maps.example.com]
        location: MESH_EXTERNAL
        resolution: DNS
        ports: [{number: 443, name: tls, protocol: TLS}]
    """)
    sidecar = istio("Sidecar", "default", """
        egress: [{hosts: ["./*.example.com"]}]
        outboundTrafficPolicy: {mode: REGISTRY_ONLY}
    """)
    result = translate(*APPS, static, dns, sidecar)
    [policy] = _egress(result)
    blocks = {(b.cidr, r.first) for rule in policy.rules for peer in rule.sources for b in peer.ip_blocks
              for op in rule.operations for r in op.ports}
    assert blocks == {("192.0.2.10/32", 443)}
    warning = find(result, "MC7014")
    assert warning.source.kind == "Sidecar" and "default/maps" in warning.message


def test_egress_hosts_decide_which_virtual_services_a_workload_sees() -> None:
    # dev's Sidecar imports only dev: its workloads reach shop/app unrouted; the "tools"
    # workloads' own Sidecar imports shop, so they see the VirtualService like everyone else.
    shop_app = (pod("app-0", "{app: app}", "10.1.0.20", namespace="shop"),
                service("app", namespace="shop", selector="{app: app}", vip="10.96.0.20"))
    vs = istio("VirtualService", "app", """
        hosts: [app]
        http: [{directResponse: {status: 201}}]
    """, namespace="shop")
    dev = istio("Sidecar", "default", 'egress: [{hosts: ["./*"]}]', namespace="dev")
    tools = istio("Sidecar", "tools", """
        workloadSelector: {labels: {app: tools}}
        egress: [{hosts: ["./*", "shop/*"]}]
    """, namespace="dev")
    namespaces = "\n---\n".join(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}" for n in ("shop", "dev"))
    result = translate(*shop_app, namespaces, vs, dev, tools)
    routes = [r for t in result.snapshot.routes if t.service.name == "app" for r in t.http]
    answered = {(m.clients.namespaces, m.clients.labels, m.clients.exclude, m.clients.invert):
                (r.direct_response.status if r.direct_response else "unrouted") for r in routes for m in r.matches}
    assert answered == {
        (("dev",), (("app", "tools"),), (), False): 201,       # tools imports shop/*
        (("dev",), (), ((("app", "tools"),),), False): "unrouted",  # the rest of dev imports only dev
        (("shop",), (), (), False): 201,
        (("dev", "shop"), (), (), True): "unrouted",             # other namespaces, outside the mesh
    }
    assert "MC7013" not in codes(result)


def test_a_port_listener_decides_for_its_port_alone() -> None:
    # Port 80 has its own egress listener importing only istio-system: there, shop's
    # VirtualService is not seen, though the catch-all listener would import it.
    shop_app = (pod("app-0", "{app: app}", "10.1.0.20", namespace="shop"),
                service("app", namespace="shop", selector="{app: app}", vip="10.96.0.20"))
    vs = istio("VirtualService", "app", "hosts: [app]\nhttp: [{directResponse: {status: 201}}]", namespace="shop")
    sidecar = istio("Sidecar", "default", """
        egress:
        - port: {number: 80, protocol: HTTP, name: http}
          hosts: ["istio-system/*"]
        - hosts: ["./*"]
    """, namespace="shop")
    result = translate(*shop_app, "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}", vs, sidecar)
    routes = [r for t in result.snapshot.routes if t.service.name == "app" for r in t.http]
    assert not any(r.direct_response for r in routes)
    assert find(result, "MC7012").source.name == "app"


def test_an_unrelated_sidecar_keeps_a_tcp_split_in_the_kernel() -> None:
    db = service("db", vip="10.96.0.30", ports="[{name: tcp, port: 5432}]")
    db2 = service("db2", vip="10.96.0.31", ports="[{name: tcp, port: 5432}]")
    vs = istio("VirtualService", "db", """
        hosts: [db]
        tcp: [{route: [{destination: {host: db}, weight: 50}, {destination: {host: db2}, weight: 50}]}]
    """)
    sidecar = istio("Sidecar", "default", 'egress: [{hosts: ["*/*"]}]', namespace="other")
    result = translate(db, db2, vs, "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}", sidecar)
    [table] = [t for t in result.snapshot.routes if t.service.name == "db"]
    # One route, as without the Sidecar: compile serves the weighted split in the kernel.
    assert len(table.tcp) == 1 and len(table.tcp[0].destinations) == 2
