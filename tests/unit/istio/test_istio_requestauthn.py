"""RequestAuthentication → model request authentications, with exact errors for invalid rules."""

from __future__ import annotations

import pytest
from _istio_support import istio, pod, translate

from meshcore.model import ClaimToHeader, JwtHeader, JwtRule

JWKS = '{"keys": [{"kty": "oct", "alg": "HS256", "k": "c2VjcmV0"}]}'


def _authn(spec: str, namespace: str = "shop", name: str = "jwt", version: str = "security.istio.io/v1") -> str:
    return istio("RequestAuthentication", name, spec, namespace=namespace, version=version)


@pytest.mark.parametrize("version", ["security.istio.io/v1", "security.istio.io/v1beta1"])
def test_rules_are_translated_in_every_served_version(version: str) -> None:
    result = translate(_authn(f"""
        selector: {{matchLabels: {{app: web}}}}
        jwtRules:
        - issuer: https://issuer.example.com
          audiences: [web, api]
          jwks: '{JWKS}'
          fromHeaders: [{{name: X-Token, prefix: "Bearer "}}]
          fromParams: [token]
          fromCookies: [session]
          forwardOriginalToken: true
          outputPayloadToHeader: x-jwt-payload
          outputClaimToHeaders: [{{header: x-sub, claim: sub}}]
        - issuer: other
          jwksUri: https://keys.example.com/jwks.json
          timeout: 2s
        """, version=version), pod("web-0", "{app: web}", "10.1.0.5", namespace="shop"))
    assert result.diagnostics == ()
    (authn,) = result.snapshot.request_authentications
    assert (authn.namespace, authn.name, authn.selector.namespace, dict(authn.selector.labels)) == (
        "shop", "jwt", "shop", {"app": "web"})
    first, second = authn.jwt_rules
    assert first == JwtRule(
        "https://issuer.example.com", audiences=("web", "api"), jwks=JWKS, from_headers=(JwtHeader("x-token", "Bearer "),),
        from_params=("token",), from_cookies=("session",), forward_original_token=True,
        output_payload_to_header="x-jwt-payload", output_claim_to_headers=(ClaimToHeader("x-sub", "sub"),))
    assert (second.jwks_uri, second.timeout_ms, second.jwks) == ("https://keys.example.com/jwks.json", 2000, None)
    assert authn.source.line == 1 and authn.source.kind == "RequestAuthentication"


def test_scope_follows_istio() -> None:
    result = translate(_authn("jwtRules: [{issuer: a}]", namespace="istio-system", name="mesh"),
                       _authn("jwtRules: [{issuer: b}]", namespace="shop", name="ns"))
    by_name = {a.name: a for a in result.snapshot.request_authentications}
    assert by_name["mesh"].selector.namespace is None
    assert by_name["ns"].selector.namespace == "shop" and not by_name["ns"].selector.labels


@pytest.mark.parametrize(("rule", "code", "field", "message"), [
    ("{audiences: [a]}", "MC0101", "spec.jwtRules[0].issuer", "required"),
    ("{issuer: ''}", "MC7002", "spec.jwtRules[0].issuer", "must not be empty"),
    (f"{{issuer: a, jwks: '{JWKS}', jwksUri: 'https://k'}}", "MC7010", "spec.jwtRules[0].jwks", "only one of jwks or jwksUri can be set"),
    ("{issuer: a, jwks: 'not json'}", "MC7002", "spec.jwtRules[0].jwks", "jwks is not valid JSON"),
    ("{issuer: a, jwks: '{\"k\": 1}'}", "MC7002", "spec.jwtRules[0].jwks", '"keys" list'),
    ("{issuer: a, jwks: '{\"keys\": [{\"kty\": \"RSA\"}]}'}", "MC7002", "spec.jwtRules[0].jwks", "needs n, e"),
    ("{issuer: a, jwksUri: 'keys.json'}", "MC7002", "spec.jwtRules[0].jwksUri", "http:// or https://"),
    ("{issuer: a, fromHeaders: [{name: 'a b'}]}", "MC7002", "spec.jwtRules[0].fromHeaders[0].name", "header name"),
    ("{issuer: a, fromHeaders: [{prefix: x}]}", "MC0101", "spec.jwtRules[0].fromHeaders[0].name", "required"),
    ("{issuer: a, outputClaimToHeaders: [{header: x, claim: ''}]}", "MC7002",
     "spec.jwtRules[0].outputClaimToHeaders[0].claim", "must not be empty"),
    ("{issuer: a, timeout: soon}", "MC7002", "spec.jwtRules[0].timeout", "duration"),
])
def test_invalid_rules_are_errors_at_their_field(rule: str, code: str, field: str, message: str) -> None:
    result = translate(_authn(f"jwtRules: [{{issuer: ok}}, {rule}]"))
    field = field.replace("jwtRules[0]", "jwtRules[1]")
    errors = [d for d in result.diagnostics if d.severity.value == "error"]
    assert [(d.code, d.field) for d in errors] == [(code, field)], result.diagnostics
    assert message in errors[0].message, errors[0].message
    assert errors[0].source.line > 0
    # An object with an error contributes nothing.
    assert result.snapshot.request_authentications == ()


def test_target_refs_are_reported() -> None:
    result = translate(_authn("targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n"
                              "jwtRules: [{issuer: a}]"))
    [d] = result.diagnostics
    assert (d.code, d.field) == ("MC7014", "spec.targetRefs")
    assert "targets Gateway/gw (targetRefs)" in d.message and "not applied" in d.message
    # Not applied: without a selector it would otherwise cover the whole namespace.
    assert result.snapshot.request_authentications == ()


def test_selector_with_target_ref_is_an_error() -> None:
    result = translate(_authn("selector: {matchLabels: {app: web}}\n"
                              "targetRef: {kind: Service, group: '', name: web}\njwtRules: [{issuer: a}]"))
    [d] = result.diagnostics
    assert (d.code, d.field, d.severity.value) == ("MC7010", "spec.targetRef", "error")
    assert "only one of targetRefs or selector can be set" in d.message
    assert result.snapshot.request_authentications == ()


def test_not_request_principals_are_translated() -> None:
    result = translate(istio("AuthorizationPolicy", "p", """
        rules:
        - from: [{source: {notRequestPrincipals: ["*"]}}]
        """, namespace="shop", version="security.istio.io/v1"))
    assert result.diagnostics == ()
    (policy,) = result.snapshot.policies
    assert policy.rules[0].sources[0].not_request_principals == ("*",)


def test_snake_case_selector_is_an_error_not_a_namespace_wide_policy() -> None:
    result = translate(_authn(f"""
        selector: {{match_labels: {{app: web}}}}
        jwtRules: [{{issuer: https://issuer.example.com, jwks: '{JWKS}'}}]
        """))
    (diag,) = [d for d in result.diagnostics if d.code == "MC7003"]
    assert diag.field == "spec.selector.match_labels" and "did you mean 'matchLabels'?" in diag.message
    assert result.snapshot.request_authentications == ()
