"""Property tests: random input is reported, never crashes translation; the hash ignores input order."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import meshcore
from meshcore.model import Diagnostic, Severity

#: What YAML (and so a diagnostic's line number) counts as a line break.
YAML_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
#: The code translation gives an adapter's exception (an internal failure, never the user's mistake).
ADAPTER_FAILED = "MC0300"

KINDS = [("v1", "Service"), ("v1", "Pod"), ("v1", "Namespace"), ("apps/v1", "Deployment"),
         ("discovery.k8s.io/v1", "EndpointSlice"), ("v1", "ServiceAccount"),
         ("networking.istio.io/v1", "VirtualService"), ("security.istio.io/v1", "AuthorizationPolicy"),
         ("gateway.networking.k8s.io/v1", "HTTPRoute"), ("gateway.networking.k8s.io/v1", "Gateway"),
         ("cilium.io/v2", "CiliumEnvoyConfig"), ("example.com/v1", "Thing")]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=12),
                    st.sampled_from(["10.0.0.1", "fd00::1", "TCP", "UDP", "http", "80", "None", "a", "*"]))
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(
                                ["ports", "port", "targetPort", "selector", "name", "clusterIP", "clusterIPs",
                                 "containers", "labels", "protocol", "appProtocol", "endpoints", "addresses",
                                 "replicas", "template", "spec", "metadata", "status", "podIPs", "ip",
                                 "hosts", "http", "route", "destination", "host", "weight", "rules", "from",
                                 "parentRefs", "backendRefs", "matches", "listeners", "services", "resources"]),
                                inner, max_size=4)),
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


@st.composite
def manifests(draw: st.DrawFn) -> str:
    """YAML documents of random objects, sometimes damaged by an edit at a random place."""
    text = yaml.safe_dump_all(draw(st.lists(k8s_objects(), max_size=4)))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["", ":", "\n", " ", "- ", "{", "'", "\t", "\n  x: 1\n", "---\n", "\x99"]))
        text = text[:at] + edit + text[at + draw(st.integers(0, 3)):]
    return text


def assert_reported(diagnostics: Sequence[Diagnostic]) -> None:
    """Every diagnostic is a report a user can act on; none is an adapter's exception."""
    crashes = [str(d) for d in diagnostics if d.code == ADAPTER_FAILED]
    assert not crashes, f"an adapter raised instead of reporting: {crashes}"
    for d in diagnostics:
        assert re.fullmatch(r"MC\d{4}", d.code), f"diagnostic without a code: {d!r}"
        assert isinstance(d.severity, Severity), f"diagnostic without a severity: {d!r}"
        assert d.message.strip(), f"diagnostic without a message: {d!r}"


def assert_located_in(diagnostics: Sequence[Diagnostic], text: str, file: str = "<text>") -> None:
    """Every diagnostic points at a line of ``text`` (1-based, never past its end)."""
    last_line = len(YAML_LINE_BREAK.split(text))
    for d in diagnostics:
        assert d.source.file == file, f"diagnostic not located in the input: {d}"
        assert 1 <= d.source.line <= last_line, f"line {d.source.line} is not in the {last_line}-line input: {d}"
        assert d.source.column >= 0, d


@settings(max_examples=300, deadline=None)
@given(st.lists(k8s_objects(), max_size=6))
def test_random_objects_never_crash(objects: list[dict[str, Any]]) -> None:
    result = meshcore.translate(objects=objects)
    assert_reported(result.diagnostics)
    # Parsed objects have no lines: each diagnostic names the object it is about instead.
    unnamed = [str(d) for d in result.diagnostics if not (d.source.kind and d.source.name)]
    assert not unnamed, f"diagnostics that name no object: {unnamed}"
    meshcore.compile_plan(result.snapshot)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_never_crashes(text: str) -> None:
    result = meshcore.translate(text=text)
    assert_reported(result.diagnostics)
    assert_located_in(result.diagnostics, text)


@settings(max_examples=200, deadline=None)
@given(manifests())
def test_random_manifests_are_reported_at_their_lines(text: str) -> None:
    result = meshcore.translate(text=text)
    assert_reported(result.diagnostics)
    assert_located_in(result.diagnostics, text)
    meshcore.compile_plan(result.snapshot)


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
