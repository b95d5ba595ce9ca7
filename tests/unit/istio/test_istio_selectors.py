"""Policies and Sidecars whose workload selector selects no workload (MC7024)."""

from __future__ import annotations

from _istio_support import codes, find, istio, pod, translate

SECURITY = "security.istio.io/v1"
JWKS = '{"keys": [{"kty": "oct", "alg": "HS256", "k": "c2VjcmV0"}]}'
WEB = pod("web-0", "{app: web, version: v1}", "10.1.0.5", namespace="shop")
POLICY_SPEC = """
    selector:
      matchLabels: {app: %s}
    action: DENY
    rules: [{from: [{source: {namespaces: [shop]}}]}]
"""


def _policy(app: str, namespace: str = "shop") -> str:
    return istio("AuthorizationPolicy", "deny-shop", POLICY_SPEC % app, namespace=namespace, version=SECURITY)


def test_a_policy_selecting_no_workload_is_reported_at_its_labels() -> None:
    result = translate(WEB, _policy("wbe"))
    warning = find(result, "MC7024")
    assert warning.message == ("no workload in namespace shop has the labels app=wbe: this AuthorizationPolicy "
                               "applies to no workload")
    assert (warning.source.kind, warning.source.name, warning.field) == (
        "AuthorizationPolicy", "deny-shop", "spec.selector.matchLabels")
    assert warning.source.line == 12  # the matchLabels line, after the pod's five lines and the separator
    # The policy is still translated: the warning says what it does, not that it is refused.
    assert [p.name for p in result.snapshot.policies] == ["deny-shop"]


def test_a_policy_selecting_a_workload_is_not_reported() -> None:
    assert "MC7024" not in codes(translate(WEB, _policy("web")))


def test_workloads_of_other_namespaces_do_not_count_outside_the_root_namespace() -> None:
    result = translate(WEB, _policy("web", namespace="billing"))
    assert "in namespace billing" in find(result, "MC7024").message


def test_a_root_namespace_policy_looks_at_every_namespace() -> None:
    assert "MC7024" not in codes(translate(WEB, _policy("web", namespace="istio-system")))
    result = translate(WEB, _policy("api", namespace="istio-system"))
    assert "no workload in any namespace has the labels app=api" in find(result, "MC7024").message


def test_every_label_must_match() -> None:
    spec = POLICY_SPEC.replace("{app: %s}", "{app: web, version: v2}")
    result = translate(WEB, istio("AuthorizationPolicy", "p", spec, namespace="shop", version=SECURITY))
    assert "app=web,version=v2" in find(result, "MC7024").message


def test_a_workload_entry_is_a_workload() -> None:
    entry = istio("WorkloadEntry", "vm1", "address: 10.5.0.1\nlabels: {app: vm}", namespace="shop")
    assert "MC7024" not in codes(translate(entry, _policy("vm")))


def test_without_a_selector_nothing_is_reported_even_in_an_empty_namespace() -> None:
    spec = "action: DENY\nrules: [{from: [{source: {namespaces: [shop]}}]}]"
    result = translate(istio("AuthorizationPolicy", "deny-all", spec, namespace="empty", version=SECURITY))
    assert codes(result) == []


def test_peer_and_request_authentications_and_sidecars_are_checked_too() -> None:
    result = translate(
        WEB,
        istio("PeerAuthentication", "permissive", "selector: {matchLabels: {app: db}}\nmtls: {mode: PERMISSIVE}",
              namespace="shop", version=SECURITY),
        istio("RequestAuthentication", "jwt", """
            selector: {matchLabels: {app: api}}
            jwtRules: [{issuer: https://issuer.example.com, jwks: '%s'}]
        """ % JWKS, namespace="shop", version=SECURITY),
        istio("Sidecar", "narrow", "workloadSelector: {labels: {app: cart}}\negress: [{hosts: ['./*']}]",
              namespace="shop"),
    )
    found = {(d.source.kind, d.field, d.message.split(": ")[0]) for d in result.diagnostics if d.code == "MC7024"}
    assert found == {
        ("PeerAuthentication", "spec.selector.matchLabels", "no workload in namespace shop has the labels app=db"),
        ("RequestAuthentication", "spec.selector.matchLabels",
         "no workload in namespace shop has the labels app=api"),
        ("Sidecar", "spec.workloadSelector.labels", "no workload in namespace shop has the labels app=cart"),
    }


def test_an_object_with_an_error_gets_only_its_error() -> None:
    spec = POLICY_SPEC.replace("action: DENY", "action: DENNY") % "wbe"
    result = translate(WEB, istio("AuthorizationPolicy", "p", spec, namespace="shop", version=SECURITY))
    assert codes(result) == ["MC0103"]
