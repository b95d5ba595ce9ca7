"""ReferenceGrant: cross-namespace backends and certificates of Gateways only when granted."""

from __future__ import annotations

import pytest

from _gateway_support import CLASS, gateway, parent, service, status, table, tls_secret, translate

from meshcore.model import ServiceRef

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: front}
spec:
  parentRefs: [{name: gw, namespace: front}]
  rules: [{backendRefs: [{name: db, namespace: back, port: 5432}]}]
"""


def grant(version: str = "v1beta1", kind: str = "HTTPRoute", namespace: str = "front", name: str | None = None) -> str:
    to = f"{{group: '', kind: Service, name: {name}}}" if name else "{group: '', kind: Service}"
    return f"""
    apiVersion: gateway.networking.k8s.io/{version}
    kind: ReferenceGrant
    metadata: {{name: g, namespace: back}}
    spec:
      from: [{{group: gateway.networking.k8s.io, kind: {kind}, namespace: {namespace}}}]
      to: [{to}]
    """


#: Where the route sends requests: (service, port) per destination, or the status it answers with.
Outcome = tuple[list[tuple[ServiceRef, int | None]], int | None]
#: The granted outcome: every request goes to back/db:5432.
TO_DB: Outcome = ([(ServiceRef("back", "db"), 5432)], None)


def run(*extra: str) -> tuple[dict[str, tuple[str, str]], Outcome]:
    result = translate(CLASS, service("db", "back", 5432), gateway("gw", "front"), ROUTE, *extra)
    [route] = table(result, "front", "gw", 80).http
    answer = route.direct_response.status if route.direct_response else None
    return parent(result, "HTTPRoute", "front", "r"), ([(d.service, d.port) for d in route.destinations], answer)


def test_without_a_grant_the_backend_is_not_permitted_and_answered_with_500() -> None:
    conds, outcome = run()
    assert conds["ResolvedRefs"] == ("False", "RefNotPermitted")
    assert conds["Accepted"] == ("True", "Accepted")
    assert outcome == ([], 500)


@pytest.mark.parametrize("version", ["v1beta1", "v1", "v1alpha2"])
def test_a_grant_of_any_served_version_permits_the_reference(version: str) -> None:
    conds, outcome = run(grant(version))
    assert conds["ResolvedRefs"] == ("True", "ResolvedRefs")
    assert outcome == TO_DB


@pytest.mark.parametrize("mismatch", [
    {"kind": "GRPCRoute"}, {"namespace": "elsewhere"}, {"name": "other-db"},
])
def test_a_grant_for_another_kind_namespace_or_name_does_not_apply(mismatch: dict[str, str]) -> None:
    conds, outcome = run(grant(**mismatch))
    assert conds["ResolvedRefs"] == ("False", "RefNotPermitted")
    assert outcome == ([], 500)


def test_a_grant_naming_the_service_applies() -> None:
    conds, outcome = run(grant(name="db"))
    assert conds["ResolvedRefs"] == ("True", "ResolvedRefs")
    assert outcome == TO_DB


def test_mesh_routes_need_no_grant_for_cross_namespace_backends() -> None:
    route = """
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: m, namespace: front}
    spec:
      parentRefs: [{group: "", kind: Service, name: web}]
      rules: [{backendRefs: [{name: db, namespace: back, port: 5432}]}]
    """
    result = translate(service("web", "front", 80, "10.96.0.9"), service("db", "back", 5432), route)
    assert parent(result, "HTTPRoute", "front", "m")["ResolvedRefs"] == ("True", "ResolvedRefs")
    assert [(d.service, d.port) for d in table(result, "front", "web", 80).http[0].destinations] == [
        (ServiceRef("back", "db"), 5432)]


def test_certificate_refs_across_namespaces_need_a_grant_for_gateways() -> None:
    listeners = "[{name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: c, namespace: certs}]}}]"
    secret_grant = """
    apiVersion: gateway.networking.k8s.io/v1beta1
    kind: ReferenceGrant
    metadata: {name: g, namespace: certs}
    spec:
      from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: front}]
      to: [{group: "", kind: Secret, name: c}]
    """
    secret = tls_secret("c", "certs")
    denied = translate(CLASS, gateway("gw", "front", listeners), secret)
    listener = status(denied, "Gateway", "front", "gw")["listeners"][0]
    assert {c["type"]: c["reason"] for c in listener["conditions"]}["ResolvedRefs"] == "RefNotPermitted"
    assert not denied.snapshot.tls_terminations
    allowed = translate(CLASS, gateway("gw", "front", listeners), secret_grant, secret)
    listener = status(allowed, "Gateway", "front", "gw")["listeners"][0]
    assert {c["type"]: c["status"] for c in listener["conditions"]}["ResolvedRefs"] == "True"
    [term] = allowed.snapshot.tls_terminations
    assert [str(c) for c in term.certificates] == ["certs/c"]
