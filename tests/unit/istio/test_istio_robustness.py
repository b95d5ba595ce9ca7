"""Random Istio specs never crash the adapter: every problem is a diagnostic."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import meshcore
from meshcore_istio import KINDS, adapter

KEYS = ["hosts", "http", "tcp", "tls", "route", "destination", "host", "subset", "weight", "match", "uri",
        "exact", "prefix", "regex", "headers", "port", "number", "subsets", "labels", "name", "rules", "from",
        "source", "principals", "to", "operation", "ports", "when", "key", "values", "mtls", "mode",
        "selector", "matchLabels", "endpoints", "address", "resolution", "fault", "abort", "httpStatus",
        "redirect", "rewrite", "retries", "attempts", "timeout", "gateways", "exportTo", "portLevelMtls"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=8),
                    st.sampled_from(["app", "reviews", "v1", "10.0.0.1", "*", "STATIC", "STRICT", "/a", "10s"]))
values: st.SearchStrategy[Any] = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                     st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=14,
)
KIND_NAMES = sorted({(k.api_version, k.kind) for k in KINDS if k.api_version.endswith("/v1")})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KIND_NAMES), values), max_size=5))
def test_random_specs_never_crash(items: list[tuple[tuple[str, str], Any]]) -> None:
    objects = [{"apiVersion": api, "kind": kind, "metadata": {"name": f"o{i}", "namespace": "default"},
                "spec": spec} for i, ((api, kind), spec) in enumerate(items)]
    objects.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app", "namespace": "default"},
                    "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "http", "port": 80}]}})
    result = meshcore.translate(objects=objects, adapters=[adapter])
    assert not [d for d in result.diagnostics if d.code == "MC0300"], result.diagnostics
