"""Bad input: one precise diagnostic (code, field path, line) per bad object, others unaffected."""

from __future__ import annotations

import pytest
from kube_text import Translate, line_of

from meshcore.kube import load_objects, make_object, translate_core
from meshcore.model import Severity

GOOD = """
apiVersion: v1
kind: Pod
metadata: {name: good, labels: {app: web}}
spec: {containers: [{name: c, ports: [{containerPort: 80, name: http}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}
---
"""


@pytest.mark.parametrize(("bad", "needle", "code", "field"), [
    # wrong types
    ("""
apiVersion: v1
kind: Pod
metadata: {name: bad, labels: {app: web}}
spec:
  containers:
  - name: c
    ports:
    - containerPort: "8080"
""", '"8080"', "MC0102", "spec.containers[0].ports[0].containerPort"),
    ("""
apiVersion: v1
kind: Pod
metadata:
  name: bad
  labels:
    version: 1
spec: {containers: [{name: c}]}
""", "version: 1", "MC0102", "metadata.labels.version"),
    ("""
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  hostNetwork: "true"
  containers: [{name: c}]
""", 'hostNetwork: "true"', "MC0102", "spec.hostNetwork"),
    ("""
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  ports:
    port: 80
""", "ports:", "MC0102", "spec.ports"),
    # missing required fields
    ("""
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers:
  - name: c
    ports:
    - name: http
""", "- name: http", "MC0101", "spec.containers[0].ports[0].containerPort"),
    ("""
apiVersion: v1
kind: Pod
metadata: {name: bad}
""", "apiVersion", "MC0101", "spec"),
    ("""
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  clusterIP: 10.96.0.1
""", "spec:", "MC0101", "spec.ports"),
    ("""
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  ports:
  - {port: 80}
  - {port: 81, name: b}
""", "port: 80", "MC0101", "spec.ports[0].name"),
    # out of range and invalid values
    ("""
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  ports:
  - port: 70000
""", "70000", "MC0104", "spec.ports[0].port"),
    ("""
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  ports:
  - port: 80
    protocol: tcp
""", "protocol: tcp", "MC0103", "spec.ports[0].protocol"),
    ("""
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  ports:
  - port: 80
    targetPort: "8080"
""", 'targetPort: "8080"', "MC1006", "spec.ports[0].targetPort"),
    ("""
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  clusterIP: 10.96.0.300
  ports: [{port: 80}]
""", "10.96.0.300", "MC1006", "spec.clusterIP"),
    ("""
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  clusterIP: 10.96.0.1
  clusterIPs: [10.96.0.2]
  ports: [{port: 80}]
""", "clusterIPs", "MC1006", "spec.clusterIPs[0]"),
    ("""
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  clusterIPs: [10.96.0.1, 10.96.0.2]
  ports: [{port: 80}]
""", "clusterIPs", "MC1006", "spec.clusterIPs"),
    ("""
apiVersion: v1
kind: Service
metadata: {name: 1bad}
spec: {ports: [{port: 80}]}
""", "name: 1bad", "MC1006", "metadata.name"),
    ("""
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  ports:
  - {name: a, port: 80}
  - {name: a, port: 81}
""", "port: 81", "MC1007", "spec.ports[1].name"),
    ("""
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  ports:
  - {name: a, port: 80}
  - {name: b, port: 80}
""", "{name: b, port: 80}", "MC1007", "spec.ports[1].port"),
    ("""
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers:
  - {name: a, ports: [{containerPort: 80, name: web}]}
  - {name: b, ports: [{containerPort: 81, name: web}]}
""", "{name: b, ports", "MC1007", "spec.containers[1].ports[0].name"),
    ("""
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers:
  - {name: a, ports: [{containerPort: 80, name: Web_Port}]}
""", "Web_Port", "MC1006", "spec.containers[0].ports[0].name"),
    ("""
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec: {containers: [{name: c}]}
status:
  podIP: 10.0.0.9
  podIPs:
  - ip: 10.0.0.8
""", "ip: 10.0.0.8", "MC1006", "status.podIPs[0].ip"),
    ("""
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec: {containers: [{name: c}]}
status:
  podIPs:
  - ip: 10.0.0.8
  - ip: 10.0.0.9
""", "podIPs", "MC1006", "status.podIPs"),
    ("""
apiVersion: v1
kind: Pod
metadata: {name: Bad}
spec: {containers: [{name: c}]}
""", "name: Bad", "MC0105", "metadata.name"),
    ("""
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  serviceAccountName: Not_Valid
  containers: [{name: c}]
""", "Not_Valid", "MC0105", "spec.serviceAccountName"),
    ("""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bad, labels: {kubernetes.io/service-name: web}}
addressType: IPv5
endpoints: []
""", "IPv5", "MC0103", "addressType"),
    ("""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bad, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
- addresses: []
""", "addresses: []", "MC0101", "endpoints[0].addresses"),
])
def test_bad_object_gets_one_error_at_its_field_and_the_others_still_translate(
    translate: Translate, bad: str, needle: str, code: str, field: str,
) -> None:
    others = (GOOD.replace("name: good", "name: good-2").replace("name: web}", "name: web-2}")
              .replace("10.0.0.1", "10.0.0.2").replace("app: web", "app: web-2"))
    text = GOOD + bad + "---\n" + others.rstrip().removesuffix("---")
    inventory, diagnostics = translate(text)
    assert [(d.code, d.field) for d in diagnostics] == [(code, field)], [str(d) for d in diagnostics]
    (error,) = diagnostics
    assert error.severity is Severity.ERROR
    assert error.source.file == "test.yaml" and error.source.name in ("bad", "1bad", "Bad")
    assert error.source.line == line_of(text, needle, after=GOOD.count("\n"))
    # Nothing of the bad object is used; everything else is.
    assert sorted(w.name for w in inventory.workloads) == ["good", "good-2"]
    assert sorted(s.name for s in inventory.services) == ["web", "web-2"]
    for name in ("web", "web-2"):
        service = inventory.service("default", name)
        assert service is not None and len(service.ports[0].backends) == 1
    assert "bad" not in {w.name for w in inventory.workloads} | {s.name for s in inventory.services}


def test_duplicate_object_is_an_error_naming_the_first_definition(translate: Translate) -> None:
    text = GOOD + """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.96.0.99, ports: [{port: 81}]}
"""
    inventory, diagnostics = translate(text)
    (error,) = diagnostics
    assert error.code == "MC1001" and error.severity is Severity.ERROR
    assert error.source.line == line_of(text, "spec: {clusterIP: 10.96.0.99") - 1
    first_service = line_of(text, "kind: Service") - 1  # its document starts at apiVersion
    assert error.message.endswith(f"is at test.yaml:{first_service}")
    (service,) = inventory.services
    assert service.vips == () and service.ports[0].port == 80  # the first one is used


def test_same_name_in_other_namespaces_or_kinds_is_no_duplicate(translate: Translate) -> None:
    _, diagnostics = translate(GOOD + """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: other}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web}
""")
    assert diagnostics == []


def test_objects_of_other_kinds_are_refused() -> None:
    objects, _ = load_objects([{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                                "metadata": {"name": "vs"}},
                               {"apiVersion": "v1beta1", "kind": "Service", "metadata": {"name": "s"}}])
    inventory, diagnostics = translate_core(objects)
    assert [d.code for d in diagnostics] == ["MC1000", "MC1000"]
    assert inventory.services == ()


def test_objects_without_positions_still_name_object_and_field() -> None:
    obj = make_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "x"},
                       "spec": {"ports": [{"port": "80"}]}}, file="api")
    _, diagnostics = translate_core([obj])
    (error,) = diagnostics
    assert str(error) == "api Service x/s: spec.ports[0].port error MC0102: expected an integer, got string '80'"


@pytest.mark.parametrize(("bad", "expected"), [
    ("""
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  type: Bogus
  clusterIP: 10.96.0.300
  ports:
  - {port: 0, name: a}
  - {port: 80}
  - {port: 81, name: a, targetPort: "no_such"}
  selector: {app: 1}
  sessionAffinity: Sometimes
""", [("MC0103", "spec.type"), ("MC1006", "spec.clusterIP"), ("MC0104", "spec.ports[0].port"),
      ("MC0101", "spec.ports[1].name"), ("MC1006", "spec.ports[2].targetPort"), ("MC0102", "spec.selector.app"),
      ("MC0103", "spec.sessionAffinity")]),
    ("""
apiVersion: v1
kind: Pod
metadata: {name: bad, labels: {v: 1}}
spec:
  hostNetwork: "yes"
  containers:
  - name: c
    ports:
    - {containerPort: 0}
    - {containerPort: 80, protocol: TCPX}
    - {containerPort: 81, name: Not_A_Name}
status: {podIPs: [{ip: 10.0.0.500}]}
""", [("MC0102", "metadata.labels.v"), ("MC0102", "spec.hostNetwork"),
      ("MC0104", "spec.containers[0].ports[0].containerPort"), ("MC0103", "spec.containers[0].ports[1].protocol"),
      ("MC1006", "spec.containers[0].ports[2].name"), ("MC1006", "status.podIPs[0].ip")]),
    ("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  replicas: -1
  selector: {matchLabels: {app: other}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        ports: [{containerPort: 70000}]
""", [("MC0104", "spec.replicas"), ("MC1002", "spec.selector"),
      ("MC0104", "spec.template.spec.containers[0].ports[0].containerPort")]),
    ("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  selector:
    matchExpressions: [{key: a, operator: Bogus}, {key: b, operator: In}]
  template:
    metadata: {labels: {a: b}}
    spec: {containers: [{name: c}]}
""", [("MC0103", "spec.selector.matchExpressions[0].operator"),
      ("MC1006", "spec.selector.matchExpressions[1].values")]),
    ("""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bad, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: HTTP, port: 80}, {name: b, port: 0}]
endpoints:
- addresses: [not-an-ip]
- addresses: []
""", [("MC1006", "ports[0].name"), ("MC0104", "ports[1].port"), ("MC1006", "endpoints[0].addresses[0]"),
      ("MC0101", "endpoints[1].addresses")]),
    ("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad}
spec:
  podSelector: {matchExpressions: [{key: a, operator: Exists}]}
  policyTypes: [Ingress, Sideways]
  ingress:
  - from: [{ipBlock: {cidr: nonsense}}]
    ports: [{port: 0}]
""", [("MC1014", "spec.podSelector.matchExpressions"), ("MC0103", "spec.policyTypes[1]"),
      ("MC1006", "spec.ingress[0].from[0].ipBlock.cidr"), ("MC0104", "spec.ingress[0].ports[0].port")]),
])
def test_every_error_of_an_object_is_reported(translate: Translate, bad: str, expected: list[tuple[str, str]]) -> None:
    inventory, diagnostics = translate(GOOD + bad)
    found = [(d.code, d.field) for d in diagnostics if d.severity is Severity.ERROR]
    assert sorted(found) == sorted(expected), [str(d) for d in diagnostics]
    for d in diagnostics:
        assert d.source.line > GOOD.count("\n") and d.source.name == "bad"
        assert d.field.split("[")[0].split(".")[-1] in bad or d.field.endswith("]")
    assert "bad" not in {w.name for w in inventory.workloads} | {s.name for s in inventory.services}
    assert all(p.name != "bad" for p in inventory.policies)
