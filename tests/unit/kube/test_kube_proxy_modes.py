"""A pod's proxy mode: its own annotation, else its Namespace's, else node; and why."""

from __future__ import annotations

from collections.abc import Callable

import meshcore
from meshcore.kube import Inventory
from meshcore.model import ProxyMode, Severity

from kube_text import Translate, line_of

NAMESPACE_SIDECAR = """
        apiVersion: v1
        kind: Namespace
        metadata: {name: tenant, annotations: {meshcore.io/proxy-mode: sidecar}}
"""


def _modes(inventory: Inventory) -> dict[str, tuple[ProxyMode, str]]:
    return {w.name: (w.proxy_mode, w.proxy_mode_reason) for w in inventory.workloads}


def test_pod_annotation_chooses_each_mode(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok("""
        apiVersion: v1
        kind: Pod
        metadata: {name: plain}
        spec: {containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: own, annotations: {meshcore.io/proxy-mode: sidecar}}
        spec: {containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: kernel, annotations: {meshcore.io/proxy-mode: none}}
        spec: {containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: shared, annotations: {meshcore.io/proxy-mode: node}}
        spec: {containers: [{name: c}]}
    """)
    reason = "annotation meshcore.io/proxy-mode on the pod"
    assert _modes(inventory) == {
        "plain": (ProxyMode.NODE, ""), "own": (ProxyMode.SIDECAR, reason), "kernel": (ProxyMode.NONE, reason),
        "shared": (ProxyMode.NODE, reason),
    }


def test_namespace_annotation_applies_to_pods_that_choose_nothing(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok(NAMESPACE_SIDECAR + """
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: follows, namespace: tenant}
        spec: {containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: opts-out, namespace: tenant, annotations: {meshcore.io/proxy-mode: node}}
        spec: {containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: elsewhere}
        spec: {containers: [{name: c}]}
    """)
    assert _modes(inventory) == {
        "follows": (ProxyMode.SIDECAR, "annotation meshcore.io/proxy-mode on Namespace tenant"),
        "opts-out": (ProxyMode.NODE, "annotation meshcore.io/proxy-mode on the pod"),
        "elsewhere": (ProxyMode.NODE, ""),
    }


def test_deployment_pods_take_the_template_annotation_or_the_namespace(
        translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok(NAMESPACE_SIDECAR + """
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: api, namespace: tenant}
        spec:
          replicas: 2
          selector: {matchLabels: {app: api}}
          template:
            metadata: {labels: {app: api}}
            spec: {containers: [{name: c}]}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: db, namespace: tenant}
        spec:
          selector: {matchLabels: {app: db}}
          template:
            metadata: {labels: {app: db}, annotations: {meshcore.io/proxy-mode: none}}
            spec: {containers: [{name: c}]}
    """)
    modes = {(w.labels["app"], w.proxy_mode, w.proxy_mode_reason) for w in inventory.workloads}
    assert modes == {("api", ProxyMode.SIDECAR, "annotation meshcore.io/proxy-mode on Namespace tenant"),
                     ("db", ProxyMode.NONE, "annotation meshcore.io/proxy-mode on the pod template")}


def test_host_network_pod_cannot_have_a_sidecar(translate: Translate) -> None:
    text = NAMESPACE_SIDECAR + """
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: agent, namespace: tenant}
        spec: {hostNetwork: true, containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: asks
          namespace: tenant
          annotations:
            meshcore.io/proxy-mode: sidecar
        spec: {hostNetwork: true, containers: [{name: c}]}
    """
    inventory, diagnostics = translate(text)
    why = "host network: the pod shares its node's network namespace"
    assert _modes(inventory) == {"agent": (ProxyMode.NONE, why), "asks": (ProxyMode.NONE, why)}
    # Only the pod that asks for a sidecar itself is told it cannot have one.
    (warning,) = diagnostics
    assert (warning.code, warning.severity, warning.source.name) == ("MC1018", Severity.WARNING, "asks")
    assert warning.field == "metadata.annotations.meshcore.io/proxy-mode"
    assert "its proxy mode is 'none'" in warning.message


def test_unknown_value_is_ignored_with_a_warning_naming_the_valid_ones(translate: Translate) -> None:
    text = NAMESPACE_SIDECAR + """
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: typo
          namespace: tenant
          annotations:
            meshcore.io/proxy-mode: sidcar
        spec: {containers: [{name: c}]}
    """
    inventory, diagnostics = translate(text)
    # The pod's value is ignored, so its namespace's applies.
    assert _modes(inventory)["typo"] == (ProxyMode.SIDECAR, "annotation meshcore.io/proxy-mode on Namespace tenant")
    (warning,) = diagnostics
    assert warning.code == "MC1012" and warning.source.name == "typo"
    assert "'none', 'node' and 'sidecar'" in warning.message and "'sidcar'" in warning.message
    assert warning.source.line in (line_of(text, "  annotations:"), line_of(text, "proxy-mode: sidcar"))


def test_bad_namespace_value_is_reported_on_the_namespace(translate: Translate) -> None:
    inventory, diagnostics = translate("""
        apiVersion: v1
        kind: Namespace
        metadata: {name: tenant, annotations: {meshcore.io/proxy-mode: envoy}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: p, namespace: tenant}
        spec: {containers: [{name: c}]}
    """)
    assert _modes(inventory)["p"] == (ProxyMode.NODE, "")
    (warning,) = diagnostics
    assert (warning.code, warning.source.kind, warning.source.name) == ("MC1012", "Namespace", "tenant")


def test_older_annotation_is_read_and_the_new_one_wins_when_they_disagree(translate: Translate) -> None:
    inventory, diagnostics = translate("""
        apiVersion: v1
        kind: Pod
        metadata: {name: old, annotations: {meshcore.io/proxy: none}}
        spec: {containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: both, annotations: {meshcore.io/proxy: none, meshcore.io/proxy-mode: sidecar}}
        spec: {containers: [{name: c}]}
    """)
    assert _modes(inventory) == {"old": (ProxyMode.NONE, "annotation meshcore.io/proxy on the pod"),
                                 "both": (ProxyMode.SIDECAR, "annotation meshcore.io/proxy-mode on the pod")}
    (warning,) = diagnostics
    assert warning.code == "MC1012" and warning.source.name == "both"
    assert warning.field == "metadata.annotations.meshcore.io/proxy"
    assert "meshcore.io/proxy-mode applies" in warning.message


def test_the_model_reads_the_older_value_mesh_as_node() -> None:
    assert ProxyMode("mesh") is ProxyMode.NODE is ProxyMode.MESH
    assert [m.meshed for m in (ProxyMode.NONE, ProxyMode.NODE, ProxyMode.SIDECAR)] == [False, True, True]


def test_plan_shows_each_workload_mode_and_why() -> None:
    result = meshcore.translate(text="""
apiVersion: v1
kind: Namespace
metadata: {name: tenant, annotations: {meshcore.io/proxy-mode: sidecar}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: tenant}
spec: {nodeName: n1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: tenant}
spec: {nodeName: n2, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, annotations: {meshcore.io/proxy-mode: none}}
spec: {nodeName: n1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: d}
spec: {nodeName: n1, containers: [{name: c}]}
""")
    plan = meshcore.compile_plan(result.snapshot, "n1")
    # Only the node's own workloads.
    assert sorted((str(m.workload), m.mode.value, m.reason) for m in plan.modes) == [
        ("default/c", "none", "annotation meshcore.io/proxy-mode on the pod"),
        ("default/d", "node", "the default"),
        ("tenant/a", "sidecar", "annotation meshcore.io/proxy-mode on Namespace tenant"),
    ]
