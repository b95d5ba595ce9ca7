"""The informer's protocol logic against a scripted API: relist on 410, bookmarks, backoff, change detection."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from meshcore.kubesource import (
    ApiError,
    Backoff,
    Informer,
    Resource,
    Unreachable,
    discover,
    version_priority,
    without_written_status,
)

PODS = Resource("v1", "Pod", "pods", True)


def pod(name: str, rv: int, ip: str = "10.0.0.1") -> dict[str, Any]:
    # As a list answers: no apiVersion/kind on items, volatile metadata present.
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": str(rv),
                         "managedFields": [{"manager": "kubelet"}]}, "status": {"podIP": ip}}


class ScriptedApi:
    """Answers lists and watches from queues the test fills; records every request."""

    origin = "kube://test"

    def __init__(self) -> None:
        self.lists: list[dict[str, Any] | Exception] = []
        self.watches: list[list[dict[str, Any]] | Exception] = []
        self.requests: list[tuple[str, dict[str, str]]] = []

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        self.requests.append((path, dict(params or {})))
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def watch(self, path: str, params: Mapping[str, str], timeout: float) -> Iterator[dict[str, Any]]:
        self.requests.append((path, dict(params)))
        answer = self.watches.pop(0)
        if isinstance(answer, Exception):
            raise answer
        yield from answer

    def close(self) -> None:
        pass


def listing(rv: int, *items: dict[str, Any], more: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if more:
        meta["continue"] = more
    return {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": list(items)}


def gone() -> dict[str, Any]:
    return {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                        "message": "too old resource version: 5 (9)"}}


def make(api: ScriptedApi, **kwargs: Any) -> tuple[Informer, list[int]]:
    changes: list[int] = []
    informer = Informer(api, PODS, on_change=lambda: changes.append(1), backoff=Backoff(1, 8, jitter=0), **kwargs)
    return informer, changes


STOP = threading.Event()


def test_first_list_fills_the_cache_with_complete_bodies_and_watches_from_its_version() -> None:
    api = ScriptedApi()
    api.lists.append(listing(5, pod("a", 3), pod("b", 4)))
    api.watches.append([{"type": "ADDED", "object": {"apiVersion": "v1", "kind": "Pod", **pod("c", 6)}}])
    informer, changes = make(api)
    assert informer.step(STOP) == 0.0
    assert [b["metadata"]["name"] for b in informer.items()] == ["a", "b", "c"]
    first = informer.items()[0]
    assert (first["apiVersion"], first["kind"]) == ("v1", "Pod")  # lists leave them out
    assert "resourceVersion" not in first["metadata"] and "managedFields" not in first["metadata"]
    watch = api.requests[1][1]
    assert watch["resourceVersion"] == "5" and watch["allowWatchBookmarks"] == "true" and watch["watch"] == "1"
    assert informer.resource_version == "6"
    assert len(changes) == 2  # the first list, then the new pod


def test_410_gone_relists_and_an_identical_list_is_no_change() -> None:
    api = ScriptedApi()
    api.lists += [listing(5, pod("a", 3)), listing(9, pod("a", 3))]
    api.watches += [[gone()], []]
    informer, changes = make(api)
    informer.step(STOP)
    assert informer.resource_version == "" and informer.lists == 1  # 410: the next round lists again
    informer.step(STOP)
    assert informer.lists == 2 and informer.resource_version == "9"
    assert [p for p, q in api.requests if "watch" not in q] == [PODS.path, PODS.path]
    assert api.requests[-1][1]["resourceVersion"] == "9"
    assert len(changes) == 1  # only the first list: the relist found the same pod


def test_410_as_an_http_status_relists_too_and_a_different_list_is_a_change() -> None:
    api = ScriptedApi()
    api.lists += [listing(5, pod("a", 3)), listing(9, pod("a", 8, ip="10.0.0.2"))]
    api.watches += [ApiError(410, "Gone", "too old", PODS.path), []]
    informer, changes = make(api)
    informer.step(STOP)
    informer.step(STOP)
    assert informer.items()[0]["status"] == {"podIP": "10.0.0.2"}
    assert len(changes) == 2


def test_bookmarks_advance_the_resource_version_without_a_change() -> None:
    api = ScriptedApi()
    api.lists.append(listing(5, pod("a", 3)))
    api.watches += [[{"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                                                     "metadata": {"resourceVersion": "12"}}}], []]
    informer, changes = make(api)
    informer.step(STOP)
    assert informer.resource_version == "12"
    assert len(changes) == 1
    informer.step(STOP)
    assert api.requests[-1][1]["resourceVersion"] == "12"  # resumed from the bookmark, no relist
    assert informer.lists == 1


def test_a_modification_that_changes_only_volatile_metadata_is_no_change() -> None:
    api = ScriptedApi()
    api.lists.append(listing(5, pod("a", 3)))
    api.watches.append([{"type": "MODIFIED", "object": pod("a", 7)},
                        {"type": "DELETED", "object": pod("a", 8)}])
    informer, changes = make(api)
    informer.step(STOP)
    assert len(changes) == 2  # the first list and the deletion, not the resourceVersion-only update
    assert informer.items() == [] and informer.resource_version == "8"


def test_with_significant_a_change_of_written_status_alone_is_kept_but_is_no_change() -> None:
    def route(rv: int, conditions: str, hostname: str = "a.example") -> dict[str, Any]:
        return {"metadata": {"name": "r", "namespace": "default", "resourceVersion": str(rv)},
                "spec": {"hostnames": [hostname]}, "status": {"parents": [{"conditions": [conditions]}]}}

    api = ScriptedApi()
    api.lists += [listing(5, route(3, "old")), listing(9, route(8, "relisted"))]
    api.watches += [[{"type": "MODIFIED", "object": route(6, "new")}, gone()],
                    [{"type": "MODIFIED", "object": route(10, "relisted", hostname="b.example")}]]
    informer, changes = make(api, significant=without_written_status)
    informer.step(STOP)
    assert len(changes) == 1, "the first list only: the status write is no change"
    assert informer.get("default", "r")["status"]["parents"][0]["conditions"] == ["new"]  # but it is kept
    informer.step(STOP)
    assert len(changes) == 2 and informer.lists == 2, "a relist finding only new status is no change; the spec is"
    assert informer.get("default", "r")["spec"]["hostnames"] == ["b.example"]


def test_lists_are_read_in_pages() -> None:
    api = ScriptedApi()
    api.lists += [listing(5, pod("a", 3), more="t1"), listing(5, pod("b", 4))]
    api.watches.append([])
    informer, _ = make(api, page_size=1)
    informer.step(STOP)
    assert [b["metadata"]["name"] for b in informer.items()] == ["a", "b"]
    assert api.requests[0][1] == {"limit": "1"} and api.requests[1][1] == {"limit": "1", "continue": "t1"}


def test_errors_back_off_exponentially_up_to_the_cap_and_a_success_resets() -> None:
    api = ScriptedApi()
    api.lists.append(listing(5, pod("a", 3)))
    api.watches += [Unreachable("connection refused")] * 5 + [ApiError(500, "InternalError", "etcd", PODS.path)]
    api.watches.append([{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "6"}}}])
    api.watches.append(Unreachable("connection refused"))
    informer, _ = make(api)
    delays = [informer.step(STOP) for _ in range(6)]
    assert delays == [1, 2, 4, 8, 8, 8]
    assert "connection refused" not in informer.last_error and "500" in informer.last_error
    assert informer.step(STOP) == 0.0 and informer.last_error == ""
    assert informer.step(STOP) == 1  # the bookmark was a success: the backoff started again


def test_backoff_jitter_shortens_delays_within_the_fraction() -> None:
    low = Backoff(2, 30, jitter=0.25, rand=lambda: 1.0)
    high = Backoff(2, 30, jitter=0.25, rand=lambda: 0.0)
    assert [low.next() for _ in range(3)] == [1.5, 3.0, 6.0]
    assert [high.next() for _ in range(3)] == [2.0, 4.0, 8.0]
    with pytest.raises(ValueError):
        Backoff(5, 1)


def test_a_watch_that_ends_at_once_without_events_backs_off() -> None:
    api = ScriptedApi()
    api.lists.append(listing(5))
    api.watches.append([])
    informer, _ = make(api)
    assert informer.step(STOP) == 1  # a server closing every watch at once is not hammered


def test_a_connection_closed_to_stop_is_no_failure(caplog: pytest.LogCaptureFixture) -> None:
    api = ScriptedApi()
    api.lists.append(listing(5))
    api.watches.append(Unreachable("http://x/api/v1/pods: [Errno 9] Bad file descriptor"))
    informer, _ = make(api)
    stop = threading.Event()
    stop.set()
    assert informer.step(stop) == 0.0
    assert not [r for r in caplog.records if r.levelname == "WARNING"] and informer.backoff.failures == 0


def test_field_selector_and_slimming_apply_to_lists_and_watches() -> None:
    api = ScriptedApi()
    api.lists.append(listing(5, pod("a", 3)))
    api.watches.append([])
    informer, _ = make(api, field_selector="metadata.name=a", slim=lambda b: {"metadata": b["metadata"]})
    informer.step(STOP)
    assert api.requests[0][1]["fieldSelector"] == "metadata.name=a"
    assert api.requests[1][1]["fieldSelector"] == "metadata.name=a"
    assert informer.items() == [{"metadata": {"name": "a", "namespace": "default"}}]


class DiscoveryApi(ScriptedApi):
    def __init__(self, documents: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.documents = documents

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        self.requests.append((path, {}))
        if path not in self.documents:
            raise ApiError(404, "NotFound", "", path)
        return self.documents[path]


def _resources(*entries: tuple[str, str, bool]) -> dict[str, Any]:
    return {"resources": [{"name": n, "kind": k, "namespaced": ns} for n, k, ns in entries]}


def test_discovery_reads_each_kind_in_one_version_with_its_status_subresource_and_reports_kinds_not_served() -> None:
    gw = "gateway.networking.k8s.io"
    api = DiscoveryApi({
        "/apis": {"groups": [{"name": gw, "versions": [{"version": "v1"}, {"version": "v1beta1"}],
                              "preferredVersion": {"version": "v1"}}]},
        "/api/v1": _resources(("pods", "Pod", True), ("pods/status", "Pod", True), ("namespaces", "Namespace", False)),
        f"/apis/{gw}/v1": _resources(("httproutes", "HTTPRoute", True), ("httproutes/status", "HTTPRoute", True)),
        f"/apis/{gw}/v1beta1": _resources(("httproutes", "HTTPRoute", True), ("referencegrants", "ReferenceGrant", True)),
    })
    found, missing = discover(api, [("v1", "Pod"), ("v1", "Namespace"), (f"{gw}/v1", "HTTPRoute"),
                                    (f"{gw}/v1beta1", "HTTPRoute"), (f"{gw}/v1alpha2", "HTTPRoute"),
                                    (f"{gw}/v1beta1", "ReferenceGrant"), (f"{gw}/v1", "TLSRoute"),
                                    ("networking.istio.io/v1", "VirtualService")])
    assert found == [Resource("v1", "Namespace", "namespaces", False), Resource("v1", "Pod", "pods", True, status=True),
                     Resource(f"{gw}/v1", "HTTPRoute", "httproutes", True, status=True),
                     Resource(f"{gw}/v1beta1", "ReferenceGrant", "referencegrants", True)]
    assert missing == [(gw, "TLSRoute"), ("networking.istio.io", "VirtualService")]
    assert f"/apis/{gw}/v1alpha2" not in [p for p, _ in api.requests]  # not served: not asked for


def test_version_priority_is_kubernetes_order() -> None:
    versions = ["v1alpha1", "v1beta1", "v2", "v1", "v1beta2", "v2alpha1"]
    assert sorted(versions, key=version_priority) == ["v2", "v1", "v1beta2", "v1beta1", "v2alpha1", "v1alpha1"]
