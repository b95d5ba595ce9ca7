"""NetworkPolicy → model AuthorizationPolicy: selectors, ipBlock, ports, policy types, errors."""

from __future__ import annotations

from kube_text import Translate, line_of

from meshcore.model import Direction, IpBlock, PeerSelector, PortRange

PODS = """
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {team: ops}}
---
apiVersion: v1
kind: Pod
metadata: {name: api-0, namespace: app, labels: {app: api}}
spec:
  containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 5353, protocol: UDP}]}]
status: {podIP: 10.0.0.5}
---
"""


def test_ingress_rules_translate(translate: Translate) -> None:
    inv, diags = translate(PODS + """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: app}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}, {namespaceSelector: {matchLabels: {team: ops}}}]
    ports: [{port: http}, {protocol: UDP, port: dns}, {port: 9000, endPort: 9010}]
  - from: [{ipBlock: {cidr: 172.16.0.0/12, except: [172.16.1.0/24]}}]
""")
    assert not diags, [str(d) for d in diags]
    (policy,) = inv.policies
    assert (policy.action, policy.direction, dict(policy.selector.labels)) == ("ALLOW", Direction.INGRESS, {"app": "api"})
    first, second = policy.rules
    assert first.sources == (
        PeerSelector(namespaces=["app"], workload_labels={"role": "client"}),
        PeerSelector(namespace_labels={"team": "ops"}, workload_labels={}),
    )
    assert first.operations[0].ports == (
        PortRange.single(8080), PortRange.single(5353, "UDP"), PortRange(9000, 9010),
    )
    assert second.sources == (PeerSelector(ip_blocks=[IpBlock("172.16.0.0/12", ["172.16.1.0/24"])]),)
    assert policy.source.kind == "NetworkPolicy" and policy.source.line > 0


def test_policy_types_and_empty_rules(translate: Translate) -> None:
    inv, diags = translate(PODS + """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: lockdown, namespace: app}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  egress:
  - to: [{namespaceSelector: {matchExpressions: [{key: team, operator: In, values: [ops]}]}}]
""")
    assert not diags
    egress, ingress = sorted(inv.policies, key=lambda p: p.direction)
    assert egress.direction is Direction.EGRESS and ingress.direction is Direction.INGRESS
    assert ingress.rules == (), "no ingress rules: nothing is allowed in"
    assert egress.rules[0].sources == (PeerSelector(namespaces=["ops"], workload_labels={}),)


def test_errors_name_field_and_line(translate: Translate) -> None:
    text = PODS + """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: app}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 80, endPort: 70}]
"""
    inv, diags = translate(text)
    assert inv.policies == ()
    (d,) = diags
    assert d.field == "spec.ingress[0].ports[0].endPort" and "below port 80" in d.message
    assert d.source.line == line_of(text, "endPort: 70")


def test_unknown_named_port_matches_nothing(translate: Translate) -> None:
    inv, diags = translate(PODS + """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: app}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: grpc}]
""")
    assert [d.code for d in diags] == ["MC1015"]
    assert inv.policies[0].rules == (), "the only rule matches nothing, so it is dropped (not widened)"


def test_a_pod_selector_matching_no_pod_is_reported_at_its_labels(translate: Translate) -> None:
    text = PODS + """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: app}
spec:
  podSelector:
    matchLabels: {app: apii}
  ingress: [{from: [{podSelector: {}}]}]
"""
    inv, diags = translate(text)
    (warning,) = diags
    assert (warning.code, warning.field) == ("MC1016", "spec.podSelector.matchLabels")
    assert warning.source.line == line_of(text, "matchLabels: {app: apii}")
    assert warning.message == ("no pod in namespace app has the labels app=apii: this NetworkPolicy selects no pod "
                               "and restricts nothing")
    # Still translated: the warning says what it does.
    assert [p.name for p in inv.policies] == ["api"]


def test_pods_of_another_namespace_do_not_count(translate: Translate) -> None:
    _, diags = translate(PODS + """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: other}
spec:
  podSelector: {matchLabels: {app: api}}
""")
    assert [d.code for d in diags] == ["MC1016"]


def test_an_empty_pod_selector_is_not_reported_even_without_pods(translate: Translate) -> None:
    # A default-deny policy is often applied to a namespace before its pods exist.
    _, diags = translate(PODS + """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: empty}
spec:
  podSelector: {}
""")
    assert not diags, [str(d) for d in diags]
