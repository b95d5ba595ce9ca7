"""Translating and compiling changes: always the result of doing it all again, at the cost of the change.

The property tests apply random sequences of changes (EndpointSlices, pod readiness, and
changes that need everything again) to a Translator and a CompiledPlan, and compare
each step with a whole translation and compile of the same objects.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcore import translate_objects
from meshcore._translator import Translator, object_key
from meshcore.compile import CompiledPlan, CompileOptions, compile_plan, diff_bpf
from meshcore.kube import KubeObject, make_object
from meshcore.model import ServiceRef
from meshcore.registry import wrap
from meshcore_envoycrd import adapter as envoycrd
from meshcore_gateway import adapter as gateway

ADAPTERS = [envoycrd, gateway]
NODE = "node-a"
_TYPES = "type.googleapis.com/envoy."
OPTIONS = CompileOptions(proxy_enabled=True)
ADDRESSES = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "fd00::5"]
PODS = ["a-0", "a-1", "b-0", "d-0"]


def service(name: str, ip: str, selector: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                                                        "appProtocol": "http"}], **spec}
    if selector:
        body["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "shop"}, "spec": body}


def pod(name: str, app: str, ip: str, ready: bool = True, deleting: bool = False, sidecar: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "labels": {"app": app}}
    if sidecar:
        meta["annotations"] = {"meshcore.io/proxy-mode": "sidecar"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def endpoint_slice(name: str, for_service: str, endpoints: list[tuple[str, bool, bool, str]],
                   port_name: str = "http") -> dict[str, Any]:
    listed = []
    for address, ready, terminating, target in endpoints:
        entry: dict[str, Any] = {"addresses": [address], "conditions": {"ready": ready, "terminating": terminating}}
        if target:
            entry["targetRef"] = {"kind": "Pod", "name": target, "namespace": "shop"}
        listed.append(entry)
    family = "IPv6" if endpoints and ":" in endpoints[0][0] else "IPv4"
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "shop", "labels": {"kubernetes.io/service-name": for_service}},
            "addressType": family, "ports": [{"name": port_name, "port": 8080, "protocol": "TCP"}],
            "endpoints": [e for e in listed if (":" in e["addresses"][0]) == (family == "IPv6")]}


def http_route(name: str, parent: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "shop", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": parent, "port": 80}], "rules": rules}}


BASE: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
    service("a", "10.96.0.1", {"app": "a"}),
    service("b", "10.96.0.2", {"app": "b"}),
    service("c", "10.96.0.3"),
    service("d", "10.96.0.4", {"app": "d"}, publishNotReadyAddresses=True),
    # split sends by weight to a and b: its frontend holds their backends.
    service("split", "10.96.0.5"),
    # proxied needs the node proxy (a header match), which holds c's endpoints in a cluster.
    service("proxied", "10.96.0.6"),
    # b-0 has a sidecar, whose plan holds the same services' backends.
    pod("a-0", "a", "10.1.0.1"), pod("a-1", "a", "10.1.0.2"), pod("b-0", "b", "10.1.0.3", sidecar=True),
    pod("d-0", "d", "10.1.0.4", ready=False),
    endpoint_slice("c-1", "c", [("10.1.0.4", True, False, "d-0")]),
    http_route("split", "split", [{"backendRefs": [{"name": "a", "port": 80, "weight": 3},
                                                   {"name": "b", "port": 80, "weight": 1}]}]),
    http_route("canary", "proxied", [{"matches": [{"headers": [{"name": "x-canary", "value": "1"}]}],
                                      "backendRefs": [{"name": "c", "port": 80}]},
                                     {"backendRefs": [{"name": "b", "port": 80}]}]),
    # A raw Envoy config sending to d's endpoints (a Cilium-style <ns>/<svc> cluster).
    {"apiVersion": "cilium.io/v2", "kind": "CiliumEnvoyConfig", "metadata": {"name": "edge", "namespace": "shop"},
     "spec": {"backendServices": [{"name": "d", "namespace": "shop"}], "resources": [{
         "@type": f"{_TYPES}config.listener.v3.Listener", "name": "edge",
         "address": {"socket_address": {"address": "0.0.0.0", "port_value": 10080}},
         "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
             "@type": f"{_TYPES}extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
             "stat_prefix": "edge",
             "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                 {"match": {"prefix": "/"}, "route": {"cluster": "shop/d"}}]}]},
             "http_filters": [{"name": "router", "typed_config": {
                 "@type": f"{_TYPES}extensions.filters.http.router.v3.Router"}}]}}]}]}]}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": {"zone": "z1"}}},
]


def objects(bodies: list[dict[str, Any]], file: str = "input.yaml") -> list[KubeObject]:
    return [make_object(b, file=file, line=10 * i + 1, cluster_scoped=b["kind"] in ("Namespace", "Node"))
            for i, b in enumerate(bodies)]


endpoints = st.lists(st.tuples(st.sampled_from(ADDRESSES), st.booleans(), st.booleans(),
                               st.sampled_from(["", *PODS])), max_size=3)


@st.composite
def changes(draw: st.DrawFn) -> tuple[str, Any]:
    """One change: what it is and what it carries."""
    kind = draw(st.sampled_from(["slice", "slice", "slice", "delete-slice", "pod", "pod", "delete-pod",
                                 "service", "route", "node", "move"]))
    if kind == "slice":
        return kind, endpoint_slice(draw(st.sampled_from(["c-1", "c-2", "x-1"])),
                                    draw(st.sampled_from(["a", "b", "c", "split", "ghost"])), draw(endpoints),
                                    draw(st.sampled_from(["http", "http", "other"])))
    if kind == "delete-slice":
        return kind, draw(st.sampled_from(["c-1", "c-2", "x-1"]))
    if kind == "pod":
        name = draw(st.sampled_from(PODS))
        return kind, pod(name, name[0], ADDRESSES[PODS.index(name)], draw(st.booleans()), draw(st.booleans()),
                         name == "b-0" and draw(st.booleans()))
    if kind == "delete-pod":
        return kind, draw(st.sampled_from(PODS))
    if kind == "service":
        return kind, service("c", "10.96.0.3", ports=[{"name": "http", "port": draw(st.sampled_from([80, 81])),
                                                        "targetPort": 8080}])
    if kind == "route":
        return kind, http_route("split", "split", [{"backendRefs": [
            {"name": "a", "port": 80, "weight": draw(st.integers(0, 3))}, {"name": "c", "port": 80, "weight": 1}]}])
    if kind == "node":
        return kind, {"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": NODE, "labels": {"zone": draw(st.sampled_from(["z1", "z2"]))}}}
    return kind, draw(st.integers(0, len(BASE) - 1))


def _apply(translator: Translator, change: tuple[str, Any]) -> None:
    kind, value = change
    if kind in ("delete-slice", "delete-pod"):
        api, what = ("discovery.k8s.io/v1", "EndpointSlice") if kind == "delete-slice" else ("v1", "Pod")
        translator.update(deleted=[(api, what, "shop", value)])
    elif kind == "move":
        # The same object read from another line: its sources (and diagnostics) move.
        old = list(translator.objects.values())[value % len(translator.objects)]
        moved = make_object(copy.deepcopy(dict(old.body)), file=old.source.file, line=old.source.line + 1,
                            cluster_scoped=old.namespace == "")
        translator.update([moved])
    else:
        translator.update([changed(translator, value)])


def changed(translator: Translator, body: dict[str, Any]) -> KubeObject:
    """``body`` as a new version of the object of its key (read from the same place), or as a new object."""
    [obj] = objects([body], file="changes.yaml")
    old = translator.objects.get(object_key(obj))
    if old is None:
        return obj
    return make_object(body, file=old.source.file, line=old.source.line, cluster_scoped=old.namespace == "")


def assert_same_as_whole(translator: Translator, compiled: CompiledPlan, previous: CompiledPlan) -> None:
    """The kept translation and plan equal translating and compiling the current objects again."""
    current = translator.translation
    assert current is not None
    whole = translate_objects(list(translator.objects.values()), wrap(ADAPTERS))
    assert current.snapshot == whole.snapshot
    assert current.snapshot.to_data() == whole.snapshot.to_data()  # sources too
    assert current.snapshot.content_hash == whole.snapshot.content_hash
    assert current.diagnostics == whole.diagnostics
    assert current.statuses == whole.statuses
    assert tuple(translator.objects.values()) == whole.objects
    if translator.replaced is not None:
        assert all(o in whole.objects for o in current.objects), "a change lists the objects it read"
    plan = compile_plan(whole.snapshot, NODE, OPTIONS)
    assert compiled.plan == plan
    assert [d.source for d in compiled.plan.decisions] == [d.source for d in plan.decisions]
    if compiled.bpf_diff is not None:
        # What the kernel is told to write is exactly what differs from the previous plan.
        expected = diff_bpf(previous.plan.bpf, compiled.plan.bpf)
        assert set(compiled.bpf_diff.changed) == set(expected.changed)
        assert compiled.bpf_diff.added == expected.added == ()
        assert compiled.bpf_diff.removed == expected.removed == ()


@settings(max_examples=150, deadline=None)
@given(st.lists(changes(), min_size=1, max_size=12))
def test_any_sequence_of_changes_gives_what_translating_everything_again_gives(
        sequence: list[tuple[str, Any]]) -> None:
    translator = Translator(ADAPTERS)
    compiled = CompiledPlan.compile(translator.translate(objects(BASE)).snapshot, NODE, OPTIONS)
    for change in sequence:
        _apply(translator, change)
        assert translator.translation is not None
        previous, compiled = compiled, compiled.recompile(translator.translation.snapshot)
        assert_same_as_whole(translator, compiled, previous)


def test_an_endpoint_change_replaces_only_its_service_and_the_services_routing_to_it() -> None:
    translator = Translator(ADAPTERS)
    compiled = CompiledPlan.compile(translator.translate(objects(BASE)).snapshot, NODE, OPTIONS)
    before = compiled
    result = translator.update([changed(translator, endpoint_slice("a-1", "a", [("10.1.0.1", True, False, "a-0")]))])
    assert translator.replaced == {ServiceRef("shop", "a")}
    assert result.snapshot.replaced_since(before.snapshot) == {ServiceRef("shop", "a")}
    compiled = compiled.recompile(result.snapshot)
    # a's frontend and split's (which sends a share to a) moved; nothing else was compiled again.
    assert compiled.bpf_diff is not None
    assert sorted(s.service.name for s in compiled.bpf_diff.changed) == ["a", "split"]
    assert compiled.plan.envoy is before.plan.envoy  # the node proxy holds nothing of a
    assert compiled.plan.policy is before.plan.policy
    assert_same_as_whole(translator, compiled, before)


def test_an_endpoint_change_of_a_service_the_node_proxy_holds_rebuilds_its_plan() -> None:
    translator = Translator(ADAPTERS)
    compiled = CompiledPlan.compile(translator.translate(objects(BASE)).snapshot, NODE, OPTIONS)
    before = compiled
    update = changed(translator, endpoint_slice("c-1", "c", [("10.1.0.2", True, False, "a-1")]))
    compiled = compiled.recompile(translator.update([update]).snapshot)
    assert compiled.bpf_diff is not None  # still recompiled service by service
    [cluster] = [c for c in compiled.plan.envoy.clusters if c.service == ServiceRef("shop", "c")]
    assert [e.address for e in cluster.endpoints] == ["10.1.0.2"]
    assert_same_as_whole(translator, compiled, before)


def test_a_pod_turning_ready_puts_it_into_a_raw_configs_cluster() -> None:
    translator = Translator(ADAPTERS)
    compiled = CompiledPlan.compile(translator.translate(objects(BASE)).snapshot, NODE, OPTIONS)
    before = compiled
    # d publishes pods that are not ready, so readiness alone changes nothing; a pod being deleted does.
    result = translator.update([changed(translator, pod("d-0", "d", "10.1.0.4", ready=True, deleting=True))])
    assert translator.replaced == {ServiceRef("shop", "d")}
    compiled = compiled.recompile(result.snapshot)
    assert compiled.bpf_diff is not None
    [cluster] = [c for c in compiled.plan.envoy.clusters if c.name == "shop/d"]
    assert cluster.endpoints == ()  # terminating: the node proxy sends nothing there any more
    assert_same_as_whole(translator, compiled, before)


def test_a_pod_turning_unready_leaves_the_services_selecting_it() -> None:
    translator = Translator(ADAPTERS)
    translator.translate(objects(BASE))
    result = translator.update([changed(translator, pod("a-1", "a", "10.1.0.2", ready=False))])
    assert translator.replaced == {ServiceRef("shop", "a")}
    a = result.snapshot.service(ServiceRef("shop", "a"))
    assert a is not None and [b.address for b in a.ports[0].backends] == ["10.1.0.1"]


def test_changes_out_of_scope_translate_everything_again() -> None:
    translator = Translator(ADAPTERS)
    translator.translate(objects(BASE))
    result = translator.update([changed(translator, endpoint_slice("g-1", "ghost", [("10.1.0.1", True, False, "")]))])
    assert translator.replaced is None  # a slice of no Service is reported; nothing to scope it to
    assert [d.code for d in result.diagnostics] == ["MC1009"]


def test_a_full_list_is_turned_into_the_change_it_makes() -> None:
    translator = Translator(ADAPTERS)
    listed = objects(BASE)
    translator.translate(listed)
    bodies = copy.deepcopy(BASE)
    bodies[11] = endpoint_slice("c-1", "c", [("10.1.0.3", True, False, "b-0")])
    again = objects(bodies)
    found = translator.changes(again)
    assert found == ([again[11]], [])
    assert translator.changes([*listed[:11], *listed[12:]]) == ([], [object_key(listed[11])])
    # Objects kept in another order (which decides which of two definitions wins): no change reaches it.
    assert translator.changes([listed[1], listed[0], *listed[2:]]) is None


def test_an_object_deleted_and_given_again_as_it_was_stays() -> None:
    translator = Translator(ADAPTERS)
    listed = objects(BASE)
    translator.translate(listed)
    key = object_key(listed[11])
    result = translator.update([listed[11]], [key])
    assert key in translator.objects and translator.replaced == frozenset()
    assert result.snapshot == translate_objects(listed, wrap(ADAPTERS)).snapshot


def test_a_controller_passes_objects_as_the_dicts_it_holds() -> None:
    translator = Translator(ADAPTERS)
    translator.translate(BASE)
    a = endpoint_slice("a-1", "a", [("10.1.0.3", True, False, "")])
    result = translator.update(upserted=[a])
    assert translator.replaced == {ServiceRef("shop", "a")}
    service_a = result.snapshot.service(ServiceRef("shop", "a"))
    assert service_a is not None and [b.address for b in service_a.ports[0].backends] == ["10.1.0.3"]
    assert translator.changes(list(translator.objects.values())) == ([], [])


def test_something_that_is_not_an_object_is_refused_naming_what_is_expected() -> None:
    translator = Translator(ADAPTERS)
    translator.translate(BASE)
    before = translator.translation
    with pytest.raises(TypeError, match=r"object 1 is a str: expected a Kubernetes object as a dict"):
        translator.update(upserted=["EndpointSlice a-1"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"object 2 is missing apiVersion, kind or metadata.name"):
        translator.update(upserted=[BASE[1], {"kind": "EndpointSlice", "metadata": {}}])
    assert translator.translation is before  # nothing was changed
