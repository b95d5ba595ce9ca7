"""GAMMA mesh routes: producer routes attach to their Service's ports; consumer routes serve their namespace."""

from __future__ import annotations

from _gateway_support import codes, parent, service, tables, translate
from meshcore.model import ClientMatch, RouteKind

TWO_PORTS = """
apiVersion: v1
kind: Service
metadata: {name: app, namespace: shop}
spec:
  clusterIP: 10.96.0.1
  ports:
  - {name: http, port: 80}
  - {name: admin, port: 8080}
  - {name: dns, port: 53, protocol: UDP}
"""


def route(parent_ref: str, namespace: str = "shop", kind: str = "HTTPRoute") -> str:
    return f"""
    apiVersion: gateway.networking.k8s.io/{"v1alpha2" if kind == "UDPRoute" else "v1"}
    kind: {kind}
    metadata: {{name: r, namespace: {namespace}}}
    spec:
      parentRefs: [{parent_ref}]
      rules: [{{backendRefs: [{{name: app, namespace: shop, port: 80}}]}}]
    """


def test_without_port_a_route_attaches_to_every_port_of_its_transport() -> None:
    result = translate(TWO_PORTS, route("{group: '', kind: Service, name: app}"))
    assert sorted(t.port for t in tables(result, "shop", "app")) == [80, 8080]
    assert all(t.kind is RouteKind.L7 and t.hostnames == () for t in tables(result, "shop", "app"))


def test_port_and_section_name_select_one_port() -> None:
    by_port = translate(TWO_PORTS, route("{group: '', kind: Service, name: app, port: 8080}"))
    assert [t.port for t in tables(by_port, "shop", "app")] == [8080]
    by_name = translate(TWO_PORTS, route("{group: core, kind: Service, name: app, sectionName: http}"))
    assert [t.port for t in tables(by_name, "shop", "app")] == [80]


def test_udp_routes_attach_to_udp_ports_only() -> None:
    result = translate(TWO_PORTS, route("{group: '', kind: Service, name: app}", kind="UDPRoute").replace(
        "port: 80}]}]", "port: 53}]}]"))
    [only] = tables(result, "shop", "app")
    assert (only.port, only.kind) == (53, RouteKind.L4)


def _named(parent_ref: str, name: str, namespace: str, status: int) -> str:
    return f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: {name}, namespace: {namespace}}}
    spec:
      parentRefs: [{parent_ref}]
      rules:
      - matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]
        filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-route, value: "{status}"}}]}}}}]
        backendRefs: [{{name: app, namespace: shop, port: 80}}]
    """


def test_consumer_routes_serve_their_namespace_and_producer_routes_the_others() -> None:
    ref = "{group: '', kind: Service, name: app, namespace: shop, port: 80}"
    result = translate(TWO_PORTS, _named(ref, "producer", "shop", 1), _named(ref, "consumer", "client", 2))
    assert parent(result, "HTTPRoute", "client", "consumer")["Accepted"] == ("True", "Accepted")
    [table] = tables(result, "shop", "app")
    # Clients of "client" get its consumer route only; everyone else the producer route.
    assert [(r.matches[0].path.value if r.matches[0].path else "", r.matches[0].clients) for r in table.http] == [
        ("/consumer", ClientMatch(namespaces=("client",))), ("/producer", ClientMatch(namespaces=("client",),
                                                                                      invert=True))]


def test_without_producer_routes_other_clients_reach_the_service_unrouted() -> None:
    ref = "{group: '', kind: Service, name: app, namespace: shop, port: 80}"
    result = translate(TWO_PORTS, _named(ref, "consumer", "client", 2))
    [table] = tables(result, "shop", "app")
    consumer, rest = table.http
    assert consumer.matches[0].clients == ClientMatch(namespaces=("client",))
    assert rest.matches[0].clients == ClientMatch(namespaces=("client",), invert=True)
    assert [(d.service.name, d.port) for d in rest.destinations] == [("app", 80)] and not rest.request_headers


def test_hostnames_of_mesh_routes_are_ignored() -> None:
    doc = route("{group: '', kind: Service, name: app, port: 80}").replace(
        "rules:", "hostnames: [other.example.com]\n      rules:")
    result = translate(TWO_PORTS, doc)
    [only] = tables(result, "shop", "app")
    assert only.hostnames == () and only.http


def test_tcp_route_becomes_an_l4_weighted_split() -> None:
    doc = """
    apiVersion: gateway.networking.k8s.io/v1alpha2
    kind: TCPRoute
    metadata: {name: t, namespace: shop}
    spec:
      parentRefs: [{group: "", kind: Service, name: db}]
      rules:
      - backendRefs: [{name: db, port: 5432, weight: 9}, {name: db-new, port: 5432, weight: 1}]
    """
    result = translate(service("db", "shop", 5432, "10.96.0.5"), service("db-new", "shop", 5432, "10.96.0.6"), doc)
    [only] = tables(result, "shop", "db")
    assert only.kind is RouteKind.L4 and not only.needs_l7
    assert [(d.service.name, d.weight) for d in only.tcp[0].destinations] == [("db", 9), ("db-new", 1)]
