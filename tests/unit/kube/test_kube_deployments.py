"""Deployments expand into pods with stable generated names, as the lab and the inventory use them."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import Any

from kube_text import Translate, line_of

from meshcore.kube import Inventory, KubeObject, expand_deployment, load_text
from meshcore.model import Identity, ProxyMode, Severity

DEPLOYMENT = textwrap.dedent("""
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: reviews-v2
      namespace: bookinfo
    spec:
      replicas: 3
      selector:
        matchLabels: {app: reviews, version: v2}
      template:
        metadata:
          labels: {app: reviews, version: v2}
          annotations: {prometheus.io/scrape: "true"}
        spec:
          serviceAccountName: bookinfo-reviews
          containers:
          - name: reviews
            image: docker.io/istio/examples-bookinfo-reviews-v2:1.20.1
            ports:
            - {containerPort: 9080, name: http}
""")


def _object(text: str) -> KubeObject:
    objects, diagnostics = load_text(textwrap.dedent(text), "deploy.yaml")
    assert not diagnostics
    (obj,) = objects
    return obj


def _expand(text: str) -> list[dict[str, Any]]:
    pods, diagnostics = expand_deployment(_object(text))
    assert not diagnostics, [str(d) for d in diagnostics]
    return pods


def test_replicas_become_pod_bodies_with_generated_names_labels_and_owner() -> None:
    pods = _expand(DEPLOYMENT)
    assert len(pods) == 3
    names = [p["metadata"]["name"] for p in pods]
    digest = names[0].split("-")[-2]
    assert re.fullmatch(r"[0-9a-f]{5}", digest)
    assert names == [f"reviews-v2-{digest}-{i}" for i in range(3)]
    first = pods[0]
    assert (first["apiVersion"], first["kind"]) == ("v1", "Pod")
    assert first["metadata"]["namespace"] == "bookinfo"
    assert first["metadata"]["labels"] == {"app": "reviews", "version": "v2", "pod-template-hash": digest}
    assert first["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "meshcore.io/owner": "Deployment/reviews-v2",
    }
    assert first["spec"]["serviceAccountName"] == "bookinfo-reviews"
    assert first["spec"]["containers"][0]["ports"] == [{"containerPort": 9080, "name": "http"}]


def test_pod_bodies_are_independent_of_each_other_and_of_the_deployment() -> None:
    obj = _object(DEPLOYMENT)
    pods, _ = expand_deployment(obj)
    pods[0]["spec"]["containers"][0]["ports"].append({"containerPort": 1})
    pods[0]["metadata"]["labels"]["extra"] = "x"
    assert pods[1]["spec"]["containers"][0]["ports"] == [{"containerPort": 9080, "name": "http"}]
    assert "extra" not in pods[1]["metadata"]["labels"]
    again, _ = expand_deployment(obj)
    assert again[0]["spec"]["containers"][0]["ports"] == [{"containerPort": 9080, "name": "http"}]


def test_names_are_stable_across_runs_and_replica_counts_but_follow_the_template() -> None:
    names = [p["metadata"]["name"] for p in _expand(DEPLOYMENT)]
    assert [p["metadata"]["name"] for p in _expand(DEPLOYMENT)] == names
    scaled = _expand(DEPLOYMENT.replace("replicas: 3", "replicas: 5"))
    assert [p["metadata"]["name"] for p in scaled][:3] == names
    changed = _expand(DEPLOYMENT.replace("1.20.1", "1.20.2"))
    assert changed[0]["metadata"]["name"] != names[0]
    assert changed[0]["metadata"]["name"].startswith("reviews-v2-")


def test_replicas_default_to_one_and_zero_means_no_pods() -> None:
    assert len(_expand(DEPLOYMENT.replace("  replicas: 3\n", ""))) == 1
    assert _expand(DEPLOYMENT.replace("replicas: 3", "replicas: 0")) == []


def test_selector_that_does_not_match_the_template_is_rejected_as_the_api_server_does() -> None:
    text = DEPLOYMENT.replace("matchLabels: {app: reviews, version: v2}", "matchLabels: {app: reviews, version: v3}")
    pods, diagnostics = expand_deployment(_object(text))
    assert pods == []
    (error,) = diagnostics
    assert error.severity is Severity.ERROR and error.code == "MC1002"
    assert error.field == "spec.selector"
    assert error.source.line == line_of(text, "selector:")
    assert "does not match the template labels" in error.message


def test_match_expressions_select_the_template() -> None:
    ok = DEPLOYMENT.replace(
        "matchLabels: {app: reviews, version: v2}",
        "matchExpressions: [{key: version, operator: In, values: [v1, v2]}, {key: canary, operator: DoesNotExist}]",
    )
    assert len(_expand(ok)) == 3
    bad = DEPLOYMENT.replace(
        "matchLabels: {app: reviews, version: v2}",
        "matchExpressions: [{key: version, operator: NotIn, values: [v2]}]",
    )
    _, diagnostics = expand_deployment(_object(bad))
    assert [d.code for d in diagnostics] == ["MC1002"]


def test_empty_or_missing_selector_is_an_error() -> None:
    for text, code, field in (
        (DEPLOYMENT.replace("matchLabels: {app: reviews, version: v2}", "matchLabels: {}"), "MC1002", "spec.selector"),
        (DEPLOYMENT.replace("  selector:\n    matchLabels: {app: reviews, version: v2}\n", ""),
         "MC0101", "spec.selector"),
    ):
        pods, diagnostics = expand_deployment(_object(text))
        assert pods == []
        assert [(d.code, d.field) for d in diagnostics] == [(code, field)]


def test_template_errors_point_at_the_deployment_field_and_line() -> None:
    text = DEPLOYMENT.replace("containerPort: 9080", "containerPort: 90800")
    pods, diagnostics = expand_deployment(_object(text))
    assert pods == []
    (error,) = diagnostics
    assert error.code == "MC0104"
    assert error.field == "spec.template.spec.containers[0].ports[0].containerPort"
    assert error.source.kind == "Deployment" and error.source.line == line_of(text, "90800")


def test_negative_replicas_are_out_of_range() -> None:
    _, diagnostics = expand_deployment(_object(DEPLOYMENT.replace("replicas: 3", "replicas: -1")))
    assert [(d.code, d.field) for d in diagnostics] == [("MC0104", "spec.replicas")]


def test_deployment_pods_are_workloads_of_the_inventory(translate_ok: Callable[[str], Inventory]) -> None:
    inventory = translate_ok(DEPLOYMENT)
    assert len(inventory.workloads) == 3
    workload = inventory.workloads[0]
    assert workload.identity == Identity("bookinfo", "bookinfo-reviews")
    assert workload.addresses == ()  # nothing scheduled them
    assert workload.labels["app"] == "reviews" and "pod-template-hash" in workload.labels
    assert workload.proxy_mode is ProxyMode.MESH
    assert workload.source.kind == "Deployment" and workload.source.name == "reviews-v2"
    names = [p["metadata"]["name"] for p in _expand(DEPLOYMENT)]
    assert [w.name for w in inventory.workloads] == names


def test_pods_given_for_a_deployment_stand_for_it(translate_ok: Callable[[str], Inventory]) -> None:
    # The lab expands a Deployment, gives the pods addresses and translates them with it.
    pods = _expand(DEPLOYMENT)
    for i, pod in enumerate(pods):
        pod["status"] = {"podIP": f"10.1.0.{i + 1}"}
    from meshcore.kube import load_objects, translate_core

    objects, _ = load_objects(pods)
    objects.append(_object(DEPLOYMENT))
    inventory, diagnostics = translate_core(objects)
    assert not diagnostics
    assert [w.addresses for w in inventory.workloads] == [("10.1.0.1",), ("10.1.0.2",), ("10.1.0.3",)]


def test_pods_owned_through_a_replica_set_stand_for_their_deployment(
    translate_ok: Callable[[str], Inventory],
) -> None:
    # As in `kubectl get deploy,pods -o yaml` of a real cluster.
    inventory = translate_ok(DEPLOYMENT + textwrap.dedent("""
    ---
    apiVersion: v1
    kind: Pod
    metadata:
      name: reviews-v2-5b4f9c8d7-x2x9z
      namespace: bookinfo
      labels: {app: reviews, version: v2, pod-template-hash: 5b4f9c8d7}
      ownerReferences:
      - {apiVersion: apps/v1, kind: ReplicaSet, name: reviews-v2-5b4f9c8d7, uid: 1, controller: true}
    spec:
      containers: [{name: reviews}]
    status: {podIP: 10.1.0.9}
    """))
    assert [w.name for w in inventory.workloads] == ["reviews-v2-5b4f9c8d7-x2x9z"]


def test_generated_pod_name_taken_by_a_pod_is_an_error_on_the_deployment(translate: Translate) -> None:
    name = _expand(DEPLOYMENT)[1]["metadata"]["name"]
    text = textwrap.dedent(f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: {name}, namespace: bookinfo}}
    spec: {{containers: [{{name: c}}]}}
    ---""") + DEPLOYMENT
    inventory, diagnostics = translate(text)
    (error,) = diagnostics
    assert error.code == "MC1001" and error.source.kind == "Deployment"
    assert f"Pod bookinfo/{name}" in error.message and "test.yaml:2" in error.message
    assert [w.name for w in inventory.workloads] == [name]
