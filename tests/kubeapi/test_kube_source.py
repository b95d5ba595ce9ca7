"""meshcore's Kubernetes source against the stand-in API server (which replaces kube-apiserver here).

What the agent relies on: one update per settled burst of changes (every object first, then
only what changed: test_kube_source_changes.py), no new generation when a relist (API
server restart, expired watch) finds nothing new, kinds not served skipped with a warning
and picked up once their CRD appears.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from standin_apiserver import GATEWAY, StandInApiServer

from meshcore.agent import SourceError, Update
from meshcore.cli import cli
from meshcore.kubesource import KubeSource

KINDS = [("v1", "Namespace"), ("v1", "Pod"), ("v1", "Service"), (f"{GATEWAY}/v1", "HTTPRoute"),
         (f"{GATEWAY}/v1beta1", "HTTPRoute"), ("networking.istio.io/v1", "VirtualService")]


def pod(name: str, ip: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"podIP": ip}}


def run_pod(apiserver: StandInApiServer, name: str, ip: str) -> None:
    """Create a pod and report its address as a kubelet does (through the status subresource)."""
    pods = apiserver.store.kind("v1", "pods")
    body = apiserver.store.create(pods, "default", pod(name, ip))
    apiserver.store.replace(pods, "default", name, {**body, "status": {"phase": "Running", "podIP": ip}},
                            subresource="status")


def wait_for(poll: Callable[[], Update | None], timeout: float = 10.0) -> Update:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        update = poll()
        if update is not None:
            return update
        time.sleep(0.05)
    raise AssertionError(f"no update within {timeout}s")


def quiet(source: KubeSource, seconds: float) -> list[Update]:
    """Every update the source hands out during ``seconds``."""
    found = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        update = source.poll()
        if update is not None:
            found.append(update)
        time.sleep(0.05)
    return found


@pytest.fixture
def source(apiserver: StandInApiServer, kubeconfig: Path) -> Iterator[KubeSource]:
    with KubeSource(kubeconfig=kubeconfig, kinds=KINDS, node="node-1", settle=0.3, rediscover=0.5) as src:
        yield src


def test_first_update_holds_every_object_with_its_url_and_warns_of_kinds_not_served(
        apiserver: StandInApiServer, source: KubeSource) -> None:
    run_pod(apiserver, "web-0", "10.244.0.5")
    update = wait_for(source.poll)
    assert update.generation == 1
    refs = [(o.kind, o.namespace, o.name) for o in update.objects]
    assert ("Pod", "default", "web-0") in refs and ("Namespace", "", "kube-system") in refs
    web = next(o for o in update.objects if o.name == "web-0")
    assert web.source.file == "kube://standin/api/v1/namespaces/default/pods/web-0"
    assert web.body["status"]["podIP"] == "10.244.0.5" and web.api_version == "v1"
    assert [o.api_version for o in update.objects if o.kind == "HTTPRoute"] == []  # none yet, read in v1 only
    assert [(d.code, d.severity.value) for d in update.diagnostics] == [("MC0500", "warning")]
    assert "VirtualService (networking.istio.io)" in update.diagnostics[0].message
    assert update.interfaces is None  # the CNI wires workloads: attachments are left as they are


def test_a_burst_of_changes_is_one_update(apiserver: StandInApiServer, source: KubeSource) -> None:
    wait_for(source.poll)
    woken = threading.Event()
    source.subscribe(woken.set)
    for n in range(10):
        run_pod(apiserver, f"web-{n}", f"10.244.0.{n + 10}")
    assert woken.wait(5), "the source did not say an update was ready"
    updates = quiet(source, 1.0)
    assert [u.generation for u in updates] == [2]
    changes = updates[0].changes
    assert changes is not None and changes.deleted == ()
    assert sorted(o.body["status"]["podIP"] for o in changes.upserted if o.kind == "Pod") == [
        f"10.244.0.{n + 10}" for n in range(10)]


def test_an_api_server_restart_relists_without_a_new_generation(apiserver: StandInApiServer,
                                                                 source: KubeSource) -> None:
    pods = apiserver.store.kind("v1", "pods")
    run_pod(apiserver, "web-0", "10.244.0.5")
    wait_for(source.poll)
    time.sleep(0.5)  # bookmarks move every informer to the latest resourceVersion
    lists = {repr(i): i.lists for i in source.informers}
    apiserver.stop()
    time.sleep(1.0)  # watches break, reconnections are refused and back off
    apiserver.start(compacted=True)  # every resourceVersion the informers hold is now too old: 410
    deadline = time.monotonic() + 15
    while any(i.lists == lists[repr(i)] for i in source.informers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(i.lists == lists[repr(i)] + 1 for i in source.informers), [(i, i.lists) for i in source.informers]
    assert quiet(source, 1.0) == []  # the same objects: no new generation
    apiserver.store.replace(pods, "default", "web-0", {**apiserver.store.get(pods, "default", "web-0"),
                                                       "status": {"podIP": "10.244.0.6"}}, subresource="status")
    update = wait_for(source.poll)
    assert update.generation == 2 and update.changes is not None
    assert [o.body["status"]["podIP"] for o in update.changes.upserted] == ["10.244.0.6"]


def test_the_nodes_labels_are_read_and_its_status_is_not(apiserver: StandInApiServer, source: KubeSource) -> None:
    nodes = apiserver.store.kind("v1", "nodes")
    apiserver.store.create(nodes, "", {"metadata": {"name": "node-1", "labels": {"zone": "a"}}})
    apiserver.store.create(nodes, "", {"metadata": {"name": "node-2", "labels": {"zone": "b"}}})
    update = wait_for(source.poll)
    assert [(o.name, o.labels) for o in update.objects if o.kind == "Node"] == [("node-1", {"zone": "a"})]
    heartbeat = {**apiserver.store.get(nodes, "", "node-1"), "status": {"conditions": [{"type": "Ready"}]}}
    apiserver.store.replace(nodes, "", "node-1", heartbeat, subresource="status")
    assert quiet(source, 1.0) == []
    relabelled = apiserver.store.get(nodes, "", "node-1")
    relabelled["metadata"]["labels"] = {"zone": "c"}
    apiserver.store.replace(nodes, "", "node-1", relabelled)
    changes = wait_for(source.poll).changes
    assert changes is not None and [(o.kind, o.labels) for o in changes.upserted] == [("Node", {"zone": "c"})]


def test_a_kind_whose_crd_appears_later_is_read_then(apiserver: StandInApiServer, source: KubeSource) -> None:
    store = apiserver.store
    store.kinds = tuple(k for k in store.kinds if k.kind != "HTTPRoute")
    first = wait_for(source.poll)
    assert "HTTPRoute" in first.diagnostics[0].message
    route = next(k for k in apiserver.store.kinds if k.kind == "GRPCRoute")
    store.kinds = (*store.kinds, dataclasses.replace(route, kind="HTTPRoute", plural="httproutes"))
    store.create(store.kind(f"{GATEWAY}/v1", "httproutes"), "default",
                 {"metadata": {"name": "web"}, "spec": {"rules": []}})
    update = wait_for(source.poll)
    assert update.changes is None  # a kind read for the first time: every object again
    assert [(o.kind, o.api_version) for o in update.objects if o.kind == "HTTPRoute"] == [("HTTPRoute",
                                                                                          f"{GATEWAY}/v1")]
    assert "HTTPRoute" not in update.diagnostics[0].message


def test_an_unreachable_api_server_is_reported_once_then_read_when_it_comes(tmp_path: Path) -> None:
    server = StandInApiServer(bookmark_seconds=0.3)
    server.start()
    server.stop()  # the port is known, nothing listens
    config = server.kubeconfig(tmp_path / "kubeconfig")
    with KubeSource(kubeconfig=config, kinds=KINDS[:2], settle=0.1) as src:
        deadline = time.monotonic() + 5
        errors = []
        while time.monotonic() < deadline and not errors:
            try:
                src.poll()
            except SourceError as exc:
                errors.append(str(exc))
            time.sleep(0.05)
        assert errors and "cannot read the API server's discovery documents" in errors[0]
        assert quiet(src, 0.3) == []  # the same error is not reported again
        server.start()
        try:
            assert wait_for(src.poll, 20).generation == 1
        finally:
            server.stop()


def test_meshcore_translate_from_kube(apiserver: StandInApiServer, kubeconfig: Path) -> None:
    store = apiserver.store
    run_pod(apiserver, "web-0", "10.244.0.5")
    store.create(store.kind("v1", "services"), "default",
                 {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    result = CliRunner().invoke(cli, ["translate", "--from", "kube", "--kubeconfig", str(kubeconfig),
                                      "--context", "standin", "-o", "json"])
    assert result.exit_code == 0, result.output
    snapshot = json.loads(result.stdout)["snapshot"]
    service = snapshot["services"][0]
    assert service["vips"] == ["10.96.0.10"] and service["ports"][0]["backends"][0]["address"] == "10.244.0.5"
    assert service["source"]["file"] == "kube://standin/api/v1/namespaces/default/services/web"
    wrong = CliRunner().invoke(cli, ["plan", "--from", "kube", "--kubeconfig", str(kubeconfig), "--context", "prod"])
    assert wrong.exit_code == 1 and "config source kube: kubeconfig" in wrong.output
    assert "Context 'prod' not found" in wrong.output
