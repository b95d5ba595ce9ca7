"""GRPCRoute: service/method matches become path matches; precedence follows service then method."""

from __future__ import annotations

import pytest

from _gateway_support import names, service, table, translate
from meshcore.model import MatchKind


def grpc_table(matches: str) -> list[tuple[str, str]]:
    result = translate(service("api", vip="10.96.0.1", port=9000, port_name="grpc"), f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: GRPCRoute
    metadata: {{name: g, namespace: default}}
    spec:
      parentRefs: [{{group: "", kind: Service, name: api}}]
      rules:
      - matches: {matches}
        backendRefs: [{{name: api, port: 9000}}]
    """)
    assert result.ok, result.errors
    out = []
    for route in table(result, "default", "api", 9000).http:
        path = route.matches[0].path
        out.append((path.kind.value, path.value) if path else ("", ""))
    return out


@pytest.mark.parametrize(("method", "expected"), [
    ("{service: pkg.Svc, method: Get}", (MatchKind.EXACT.value, "/pkg.Svc/Get")),
    ("{service: pkg.Svc}", (MatchKind.PATH_PREFIX.value, "/pkg.Svc")),
    ("{method: Get}", (MatchKind.REGEX.value, "/[^/]+/Get")),
    ("{type: RegularExpression, service: 'pkg\\..*', method: 'Get.*'}", (MatchKind.REGEX.value, "/pkg\\..*/Get.*")),
    ("{type: RegularExpression, method: 'List.*'}", (MatchKind.REGEX.value, "/[^/]+/List.*")),
])
def test_method_matches_become_paths(method: str, expected: tuple[str, str]) -> None:
    assert grpc_table(f"[{{method: {method}}}]") == [expected]


def test_no_method_matches_every_request() -> None:
    assert grpc_table("[{headers: [{name: x-a, value: b}]}]") == [("", "")]


def test_exact_method_then_service_then_method_only_then_everything() -> None:
    got = grpc_table("[{method: {method: Get}}, {}, {method: {service: pkg.Svc}}, "
                     "{method: {service: pkg.Svc, method: Get}}]")
    assert [kind for kind, _ in got] == ["Exact", "PathPrefix", "RegularExpression", ""]


def test_a_method_match_needs_a_service_or_a_method() -> None:
    result = translate("""
    apiVersion: gateway.networking.k8s.io/v1
    kind: GRPCRoute
    metadata: {name: g, namespace: default}
    spec:
      parentRefs: [{group: "", kind: Service, name: api}]
      rules: [{matches: [{method: {type: Exact}}]}]
    """)
    assert [e.field for e in result.errors] == ["spec.rules[0].matches[0].method"]


def test_grpcroute_wins_a_service_port_over_an_httproute_in_the_mesh() -> None:
    http = """
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: h, namespace: default}
    spec:
      parentRefs: [{group: "", kind: Service, name: api}]
      rules: [{backendRefs: [{name: api, port: 9000}]}]
    """
    grpc = http.replace("HTTPRoute", "GRPCRoute").replace("name: h,", "name: g,")
    result = translate(service("api", vip="10.96.0.1", port=9000), http, grpc)
    assert names(table(result, "default", "api", 9000).http) == ["default/g.rules[0].matches[0]"]
    h = [s for s in result.statuses if s.name == "h"][0].status["parents"][0]["conditions"][0]
    assert (h["status"], h["reason"]) == ("False", "Conflicted")
