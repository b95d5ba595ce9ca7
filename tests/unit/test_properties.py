"""Property tests: random input never crashes translation; the hash ignores input order."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import meshcore

KINDS = [("v1", "Service"), ("v1", "Pod"), ("v1", "Namespace"), ("apps/v1", "Deployment"),
         ("discovery.k8s.io/v1", "EndpointSlice"), ("v1", "ServiceAccount"),
         ("networking.istio.io/v1", "VirtualService"), ("example.com/v1", "Thing")]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=12),
                    st.sampled_from(["10.0.0.1", "fd00::1", "TCP", "UDP", "http", "80", "None"]))
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(
                                ["ports", "port", "targetPort", "selector", "name", "clusterIP", "clusterIPs",
                                 "containers", "labels", "protocol", "appProtocol", "endpoints", "addresses",
                                 "replicas", "template", "spec", "metadata", "status", "podIPs", "ip"]), inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def k8s_objects(draw: st.DrawFn) -> dict[str, Any]:
    api, kind = draw(st.sampled_from(KINDS))
    meta: dict[str, Any] = {"name": draw(st.sampled_from(["a", "b", "Bad_Name", "c-1"]))}
    if draw(st.booleans()):
        meta["namespace"] = draw(st.sampled_from(["default", "shop", "x"]))
    if draw(st.booleans()):
        meta["labels"] = draw(st.dictionaries(st.sampled_from(["app", "tier"]), scalars, max_size=2))
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": draw(values), "status": draw(values)}


@settings(max_examples=300, deadline=None)
@given(st.lists(k8s_objects(), max_size=6))
def test_random_objects_never_crash(objects: list[dict[str, Any]]) -> None:
    result = meshcore.translate(objects=objects)
    assert not [d for d in result.diagnostics if d.code == "MC0300"]
    meshcore.compile_plan(result.snapshot)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_never_crashes(text: str) -> None:
    meshcore.translate(text=text)


VALID = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "shop", "labels": {"app": "a"}},
     "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"podIPs": [{"ip": "10.244.0.1"}]}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2", "namespace": "shop", "labels": {"app": "a"}},
     "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"podIPs": [{"ip": "10.244.0.2"}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "shop"},
     "spec": {"selector": {"app": "a"}, "clusterIP": "10.96.0.1", "ports": [{"port": 80, "targetPort": 8080}]}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "shop"},
     "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
              "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}},
]


@settings(max_examples=50, deadline=None)
@given(st.permutations(VALID))
def test_hash_does_not_depend_on_input_order(objects: list[dict[str, Any]]) -> None:
    baseline = meshcore.translate(objects=VALID)
    shuffled = meshcore.translate(objects=objects)
    assert baseline.ok and shuffled.ok
    assert shuffled.snapshot.content_hash == baseline.snapshot.content_hash
