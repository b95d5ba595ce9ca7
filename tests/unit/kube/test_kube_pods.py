"""Namespaces, service accounts and pods become the inventory's namespaces and workloads."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from meshcore.kube import Inventory, load_objects, translate_core
from meshcore.model import Diagnostic, Identity, Protocol, ProxyMode, Severity, WorkloadPort

from kube_text import line_of

Translate = Callable[[str], tuple[Inventory, list[Diagnostic]]]


def test_namespace_labels_include_the_name_label_set_by_the_api_server(
    translate_ok: Callable[[str], Inventory],
) -> None:
    inventory = translate_ok("""
        apiVersion: v1
        kind: Namespace
        metadata:
          name: shop
          labels: {team: payments, kubernetes.io/metadata.name: spoofed}
    """)
    namespace = inventory.namespace("shop")
    assert namespace is not None
    assert dict(namespace.labels) == {"team": "payments", "kubernetes.io/metadata.name": "shop"}
    assert namespace.source.line == 2


def test_namespaces_used_but_not_declared_exist_implicitly_with_a_default_account(
    translate_ok: Callable[[str], Inventory],
) -> None:
    inventory = translate_ok("""
        apiVersion: v1
        kind: ServiceAccount
        metadata: {name: reviews, namespace: bookinfo}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: p, namespace: other}
        spec: {containers: [{name: c}]}
    """)
    assert [n.name for n in inventory.namespaces] == ["bookinfo", "other"]
    implied = inventory.namespace("other")
    assert implied is not None and dict(implied.labels) == {"kubernetes.io/metadata.name": "other"}
    assert inventory.service_accounts == (
        ("bookinfo", "default"), ("bookinfo", "reviews"), ("other", "default"),
    )
    assert inventory.has_service_account("bookinfo", "reviews")
    assert not inventory.has_service_account("other", "reviews")


def test_pod_becomes_a_workload_with_dual_stack_addresses_ports_and_identity(
    translate_ok: Callable[[str], Inventory],
) -> None:
    inventory = translate_ok("""
        apiVersion: v1
        kind: Pod
        metadata:
          name: ratings-1
          namespace: bookinfo
          labels: {app: ratings, version: v1}
        spec:
          serviceAccountName: ratings
          nodeName: node-1
          containers:
          - name: app
            ports:
            - {containerPort: 9080, name: http}
            - {containerPort: 53, name: dns, protocol: UDP}
          - name: metrics
            ports: [{containerPort: 15090}]
        status:
          phase: Running
          podIP: 10.1.0.7
          podIPs: [{ip: 10.1.0.7}, {ip: "fd00:0::7"}]
    """)
    (workload,) = inventory.workloads
    assert workload.name == "ratings-1" and workload.namespace == "bookinfo"
    assert workload.addresses == ("10.1.0.7", "fd00::7")  # canonical form
    assert workload.identity == Identity("bookinfo", "ratings")
    assert workload.identity.spiffe_id == "spiffe://cluster.local/ns/bookinfo/sa/ratings"
    assert dict(workload.labels) == {"app": "ratings", "version": "v1"}
    assert workload.ports == (
        WorkloadPort(9080, "http", Protocol.TCP), WorkloadPort(53, "dns", Protocol.UDP),
        WorkloadPort(15090, "", Protocol.TCP),
    )
    assert workload.node == "node-1"
    assert workload.proxy_mode is ProxyMode.MESH
    assert workload.source.kind == "Pod" and workload.source.line == 2
    assert inventory.workload("bookinfo", "ratings-1") is workload


def test_pod_without_service_account_runs_as_default_and_pod_ip_alone_is_used(
    translate_ok: Callable[[str], Inventory],
) -> None:
    inventory = translate_ok("""
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec: {containers: [{name: c}]}
        status: {podIP: 10.0.0.1}
    """)
    (workload,) = inventory.workloads
    assert workload.namespace == "default"
    assert workload.identity == Identity("default", "default")
    assert workload.addresses == ("10.0.0.1",)


def test_host_network_and_opt_out_annotation_take_pods_out_of_the_mesh(translate: Translate) -> None:
    text = """
        apiVersion: v1
        kind: Pod
        metadata: {name: host}
        spec: {hostNetwork: true, containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: optout, annotations: {meshcore.io/proxy: none}}
        spec: {containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: meshed, annotations: {meshcore.io/proxy: mesh}}
        spec: {containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: typo
          annotations:
            meshcore.io/proxy: "off"
        spec: {containers: [{name: c}]}
    """
    inventory, diagnostics = translate(text)
    modes = {w.name: w.proxy_mode for w in inventory.workloads}
    assert modes == {"host": ProxyMode.NONE, "optout": ProxyMode.NONE, "meshed": ProxyMode.MESH,
                     "typo": ProxyMode.MESH}
    (warning,) = diagnostics
    assert warning.code == "MC1012" and warning.severity is Severity.WARNING
    assert warning.source.name == "typo"
    assert warning.field == "metadata.annotations.meshcore.io/proxy"
    # The annotation's own line, or its parent's when the locator cannot split dotted keys.
    assert warning.source.line in (line_of(text, "  annotations:"),
                                   line_of(text, 'proxy: "off"'))


def test_finished_pods_are_left_out(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok("""
        apiVersion: v1
        kind: Pod
        metadata: {name: done}
        spec: {containers: [{name: c}]}
        status: {phase: Succeeded, podIP: 10.0.0.1}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: crashed}
        spec: {containers: [{name: c}]}
        status: {phase: Failed, podIP: 10.0.0.2}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: starting}
        spec: {containers: [{name: c}]}
        status: {phase: Pending}
    """)
    assert [w.name for w in inventory.workloads] == ["starting"]


def test_sctp_container_ports_are_left_out_with_a_warning(translate: Translate) -> None:
    text = """
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
          - name: c
            ports:
            - {containerPort: 80, name: http}
            - {containerPort: 9999, name: sig, protocol: SCTP}
    """
    inventory, diagnostics = translate(text)
    assert [p.port for p in inventory.workloads[0].ports] == [80]
    (warning,) = diagnostics
    assert (warning.code, warning.field, warning.source.line) == (
        "MC1011", "spec.containers[0].ports[1].protocol", line_of(text, "SCTP"),
    )


def test_sidecar_init_containers_contribute_ports(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok("""
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          initContainers:
          - {name: setup, ports: [{containerPort: 1}]}
          - {name: proxy, restartPolicy: Always, ports: [{containerPort: 15001, name: proxy}]}
          containers: [{name: c, ports: [{containerPort: 80}]}]
    """)
    assert [p.port for p in inventory.workloads[0].ports] == [80, 15001]


def test_two_pods_with_one_address_are_reported(translate: Translate) -> None:
    inventory, diagnostics = translate("""
        apiVersion: v1
        kind: Pod
        metadata: {name: a}
        spec: {containers: [{name: c}]}
        status: {podIP: 10.0.0.1}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: b}
        spec: {containers: [{name: c}]}
        status: {podIP: 10.0.0.1}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: node-agent}
        spec: {hostNetwork: true, containers: [{name: c}]}
        status: {podIP: 10.0.0.1}
    """)
    assert len(inventory.workloads) == 3
    (warning,) = diagnostics
    assert warning.code == "MC1013" and warning.source.name == "b"
    assert "Pod default/a (test.yaml:2)" in warning.message


def _pod_body(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"},
                     "annotations": {"meshcore.io/proxy": "none"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x-abc"}]},
        "spec": {"serviceAccountName": "sa", "nodeName": "n1",
                 "initContainers": [{"name": "i", "restartPolicy": "Always", "ports": [{"containerPort": 1}]}],
                 "containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http", "protocol": "UDP"}]}]},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}],
                   "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False"}],
                   **status},
    }


def _frozen(value: Any) -> Any:
    """The same data as read-only mappings (not plain dicts), as an API client might hold it."""
    if isinstance(value, dict):
        return types.MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_frozen(v) for v in value]
    return value


def test_plain_and_other_mappings_translate_identically() -> None:
    # Plain dicts take the direct reader; other mappings take the Fields reader.
    plain, _ = load_objects([_pod_body()])
    other, _ = load_objects([_frozen(_pod_body())])
    assert type(other[0].body["metadata"]) is types.MappingProxyType
    first, d1 = translate_core(plain)
    second, d2 = translate_core(other)
    assert not d1 and not d2
    assert first.workloads == second.workloads
    assert first.workloads[0].proxy_mode is ProxyMode.NONE
    assert [p.port for p in first.workloads[0].ports] == [80, 1]
