"""AuthorizationPolicy and PeerAuthentication → model policies."""

from __future__ import annotations

from _istio_support import find, istio, translate
from meshcore import TranslateCode
from meshcore.model import PeerAuthMode, PolicyAction

SEC = "security.istio.io/v1"


def _policy(spec: str, namespace: str = "default", name: str = "p") -> str:
    return istio("AuthorizationPolicy", name, spec, namespace=namespace, version=SEC)


def test_empty_spec_allows_nothing_and_empty_rule_allows_everything() -> None:
    result = translate(_policy("{}", name="nothing"), _policy("rules: [{}]", name="everything"))
    by_name = {p.name: p for p in result.snapshot.policies}
    assert by_name["nothing"].action is PolicyAction.ALLOW and by_name["nothing"].rules == ()
    assert len(by_name["everything"].rules) == 1 and by_name["everything"].rules[0].sources == ()


def test_root_namespace_policies_apply_mesh_wide() -> None:
    result = translate(_policy("action: DENY\nrules: [{from: [{source: {namespaces: [bad]}}]}]",
                               namespace="istio-system"))
    [p] = result.snapshot.policies
    assert p.selector.namespace is None and p.action is PolicyAction.DENY


def test_sources_operations_and_conditions() -> None:
    result = translate(_policy("""
        selector: {matchLabels: {app: ratings}}
        rules:
        - from:
          - source:
              principals: [cluster.local/ns/shop/sa/reviews, "*/sa/admin"]
              notNamespaces: [test]
              ipBlocks: [10.0.0.0/8]
          to:
          - operation: {ports: ["9080"], methods: [GET], paths: ["/api/*"], notHosts: ["*.internal"]}
          when:
          - {key: "request.headers[x-user]", values: [alice], notValues: [bob]}
    """))
    [p] = result.snapshot.policies
    [rule] = p.rules
    assert rule.sources[0].principals == ("cluster.local/ns/shop/sa/reviews", "*/sa/admin")
    assert rule.sources[0].ip_blocks[0].cidr == "10.0.0.0/8"
    assert rule.operations[0].ports[0].first == 9080 and rule.operations[0].paths == ("/api/*",)
    assert rule.conditions[0].key == "request.headers[x-user]"
    assert dict(p.selector.labels) == {"app": "ratings"}


def test_custom_fails_closed_as_deny() -> None:
    result = translate(_policy("action: CUSTOM\nprovider: {name: opa}\nrules: [{to: [{operation: {paths: [/admin]}}]}]"))
    [p] = result.snapshot.policies
    assert p.action is PolicyAction.DENY
    assert find(result, "MC7014").field == "spec.action"


def test_unexpressible_field_drops_allow_rule_and_widens_deny_rule() -> None:
    allow = _policy("rules: [{from: [{source: {remoteIpBlocks: [192.0.2.0/24]}}]}]", name="allow")
    deny = _policy("action: DENY\nrules: [{from: [{source: {remoteIpBlocks: [192.0.2.0/24]}}]}]", name="deny")
    result = translate(allow, deny)
    by_name = {p.name: p for p in result.snapshot.policies}
    assert by_name["allow"].rules == ()
    assert len(by_name["deny"].rules) == 1


def test_invalid_values_are_errors_with_paths() -> None:
    result = translate(_policy('rules: [{to: [{operation: {ports: ["http"]}}]}]', name="port"),
                       _policy('rules: [{when: [{key: "request.nope", values: [x]}]}]', name="key"),
                       _policy('rules: [{when: [{key: "source.ip"}]}]', name="empty"),
                       _policy('rules: [{from: [{source: {principals: ["a*b"]}}]}]', name="mid"))
    fields = {d.source.name: (d.code, d.field) for d in result.diagnostics}
    assert fields["port"] == ("MC7002", "spec.rules[0].to[0].operation.ports[0]")
    assert fields["key"] == ("MC7002", "spec.rules[0].when[0].key")
    assert fields["empty"] == ("MC7010", "spec.rules[0].when[0]")
    assert fields["mid"] == ("MC7002", "spec.rules[0].from[0].source.principals[0]")
    assert not result.snapshot.policies


def _peer(name: str, spec: str, namespace: str, stamp: str = "2024-01-01T00:00:00Z") -> str:
    return istio("PeerAuthentication", name, spec, namespace=namespace, version=SEC,
                 extra_meta=f'creationTimestamp: "{stamp}"')


def test_peer_authentication_inherits_mesh_then_namespace() -> None:
    result = translate(
        _peer("mesh", "mtls: {mode: STRICT}", "istio-system"),
        _peer("ns", "{}", "legacy"),
        _peer("wl", "selector: {matchLabels: {app: db}}\nportLevelMtls: {'5432': {mode: DISABLE}}", "legacy"),
    )
    by_name = {p.name: p for p in result.snapshot.peer_authentications}
    assert by_name["mesh"].selector.namespace is None and by_name["mesh"].mode is PeerAuthMode.STRICT
    assert by_name["ns"].mode is PeerAuthMode.STRICT
    assert by_name["wl"].mode is PeerAuthMode.STRICT
    assert by_name["wl"].port_modes[0].port == 5432 and by_name["wl"].port_modes[0].mode is PeerAuthMode.DISABLE


def test_oldest_namespace_wide_peer_authentication_wins() -> None:
    result = translate(_peer("a", "mtls: {mode: PERMISSIVE}", "shop", "2024-01-01T00:00:00Z"),
                       _peer("b", "mtls: {mode: DISABLE}", "shop", "2024-02-01T00:00:00Z"))
    assert [p.name for p in result.snapshot.peer_authentications] == ["a"]
    assert find(result, "MC7016").source.name == "b"


def test_strict_is_reported_not_enforced_where_declared_once_per_object() -> None:
    # Translation cannot know whether the node agents run mutual TLS: an object declaring STRICT is
    # one warning at its first STRICT field, naming the others; inheriting STRICT, PERMISSIVE and
    # DISABLE say nothing (plain text is accepted, as they allow).
    result = translate(
        _peer("mesh", "mtls: {mode: STRICT}", "istio-system"),
        _peer("ns", "mtls: {mode: PERMISSIVE}", "legacy"),
        _peer("wl", "selector: {matchLabels: {app: db}}\nportLevelMtls: {'5432': {mode: STRICT}, '80': {mode: DISABLE}}",
              "legacy"),
        _peer("both", "selector: {matchLabels: {app: api}}\nmtls: {mode: STRICT}\n"
              "portLevelMtls: {'8080': {mode: STRICT}, '9090': {mode: STRICT}}", "legacy"),
        _peer("inherits", "selector: {matchLabels: {app: web}}", "shop"),
    )
    strict = [d for d in result.diagnostics if d.code == TranslateCode.STRICT_WITHOUT_MTLS]
    assert [(d.source.name, d.field, d.severity.value) for d in strict] == [
        ("mesh", "spec.mtls.mode", "warning"), ("wl", "spec.portLevelMtls.5432.mode", "warning"),
        ("both", "spec.mtls.mode", "warning")]
    assert all("enforced only where the node agents run mutual TLS" in d.message for d in strict)
    assert "also at spec.portLevelMtls.8080.mode, spec.portLevelMtls.9090.mode" in strict[2].message
    assert not any(d.code == "MC7014" for d in result.diagnostics)


def test_target_ref_only_policy_is_not_applied_mesh_wide() -> None:
    waypoint = _policy("""
        targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
        action: DENY
        rules: [{}]
    """, namespace="istio-system")
    service = _policy("targetRef: {kind: Service, group: '', name: web}\naction: DENY\nrules: [{}]",
                      namespace="shop", name="svc")
    result = translate(waypoint, service)
    assert result.snapshot.policies == ()
    messages = sorted(d.message for d in result.diagnostics if d.code == "MC7014")
    assert messages == [
        "targets Gateway/waypoint (targetRefs); policies attached to Gateways/Services/waypoints are not "
        "supported: not applied",
        "targets Service/web (targetRef); policies attached to Gateways/Services/waypoints are not "
        "supported: not applied"]


def test_selector_with_target_refs_is_an_error() -> None:
    result = translate(_policy("""
        selector: {matchLabels: {app: web}}
        targetRefs: [{kind: Service, group: '', name: web}]
        rules: [{}]
    """))
    d = find(result, "MC7010")
    assert d.field == "spec.targetRefs" and "only one of targetRefs or selector can be set" in d.message
    assert result.snapshot.policies == ()


def test_root_namespace_policy_without_selector_or_target_stays_mesh_wide() -> None:
    result = translate(_policy("action: DENY\nrules: [{}]\ntargetRefs: []", namespace="istio-system"))
    [p] = result.snapshot.policies
    assert p.selector.namespace is None


def test_service_accounts_are_principals_of_any_trust_domain() -> None:
    result = translate(_policy("""
        rules:
        - from: [{source: {serviceAccounts: [shop/reviews], notServiceAccounts: [shop/legacy]}}]
    """))
    [p] = result.snapshot.policies
    [source] = p.rules[0].sources
    assert source.principals == ("*/ns/shop/sa/reviews",)
    assert source.not_principals == ("*/ns/shop/sa/legacy",)
    assert not result.diagnostics


def test_trust_domains_alone_and_with_service_accounts() -> None:
    result = translate(_policy("rules: [{from: [{source: {trustDomains: [td1, td2], notTrustDomains: [old]}}]}]",
                               name="domains"),
                       _policy("rules: [{from: [{source: {trustDomains: [td1], serviceAccounts: [a/b, c/d]}}]}]",
                               name="both"))
    by_name = {p.name: p.rules[0].sources[0] for p in result.snapshot.policies}
    assert by_name["domains"].principals == ("td1/*", "td2/*")
    assert by_name["domains"].not_principals == ("old/*",)
    assert by_name["both"].principals == ("td1/ns/a/sa/b", "td1/ns/c/sa/d")
    assert not result.diagnostics


def test_trust_domains_with_principals_leave_an_allow_rule_out_with_a_warning() -> None:
    result = translate(_policy("rules: [{from: [{source: {trustDomains: [td1], principals: [x/ns/a/sa/b]}}]}]"))
    [p] = result.snapshot.policies
    assert p.rules == ()
    d = find(result, "MC7015")
    assert d.field == "spec.rules[0].from[0].source.trustDomains" and "left out" in d.message


def test_service_accounts_with_principals_is_refused_with_istios_words() -> None:
    result = translate(_policy("rules: [{from: [{source: {serviceAccounts: [a/b], namespaces: [a]}}]}]"))
    assert not result.snapshot.policies
    d = find(result, "MC7010")
    assert d.field == "spec.rules[0].from[0].source.namespaces"
    assert "Cannot set serviceAccounts with namespaces or principals" in d.message
