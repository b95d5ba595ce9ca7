"""Route tables of two adapters for one service port: one adapter keeps the port, the others are reported."""

from __future__ import annotations

from collections.abc import Sequence

from meshcore_istio import adapter as istio_adapter

import meshcore
from meshcore.adapter import ApiKind, Fragment
from meshcore.compile import CompileOptions
from meshcore.kube import Inventory, KubeObject
from meshcore.model import Destination, HttpRoute, RouteKind, RouteTable, ServiceRef, Source

INVENTORY = """
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1-0, namespace: shop, labels: {app: reviews, version: v1}}
spec: {containers: [{name: app, image: echo, ports: [{containerPort: 9080}, {containerPort: 9090}]}]}
status: {podIP: 10.1.0.11, phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2-0, namespace: shop, labels: {app: reviews, version: v2}}
spec: {containers: [{name: app, image: echo, ports: [{containerPort: 9080}, {containerPort: 9090}]}]}
status: {podIP: 10.1.0.12, phase: Running}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: reviews}
  ports: [{name: http, port: 9080}, {name: http-admin, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v1, namespace: shop}
spec:
  clusterIP: 10.96.0.11
  selector: {app: reviews, version: v1}
  ports: [{name: http, port: 9080}, {name: http-admin, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v2, namespace: shop}
spec:
  clusterIP: 10.96.0.12
  selector: {app: reviews, version: v2}
  ports: [{name: http, port: 9080}, {name: http-admin, port: 9090}]
"""

HTTP_ROUTE = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: %(name)s, namespace: shop%(created)s}
spec:
  parentRefs:
  - {group: "", kind: Service, name: reviews%(port)s}
  rules:
  - backendRefs:
    - {name: reviews-v1, port: 9080}
"""

VIRTUAL_SERVICE = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %(name)s, namespace: shop%(created)s}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews-v2}
"""


def _created(when: str | None) -> str:
    return f", creationTimestamp: '{when}'" if when else ""


def _route(name: str = "reviews", created: str | None = None, port: int | None = 9080) -> str:
    return HTTP_ROUTE % {"name": name, "created": _created(created), "port": f", port: {port}" if port else ""}


def _vs(name: str = "reviews", created: str | None = None) -> str:
    return VIRTUAL_SERVICE % {"name": name, "created": _created(created)}


def _conflicts(result: meshcore.Translation) -> list[meshcore.Diagnostic]:
    return [d for d in result.diagnostics if d.code == "MC0240"]


def _route_kinds(result: meshcore.Translation, port: int) -> set[str]:
    """The kinds of the objects whose routes the snapshot keeps on reviews:``port``."""
    return {r.source.kind for t in result.snapshot.routes if (t.service.name, t.port) == ("reviews", port)
            for r in t.http}


def _backends(result: meshcore.Translation, port: int) -> set[str]:
    """Where compile sends reviews:``port`` (kernel frontends: the route's weighted split)."""
    plan = meshcore.compile_plan(result.snapshot, "node-1")
    return {b.address for f in plan.bpf.services if (f.service, f.port) == (ServiceRef("shop", "reviews"), port)
            for b in f.backends}


def test_the_older_object_keeps_the_port_and_the_other_is_named_at_its_rule() -> None:
    text = INVENTORY + _route("reviews-split", "2024-05-01T10:00:00Z") + _vs("a-reviews", "2024-06-01T10:00:00Z")
    result = meshcore.translate(text=text)

    [warning] = _conflicts(result)
    assert (warning.source.kind, warning.source.namespace, warning.source.name) == ("VirtualService", "shop",
                                                                                    "a-reviews")
    assert warning.field == "spec.http[0]"
    assert warning.source.line == text[:text.index("  - route:")].count("\n") + 1
    assert "HTTPRoute shop/reviews-split (<text>:" in warning.message
    assert "service shop/reviews port 9080" in warning.message and "not applied" in warning.message
    # The HTTPRoute routes the port; compile sends everything where it says (reviews-v1), the
    # VirtualService's reviews-v2 gets nothing through reviews.
    assert _route_kinds(result, 9080) == {"HTTPRoute"}
    assert _backends(result, 9080) == {"10.1.0.11"}


def test_swapping_the_ages_swaps_the_winner() -> None:
    text = INVENTORY + _route("reviews-split", "2024-06-01T10:00:00Z") + _vs("a-reviews", "2024-05-01T10:00:00Z")
    result = meshcore.translate(text=text)

    [warning] = _conflicts(result)
    assert (warning.source.kind, warning.source.name) == ("HTTPRoute", "reviews-split")
    assert warning.field == "spec.rules[0]"
    assert "VirtualService shop/a-reviews (<text>:" in warning.message
    assert _route_kinds(result, 9080) == {"VirtualService"}
    assert _backends(result, 9080) == {"10.1.0.12"}


def test_an_object_without_creation_time_loses_to_a_dated_one() -> None:
    result = meshcore.translate(text=INVENTORY + _route("a-route") + _vs("z-reviews", "2024-06-01T10:00:00Z"))
    [warning] = _conflicts(result)
    assert warning.source.name == "a-route"
    assert _route_kinds(result, 9080) == {"VirtualService"}


def test_without_creation_times_namespace_and_name_then_kind_decide() -> None:
    by_name = meshcore.translate(text=INVENTORY + _route("b-route") + _vs("a-reviews"))
    assert [d.source.name for d in _conflicts(by_name)] == ["b-route"]
    # Same namespace and name: HTTPRoute sorts before VirtualService.
    by_kind = meshcore.translate(text=INVENTORY + _route("reviews") + _vs("reviews"))
    assert [d.source.kind for d in _conflicts(by_kind)] == ["VirtualService"]
    assert _route_kinds(by_kind, 9080) == {"HTTPRoute"}


def test_the_loser_keeps_the_ports_the_winner_does_not_route() -> None:
    # The HTTPRoute names port 9080 only; the VirtualService routes both HTTP ports.
    result = meshcore.translate(text=INVENTORY + _route("a-route", port=9080) + _vs("reviews"))
    [warning] = _conflicts(result)
    assert warning.source.kind == "VirtualService" and "port 9080 " in warning.message
    assert _route_kinds(result, 9080) == {"HTTPRoute"}
    assert _route_kinds(result, 9090) == {"VirtualService"}


def test_one_warning_lists_every_port_an_object_loses() -> None:
    result = meshcore.translate(text=INVENTORY + _route("a-route", port=None) + _vs("reviews"))
    [warning] = _conflicts(result)
    assert "ports 9080, 9090" in warning.message
    assert not _route_kinds(result, 9090) - {"HTTPRoute"}


def test_routes_of_one_adapter_are_left_to_its_own_precedence() -> None:
    # Two HTTPRoutes on one port are ordered by the gateway adapter: no cross-adapter conflict.
    result = meshcore.translate(text=INVENTORY + _route("a-route") + _route("b-route"))
    assert not _conflicts(result)
    # A VirtualService for one service and an HTTPRoute for another do not meet.
    other = (INVENTORY + _vs("reviews")).replace("hosts: [reviews]", "hosts: [reviews-v1]")
    result = meshcore.translate(text=other + _route("a-route"))
    assert not _conflicts(result)
    assert _route_kinds(result, 9080) == {"HTTPRoute"}


def test_the_node_proxy_gets_only_the_winners_routes() -> None:
    # An L7 HTTPRoute (a path match) wins over a newer VirtualService: the node proxy's route
    # configuration for the port holds the HTTPRoute's routes and none of the VirtualService's.
    route = _route("reviews-split", "2024-05-01T10:00:00Z").replace(
        "  - backendRefs:", "  - matches: [{path: {type: PathPrefix, value: /v1}}]\n    backendRefs:")
    result = meshcore.translate(text=INVENTORY + route + _vs("reviews", "2024-06-01T10:00:00Z"))
    assert [d.source.kind for d in _conflicts(result)] == ["VirtualService"]
    plan = meshcore.compile_plan(result.snapshot, "node-1", CompileOptions(proxy_enabled=True))
    [decision] = [d for d in plan.decisions if (d.service.name, d.port) == ("reviews", 9080)]
    assert decision.datapath.value == "envoy" and "/v1" in decision.reason
    kinds = {o.source.kind for rc in plan.envoy.route_configs for r in rc.routes() for o in r.origins}
    assert kinds == {"HTTPRoute"}


class _SourcelessAdapter:
    """An embedder's adapter whose routes name no input object."""

    name = "plain"
    kinds = (ApiKind("example.com/v1", "Split"),)

    def translate(self, objects: Sequence[KubeObject], inventory: Inventory) -> Fragment:
        route = HttpRoute(destinations=[Destination(ServiceRef("shop", "reviews-v1"), 9080)])
        return Fragment(routes=[RouteTable(ServiceRef("shop", "reviews"), 9080, RouteKind.L7, http=[route])])


def test_routes_naming_no_object_lose_to_an_object_and_are_reported_by_adapter() -> None:
    split = "\n---\napiVersion: example.com/v1\nkind: Split\nmetadata: {name: s, namespace: shop}\n"
    result = meshcore.translate(text=INVENTORY + _vs("reviews") + split, adapters=[istio_adapter, _SourcelessAdapter()])
    [warning] = _conflicts(result)
    assert warning.source == Source() and "the routes of adapter 'plain' are not applied" in warning.message
    assert "VirtualService shop/reviews (<text>:" in warning.message
    assert _route_kinds(result, 9080) == {"VirtualService"}
