"""Filters, timeouts and retries map onto the model's route actions."""

from __future__ import annotations

import pytest

from _gateway_support import codes, service, table, translate
from meshcore.model import CorsPolicy, HeaderModifier, HttpRoute, Redirect, RetryPolicy, Rewrite


def rule(body: str, match: str = "[{path: {value: /p}}]") -> HttpRoute:
    result = translate(service("front", vip="10.96.0.1"), service("a", vip="10.96.0.2"), f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: r, namespace: default}}
    spec:
      parentRefs: [{{group: "", kind: Service, name: front}}]
      rules:
      - matches: {match}
    {body}
    """)
    assert result.ok, result.errors
    return table(result, "default", "front", 80).http[0]


def error_of(body: str, match: str = "[{path: {value: /p}}]") -> str:
    result = translate(f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: r, namespace: default}}
    spec:
      parentRefs: [{{group: "", kind: Service, name: front}}]
      rules:
      - matches: {match}
    {body}
    """)
    assert len(result.errors) == 1, result.diagnostics
    return f"{result.errors[0].field}: {result.errors[0].message}"


BACKEND = "    backendRefs: [{name: a, port: 80}]"


def test_header_modifiers_keep_set_add_and_remove() -> None:
    route = rule("""
        filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: X-Set, value: "1"}]
            add: [{name: X-Add, value: "2"}]
            remove: [X-Gone]
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: X-Resp, value: "3"}]}
    """ + BACKEND)
    assert route.request_headers == HeaderModifier(set=[("X-Set", "1")], add=[("X-Add", "2")], remove=["X-Gone"])
    assert route.response_headers == HeaderModifier(add=[("X-Resp", "3")])


def test_redirect_scheme_implies_its_well_known_port() -> None:
    route = rule("""
        filters:
        - type: RequestRedirect
          requestRedirect: {scheme: https, hostname: secure.example.com, statusCode: 308}
    """)
    assert route.redirect == Redirect(scheme="https", host="secure.example.com", port=443, status=308)
    assert not route.destinations


def test_redirect_defaults_to_302_and_can_replace_the_full_path_or_the_prefix() -> None:
    full = rule("""
        filters:
        - type: RequestRedirect
          requestRedirect: {port: 8443, path: {type: ReplaceFullPath, replaceFullPath: /new}}
    """)
    assert full.redirect == Redirect(port=8443, path="/new", status=302)
    prefix = rule("""
        filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    """)
    assert prefix.redirect == Redirect(prefix_replace="/v2")


def test_url_rewrite_sets_host_and_prefix() -> None:
    route = rule("""
        filters:
        - type: URLRewrite
          urlRewrite: {hostname: internal.svc, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    """ + BACKEND)
    assert route.rewrite == Rewrite(host="internal.svc", prefix="/")


def test_rewrite_of_the_root_prefix_keeps_the_prefix_to_replace() -> None:
    route = rule("""
        filters:
        - type: URLRewrite
          urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /app}}
    """ + BACKEND, match="[{path: {value: /}}]")
    path = route.matches[0].path
    assert path is not None and path.value == "/"


def test_mirrors_take_a_percent_or_a_fraction() -> None:
    route = rule("""
        filters:
        - type: RequestMirror
          requestMirror: {backendRef: {name: a, port: 80}, percent: 10}
        - type: RequestMirror
          requestMirror: {backendRef: {name: a, port: 80}, fraction: {numerator: 1, denominator: 8}}
    """ + BACKEND)
    assert [m.percent for m in route.mirrors] == [10.0, 12.5]
    assert route.mirrors[0].destination.service.name == "a"


def test_cors_maps_to_the_cors_policy_with_the_default_max_age() -> None:
    route = rule("""
        filters:
        - type: CORS
          cors: {allowOrigins: ["https://a.example"], allowMethods: [GET], allowHeaders: [x-a],
                 exposeHeaders: [x-b], allowCredentials: true}
    """ + BACKEND)
    assert route.cors == CorsPolicy(allow_origins=["https://a.example"], allow_methods=["GET"],
                                    allow_headers=["x-a"], expose_headers=["x-b"], allow_credentials=True, max_age_s=5)


def test_timeouts_and_retries() -> None:
    route = rule("""
        timeouts: {request: 1m30s, backendRequest: 500ms}
        retry: {attempts: 3, codes: [503, 500]}
    """ + BACKEND)
    assert route.timeout_ms == 90_000
    assert route.retries == RetryPolicy(attempts=3, per_try_timeout_ms=500,
                                        retry_on=["connect-failure", "refused-stream", "retriable-status-codes"],
                                        status_codes=[500, 503])


def test_a_backend_request_timeout_alone_is_a_per_try_timeout_without_retries() -> None:
    route = rule("""
        timeouts: {backendRequest: 2s}
    """ + BACKEND)
    assert route.retries == RetryPolicy(attempts=0, per_try_timeout_ms=2000, retry_on=[])
    assert route.timeout_ms is None


def test_zero_duration_disables_the_request_timeout() -> None:
    route = rule("""
        timeouts: {request: 0s}
    """ + BACKEND)
    assert route.timeout_ms == 0


@pytest.mark.parametrize(("body", "expected"), [
    ("""
        filters:
        - type: RequestRedirect
          requestRedirect: {hostname: a.example}
        - type: URLRewrite
          urlRewrite: {hostname: b.example}
    """, "spec.rules[0].filters: RequestRedirect and URLRewrite cannot both be used in a rule"),
    ("""
        filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: a, value: "1"}]}
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: b, value: "1"}]}
    """, "spec.rules[0].filters[1]: RequestHeaderModifier filter cannot be repeated"),
    ("""
        filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: X-A, value: "1"}], remove: [x-a]}
    """, "spec.rules[0].filters[0].requestHeaderModifier.remove[0]: header 'x-a' already has an action"),
    ("""
        timeouts: {request: 1s, backendRequest: 2s}
    """, "spec.rules[0].timeouts.backendRequest: backendRequest timeout cannot be longer"),
    ("""
        filters:
        - type: RequestRedirect
          requestRedirect: {statusCode: 304}
    """, "spec.rules[0].filters[0].requestRedirect.statusCode: 304 is not one of"),
])
def test_invalid_filter_combinations_are_errors_at_their_field(body: str, expected: str) -> None:
    assert error_of(body + BACKEND).startswith(expected)


def test_extension_ref_fails_closed_with_500() -> None:
    result = translate(service("front", vip="10.96.0.1"), service("a", vip="10.96.0.2"), """
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: r, namespace: default}
    spec:
      parentRefs: [{group: "", kind: Service, name: front}]
      rules:
      - filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: x}}]
        backendRefs: [{name: a, port: 80}]
    """)
    route = table(result, "default", "front", 80).http[0]
    assert route.direct_response is not None and route.direct_response.status == 500
    assert "MC6006" in codes(result)
