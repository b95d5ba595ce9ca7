"""VirtualService rules that depend on the client, through the shared node proxy.

One lab serves the module. ``shop/reviews`` has pods v1 and v2 and a VirtualService whose
first rule sends clients labelled ``role: canary`` (any namespace) to v2, whose second
answers clients of namespace ``ops`` with 418, and whose last sends everyone to v1.
``shop/ratings`` has a VirtualService exported only to its own namespace (``exportTo:
["."]``) that marks its answers with a response header: clients in ``shop`` get it,
clients elsewhere reach ratings as if there were no VirtualService. ``shop/details`` has
a VirtualService for every namespace and one of namespace ``ops`` for its own clients:
each marks its answers, so the test sees which one a client got. Every client connects
to the same service address; the node proxy tells them apart by their pod address. The
TCP port of ``shop/reviews-tcp`` sends clients of ``ops`` to v2, the others to v1, and
``shop/catalog`` delegates ``/items`` to a VirtualService of namespace ``ops``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _lab_support import client_pod, curl_json, echo_app, echo_deployment, response_header, running_lab, write

from meshcore.lab import Lab

pytestmark = pytest.mark.root

APP = "\n---\n".join([
    *(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n" for ns in ("shop", "front", "ops")),
    echo_deployment("reviews-v1", "shop", labels={"app": "reviews", "version": "v1"}),
    echo_deployment("reviews-v2", "shop", labels={"app": "reviews", "version": "v2"}),
    """apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 80, targetPort: http}]
""",
    """apiVersion: v1
kind: Service
metadata: {name: reviews-tcp, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: tcp, port: 9000, targetPort: http}]
""",
    echo_app("ratings", "shop"),
    echo_app("details", "shop"),
    echo_app("catalog", "shop"),
    client_pod("canary", "front", labels={"app": "canary", "role": "canary"}),
    client_pod("plain", "front"),
    client_pod("oncall", "ops"),
    client_pod("local", "shop"),
])

ISTIO = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match:
    - sourceLabels: {role: canary}
    route:
    - destination: {host: reviews, subset: v2}
  - match:
    - sourceNamespace: ops
    fault:
      abort: {httpStatus: 418, percentage: {value: 100}}
    route:
    - destination: {host: reviews, subset: v1}
  - route:
    - destination: {host: reviews, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  exportTo: ["."]
  http:
  - headers:
      response:
        set: {x-routed-by: shop-ratings}
    route:
    - destination: {host: ratings}
"""

def _marking(name: str, namespace: str, mark: str, export: str) -> str:
    """A VirtualService of shop/details marking answers with ``x-view: <mark>``."""
    return f"""---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [details.shop.svc.cluster.local]
  exportTo: [{export}]
  http:
  - headers:
      response:
        set: {{x-view: {mark}}}
    route:
    - destination: {{host: details.shop.svc.cluster.local}}
"""


# A TCP port: clients of namespace ops reach v2, everyone else v1.
ISTIO += """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-tcp, namespace: shop}
spec:
  host: reviews-tcp
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-tcp, namespace: shop}
spec:
  hosts: [reviews-tcp]
  tcp:
  - match: [{sourceNamespace: ops}]
    route: [{destination: {host: reviews-tcp, subset: v2}}]
  - route: [{destination: {host: reviews-tcp, subset: v1}}]
"""

# Namespace ops has its own view of shop/details; every other namespace gets shop's.
ISTIO += _marking("details", "shop", "shop", '"*"') + _marking("details-for-ops", "ops", "ops", '"."')

# Delegation: shop/catalog hands /items to a VirtualService of namespace ops.
ISTIO += """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog, namespace: shop}
spec:
  hosts: [catalog]
  http:
  - match: [{uri: {prefix: /items}}]
    delegate: {name: catalog-items, namespace: ops}
  - route: [{destination: {host: catalog}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog-items, namespace: ops}
spec:
  http:
  - match: [{uri: {prefix: /items/special}}]
    directResponse: {status: 299, body: {string: special}}
  - headers:
      response:
        set: {x-delegated-by: ops}
    route: [{destination: {host: catalog.shop.svc.cluster.local}}]
"""

LATE_CANARY = client_pod("late", "shop", labels={"app": "late", "role": "canary"})


@pytest.fixture(scope="module")
def lab_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, list[Path]]]:
    """The lab with the objects above, and its input files; always torn down and checked."""
    tmp: Path = tmp_path_factory.mktemp("clients")
    files = [write(tmp, "app.yaml", APP), write(tmp, "istio.yaml", ISTIO)]
    with running_lab(files, all_ready=True) as up:
        yield up, files


@pytest.fixture
def lab(lab_files: tuple[Lab, list[Path]]) -> Lab:
    return lab_files[0]


def _answers(lab: Lab, pod: str, ns: str, url: str, count: int = 4) -> list[tuple[int, str]]:
    """(status, answering pod or '') of ``count`` requests from ``pod``."""
    out = []
    for _ in range(count):
        status, body = curl_json(lab, pod, url, namespace=ns)
        out.append((status, str(body.get("pod", "")) if isinstance(body, dict) else ""))
    return out


def _version(answers: list[tuple[int, str]]) -> set[tuple[int, str]]:
    return {(status, pod.rsplit("-", 2)[0]) for status, pod in answers}


def test_source_labels_and_namespace_choose_the_route(lab: Lab) -> None:
    url = "http://reviews.shop/"
    assert _version(_answers(lab, "canary", "front", url)) == {(200, "reviews-v2")}
    assert _version(_answers(lab, "plain", "front", url)) == {(200, "reviews-v1")}
    assert _version(_answers(lab, "local", "shop", url)) == {(200, "reviews-v1")}
    assert {status for status, _ in _answers(lab, "oncall", "ops", url)} == {418}


def test_tcp_routes_choose_by_client_namespace(lab: Lab) -> None:
    url = "http://reviews-tcp.shop:9000/"
    assert _version(_answers(lab, "oncall", "ops", url)) == {(200, "reviews-v2")}
    assert _version(_answers(lab, "plain", "front", url)) == {(200, "reviews-v1")}
    assert _version(_answers(lab, "local", "shop", url)) == {(200, "reviews-v1")}


def test_export_to_limits_the_routes_to_the_exported_namespace(lab: Lab) -> None:
    url = "http://ratings.shop/"
    assert response_header(lab, "local", "shop", url, "x-routed-by") == (200, "shop-ratings")
    assert response_header(lab, "plain", "front", url, "x-routed-by") == (200, None)
    assert response_header(lab, "oncall", "ops", url, "x-routed-by") == (200, None)


def test_a_namespace_uses_its_own_virtual_service(lab: Lab) -> None:
    url = "http://details.shop/"
    assert response_header(lab, "oncall", "ops", url, "x-view") == (200, "ops")
    assert response_header(lab, "local", "shop", url, "x-view") == (200, "shop")
    assert response_header(lab, "plain", "front", url, "x-view") == (200, "shop")


def test_a_new_client_is_routed_by_its_labels(lab_files: tuple[Lab, list[Path]], tmp_path: Path) -> None:
    # The node proxy learns the new pod's address with the rest of the update: its
    # first requests already take the canary route.
    lab, files = lab_files
    up = lab.up([*files, write(tmp_path, "late.yaml", LATE_CANARY)], timeout=60)
    assert up.agent is not None and up.agent.ok, up.agent
    try:
        assert _version(_answers(lab, "late", "shop", "http://reviews/")) == {(200, "reviews-v2")}
    finally:
        lab.up(files, timeout=60)


def test_a_delegated_path_is_routed_by_the_delegate(lab: Lab) -> None:
    base = "http://catalog.shop"
    assert curl_json(lab, "plain", f"{base}/items/special", namespace="front") == (299, "special")
    assert response_header(lab, "plain", "front", f"{base}/items/1", "x-delegated-by") == (200, "ops")
    assert response_header(lab, "plain", "front", f"{base}/other", "x-delegated-by") == (200, None)
