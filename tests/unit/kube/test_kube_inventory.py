"""The inventory adapters query: lookups, selectors, and independence from input order."""

from __future__ import annotations

import random
import textwrap

from meshcore.kube import CORE_KINDS, load_text, translate_core
from meshcore.model import to_data

TEXT = textwrap.dedent("""
    apiVersion: v1
    kind: Namespace
    metadata: {name: shop, labels: {env: prod}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: a, namespace: shop, labels: {app: web, tier: front}}
    spec: {containers: [{name: c, ports: [{containerPort: 80, name: http}]}]}
    status: {podIP: 10.0.0.1}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: b, namespace: shop, labels: {app: web, tier: back}}
    spec: {containers: [{name: c, ports: [{containerPort: 80, name: http}]}]}
    status: {podIP: 10.0.0.2}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: c, namespace: lab, labels: {app: web}}
    spec: {containers: [{name: c}]}
    status: {podIP: 10.0.0.3}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: api, namespace: shop}
    spec:
      replicas: 2
      selector: {matchLabels: {app: api}}
      template:
        metadata: {labels: {app: api}}
        spec: {containers: [{name: c}]}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: shop}
    spec: {clusterIP: 10.96.0.1, selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
    ---
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {name: ext-1, namespace: shop, labels: {kubernetes.io/service-name: ext}}
    addressType: IPv4
    endpoints: [{addresses: [192.168.0.1]}]
    ports: [{port: 443}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: ext, namespace: shop}
    spec: {ports: [{port: 443}]}
""")


def test_core_kinds_are_the_ten_kubernetes_kinds() -> None:
    assert CORE_KINDS == {
        ("v1", "Namespace"), ("v1", "Pod"), ("apps/v1", "Deployment"), ("v1", "Service"),
        ("discovery.k8s.io/v1", "EndpointSlice"), ("v1", "ServiceAccount"),
        ("networking.k8s.io/v1", "NetworkPolicy"), ("v1", "Node"), ("v1", "Secret"), ("v1", "ConfigMap"),
    }


def test_lookups_and_selectors() -> None:
    objects, _ = load_text(TEXT, "in.yaml")
    inventory, diagnostics = translate_core(objects)
    assert diagnostics == []
    assert [w.name for w in inventory.workloads_matching("shop", {"app": "web"})] == ["a", "b"]
    assert [w.name for w in inventory.workloads_matching(None, {"app": "web"})] == ["c", "a", "b"]
    assert [w.name for w in inventory.workloads_matching("shop", {"app": "web", "tier": "back"})] == ["b"]
    assert inventory.workloads_matching("shop", {"app": "nope"}) == []
    assert len(inventory.workloads_matching("shop", {})) == 4  # an empty selector selects all
    assert len(inventory.workloads_matching("shop", {"app": "api"})) == 2
    web = inventory.service("shop", "web")
    assert web is not None and len(web.ports[0].backends) == 2
    ext = inventory.service("shop", "ext")
    assert ext is not None and [b.address for b in ext.ports[0].backends] == ["192.168.0.1"]
    assert inventory.workload("lab", "c") is not None and inventory.workload("shop", "c") is None
    shop = inventory.namespace("shop")
    assert shop is not None and shop.labels["env"] == "prod"


def test_result_does_not_depend_on_input_order() -> None:
    objects, _ = load_text(TEXT, "in.yaml")
    expected = to_data(translate_core(objects)[0], with_sources=False)
    shuffled = list(objects)
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert to_data(translate_core(shuffled)[0], with_sources=False) == expected
