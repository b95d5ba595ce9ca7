"""The node proxy authorizes what a route actually reaches, and applies clients' egress policies.

One lab serves the module. ``shop/a`` is proxied for a VirtualService that sends
``x-to: b`` to ``secret/b``, and ``shop/d`` for one that sends ``x-to: c`` to ``secret/c``;
``b`` admits only its own namespace and has a request authentication whose keys the
node proxy cannot fetch (every token of it is refused); pod ``y`` in shop has a NetworkPolicy letting it reach
only the shop namespace. The kernel exempts the node proxy, so these checks happen in
Envoy, which decides before it picks a route's backend: each route applies the policies of
every workload it may reach (fail closed), so a client refused by the workloads of one route
keeps the listener's other routes. A refused request gets 403 from the proxy, the others
reach the echo backend, which says which pod answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _lab_support import client_pod, curl_json, echo_app, running_lab, write

from meshcore.lab import Lab

pytestmark = pytest.mark.root


APP = "\n---\n".join([
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: secret}\n",
    echo_app("a", "shop"), echo_app("d", "shop"), echo_app("b", "secret"), echo_app("c", "secret"),
    client_pod("x", "shop", account="x"), client_pod("y", "shop", account="y"), client_pod("s", "secret", account="s"),
])

def _route_on_x_to(host: str, target: str) -> str:
    """VirtualService of shop/``host`` sending ``x-to: <target>`` to secret/``target``, the rest to ``host``."""
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {host}, namespace: shop}}
spec:
  hosts: [{host}]
  http:
  - match:
    - headers:
        x-to: {{exact: {target}}}
    route:
    - destination: {{host: {target}.secret.svc.cluster.local}}
  - route:
    - destination: {{host: {host}}}
"""


POLICY = _route_on_x_to("a", "b") + "---" + _route_on_x_to("d", "c") + """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-secret, namespace: secret}
spec:
  selector:
    matchLabels: {app: b}
  action: ALLOW
  rules:
  - from:
    - source:
        namespaces: [secret]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: b-tokens, namespace: secret}
spec:
  selector:
    matchLabels: {app: b}
  jwtRules:
  - issuer: https://issuer.scope.test
    jwksUri: https://keys.scope.test/jwks.json
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-stays-in-shop, namespace: shop}
spec:
  podSelector:
    matchLabels: {app: y}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: shop}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab with the objects above; always torn down and checked."""
    tmp: Path = tmp_path_factory.mktemp("scope")
    with running_lab([write(tmp, "app.yaml", APP), write(tmp, "policy.yaml", POLICY)], all_ready=True) as up:
        yield up


def get(lab: Lab, pod: str, ns: str, url: str, *headers: str) -> tuple[int, Any]:
    """Status and JSON body (or text) of one request from a client pod."""
    return curl_json(lab, pod, url, *(a for header in headers for a in ("-H", header)), namespace=ns)


def _answered_by(body: Any) -> str:
    return str(body.get("pod", "")) if isinstance(body, dict) else ""


def test_route_to_another_service_applies_that_services_policy(lab: Lab) -> None:
    # x (namespace shop) is not allowed by b's policy: routing through shop/a does not help.
    status, body = get(lab, "x", "shop", "http://a/via-a", "x-to: b")
    assert status == 403 and "RBAC" in str(body), (status, body)
    # b's policy holds only on the route that may send to b: without the header x reaches a.
    status, body = get(lab, "x", "shop", "http://a/plain")
    assert status == 200 and _answered_by(body).startswith("a-"), (status, body)
    # A client of namespace secret reaches b through the route, and a without it.
    status, body = get(lab, "s", "secret", "http://a.shop/via-a", "x-to: b")
    assert status == 200 and _answered_by(body).startswith("b-"), (status, body)
    status, body = get(lab, "s", "secret", "http://a.shop/plain")
    assert status == 200 and _answered_by(body).startswith("a-"), (status, body)


def test_clients_egress_policy_applies_through_the_proxy(lab: Lab) -> None:
    # y may reach only namespace shop: the route to secret/c is refused by the proxy, while
    # the route to d (in shop) stays open to it.
    status, body = get(lab, "y", "shop", "http://d/to-c", "x-to: c")
    assert status == 403 and "RBAC" in str(body), (status, body)
    status, body = get(lab, "y", "shop", "http://d/plain")
    assert status == 200 and _answered_by(body).startswith("d-"), (status, body)
    # x has no egress policy: it reaches c through the route, and d without it.
    status, body = get(lab, "x", "shop", "http://d/to-c", "x-to: c")
    assert status == 200 and _answered_by(body).startswith("c-"), (status, body)
    status, body = get(lab, "x", "shop", "http://d/plain")
    assert status == 200 and _answered_by(body).startswith("d-"), (status, body)


def test_tokens_are_checked_only_on_the_route_to_the_workload_requiring_them(lab: Lab) -> None:
    # b's request authentication refuses this token on the route to b...
    status, body = get(lab, "s", "secret", "http://a.shop/via-a", "x-to: b", "Authorization: Bearer not-a-token")
    assert status == 401, (status, body)
    # ...while a, which no request authentication selects, gets it unchecked.
    status, body = get(lab, "s", "secret", "http://a.shop/plain", "Authorization: Bearer not-a-token")
    assert status == 200 and _answered_by(body).startswith("a-"), (status, body)
