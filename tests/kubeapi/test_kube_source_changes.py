"""KubeSource hands out changes: after the first full set, each update names only what changed.

The property: folding every update's changes onto the first full set gives the objects the
informers hold, and the API server stores, after each update — for any sequence of adds,
modifies and deletes sent with the real kubectl. Each change is exact: an upsert differs
from what was handed out, a delete names an object that was handed out.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from _kubectl_support import Kubectl
from standin_apiserver import GATEWAY, StandInApiServer

from meshcore.agent import PodSandbox, Update
from meshcore.kubesource import FoundPod, KubeSource, NodePods, status_is_written, without_written_status
from meshcore.model import WorkloadRef

KINDS = [("v1", "Namespace"), ("v1", "Service"), (f"{GATEWAY}/v1", "HTTPRoute")]

Key = tuple[str, str, str, str]
State = dict[Key, Mapping[str, Any]]


def significant(api_version: str, kind: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """A body as it counts for configuration: without volatile metadata and the status controllers write."""
    meta = {k: v for k, v in body["metadata"].items() if k not in ("resourceVersion", "managedFields")}
    out = {**body, "apiVersion": api_version, "kind": kind, "metadata": meta}
    return without_written_status(out) if status_is_written(api_version, kind) else out


def key_of(api_version: str, kind: str, body: Mapping[str, Any]) -> Key:
    return (api_version, kind, str(body["metadata"].get("namespace") or ""), str(body["metadata"]["name"]))


def fold(state: State | None, update: Update) -> State:
    """The objects after ``update``; asserts that its changes are exact against ``state``."""
    if update.changes is None:
        return {key_of(o.api_version, o.kind, o.body): significant(o.api_version, o.kind, o.body)
                for o in update.objects}
    assert state is not None, "the first update holds every object"
    assert update.objects == ()
    after = dict(state)
    upserted = [key_of(o.api_version, o.kind, o.body) for o in update.changes.upserted]
    assert len(set(upserted)) == len(upserted), f"an object upserted twice: {upserted}"
    assert not set(upserted) & set(update.changes.deleted)
    for obj in update.changes.upserted:
        key = key_of(obj.api_version, obj.kind, obj.body)
        body = significant(obj.api_version, obj.kind, obj.body)
        assert state.get(key) != body, f"{key} upserted unchanged"
        after[key] = body
    for key in update.changes.deleted:
        assert key in state, f"{key} deleted but never handed out"
        del after[key]
    return after


def informers_hold(source: KubeSource) -> State:
    return {key_of(o.api_version, o.kind, o.body): significant(o.api_version, o.kind, o.body)
            for o in source.objects()}


def server_holds(apiserver: StandInApiServer) -> State:
    store = apiserver.store
    out: State = {}
    for api_version, kind in KINDS:
        found = next(k for k in store.kinds if (k.api_version, k.kind) == (api_version, kind))
        out.update({key_of(api_version, kind, b): significant(api_version, kind, b) for b in store.items(found)})
    return out


def updates_until_quiet(source: KubeSource, quiet: float = 0.8, timeout: float = 15.0) -> list[Update]:
    """Every update handed out until none came for ``quiet`` seconds."""
    found: list[Update] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        assert time.monotonic() < deadline, "the source never went quiet"
        update = source.poll()
        if update is not None:
            found.append(update)
            last = time.monotonic()
        time.sleep(0.03)
    return found


def service(name: str, namespace: str, version: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": {"version": str(version)}},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80 + version % 3}]}}


def route(name: str, namespace: str, version: int) -> dict[str, Any]:
    return {"apiVersion": f"{GATEWAY}/v1", "kind": "HTTPRoute", "metadata": {"name": name, "namespace": namespace},
            "spec": {"parentRefs": [{"name": "mesh"}],
                     "rules": [{"backendRefs": [{"name": "web", "port": 80, "weight": version}]}]}}


def as_yaml(bodies: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(bodies)


@pytest.fixture
def source(apiserver: StandInApiServer, kubeconfig: Path) -> Iterator[KubeSource]:
    with KubeSource(kubeconfig=kubeconfig, kinds=KINDS, settle=0.2, max_delay=5.0) as src:
        yield src


@pytest.mark.parametrize("seed", [1, 2])
def test_folding_every_update_onto_the_first_full_set_gives_what_the_informers_and_server_hold(
        apiserver: StandInApiServer, source: KubeSource, kubectl: Kubectl, seed: int) -> None:
    rng = random.Random(seed)
    kubectl("apply", "-f", "-", input=as_yaml([{"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": "shop"}}]))
    names = [(make, name, namespace) for make in (service, route) for name in ("a", "b", "c")
             for namespace in ("default", "shop")]
    live: dict[tuple[str, str, str], int] = {}
    state: State | None = None
    kinds_seen = {"full": 0, "changes": 0}
    for round_ in range(7):
        status_only = round_ == 3  # a round of nothing but the status controllers write
        for _ in range(rng.randint(1, 3)):  # each step is one kubectl call; a round is one settle window or more
            if status_only:
                routes = [n for n in live if n[0] == "route"]
                if routes:
                    _, name, namespace = rng.choice(routes)
                    kubectl("patch", "httproute", name, "-n", namespace, "--subresource=status", "--type=merge",
                            "-p", json.dumps({"status": {"parents": [{"controllerName": "meshcore.io/mesh",
                                                                      "parentRef": {"name": "mesh"},
                                                                      "conditions": [{"type": f"R{rng.random()}"}]}]}}))
                continue
            picked = rng.sample(names, rng.randint(1, 5))
            gone = [(m, n, ns) for m, n, ns in picked if (m.__name__, n, ns) in live and rng.random() < 0.4]
            applied = [(m, n, ns) for m, n, ns in picked if (m, n, ns) not in gone]
            if applied:
                bodies = []
                for make, name, namespace in applied:
                    ref = (make.__name__, name, namespace)
                    live[ref] = live.get(ref, 0) + rng.choice([0, 1])  # applied unchanged now and then
                    bodies.append(make(name, namespace, live[ref]))
                kubectl("apply", "-f", "-", input=as_yaml(bodies))
            for make, name, namespace in gone:
                kubectl("delete", "service" if make is service else "httproute", name, "-n", namespace)
                del live[(make.__name__, name, namespace)]
        updates = updates_until_quiet(source)
        if status_only and state is not None:
            assert updates == [], "status written back made a generation"
        for update in updates:
            state = fold(state, update)
            kinds_seen["full" if update.changes is None else "changes"] += 1
        assert state == informers_hold(source) == server_holds(apiserver)
    assert kinds_seen["full"] == 1 and kinds_seen["changes"] >= 3, kinds_seen
    assert [u.generation for u in updates_until_quiet(source, 0.3)] == []


def test_within_one_window_an_add_then_delete_is_nothing_and_two_modifies_are_the_latest(
        apiserver: StandInApiServer, source: KubeSource) -> None:
    store = apiserver.store
    services = store.kind("v1", "services")
    store.create(services, "default", service("kept", "default", 1))
    store.create(services, "default", service("gone", "default", 1))
    first = updates_until_quiet(source)
    assert [u.changes for u in first] == [None]
    store.create(services, "default", service("brief", "default", 1))
    store.delete(services, "default", "brief")
    assert updates_until_quiet(source) == [], "an object added and deleted within one window is no change"
    for version in (2, 3):
        store.replace(services, "default", "kept", {**store.get(services, "default", "kept"),
                                                    "metadata": service("kept", "default", version)["metadata"]})
    store.delete(services, "default", "gone")
    [update] = updates_until_quiet(source)
    assert update.generation == 2 and update.changes is not None
    assert [(o.name, o.labels) for o in update.changes.upserted] == [("kept", {"version": "3"})]
    assert update.changes.deleted == (("v1", "Service", "default", "gone"),)


def test_a_relist_that_finds_changes_hands_out_every_object_again(apiserver: StandInApiServer,
                                                                    source: KubeSource) -> None:
    services = apiserver.store.kind("v1", "services")
    apiserver.store.create(services, "default", service("web", "default", 1))
    assert [u.changes for u in updates_until_quiet(source)] == [None]
    lists = {repr(i): i.lists for i in source.informers}
    apiserver.stop()
    apiserver.store.create(services, "default", service("api", "default", 1))  # missed by every watch
    apiserver.start(compacted=True)  # the informers' resourceVersions are gone: they list again
    deadline = time.monotonic() + 15
    while any(i.lists == lists[repr(i)] for i in source.informers) and time.monotonic() < deadline:
        time.sleep(0.1)
    [update] = updates_until_quiet(source)
    assert update.changes is None
    assert sorted(o.name for o in update.objects if o.kind == "Service") == ["api", "web"]
    apiserver.store.delete(services, "default", "web")
    [after] = updates_until_quiet(source)
    assert after.changes is not None and after.changes.deleted == (("v1", "Service", "default", "web"),)


def test_pods_found_on_the_node_without_object_changes_are_an_update_of_no_changes(
        apiserver: StandInApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    web = WorkloadRef("default", "web-0")
    looks = [NodePods(), NodePods((FoundPod(web, "veth1", PodSandbox("/kubepods/pod1", "/kubepods/pod1/s", "/n")),))]
    src = KubeSource(kubeconfig=kubeconfig, kinds=KINDS, node="node-1", pods_cgroup=tmp_path, rescan=0.2, settle=0.1)
    src.node_pods = lambda: looks[0]  # type: ignore[method-assign]  # where the pods are is this test's to say
    with src:
        [first] = updates_until_quiet(src)
        assert first.changes is None and first.interfaces == {}
        looks.pop(0)
        [update] = updates_until_quiet(src)
        assert update.changes is not None and update.changes.upserted == () and update.changes.deleted == ()
        assert update.interfaces == {web: "veth1"} and update.sandboxes is not None and web in update.sandboxes
