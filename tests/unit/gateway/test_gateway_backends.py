"""Weights (including 0) and the share of invalid backends answered with an error."""

from __future__ import annotations

import meshcore
import pytest
from _gateway_support import parent, service, table, translate
from meshcore.model import HttpRoute, InvalidBackends


def mesh_route(backends: str, kind: str = "HTTPRoute") -> str:
    return f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: {kind}
    metadata: {{name: r, namespace: default}}
    spec:
      parentRefs: [{{group: "", kind: Service, name: front}}]
      rules: [{{backendRefs: {backends}}}]
    """


SERVICES = (service("front", vip="10.96.0.1"), service("a", vip="10.96.0.2"), service("b", vip="10.96.0.3"))


def only_route(*docs: str) -> tuple[meshcore.Translation, HttpRoute]:
    result = translate(*SERVICES, *docs)
    return result, table(result, "default", "front", 80).http[0]


def test_weights_are_kept_including_zero() -> None:
    _, route = only_route(mesh_route("[{name: a, port: 80, weight: 3}, {name: b, port: 80, weight: 0}]"))
    assert [(d.service.name, d.weight) for d in route.destinations] == [("a", 3), ("b", 0)]
    assert route.invalid_backends is None


def test_weight_defaults_to_one() -> None:
    _, route = only_route(mesh_route("[{name: a, port: 80}, {name: b, port: 80}]"))
    assert [d.weight for d in route.destinations] == [1, 1]


def test_the_share_of_an_invalid_backend_is_answered_with_500() -> None:
    result, route = only_route(mesh_route("[{name: a, port: 80, weight: 3}, {name: missing, port: 80, weight: 1}]"))
    assert [(d.service.name, d.weight) for d in route.destinations] == [("a", 3)]
    assert route.invalid_backends == InvalidBackends(weight=1, status=500)
    assert parent(result, "HTTPRoute", "default", "r")["ResolvedRefs"] == ("False", "BackendNotFound")


def test_all_backends_invalid_answers_500_for_every_request() -> None:
    _, route = only_route(mesh_route("[{name: missing, port: 80}, {name: a, port: 9999}]"))
    assert not route.destinations
    assert route.direct_response is not None and route.direct_response.status == 500


def test_an_unsupported_kind_is_invalid() -> None:
    result, route = only_route(mesh_route("[{group: example.com, kind: Bucket, name: a}, {name: a, port: 80}]"))
    assert route.invalid_backends == InvalidBackends(weight=1, status=500)
    assert parent(result, "HTTPRoute", "default", "r")["ResolvedRefs"] == ("False", "InvalidKind")


def test_only_zero_weights_forward_nothing() -> None:
    _, route = only_route(mesh_route("[{name: a, port: 80, weight: 0}]"))
    assert route.direct_response is not None and route.direct_response.status == 500


def test_a_rule_without_backends_answers_500() -> None:
    _, route = only_route(mesh_route("[]"))
    assert route.direct_response is not None and route.direct_response.status == 500


def test_grpc_answers_unavailable_through_503() -> None:
    _, route = only_route(mesh_route("[{name: a, port: 80}, {name: missing, port: 80}]", kind="GRPCRoute"))
    assert route.invalid_backends == InvalidBackends(weight=1, status=503)


def test_tcp_routes_refuse_the_share_of_invalid_backends() -> None:
    result = translate(*SERVICES, mesh_route("[{name: a, port: 80, weight: 1}, {name: gone, port: 80, weight: 1}]",
                                             kind="TCPRoute"))
    tcp = table(result, "default", "front", 80).tcp[0]
    assert [d.service.name for d in tcp.destinations] == ["a"]
    assert tcp.invalid_weight == 1


@pytest.mark.parametrize("kind", ["HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute"])
def test_a_missing_backend_service_is_a_warning_at_its_reference(kind: str) -> None:
    route = mesh_route("[{name: a, port: 80}, {name: gone, port: 80}]", kind=kind)
    if kind == "TLSRoute":
        route = route.replace("      rules:", "      hostnames: [front.example]\n      rules:")
    result = translate(*SERVICES, route)
    [warning] = [d for d in result.diagnostics if d.code == "MC6006"]
    assert (warning.source.kind, warning.field) == (kind, "spec.rules[0].backendRefs[1]")
    assert warning.message.startswith("backend Service default/gone not found (BackendNotFound); its share")
    assert parent(result, kind, "default", "r")["ResolvedRefs"] == ("False", "BackendNotFound")


def test_a_route_no_parent_accepts_still_has_its_missing_backends_reported() -> None:
    route = mesh_route("[{name: gone, port: 80}]").replace("name: front}", "name: front, port: 8080}")
    result = translate(*SERVICES, route)
    assert parent(result, "HTTPRoute", "default", "r")["Accepted"] == ("False", "NoMatchingParent")
    [warning] = [d for d in result.diagnostics if d.code == "MC6006"]
    assert warning.field == "spec.rules[0].backendRefs[0]"
    assert warning.message == ("backend Service default/gone not found (BackendNotFound); no parent accepts the "
                               "route, so it carries no traffic yet")
