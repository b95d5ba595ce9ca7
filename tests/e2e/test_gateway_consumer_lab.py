"""GAMMA consumer routes: a namespace's own HTTPRoute for another namespace's Service.

``shop/app`` has pods v1 and v2. Its producer route (in ``shop``) sends everyone to v1;
namespace ``canary`` has a consumer route for the same Service sending its clients to v2.
Clients of ``canary`` get v2, clients of any other namespace v1 — through the same
Service address; the node proxy tells them apart by their pod address.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _lab_support import client_pod, curl_json, echo_deployment, running_lab, write

from meshcore.lab import Lab

pytestmark = pytest.mark.root

APP = "\n---\n".join([
    *(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n" for ns in ("shop", "canary", "other")),
    echo_deployment("app-v1", "shop", labels={"app": "app", "version": "v1"}),
    echo_deployment("app-v2", "shop", labels={"app": "app", "version": "v2"}),
    *(f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {selector}
  ports: [{{name: http, port: 80, targetPort: http}}]
""" for name, selector in (("app", "{app: app}"), ("app-v1", "{version: v1}"), ("app-v2", "{version: v2}"))),
    client_pod("tester", "canary"),
    client_pod("tester", "other"),
])


def _route(namespace: str, backend: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app-{namespace}, namespace: {namespace}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: app, namespace: shop, port: 80}}]
  rules: [{{backendRefs: [{{name: {backend}, namespace: shop, port: 80}}]}}]
"""


ROUTES = _route("shop", "app-v1") + "---" + _route("canary", "app-v2")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab with the objects above; always torn down and checked."""
    tmp: Path = tmp_path_factory.mktemp("consumer")
    with running_lab([write(tmp, "app.yaml", APP), write(tmp, "routes.yaml", ROUTES)], all_ready=True) as up:
        yield up


def _versions(lab: Lab, namespace: str) -> set[str]:
    out = set()
    for _ in range(4):
        status, body = curl_json(lab, "tester", "http://app.shop/", namespace=namespace)
        assert status == 200, body
        out.add(str(body["pod"]).rsplit("-", 2)[0])
    return out


def test_the_consumer_namespace_gets_its_route_and_the_others_the_producers(lab: Lab) -> None:
    assert _versions(lab, "canary") == {"app-v2"}
    assert _versions(lab, "other") == {"app-v1"}
