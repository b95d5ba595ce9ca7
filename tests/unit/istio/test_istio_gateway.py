"""Istio Gateways: binding VirtualServices to servers by gateway name and host, and serving them on Services."""

from __future__ import annotations

import pytest
from _istio_support import codes, find, istio, pod, service, translate

from meshcore.model import RouteKind, RouteTable, ServiceRef, Severity
from meshcore_istio._gateway import ServerHost, gateway_key
from meshcore_istio._ingress import intersect
from testcerts import Authority, mismatched

INGRESS = [
    pod("ingress-1", "{istio: ingressgateway}", "10.1.9.1", namespace="istio-system"),
    service("istio-ingressgateway", "istio-system", vip="10.96.9.1", selector="{istio: ingressgateway}",
            ports="[{name: http2, port: 80, targetPort: 80}, {name: tls, port: 443, targetPort: 443}]"),
    pod("web-1", "{app: web}", "10.1.0.1"),
    service("web", vip="10.96.0.1", selector="{app: web}"),
]
GW = istio("Gateway", "gw", """
    selector: {istio: ingressgateway}
    servers:
    - port: {number: 80, name: http, protocol: HTTP}
      hosts: ["*.example.com", "team/api.example.org"]
""", namespace="istio-system")


def _vs(name: str, hosts: str, gateways: str, namespace: str = "default", rules: str = "") -> str:
    return istio("VirtualService", name, f"""
        hosts: {hosts}
        gateways: {gateways}
        http:
        {rules or "- route: [{destination: {host: web.default.svc.cluster.local}}]"}
    """, namespace=namespace)


def _gateway_tables(result: object, port: int = 80) -> dict[str, RouteTable]:
    ref = ServiceRef("istio-system", "istio-ingressgateway")
    routes = result.snapshot.routes  # type: ignore[attr-defined]
    return {t.hostnames[0] if t.hostnames else "": t for t in routes if t.service == ref and t.port == port}


@pytest.mark.parametrize(("name", "namespace", "key"), [
    ("gw", "shop", "shop/gw"),
    ("istio-system/gw", "shop", "istio-system/gw"),
    ("./gw", "shop", "shop/gw"),
    ("gw.istio-system.svc.cluster.local", "shop", "istio-system/gw"),
    ("mesh", "shop", "mesh"),
])
def test_gateway_names_resolve_as_istio_does(name: str, namespace: str, key: str) -> None:
    assert gateway_key(name, namespace) == key


@pytest.mark.parametrize(("server", "vs", "served"), [
    ("bookinfo.example", "bookinfo.example", "bookinfo.example"),
    ("*", "bookinfo.example", "bookinfo.example"),
    ("*.example.com", "a.example.com", "a.example.com"),
    ("a.example.com", "*.example.com", "a.example.com"),
    ("*.example.com", "*", "*.example.com"),
    ("*.example.com", "example.com", None),
    ("a.example.com", "b.example.com", None),
    ("A.Example.com", "a.example.COM", "a.example.com"),
])
def test_a_virtual_service_host_is_served_under_the_more_specific_name(server: str, vs: str,
                                                                       served: str | None) -> None:
    assert intersect(server, vs) == served


def test_server_host_namespaces_admit_virtual_services() -> None:
    assert ServerHost("*", "a.example").admits("anything")
    assert ServerHost("team", "a.example").admits("team")
    assert not ServerHost("team", "a.example").admits("default")


def test_gateway_is_served_on_the_service_of_its_workloads_with_one_table_per_hostname() -> None:
    result = translate(*INGRESS, GW, _vs("web", "[a.example.com, b.example.com, other.example.net]",
                                         "[istio-system/gw]"))
    tables = _gateway_tables(result)
    assert set(tables) == {"a.example.com", "b.example.com"}
    assert all(t.kind is RouteKind.L7 for t in tables.values())
    route = tables["a.example.com"].http[0]
    assert route.destinations[0].service == ServiceRef("default", "web")
    assert route.name == "Gateway istio-system/gw: default/web.http[0]"
    # other.example.net is in no server: reported on the binding.
    assert "other.example.net" in find(result, "MC7022").message
    # A gateway-only VirtualService leaves the mesh alone.
    assert not [t for t in result.snapshot.routes if t.service == ServiceRef("default", "web")]


def test_a_short_gateway_name_resolves_in_the_virtual_service_namespace() -> None:
    result = translate(*INGRESS, GW, _vs("web", "[a.example.com]", "[gw]"))
    # Nothing is bound to istio-system/gw: it answers 404.
    [table] = _gateway_tables(result).values()
    assert [r.direct_response.status for r in table.http if r.direct_response] == [404]
    assert find(result, "MC7006").message == "Gateway default/gw is not in the input"


def test_a_namespaced_server_host_binds_only_virtual_services_of_that_namespace() -> None:
    result = translate(*INGRESS, GW, _vs("other", "[api.example.org]", "[istio-system/gw]"),
                       _vs("team", "[api.example.org]", "[istio-system/gw]", namespace="team"))
    [table] = _gateway_tables(result).values()
    assert [r.name for r in table.http] == ["Gateway istio-system/gw: team/team.http[0]"]
    assert find(result, "MC7022").source.name == "other"


def test_virtual_services_for_one_host_are_merged_oldest_first() -> None:
    old = istio("VirtualService", "old", """
        hosts: [a.example.com]
        gateways: [istio-system/gw]
        http: [{match: [{uri: {prefix: /old}}], directResponse: {status: 201}}]
    """, extra_meta='creationTimestamp: "2024-01-01T00:00:00Z"')
    new = istio("VirtualService", "new", """
        hosts: [a.example.com]
        gateways: [istio-system/gw]
        http: [{directResponse: {status: 202}}]
    """, extra_meta='creationTimestamp: "2024-02-01T00:00:00Z"')
    result = translate(*INGRESS, GW, new, old)
    table = _gateway_tables(result)["a.example.com"]
    assert [r.direct_response.status for r in table.http if r.direct_response] == [201, 202]


def test_mesh_in_the_gateway_list_keeps_the_rules_on_the_mesh_and_match_gateways_narrow_them() -> None:
    result = translate(*INGRESS, GW, istio("VirtualService", "web", """
        hosts: [web, a.example.com]
        gateways: [mesh, istio-system/gw]
        http:
        - match: [{uri: {prefix: /edge}, gateways: [istio-system/gw]}]
          directResponse: {status: 203}
        - route: [{destination: {host: web}}]
    """))
    [mesh] = [t for t in result.snapshot.routes if t.service == ServiceRef("default", "web")]
    # On the mesh only the route; at the gateway the /edge answer first, then the route.
    assert [(r.direct_response, [d.service for d in r.destinations]) for r in mesh.http] == [
        (None, [ServiceRef("default", "web")])]
    edge, route = _gateway_tables(result)["a.example.com"].http
    assert edge.direct_response is not None and edge.direct_response.status == 203
    assert route.direct_response is None and [d.service for d in route.destinations] == [ServiceRef("default", "web")]


def test_match_port_compares_with_the_server_port() -> None:
    result = translate(*INGRESS, GW, _vs("web", "[a.example.com]", "[istio-system/gw]", rules="""
        - match: [{port: 80}]
          directResponse: {status: 204}
        - match: [{port: 8080}]
          directResponse: {status: 205}
    """))
    statuses = [r.direct_response.status for r in _gateway_tables(result)["a.example.com"].http if r.direct_response]
    assert statuses == [204]


def test_tls_passthrough_routes_keep_only_sni_names_of_the_server() -> None:
    gw = istio("Gateway", "tls", """
        selector: {istio: ingressgateway}
        servers:
        - port: {number: 443, name: tls, protocol: TLS}
          hosts: ["*.secure.example"]
          tls: {mode: PASSTHROUGH}
    """, namespace="istio-system")
    result = translate(*INGRESS, gw, istio("VirtualService", "tls", """
        hosts: ["*.secure.example"]
        gateways: [istio-system/tls]
        tls:
        - match: [{sniHosts: [a.secure.example, b.elsewhere.example]}]
          route: [{destination: {host: web, port: {number: 80}}}]
    """))
    [table] = _gateway_tables(result, 443).values()
    assert table.kind is RouteKind.L4 and table.tcp[0].sni == ("a.secure.example",)


def test_https_redirect_answers_every_host_of_the_server_with_a_redirect() -> None:
    gw = istio("Gateway", "gw", """
        selector: {istio: ingressgateway}
        servers:
        - port: {number: 80, name: http, protocol: HTTP}
          hosts: [a.example.com]
          tls: {httpsRedirect: true}
    """, namespace="istio-system")
    result = translate(*INGRESS, gw, _vs("web", "[a.example.com]", "[istio-system/gw]"))
    [route] = _gateway_tables(result)["a.example.com"].http
    assert route.redirect is not None and route.redirect.scheme == "https" and route.redirect.status == 301


def test_a_server_without_virtual_services_answers_404() -> None:
    result = translate(*INGRESS, GW)
    [table] = _gateway_tables(result).values()
    assert table.hostnames == ("*.example.com", "api.example.org")
    assert table.http[0].direct_response is not None and table.http[0].direct_response.status == 404


def _https_gateway(tls: str) -> str:
    return istio("Gateway", "gw", f"""
        selector: {{istio: ingressgateway}}
        servers:
        - port: {{number: 443, name: https, protocol: HTTPS}}
          hosts: [a.example.com]
          tls: {tls}
    """, namespace="istio-system")


def test_a_simple_https_server_terminates_tls_with_its_credential_from_the_gateway_service_namespace() -> None:
    cert = Authority().issue(["a.example.com"]).secret("cert", "istio-system")
    result = translate(*INGRESS, _https_gateway("{mode: SIMPLE, credentialName: cert}"), cert,
                       _vs("web", "[a.example.com]", "[istio-system/gw]"))
    assert result.ok, result.errors
    table = _gateway_tables(result, 443)["a.example.com"]
    assert table.kind is RouteKind.L7
    [term] = result.snapshot.tls_terminations
    assert (term.service, term.port, term.hostnames) == (ServiceRef("istio-system", "istio-ingressgateway"), 443,
                                                         ("a.example.com",))
    assert [str(c) for c in term.certificates] == ["istio-system/cert"]
    assert [str(c.ref) for c in result.snapshot.certificates] == ["istio-system/cert"]


@pytest.mark.parametrize(("secret", "problem"), [
    (None, "Secret istio-system/cert not found"),
    ("mismatched", "tls.key does not match the certificate"),
    ("elsewhere", "Secret istio-system/cert not found"),  # only the gateway Service's namespace counts
])
def test_a_credential_that_cannot_serve_leaves_the_server_unserved(secret: str | None, problem: str) -> None:
    ca = Authority()
    docs = {None: [], "mismatched": [mismatched(ca.issue(["a.example.com"]), ca.issue(["b"])).secret(
        "cert", "istio-system")], "elsewhere": [ca.issue(["a.example.com"]).secret("cert", "default")]}[secret]
    result = translate(*INGRESS, _https_gateway("{mode: SIMPLE, credentialName: cert}"), *docs,
                       _vs("web", "[a.example.com]", "[istio-system/gw]"))
    assert not _gateway_tables(result, 443) and not result.snapshot.tls_terminations
    d = find(result, "MC7025")
    assert d.field == "spec.servers[0].tls.credentialName" and problem in d.message
    assert "port 443 of Service istio-system/istio-ingressgateway" in d.message and "BEGIN" not in d.message


@pytest.mark.parametrize(("tls", "why"), [
    ("{mode: SIMPLE, serverCertificate: /etc/cert.pem, privateKey: /etc/key.pem}", "needs tls.credentialName"),
    ("{mode: MUTUAL, credentialName: cert}", "mode MUTUAL"),
])
def test_tls_termination_meshcore_cannot_do_is_reported_and_not_served_in_clear_text(tls: str, why: str) -> None:
    result = translate(*INGRESS, _https_gateway(tls), _vs("web", "[a.example.com]", "[istio-system/gw]"))
    assert not _gateway_tables(result, 443)
    d = find(result, "MC7014")
    assert d.field == "spec.servers[0]" and "server https" in d.message and why in d.message


def test_workloads_without_a_service_have_no_address() -> None:
    result = translate(pod("ingress-1", "{istio: ingressgateway}", "10.1.9.1"), GW)
    d = find(result, "MC7021")
    assert d.field == "spec.selector"
    assert "no Service exposes the workloads selected by spec.selector {istio: ingressgateway}" in d.message
    assert not result.snapshot.routes


def test_selector_matching_no_workload_and_empty_selector() -> None:
    result = translate(*INGRESS, istio("Gateway", "a", """
        selector: {istio: nothing}
        servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
    """), istio("Gateway", "b", """
        servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
    """))
    assert find(result, "MC7020").source.name == "a"
    assert find(result, "MC7014").source.name == "b"
    assert not result.snapshot.routes


def test_conflicting_gateways_the_oldest_keeps_the_host() -> None:
    second = istio("Gateway", "second", """
        selector: {istio: ingressgateway}
        servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*.example.com"]}]
    """, namespace="istio-system", extra_meta='creationTimestamp: "2025-01-01T00:00:00Z"')
    first = GW.replace("metadata: {name: gw, namespace: istio-system}",
                       'metadata: {name: gw, namespace: istio-system, creationTimestamp: "2024-01-01T00:00:00Z"}')
    result = translate(*INGRESS, second, first, _vs("web", "[a.example.com]", "[istio-system/second]"))
    d = find(result, "MC7023")
    assert d.source.name == "second" and d.field == "spec.servers[0].hosts[0]" and "istio-system/gw" in d.message
    # The host stays with gw, which no VirtualService binds: the one bound to "second" routes nothing.
    tables = _gateway_tables(result)
    assert set(tables) == {"*.example.com"}
    routes = tables["*.example.com"].http
    assert routes and all(r.name.startswith("Gateway istio-system/gw:") and not r.destinations for r in routes), routes


def test_invalid_protocol_rejects_the_gateway() -> None:
    result = translate(*INGRESS, istio("Gateway", "gw", """
        selector: {istio: ingressgateway}
        servers: [{port: {number: 80, name: http, protocol: QUIC}, hosts: ["*"]}]
    """))
    d = find(result, "MC7019")
    assert d.severity is Severity.ERROR and d.field == "spec.servers[0].port.protocol"
    assert "MC7006" not in codes(result) and not result.snapshot.routes


@pytest.mark.parametrize("number", [80, 8080])
def test_a_server_port_is_a_service_port_or_the_workloads_target_port(number: int) -> None:
    # istio-ingressgateway's usual ports: 80 → 8080. Both numbers reach the Service port 80.
    result = translate(
        pod("ingress-1", "{istio: ingressgateway}", "10.1.9.1", namespace="istio-system"),
        service("istio-ingressgateway", "istio-system", vip="10.96.9.1", selector="{istio: ingressgateway}",
                ports="[{name: http2, port: 80, targetPort: 8080}]"),
        istio("Gateway", "gw", f"""
            selector: {{istio: ingressgateway}}
            servers: [{{port: {{number: {number}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
        """, namespace="istio-system"))
    assert set(_gateway_tables(result)) == {"*"}
    assert "MC7021" not in codes(result)


@pytest.mark.parametrize(("protocol", "tls", "error"), [
    ("HTTP", "{httpsRedirect: true}", ""),
    ("HTTP", "{mode: PASSTHROUGH}", ""),
    ("HTTP", "{httpsRedirect: true, mode: AUTO_PASSTHROUGH}", ""),
    ("HTTP", "{mode: SIMPLE, credentialName: c}", "plain text HTTP ports"),
    ("HTTP", "{httpsRedirect: true, serverCertificate: /c.pem, privateKey: /k.pem}", "plain text HTTP ports"),
    ("TCP", "{httpsRedirect: true}", "non HTTPS/TLS ports"),
    ("TCP", "{}", "non HTTPS/TLS ports"),
])
def test_server_tls_settings_follow_istio_validation(protocol: str, tls: str, error: str) -> None:
    result = translate(*INGRESS, istio("Gateway", "gw", f"""
        selector: {{istio: ingressgateway}}
        servers: [{{port: {{number: 80, name: p, protocol: {protocol}}}, hosts: ["*"], tls: {tls}}}]
    """))
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    if error:
        (d,) = errors
        assert d.field == "spec.servers[0].tls" and f"server cannot have TLS settings for {error}" in d.message
    else:
        assert not errors, errors
