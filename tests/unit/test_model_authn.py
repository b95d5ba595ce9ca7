"""RequestAuthentication and JwtRule: validation and their place in the Snapshot."""

from __future__ import annotations

import json

import pytest

from meshcore import model as m

JWKS = json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": "c2VjcmV0"}]})


def _authn(name: str, *rules: m.JwtRule, namespace: str = "shop") -> m.RequestAuthentication:
    return m.RequestAuthentication(name, namespace, m.WorkloadSelector(namespace, {"app": "web"}), rules)


def test_rule_keeps_keys_as_canonical_json_and_lowercases_header_names() -> None:
    rule = m.JwtRule("https://issuer", audiences=["web"], jwks='{ "keys": [ {"k": "c2VjcmV0", "kty": "oct"} ] }',
                     from_headers=[m.JwtHeader("X-Token", "Bearer ")],
                     output_claim_to_headers=[m.ClaimToHeader("X-Sub", "sub")])
    assert rule.jwks == '{"keys":[{"k":"c2VjcmV0","kty":"oct"}]}'
    assert rule.from_headers[0] == m.JwtHeader("x-token", "Bearer ")
    assert rule.output_claim_to_headers[0].header == "x-sub"


@pytest.mark.parametrize(("kwargs", "field", "message"), [
    ({"issuer": ""}, "issuer", "must not be empty"),
    ({"jwks": JWKS, "jwks_uri": "https://k"}, "jwks", "mutually exclusive"),
    ({"jwks": "{"}, "jwks", "not valid JSON"),
    ({"jwks": '{"keys": {}}'}, "jwks", '"keys" list'),
    ({"jwks": '{"keys": []}'}, "jwks", "has no keys"),
    ({"jwks": '{"keys": [{"kty": "RSA", "n": "x"}]}'}, "jwks", "keys[0] (RSA) needs e"),
    ({"jwks": '{"keys": [{"kty": "DSA"}]}'}, "jwks", "one of RSA, EC, oct, OKP"),
    ({"jwks_uri": "ftp://keys"}, "jwks_uri", "http:// or https://"),
    ({"audiences": ["a", ""]}, "audiences[1]", "must not be empty"),
    ({"output_payload_to_header": "bad header"}, "output_payload_to_header", "not an HTTP header name"),
    ({"timeout_ms": 0}, "timeout_ms", "positive"),
])
def test_invalid_rules_name_the_field(kwargs: dict[str, object], field: str, message: str) -> None:
    args: dict[str, object] = {"issuer": "https://issuer", **kwargs}
    with pytest.raises(m.ModelError) as err:
        m.JwtRule(**args)  # type: ignore[arg-type]
    assert err.value.field == field and message in err.value.message, err.value


def test_selects_by_namespace_and_labels() -> None:
    authn = _authn("a", m.JwtRule("i", jwks=JWKS))
    assert authn.selects("shop", m.Labels({"app": "web", "v": "1"}))
    assert not authn.selects("other", m.Labels({"app": "web"}))
    mesh = m.RequestAuthentication("mesh", "istio-system", m.WorkloadSelector(None), ())
    assert mesh.selects("anything", m.Labels())


def test_snapshot_sorts_them_and_hashes_without_sources() -> None:
    a, b = _authn("a", m.JwtRule("i", jwks=JWKS)), _authn("b", m.JwtRule("j", jwks_uri="https://keys"))
    one = m.Snapshot(request_authentications=[b, a])
    moved = m.RequestAuthentication(a.name, a.namespace, a.selector, a.jwt_rules, source=m.Source(file="x.yaml"))
    two = m.Snapshot(request_authentications=[moved, b])
    assert [x.name for x in one.request_authentications] == ["a", "b"]
    assert one.content_hash == two.content_hash
    assert one.content_hash != m.Snapshot(request_authentications=[a]).content_hash
    assert one.to_data()["request_authentications"][1]["jwt_rules"][0]["jwks_uri"] == "https://keys"


def test_not_request_principals_need_l7() -> None:
    assert m.PeerSelector(not_request_principals=["*"]).needs_l7
    assert m.PolicyRule(sources=[m.PeerSelector(not_request_principals=["*"])]).needs_l7
