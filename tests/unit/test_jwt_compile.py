"""Request authentication in compile: the eBPF-or-Envoy decision, the JWT filter, RBAC on verified claims."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from meshcore import model as m
from meshcore.compile import (
    RBAC_NEVER,
    CompileOptions,
    Datapath,
    RbacAnd,
    RbacClaim,
    RbacNot,
    RbacOr,
    compile_plan,
)
from meshcore.compile._envoy.jwt import NO_KEYS
from meshcore.compile._envoy.rbac import claim_path, request_principal
from meshcore.proxy import LISTENER, build_resources

NS = "shop"
ISS = "https://issuer.example.com"
JWKS = json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": "c2VjcmV0"}]})
WEB = m.Workload("web", NS, m.Identity(NS, "web"), addresses=("10.0.0.1",), labels={"app": "web"})
SEL = m.WorkloadSelector(NS, {"app": "web"})


def _exact(v: str) -> m.StringMatch:
    return m.StringMatch("Exact", v)


def _iss(v: str) -> RbacClaim:
    return RbacClaim(("iss",), _exact(v), single=True)


def _sub(match: m.StringMatch) -> RbacClaim:
    return RbacClaim(("sub",), match, single=True)


def _plan(authns: Sequence[m.RequestAuthentication], policies: Sequence[m.AuthorizationPolicy] = (),
          protocol: str = "HTTP") -> Any:
    web = m.Service("web", NS, vips=("10.96.0.1",), ports=(m.ServicePort(80, protocol, "http", backends=(
        m.Backend("10.0.0.1", 8080, workload=WEB.ref),)),))
    snap = m.Snapshot(namespaces=(m.Namespace(NS),), workloads=(WEB,), services=(web,), policies=tuple(policies),
                      request_authentications=tuple(authns))
    return compile_plan(snap, "n1", CompileOptions(proxy_enabled=True, proxy_port_base=15001, proxy_port_range=1))


AUTHN = m.RequestAuthentication("tokens", NS, SEL, [
    m.JwtRule(ISS, audiences=["web"], jwks=JWKS, from_headers=[m.JwtHeader("x-token", "Bearer ")],
              output_claim_to_headers=[m.ClaimToHeader("x-sub", "sub")]),
    m.JwtRule("remote", jwks_uri="https://keys.example.com/jwks.json"),
])


def test_request_principal_patterns_become_iss_and_sub_matchers() -> None:
    issuers = [ISS, "other"]
    assert request_principal(f"{ISS}/alice", issuers) == RbacAnd((_iss(ISS), _sub(_exact("alice"))))
    # A subject may hold "/" itself: the issuer decides where the split is.
    assert request_principal(f"{ISS}/team/alice", issuers) == RbacAnd((_iss(ISS), _sub(_exact("team/alice"))))
    assert request_principal("*", issuers) == RbacOr(tuple(
        RbacAnd((_iss(i), _sub(m.StringMatch("Present")))) for i in issuers))
    assert request_principal(f"{ISS}/*", issuers) == RbacAnd((_iss(ISS), _sub(m.StringMatch("Present"))))
    assert request_principal(f"{ISS}/adm*", issuers) == RbacAnd((_iss(ISS), _sub(m.StringMatch("Prefix", "adm"))))
    assert request_principal("https://iss*", issuers) == RbacAnd((_iss(ISS), _sub(m.StringMatch("Present"))))
    # A suffix that reaches into the issuer fixes the whole subject.
    assert request_principal("*.com/alice", issuers) == RbacOr((
        RbacAnd((_iss(ISS), RbacOr((_sub(m.StringMatch("Suffix", ".com/alice")), _sub(_exact("alice")))))),
        RbacAnd((_iss("other"), _sub(m.StringMatch("Suffix", ".com/alice")))),
    ))
    # Another issuer, or no verified token at all, never matches.
    assert request_principal("https://elsewhere/alice", issuers) == RBAC_NEVER
    assert request_principal(f"{ISS}/alice", []) == RBAC_NEVER


def test_claim_keys() -> None:
    assert claim_path("request.auth.claims[group]") == ("group",)
    assert claim_path("request.auth.claims[nested][key]") == ("nested", "key")
    assert claim_path("request.auth.claims[]") is None and claim_path("request.headers[x]") is None


def test_request_authentication_puts_http_ports_behind_the_node_proxy() -> None:
    plan = _plan([AUTHN])
    (decision,) = plan.decisions
    assert decision.datapath is Datapath.ENVOY
    assert decision.reason == f"request authentication shop/tokens validates JWTs (issuer {ISS}, remote)"
    # Tokens travel in HTTP requests only: a TCP port keeps the kernel path.
    assert _plan([AUTHN], protocol="TCP").decisions[0].datapath is Datapath.EBPF
    # Rules select nothing here: another namespace, other labels, or no rules at all.
    others = [m.RequestAuthentication("x", "other", m.WorkloadSelector("other"), AUTHN.jwt_rules),
              m.RequestAuthentication("y", NS, m.WorkloadSelector(NS, {"app": "db"}), AUTHN.jwt_rules),
              m.RequestAuthentication("z", NS, SEL, ())]
    assert _plan(others).decisions[0].datapath is Datapath.EBPF


def test_jwt_filter_before_rbac_with_one_provider_per_rule() -> None:
    policy = m.AuthorizationPolicy("alice", NS, SEL, "ALLOW", [
        m.PolicyRule(sources=[m.PeerSelector(request_principals=[f"{ISS}/alice"])]),
        m.PolicyRule(conditions=[m.Condition("request.auth.claims[group]", ["admins"])]),
    ])
    plan = _plan([AUTHN], [policy])
    (listener,) = plan.envoy.listeners
    assert listener.jwt is not None
    assert [(p.name, p.issuer) for p in listener.jwt.providers] == [("shop/tokens[0]", ISS), ("shop/tokens[1]", "remote")]
    # Keys by URI cannot be fetched: that issuer's tokens are refused, and a warning says so.
    assert listener.jwt.providers[1].jwks == NO_KEYS
    (warning,) = plan.envoy.warnings
    assert (warning.code, warning.field) == ("MC5108", "jwt_rules[1].jwks_uri") and "401" in warning.message
    (allow,) = listener.rbac
    assert allow.policies[0].principal == RbacAnd((_iss(ISS), _sub(_exact("alice"))))
    assert allow.policies[1].principal == RbacClaim(("group",), _exact("admins"))

    body = build_resources(plan.envoy).of(LISTENER)["shop/web:80"].body
    hcm = body["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.jwt_authn", "meshcore.rbac.allow", "envoy.filters.http.router"]
    jwt = hcm["http_filters"][0]["typed_config"]
    provider = jwt["providers"]["shop/tokens[0]"]
    assert provider["from_headers"] == [{"name": "x-token", "value_prefix": "Bearer "}]
    assert provider["claim_to_headers"] == [{"header_name": "x-sub", "claim_name": "sub"}]
    assert provider["payload_in_metadata"] == "payload" and provider["forward"] is False
    # A missing token passes; a present one must satisfy a provider (never allow_missing_or_failed).
    assert jwt["rules"][0]["requires"] == {"requires_any": {"requirements": [
        {"provider_name": "shop/tokens[0]"}, {"provider_name": "shop/tokens[1]"}, {"allow_missing": {}}]}}
    rbac = hcm["http_filters"][1]["typed_config"]["rules"]["policies"]
    group = rbac["shop/alice[1]"]["principals"][0]["metadata"]
    assert group["filter"] == "envoy.filters.http.jwt_authn"
    assert group["path"] == [{"key": "payload"}, {"key": "group"}]
    # A claim may be a string or a list of strings.
    assert group["value"] == {"or_match": {"value_matchers": [
        {"string_match": {"exact": "admins"}}, {"list_match": {"one_of": {"string_match": {"exact": "admins"}}}}]}}


def test_not_request_principals_and_principal_conditions() -> None:
    policy = m.AuthorizationPolicy("anonymous-only", NS, SEL, "DENY", [
        m.PolicyRule(sources=[m.PeerSelector(not_request_principals=["*"])]),
        m.PolicyRule(conditions=[m.Condition("request.auth.principal", not_values=[f"{ISS}/alice"])]),
    ])
    (deny,) = _plan([AUTHN], [policy]).envoy.listeners[0].rbac
    anyone = request_principal("*", [ISS, "remote"])
    assert deny.policies[0].principal == RbacNot(anyone)
    assert deny.policies[1].principal == RbacNot(RbacAnd((_iss(ISS), _sub(_exact("alice")))))


def test_request_principals_without_request_authentication_never_match() -> None:
    allow = m.AuthorizationPolicy("jwt", NS, SEL, "ALLOW", [
        m.PolicyRule(sources=[m.PeerSelector(request_principals=["*"])])])
    plan = _plan([], [allow])
    (listener,) = plan.envoy.listeners
    assert listener.jwt is None and listener.rbac[0].policies == ()
    assert [w.code for w in plan.envoy.warnings] == ["MC5103"]


def test_request_authentication_selecting_some_backends_of_a_proxied_port_is_reported() -> None:
    canary = m.Workload("web-canary", NS, m.Identity(NS, "web"), addresses=("10.0.0.2",),
                        labels={"app": "web", "track": "canary"})
    web = m.Service("web", NS, vips=("10.96.0.1",), ports=(m.ServicePort(80, "HTTP", "http", backends=(
        m.Backend("10.0.0.1", 8080, workload=WEB.ref), m.Backend("10.0.0.2", 8080, workload=canary.ref))),))
    authn = m.RequestAuthentication("canary", NS, m.WorkloadSelector(NS, {"track": "canary"}), [m.JwtRule(ISS, jwks=JWKS)])
    snap = m.Snapshot(namespaces=(m.Namespace(NS),), workloads=(WEB, canary), services=(web,),
                      request_authentications=(authn,))
    plan = compile_plan(snap, "n1", CompileOptions(proxy_enabled=True, proxy_port_base=15001, proxy_port_range=1))
    (warning,) = plan.envoy.warnings
    assert (warning.code, warning.field) == ("MC5109", "selector") and "selects 1 of the 2 backends" in warning.message


def test_keys_by_uri_are_fetched_from_a_service_of_the_mesh() -> None:
    keys_pod = m.Workload("keys", "idp", m.Identity("idp", "keys"), addresses=("10.0.0.9",), labels={"app": "keys"})
    keys = m.Service("keys", "idp", vips=("10.96.0.9",), hostnames=("keys.idp.svc.cluster.local",), ports=(
        m.ServicePort(80, "HTTP", "http", backends=(m.Backend("10.0.0.9", 8080, workload=keys_pod.ref),)),))
    web = m.Service("web", NS, vips=("10.96.0.1",), ports=(m.ServicePort(80, "HTTP", "http", backends=(
        m.Backend("10.0.0.1", 8080, workload=WEB.ref),)),))
    uris = ["http://keys.idp.svc.cluster.local/jwks.json", "http://keys.idp/jwks.json",
            "https://keys.idp.svc.cluster.local:80/jwks.json", "http://keys.idp:8443/jwks.json",
            "http://keys.example.com/jwks.json"]
    authn = m.RequestAuthentication("tokens", NS, SEL, [m.JwtRule(f"iss{i}", jwks_uri=u) for i, u in enumerate(uris)])
    snap = m.Snapshot(namespaces=(m.Namespace(NS), m.Namespace("idp")), workloads=(WEB, keys_pod),
                      services=(web, keys), request_authentications=(authn,))
    plan = compile_plan(snap, "n1", CompileOptions(proxy_enabled=True, proxy_port_base=15001, proxy_port_range=1))
    (listener,) = plan.envoy.listeners
    assert listener.jwt is not None
    fetched, short, https, wrong_port, outside = listener.jwt.providers
    # By the Service's DNS name, full or short: through its port's cluster, whose endpoint is the keys pod.
    assert (fetched.jwks, fetched.jwks_uri, fetched.jwks_cluster) == ("", uris[0], "idp/keys:80")
    assert short.jwks_cluster == "idp/keys:80"
    assert [e.address for e in next(c for c in plan.envoy.clusters if c.name == "idp/keys:80").endpoints] == ["10.0.0.9"]
    # https without TLS origination, a port the service lacks, a host outside the mesh: refused, and said why.
    assert all(p.jwks == NO_KEYS and not p.jwks_cluster for p in (https, wrong_port, outside))
    reasons = [w.message for w in plan.envoy.warnings if w.code == "MC5108"]
    assert len(reasons) == 3
    assert "no traffic policy originates it" in reasons[0] and "no TCP port 8443" in reasons[1]
    assert "keys.example.com is not the DNS name of a Kubernetes Service" in reasons[2]

    jwt = build_resources(plan.envoy).of(LISTENER)["shop/web:80"].body["filter_chains"][0]["filters"][0][
        "typed_config"]["http_filters"][0]["typed_config"]
    assert jwt["providers"]["shop/tokens[0]"]["remote_jwks"]["http_uri"] == {
        "uri": uris[0], "cluster": "idp/keys:80", "timeout": "5.000s"}
    assert "local_jwks" not in jwt["providers"]["shop/tokens[0]"]
    assert "remote_jwks" not in jwt["providers"]["shop/tokens[4]"]


def test_keys_are_not_fetched_from_a_service_entry_claiming_a_host() -> None:
    # Any namespace may declare a ServiceEntry for any host: whoever answers would decide
    # which tokens are valid, so only a Kubernetes Service's own DNS name is trusted.
    evil = m.Workload("evil", "aaa", m.Identity("aaa", "evil"), addresses=("10.0.0.66",))
    claim = m.Service("fake", "aaa", hostnames=("keys.idp.svc.cluster.local", "idp.example.com"), ports=(
        m.ServicePort(80, "HTTP", "http", backends=(m.Backend("10.0.0.66", 80, workload=evil.ref),)),))
    web = m.Service("web", NS, vips=("10.96.0.1",), ports=(m.ServicePort(80, "HTTP", "http", backends=(
        m.Backend("10.0.0.1", 8080, workload=WEB.ref),)),))
    authn = m.RequestAuthentication("tokens", NS, SEL, [
        m.JwtRule("a", jwks_uri="http://keys.idp.svc.cluster.local/jwks.json"),
        m.JwtRule("b", jwks_uri="http://idp.example.com/jwks.json")])
    snap = m.Snapshot(namespaces=(m.Namespace(NS), m.Namespace("aaa")), workloads=(WEB, evil),
                      services=(web, claim), request_authentications=(authn,))
    plan = compile_plan(snap, "n1", CompileOptions(proxy_enabled=True, proxy_port_base=15001, proxy_port_range=1))
    (listener,) = plan.envoy.listeners
    assert listener.jwt is not None
    assert all(p.jwks == NO_KEYS and not p.jwks_cluster for p in listener.jwt.providers)
    assert not any(c.name.startswith("aaa/") for c in plan.envoy.clusters)
