"""Every diagnostic that names a file points at a real line and column of it (never 0:0)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meshcore
from meshcore.model import Diagnostic

GOOD = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        ports: [{containerPort: 8080, name: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - route: [{destination: {host: web, port: {number: 80}}, weight: 100}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"""

#: Inputs users get wrong, one file each: reading, core kinds and adapters.
BAD = {
    "syntax": "apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n",
    "tab": "apiVersion: v1\nkind: Namespace\nmetadata:\n\tname: a\n",
    "duplicate-key": "apiVersion: v1\nkind: Namespace\nkind: Pod\nmetadata: {name: a}\n",
    "scalar-document": "just a string\n",
    "list-document": "- a\n- b\n",
    "null-document": "---\nnull\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    "missing-kind": "apiVersion: v1\nmetadata: {name: a}\n",
    "bad-list": "apiVersion: v1\nkind: List\nitems: 3\n",
    "list-of-scalars": "apiVersion: v1\nkind: List\nitems: [1, {apiVersion: v1, kind: Namespace}]\n",
    "json-scalar-in-list": '{"apiVersion": "v1", "kind": "List", "items": ["x"]}',
    "helm": "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}\n",
    "unknown-kind": "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
    "wrong-types": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - port: eighty\n"
                   "    targetPort: [1]\n  type: Bogus\n",
    "no-spec": "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
    "unknown-fields": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  selectr: {a: b}\n"
                      "  ports: [{port: 80, prot: 1}]\n",
    "duplicate-object": "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
                        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    "bad-deployment": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {}\n"
                      "  template: {metadata: {labels: {a: b}}, spec: {containers: []}}\n",
    "bad-policy": "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n}\nspec:\n"
                  "  podSelector: {matchExpressions: [{key: a, operator: In, values: []}]}\n",
    "bad-slice": "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv4\n"
                 "endpoints: [{addresses: [not-an-ip]}]\n",
    "istio": "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n"
             "  hosts: [x]\n  htp: []\n",
    "istio-value": "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\n"
                   "spec: {action: DENNY}\n",
    "gateway": "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n"
               "  parentRefs: [{name: missing}]\n  rules: [{backendRefs: [{name: nowhere, port: 80}]}]\n",
    "envoycrd": "apiVersion: cilium.io/v2\nkind: CiliumEnvoyConfig\nmetadata: {name: c}\nspec:\n"
                "  resources: [{'@type': type.googleapis.com/envoy.config.listener.v3.Listener, nme: x}]\n",
}


def _check(diagnostics: tuple[Diagnostic, ...], texts: dict[str, str]) -> None:
    for d in diagnostics:
        if not d.source.file:
            continue
        lines = texts[d.source.file].count("\n") + 1
        assert 1 <= d.source.line <= lines + 1 and d.source.column >= 1, (
            f"{d} points at {d.source.line}:{d.source.column} of a file of {lines} line(s)")


def test_bad_inputs_point_at_real_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name, text in {**BAD, "good": GOOD}.items():
        Path(f"{name}.yaml").write_text(text)
    Path("binary.yaml").write_bytes(b"apiVersion: v1\n\xff\xfe\n")
    result = meshcore.translate(sorted(p.name for p in tmp_path.iterdir()))
    texts = {f"{name}.yaml": text for name, text in {**BAD, "good": GOOD}.items()}
    texts["binary.yaml"] = "apiVersion: v1\n??\n"
    files = {d.source.file for d in result.diagnostics}
    # Every bad input was reported, with its file.
    assert files >= {f"{name}.yaml" for name in BAD} | {"binary.yaml"}, sorted(files)
    _check(result.diagnostics, texts)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mangled_manifests_point_at_real_lines(data: st.DataObject) -> None:
    lines = GOOD.splitlines(keepends=True)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(lines) - 1))
        edit = data.draw(st.sampled_from(["drop", "repeat", "indent", "dedent", "junk", "swap"]))
        if edit == "drop" and len(lines) > 1:
            del lines[at]
        elif edit == "repeat":
            lines.insert(at, lines[at])
        elif edit == "indent":
            lines[at] = "  " + lines[at]
        elif edit == "dedent":
            lines[at] = lines[at].lstrip(" ")
        elif edit == "junk":
            cut = data.draw(st.integers(0, len(lines[at])))
            lines[at] = lines[at][:cut] + data.draw(st.sampled_from(["{", "]", ": ", "- ", "x", "\"", "'"])) + lines[at][cut:]
        elif edit == "swap" and at + 1 < len(lines):
            lines[at], lines[at + 1] = lines[at + 1], lines[at]
    text = "".join(lines)
    result = meshcore.translate(text=text)
    _check(result.diagnostics, {"<text>": text})
