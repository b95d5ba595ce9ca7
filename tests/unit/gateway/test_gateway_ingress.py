"""Ingress with IngressClass: class selection, path precedence, default backend, missing backends."""

from __future__ import annotations

import pytest

from _gateway_support import authority, codes, names, service, status, table, tables, tls_secret, translate
from meshcore.model import MatchKind, ServiceRef, Severity
from testcerts import mismatched

CLASSES = """
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: meshcore}
spec: {controller: meshcore.io/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: k8s.io/ingress-nginx}
"""


def ingress(spec: str, name: str = "ing", annotations: str = "{}") -> str:
    return f"""
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {{name: {name}, namespace: web, annotations: {annotations}}}
    spec:
    {spec}
    """


BACKEND = "{service: {name: app, port: {number: 80}}}"
APP = service("app", "web", 80, "10.96.0.1")


@pytest.mark.parametrize(("spec", "annotations", "ours"), [
    ("  ingressClassName: meshcore\n      defaultBackend: " + BACKEND, "{}", True),
    ("  ingressClassName: nginx\n      defaultBackend: " + BACKEND, "{}", False),
    ("  defaultBackend: " + BACKEND, "{kubernetes.io/ingress.class: meshcore}", True),
    ("  defaultBackend: " + BACKEND, "{}", False),  # the default class is nginx's
])
def test_class_selection(spec: str, annotations: str, ours: bool) -> None:
    result = translate(CLASSES, APP, ingress(spec, annotations=annotations))
    assert bool(tables(result, "web", "ing")) is ours
    assert ("MC6004" in codes(result, Severity.INFO)) is not ours


def test_the_default_class_applies_to_ingresses_without_class() -> None:
    marked = "metadata: {name: meshcore, annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}}"
    default = CLASSES.replace("metadata: {name: meshcore}", marked)
    default = default.replace("{ingressclass.kubernetes.io/is-default-class: \"true\"}", "{}")
    result = translate(default, APP, ingress("  defaultBackend: " + BACKEND))
    assert tables(result, "web", "ing")


def test_paths_longest_first_exact_before_prefix_then_the_default_backend() -> None:
    spec = f"""  ingressClassName: meshcore
      defaultBackend: {BACKEND}
      rules:
      - host: shop.example.com
        http:
          paths:
          - {{path: /, pathType: Prefix, backend: {BACKEND}}}
          - {{path: /a, pathType: Prefix, backend: {BACKEND}}}
          - {{path: /a/b, pathType: ImplementationSpecific, backend: {BACKEND}}}
          - {{path: /a, pathType: Exact, backend: {BACKEND}}}
    """
    result = translate(CLASSES, APP, ingress(spec))
    assert result.ok, result.errors
    shop = table(result, "web", "ing", 80, ("shop.example.com",))
    assert names(shop.http) == ["web/ing.rules[0].http.paths[3]", "web/ing.rules[0].http.paths[2]",
                                "web/ing.rules[0].http.paths[1]", "web/ing.rules[0].http.paths[0]",
                                "web/ing.defaultBackend"]
    kinds = [r.matches[0].path.kind if r.matches[0].path else None for r in shop.http]
    assert kinds == [MatchKind.EXACT, MatchKind.PATH_PREFIX, MatchKind.PATH_PREFIX, None, None]
    # Hosts without a rule get the default backend.
    assert names(table(result, "web", "ing", 80, ()).http) == ["web/ing.defaultBackend"]


def test_a_missing_backend_answers_503_and_a_usable_tls_secret_adds_port_443() -> None:
    spec = """  ingressClassName: meshcore
      tls: [{hosts: [a.example.com], secretName: s}]
      rules:
      - host: a.example.com
        http:
          paths:
          - {path: /, pathType: Prefix, backend: {service: {name: gone, port: {name: http}}}}
    """
    result = translate(CLASSES, APP, ingress(spec), tls_secret("s", "web", ("a.example.com",)))
    for port in (80, 443):
        [route] = table(result, "web", "ing", port, ("a.example.com",)).http
        assert route.direct_response is not None and route.direct_response.status == 503
    assert codes(result, Severity.WARNING) == ["MC6006"]
    [term] = result.snapshot.tls_terminations
    assert (term.port, term.hostnames, [str(c) for c in term.certificates]) == (443, ("a.example.com",), ["web/s"])


@pytest.mark.parametrize(("secret", "problem"), [
    ("", "Secret web/s not found"),
    ("expired", "the certificate expired on"),
    ("mismatched", "tls.key does not match the certificate"),
])
def test_a_tls_entry_whose_secret_cannot_serve_leaves_port_443_closed(secret: str, problem: str) -> None:
    spec = """  ingressClassName: meshcore
      tls: [{hosts: [a.example.com], secretName: s}]
      defaultBackend: """ + BACKEND
    pem = {"expired": authority().issue(["a.example.com"], expired=True),
           "mismatched": mismatched(authority().issue(["a.example.com"]), authority().issue(["b.example.com"]))}
    docs = [pem[secret].secret("s", "web")] if secret else []
    result = translate(CLASSES, APP, ingress(spec), *docs)
    svc = result.snapshot.service(ServiceRef("web", "ing"))
    assert svc is not None and [p.port for p in svc.ports] == [80]
    assert not tables(result, "web", "ing", 443) and not result.snapshot.tls_terminations
    [warning] = [d for d in result.diagnostics if d.code == "MC6010"]
    assert warning.field == "spec.tls[0].secretName" and problem in warning.message
    assert "a.example.com are not served on port 443" in warning.message
    assert "PRIVATE KEY" not in warning.message and "BEGIN" not in warning.message


def test_the_address_in_the_ingress_status_is_its_vip_and_reported_back() -> None:
    spec = "  ingressClassName: meshcore\n      defaultBackend: " + BACKEND
    result = translate(CLASSES, APP, ingress(spec).rstrip() + "\n    status: {loadBalancer: {ingress: [{ip: 10.96.255.254}]}}")
    svc = result.snapshot.service(ServiceRef("web", "ing"))
    assert svc is not None and svc.vips == ("10.96.255.254",)
    assert status(result, "Ingress", "web", "ing") == {"loadBalancer": {"ingress": [{"ip": "10.96.255.254"}]}}


def test_an_ingress_named_like_an_existing_service_is_an_error() -> None:
    result = translate(CLASSES, APP, ingress("  ingressClassName: meshcore\n      defaultBackend: " + BACKEND,
                                             name="app"))
    assert [e.code for e in result.errors] == ["MC6011"]
    assert not tables(result, "web", "app")


def test_a_malformed_ingress_is_an_error_not_an_adapter_failure() -> None:
    result = translate(CLASSES, APP, """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {name: broken, namespace: web}
    spec: just-a-string
    """)
    assert [(e.code, e.field) for e in result.errors] == [("MC0102", "spec")]
