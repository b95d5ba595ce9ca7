"""Unknown fields in core kinds: a warning at the field's line with the name that was meant."""

from __future__ import annotations

import textwrap

import pytest
from kube_text import Translate, line_of

import meshcore
from meshcore.kube import load_objects, translate_core
from meshcore.model import Diagnostic, Severity

UNKNOWN = "MC1017"

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec: {containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]}
status: {podIP: 10.1.0.1}
---
"""


def _unknown(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.code == UNKNOWN]


def test_misspelt_service_selector_is_reported_with_the_name_meant(translate: Translate) -> None:
    text = PODS + """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selectr:
    app: web
  ports: [{port: 80, targetPort: http}]
"""
    inventory, diagnostics = translate(text)
    [diag] = _unknown(diagnostics)
    assert diag.severity is Severity.WARNING
    assert diag.field == "spec.selectr"
    assert diag.source.line == line_of(text, "selectr:") and diag.source.object_ref == "Service default/web"
    assert diag.message == 'unknown field "selectr" in Service spec (did you mean "selector"?); it is ignored'
    # Ignored as the API server drops it: the service has no selector, so no backends.
    service = inventory.service("default", "web")
    assert service is not None and service.ports[0].backends == ()


def test_fields_inside_lists_and_pod_templates_are_checked(translate: Translate) -> None:
    text = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        imagePullPolcy: Always
        ports:
        - containerPort: 80
          protcol: TCP
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - port: 80
    prot: 81
"""
    _, diagnostics = translate(text)
    found = {(d.field, d.source.line): d.message for d in _unknown(diagnostics)}
    assert found == {
        ("spec.template.spec.containers[0].imagePullPolcy", line_of(text, "imagePullPolcy")):
            'unknown field "imagePullPolcy" in Deployment spec.template.spec.containers[0] '
            '(did you mean "imagePullPolicy"?); it is ignored',
        ("spec.template.spec.containers[0].ports[0].protcol", line_of(text, "protcol")):
            'unknown field "protcol" in Deployment spec.template.spec.containers[0].ports[0] '
            '(did you mean "protocol"?); it is ignored',
        ("spec.ports[0].prot", line_of(text, "prot: 81")):
            'unknown field "prot" in Service spec.ports[0] (did you mean "port"?); it is ignored',
    }


def test_a_misspelt_required_field_gives_the_error_and_the_name_meant(translate: Translate) -> None:
    text = """
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    ports:
    - containerPrt: 8080
"""
    inventory, diagnostics = translate(text)
    assert inventory.workloads == ()
    by_code = {d.code: d for d in diagnostics}
    assert by_code["MC0101"].field == "spec.containers[0].ports[0].containerPort"
    assert by_code[UNKNOWN].field == "spec.containers[0].ports[0].containerPrt"
    assert 'did you mean "containerPort"?' in by_code[UNKNOWN].message
    assert by_code[UNKNOWN].source.line == line_of(text, "containerPrt")


def test_free_form_maps_and_status_are_not_unknown_fields(translate: Translate) -> None:
    _, diagnostics = translate("""
apiVersion: v1
kind: Pod
metadata:
  name: p
  labels: {anything.example/goes: here}
  annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}"}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: rs, uid: u1, controller: true}]
  managedFields: [{manager: kubectl, operation: Apply, fieldsType: FieldsV1, fieldsV1: {f:spec: {}}}]
spec:
  nodeSelector: {disk: ssd}
  containers:
  - name: c
    resources: {limits: {cpu: "1", example.com/gpu: "1"}}
    ports: [{containerPort: 80, name: http}]
status:
  phase: Running
  podIP: 10.0.0.1
  podIPs: [{ip: 10.0.0.1}]
  conditions: [{type: Ready, status: "True", lastTransitionTime: "2024-01-01T00:00:00Z"}]
  containerStatuses: [{name: c, ready: true, restartCount: 0, image: i, imageID: x, started: true,
                       state: {running: {startedAt: "2024-01-01T00:00:00Z"}}}]
""")
    assert _unknown(diagnostics) == []


@pytest.mark.parametrize(("written", "meant"), [
    ("cluster_ip", "clusterIP"),        # snake_case, as in the Python client
    ("ClusterIP", "clusterIP"),         # another case
    ("sessionAfinity", "sessionAffinity"),
])
def test_suggestions_cover_case_and_spelling(translate: Translate, written: str, meant: str) -> None:
    _, diagnostics = translate(f"""
apiVersion: v1
kind: Service
metadata: {{name: s}}
spec:
  {written}: None
  ports: [{{port: 80}}]
""")
    [diag] = _unknown(diagnostics)
    assert f'(did you mean "{meant}"?)' in diag.message


def test_without_a_close_name_the_valid_fields_are_listed(translate: Translate) -> None:
    _, diagnostics = translate("""
apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  ports:
  - port: 80
    xyzzy: 1
""")
    [diag] = _unknown(diagnostics)
    assert diag.message == ('unknown field "xyzzy" in Service spec.ports[0]; valid fields: appProtocol, name, '
                            'nodePort, port, protocol, targetPort; it is ignored')


def test_top_level_and_metadata_fields_are_checked(translate: Translate) -> None:
    text = """
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  lables: {team: a}
spc: {}
"""
    _, diagnostics = translate(text)
    found = {d.field: (d.source.line, d.message) for d in _unknown(diagnostics)}
    assert found["metadata.lables"][0] == line_of(text, "lables")
    assert 'did you mean "labels"?' in found["metadata.lables"][1]
    assert found["spc"] == (line_of(text, "spc"), 'unknown field "spc" in Namespace (did you mean "spec"?); it is ignored')


def test_every_core_kind_is_checked() -> None:
    bodies = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "lables": {}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"}, "automount": True},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {"containers": [{"name": "c"}], "hostNet": True}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"},
         "spec": {"replica": 1, "selector": {"matchLabels": {"a": "b"}},
                  "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": [{"port": 1}], "typ": "x"}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "a"},
         "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"], "condition": {}}]},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "a"},
         "spec": {"podSelector": {}, "ingres": []}},
    ]
    objects, diagnostics = load_objects(bodies)
    assert diagnostics == []
    _, diagnostics = translate_core(objects)
    found = {(d.source.kind, d.field) for d in _unknown(diagnostics)}
    assert found == {
        ("Namespace", "metadata.lables"), ("ServiceAccount", "automount"), ("Pod", "spec.hostNet"),
        ("Deployment", "spec.replica"), ("Service", "spec.typ"), ("EndpointSlice", "endpoints[0].condition"),
        ("NetworkPolicy", "spec.ingres"),
    }


def test_node_fields_are_checked_although_nodes_are_not_translated() -> None:
    # The lab reads a Node's labels: a misspelt `labels` would silently leave it unlabelled.
    text = textwrap.dedent("""\
        apiVersion: v1
        kind: Node
        metadata:
          name: node-1
          lables: {zone: a}
    """)
    result = meshcore.translate(text=text)
    [diag] = result.diagnostics
    assert diag.code == UNKNOWN and diag.field == "metadata.lables" and diag.source.line == 5
    assert 'did you mean "labels"?' in diag.message


def test_objects_in_a_list_point_at_their_own_lines(translate: Translate) -> None:
    text = """
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ServiceAccount
  metadata: {name: a}
- apiVersion: v1
  kind: ServiceAccount
  metadata: {name: b}
  secret: []
"""
    _, diagnostics = translate(text)
    [diag] = _unknown(diagnostics)
    assert diag.source.name == "b" and diag.source.line == line_of(text, "secret:")
    assert 'did you mean "secrets"?' in diag.message
