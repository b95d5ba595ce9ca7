"""GAMMA features of Gateway API v1.6.1 on mesh routes, as its mesh conformance cases set them up."""

from __future__ import annotations

from _gateway_support import codes, parent, table, translate
from meshcore.model import HeaderModifier, Severity

ECHO = """
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: mesh}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, appProtocol: http}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-v1, namespace: mesh}
spec:
  clusterIP: 10.96.0.21
  ports: [{name: http, port: 8080, appProtocol: http}]
"""


def _route(rules: str) -> str:
    return f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: r, namespace: mesh}}
    spec:
      parentRefs: [{{group: "", kind: Service, name: echo, port: 80}}]
      rules: {rules}
    """


def test_backend_request_header_modifier_travels_on_that_backend_only() -> None:
    result = translate(ECHO, _route("""
        - matches: [{path: {type: PathPrefix, value: /set}}]
          backendRefs:
          - name: echo-v1
            port: 8080
            filters:
            - type: RequestHeaderModifier
              requestHeaderModifier:
                set: [{name: X-Header-Set, value: set-overwrites-values}]
                add: [{name: X-Header-Add, value: add-appends-values}]
                remove: [X-Header-Remove]
          - {name: echo, port: 80}
    """))
    [route] = table(result, "mesh", "echo", 80).http
    first, second = route.destinations
    assert first.request_headers == HeaderModifier(set=[("X-Header-Set", "set-overwrites-values")],
                                                   add=[("X-Header-Add", "add-appends-values")],
                                                   remove=["X-Header-Remove"])
    assert second.request_headers is None and route.request_headers == HeaderModifier()
    assert route.invalid_backends is None
    assert parent(result, "HTTPRoute", "mesh", "r")["ResolvedRefs"] == ("True", "ResolvedRefs")
    assert not codes(result, Severity.WARNING)


def test_backend_response_header_modifier_and_grpc_routes_in_the_mesh() -> None:
    grpc = """
    apiVersion: gateway.networking.k8s.io/v1
    kind: GRPCRoute
    metadata: {name: g, namespace: mesh}
    spec:
      parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
      rules:
      - matches: [{method: {service: echo.Echo, method: Say}}]
        backendRefs:
        - name: echo-v1
          port: 8080
          filters:
          - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-v, value: "1"}]}}
    """
    result = translate(ECHO, grpc)
    [route] = table(result, "mesh", "echo", 80).http
    [dest] = route.destinations
    assert dest.response_headers == HeaderModifier(set=[("x-v", "1")])
    assert route.matches[0].path is not None and route.matches[0].path.value == "/echo.Echo/Say"


def test_other_filters_on_a_backend_fail_closed_naming_the_filter() -> None:
    result = translate(ECHO, _route("""
        - backendRefs:
          - name: echo-v1
            port: 8080
            filters:
            - {type: RequestMirror, requestMirror: {backendRef: {name: echo, port: 80}}}
          - {name: echo, port: 80}
    """))
    [route] = table(result, "mesh", "echo", 80).http
    assert route.invalid_backends is not None and route.invalid_backends.status == 500
    [warning] = [d for d in result.diagnostics if d.code == "MC6006"]
    assert warning.field == "spec.rules[0].backendRefs[0].filters"
    assert "RequestMirror on a backendRef is not supported" in warning.message
