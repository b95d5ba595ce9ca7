"""BackendTLSPolicy: Gateway routes reach the Service over TLS verified with its CA; anything else fails closed."""

from __future__ import annotations

import pytest
from _gateway_support import CLASS, authority, conditions, gateway, service, status, table, translate
from meshcore.model import ServiceRef, TlsMode

HTTPS_BACKEND = service("secure", port=443, port_name="https", vip="10.96.0.5")
CA = """
apiVersion: v1
kind: ConfigMap
metadata: {name: secure-ca, namespace: default}
data: {ca.crt: %s}
"""


def _policy(validation: str, target: str = "{group: '', kind: Service, name: secure}") -> str:
    return f"""
    apiVersion: gateway.networking.k8s.io/v1alpha3
    kind: BackendTLSPolicy
    metadata: {{name: tls, namespace: default}}
    spec:
      targetRefs: [{target}]
      validation: {validation}
    """


def _route(parent: str = "{name: gw}") -> str:
    return f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: r, namespace: default}}
    spec:
      parentRefs: [{parent}]
      rules: [{{backendRefs: [{{name: secure, port: 443}}]}}]
    """


def _ca() -> str:
    import json

    return CA % json.dumps(authority().pem)


def test_gateway_routes_send_to_the_tls_subset_whose_policy_verifies_the_backend() -> None:
    result = translate(CLASS, gateway(), HTTPS_BACKEND, _ca(), _route(),
                       _policy("{hostname: secure.example.com, caCertificateRefs: [{kind: ConfigMap, name: secure-ca}]}"))
    assert result.ok, result.errors
    [route] = table(result, "default", "gw", 80).http
    [dest] = route.destinations
    assert (dest.service, dest.port, dest.subset) == (ServiceRef("default", "secure"), 443, "backend-tls")
    policy = result.snapshot.traffic_policy(ServiceRef("default", "secure"), 443, "backend-tls")
    assert policy is not None and policy.tls is not None
    assert (policy.tls.mode, policy.tls.sni, policy.tls.subject_alt_names) == (
        TlsMode.SIMPLE, "secure.example.com", ("secure.example.com",))
    assert policy.tls.ca_bundle == authority().pem
    # The mesh's own traffic to the Service is untouched.
    assert result.snapshot.traffic_policy(ServiceRef("default", "secure"), 443) is None


def test_subject_alt_names_replace_the_hostname_for_verification() -> None:
    result = translate(CLASS, gateway(), HTTPS_BACKEND, _ca(), _route(), _policy(
        "{hostname: secure.example.com, caCertificateRefs: [{kind: ConfigMap, name: secure-ca}], "
        "subjectAltNames: [{type: Hostname, hostname: other.example.com}]}"))
    policy = result.snapshot.traffic_policy(ServiceRef("default", "secure"), 443, "backend-tls")
    assert policy is not None and policy.tls is not None
    assert (policy.tls.sni, policy.tls.subject_alt_names) == ("secure.example.com", ("other.example.com",))


@pytest.mark.parametrize(("validation", "problem"), [
    ("{hostname: s.example.com, caCertificateRefs: [{kind: ConfigMap, name: gone}]}",
     "ConfigMap default/gone with a ca.crt holding PEM certificates not found"),
    ("{hostname: s.example.com, wellKnownCACertificates: System}", "wellKnownCACertificates is not supported"),
    ("{hostname: s.example.com, caCertificateRefs: [{kind: Secret, name: secure-ca}]}", "only ConfigMaps"),
])
def test_a_policy_that_cannot_be_applied_fails_the_backend_closed(validation: str, problem: str) -> None:
    result = translate(CLASS, gateway(), HTTPS_BACKEND, _ca(), _route(), _policy(validation))
    [route] = table(result, "default", "gw", 80).http
    assert route.direct_response is not None and route.direct_response.status == 500
    assert not result.snapshot.traffic_policies
    [warning] = [d for d in result.diagnostics if d.code == "MC6009"]
    assert problem in warning.message and "never plaintext" in warning.message


def test_a_mesh_route_to_a_service_with_a_backend_tls_policy_fails_closed() -> None:
    result = translate(service("front", vip="10.96.0.1"), HTTPS_BACKEND, _ca(),
                       _route("{group: '', kind: Service, name: front}"),
                       _policy("{hostname: s.example.com, caCertificateRefs: [{kind: ConfigMap, name: secure-ca}]}"))
    [route] = table(result, "default", "front", 80).http
    assert route.direct_response is not None and route.direct_response.status == 500
    [warning] = [d for d in result.diagnostics if d.code == "MC6006"]
    assert "originates for Gateway routes only" in warning.message


def test_a_policy_for_one_port_by_name_leaves_the_other_ports_plain() -> None:
    two_ports = """
    apiVersion: v1
    kind: Service
    metadata: {name: secure, namespace: default}
    spec:
      clusterIP: 10.96.0.5
      ports: [{name: https, port: 443}, {name: http, port: 80}]
    """
    route = _route().replace("port: 443}", "port: 443}, {name: secure, port: 80}")
    result = translate(CLASS, gateway(), two_ports, _ca(), route, _policy(
        "{hostname: s.example.com, caCertificateRefs: [{kind: ConfigMap, name: secure-ca}]}",
        "{group: '', kind: Service, name: secure, sectionName: https}"))
    [route_out] = table(result, "default", "gw", 80).http
    assert sorted((d.port, d.subset) for d in route_out.destinations) == [(80, ""), (443, "backend-tls")]


def test_the_policy_status_names_the_gateways_reaching_its_service() -> None:
    ok = translate(CLASS, gateway(), HTTPS_BACKEND, _ca(), _route(),
                   _policy("{hostname: s.example.com, caCertificateRefs: [{kind: ConfigMap, name: secure-ca}]}"))
    [ancestor] = status(ok, "BackendTLSPolicy", "default", "tls")["ancestors"]
    assert ancestor["ancestorRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                       "namespace": "default", "name": "gw"}
    assert conditions(ancestor) == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}
    missing = translate(CLASS, gateway(), HTTPS_BACKEND, _route(),
                        _policy("{hostname: s.example.com, caCertificateRefs: [{kind: ConfigMap, name: secure-ca}]}"))
    [ancestor] = status(missing, "BackendTLSPolicy", "default", "tls")["ancestors"]
    assert conditions(ancestor) == {"Accepted": ("False", "NoValidCACertificate"),
                                    "ResolvedRefs": ("False", "InvalidCACertificateRef")}
