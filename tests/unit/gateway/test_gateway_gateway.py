"""Gateways become Services with listener ports; routes merge per (Gateway, port)."""

from __future__ import annotations

from _gateway_support import CLASS, gateway, names, service, status, table, tables, tls_secret, translate
from meshcore.model import Protocol, RouteKind, ServiceRef
from meshcore_gateway import GatewayCode


def test_a_gateway_is_a_service_with_one_port_per_listener_port() -> None:
    listeners = """
      - {name: web, port: 80, protocol: HTTP}
      - {name: web-b, port: 80, protocol: HTTP, hostname: b.example.com}
      - {name: secure, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
      - {name: db, port: 5432, protocol: TCP}
      - {name: dns, port: 53, protocol: UDP}
    """
    result = translate(CLASS, gateway(listeners=listeners, address="2001:db8::1"), tls_secret("cert"))
    svc = result.snapshot.service(ServiceRef("default", "gw"))
    assert svc is not None
    assert svc.vips == ("2001:db8::1",)
    assert [(p.port, p.protocol) for p in svc.ports] == [
        (53, Protocol.UDP), (80, Protocol.HTTP), (443, Protocol.TLS), (5432, Protocol.TCP)]


def test_routes_of_all_listeners_on_a_port_merge_into_that_port_tables() -> None:
    listeners = """
      - {name: a, port: 80, protocol: HTTP, hostname: a.example.com}
      - {name: b, port: 80, protocol: HTTP, hostname: b.example.com}
    """
    route = """
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: %s, namespace: default}
    spec:
      parentRefs: [{name: gw, sectionName: %s}]
      rules: [{backendRefs: [{name: app, port: 80}]}]
    """
    result = translate(CLASS, service("app"), gateway(listeners=listeners), route % ("ra", "a"), route % ("rb", "b"))
    by_host = {t.hostnames: names(t.http) for t in tables(result, "default", "gw", 80)}
    assert by_host == {("a.example.com",): ["default/ra.rules[0].matches[0]"],
                       ("b.example.com",): ["default/rb.rules[0].matches[0]"]}
    assert all(t.kind is RouteKind.L7 for t in tables(result, "default", "gw"))


def test_tls_passthrough_routes_match_on_sni() -> None:
    listeners = "[{name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}]"
    route = """
    apiVersion: gateway.networking.k8s.io/v1alpha2
    kind: TLSRoute
    metadata: {name: t, namespace: default}
    spec:
      parentRefs: [{name: gw}]
      hostnames: [a.example.com, "*.b.example.com"]
      rules: [{backendRefs: [{name: app, port: 443}]}]
    """
    result = translate(CLASS, service("app", port=443), gateway(listeners=listeners), route)
    l4 = table(result, "default", "gw", 443)
    assert l4.kind is RouteKind.L4
    assert [r.sni for r in l4.tcp] == [("a.example.com",), ("*.b.example.com",)]


def test_a_gateway_named_like_an_existing_service_is_not_served() -> None:
    result = translate(CLASS, service("gw"), gateway())
    assert [e.code for e in result.errors] == ["MC6011"]
    conds = {c["type"]: (c["status"], c["reason"]) for c in status(result, "Gateway", "default", "gw")["conditions"]}
    assert conds["Programmed"] == ("False", "Invalid")
    assert tables(result, "default", "gw") == []


def test_an_invalid_object_contributes_nothing_and_the_rest_translates() -> None:
    bad = """
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: bad, namespace: default}
    spec:
      parentRefs: [{name: gw}]
      rules: [{matches: [{path: {type: Exact, value: "no-slash"}}], backendRefs: [{name: app, port: 80}]}]
    """
    good = bad.replace("name: bad", "name: good").replace('"no-slash"', "/ok")
    result = translate(CLASS, service("app"), gateway(), bad, good)
    assert [(e.source.name, e.field) for e in result.errors] == [("bad", "spec.rules[0].matches[0].path.value")]
    assert names(table(result, "default", "gw", 80).http) == ["default/good.rules[0].matches[0]"]
    bad_status = [s for s in result.statuses if s.name == "bad"][0].status["parents"][0]["conditions"][0]
    assert (bad_status["status"], bad_status["reason"]) == ("False", "UnsupportedValue")


def _with_spec(extra: str, listeners: str) -> str:
    """A Gateway of meshcore's class with ``extra`` (YAML lines at spec level) added."""
    return gateway(listeners=listeners).replace("      listeners:", f"{extra}\n      listeners:")


def test_listeners_asked_to_verify_client_certificates_are_closed_not_served_without_it() -> None:
    listeners = """
      - {name: secure, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
      - {name: other, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
      - {name: web, port: 80, protocol: HTTP}
    """
    per_port = """      tls:
        frontend:
          perPort:
          - {port: 443, tls: {validation: {caCertificateRefs: [{kind: ConfigMap, group: "", name: ca}]}}}"""
    result = translate(CLASS, _with_spec(per_port, listeners), tls_secret("cert"))
    closed = [d for d in result.diagnostics if d.code == GatewayCode.LISTENER_NOT_ACCEPTED and "spec.tls.frontend" in d.message]
    assert [d.field for d in closed] == ["spec.listeners[0]"], result.diagnostics
    svc = result.snapshot.service(ServiceRef("default", "gw"))
    assert svc is not None and sorted(p.port for p in svc.ports) == [80, 8443]
    # A default validation closes every listener terminating TLS; plain HTTP still serves.
    default = """      tls:
        frontend:
          default: {validation: {caCertificateRefs: [{kind: ConfigMap, group: "", name: ca}]}}"""
    result = translate(CLASS, _with_spec(default, listeners), tls_secret("cert"))
    svc = result.snapshot.service(ServiceRef("default", "gw"))
    assert svc is not None and [p.port for p in svc.ports] == [80]


def test_gateway_fields_not_applied_are_warnings_naming_them() -> None:
    extra = """      tls:
        backend: {clientCertificateRef: {name: client-cert}}
      infrastructure: {labels: {team: a}}"""
    result = translate(CLASS, _with_spec(extra, "[{name: web, port: 80, protocol: HTTP}]"))
    found = {d.field: d.message for d in result.diagnostics if d.code == GatewayCode.UNSUPPORTED_FEATURE}
    assert set(found) == {"spec.tls.backend", "spec.infrastructure"}, result.diagnostics
    assert "presents no client certificate" in found["spec.tls.backend"]
