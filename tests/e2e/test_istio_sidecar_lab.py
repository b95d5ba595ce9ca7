"""Istio Sidecar with REGISTRY_ONLY: a workload reaches only the services its Sidecar imports.

One lab serves the module. Namespace ``locked`` has a default Sidecar whose
outbound traffic policy is REGISTRY_ONLY and whose egress hosts import the namespace's
own services and ``shop/ratings``; pod ``tools`` there has its own Sidecar (ALLOW_ANY).
``shop/details`` is served through the node proxy (a VirtualService sets a header), so
both paths are exercised: the kernel's egress policy for ratings and the app, the node
proxy's check of the client's egress policy for details. Pod ``outsider`` in ``shop``
has no Sidecar at all. Namespace ``narrow`` has an ALLOW_ANY Sidecar importing only its own
namespace: its pod reaches details, but unrouted (without the VirtualService's header).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _lab_support import client_pod, echo_app, observed, response_header, running_lab, write

from meshcore.lab import Lab

pytestmark = pytest.mark.root

APP = "\n---\n".join([
    *(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n" for ns in ("locked", "shop", "narrow")),
    echo_app("app", "locked"),
    echo_app("ratings", "shop"),
    echo_app("details", "shop"),
    client_pod("client", "locked"),
    client_pod("tools", "locked"),
    client_pod("outsider", "shop"),
    client_pod("viewer", "narrow"),
])

ISTIO = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: narrow}
spec:
  egress:
  - hosts: ["./*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: locked}
spec:
  egress:
  - hosts: ["./*", "shop/ratings.shop.svc.cluster.local"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: tools, namespace: locked}
spec:
  workloadSelector:
    labels: {app: tools}
  outboundTrafficPolicy: {mode: ALLOW_ANY}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details, namespace: shop}
spec:
  hosts: [details]
  http:
  - headers:
      response:
        set: {x-via: proxy}
    route:
    - destination: {host: details}
"""


@pytest.fixture(scope="module")
def lab_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, list[Path]]]:
    """The lab with the objects above, and its input files; always torn down and checked."""
    tmp: Path = tmp_path_factory.mktemp("sidecar")
    files = [write(tmp, "app.yaml", APP), write(tmp, "istio.yaml", ISTIO)]
    with running_lab(files, all_ready=True) as up:
        yield up, files


def status(lab: Lab, pod: str, ns: str, url: str) -> str:
    """The HTTP status ``pod`` gets for ``url``, or ``000`` when no answer came within 3 s."""
    result = lab.run(pod, ["curl", "-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", url], namespace=ns,
                     timeout=30)
    return result.stdout.decode().strip() or "000"


def test_imported_services_are_reached_and_others_are_not(lab_files: tuple[Lab, list[Path]]) -> None:
    lab, _ = lab_files
    assert status(lab, "client", "locked", "http://app/") == "200"                # "./*"
    assert status(lab, "client", "locked", "http://ratings.shop/") == "200"       # imported by name
    # details is not imported: the node proxy refuses it for this client (the kernel hands
    # the connection to the proxy, which applies the client's egress policy).
    assert status(lab, "client", "locked", "http://details.shop/") == "403"


def test_a_workload_with_its_own_sidecar_and_one_without_are_not_restricted(
        lab_files: tuple[Lab, list[Path]]) -> None:
    lab, _ = lab_files
    for pod, ns in (("tools", "locked"), ("outsider", "shop")):
        assert status(lab, pod, ns, "http://details.shop/") == "200", pod
        assert status(lab, pod, ns, "http://ratings.shop/") == "200", pod


def test_the_kernel_drops_a_direct_connection_the_sidecar_does_not_import(lab_files: tuple[Lab, list[Path]]) -> None:
    lab, _ = lab_files
    details = next(p for p in lab.status().pods if p.name.startswith("details-") and p.namespace == "shop")
    # Straight to the pod address, past the proxy: dropped by the client's egress policy.
    assert status(lab, "client", "locked", f"http://{details.addresses[0]}:8080/") == "000"
    assert status(lab, "tools", "locked", f"http://{details.addresses[0]}:8080/") == "200"
    rows = observed(lab, "--verdict", "dropped", "--pod", "client", "--namespace", "locked",
                    keep=lambda r: r["destinationPort"] == 8080 and r["destination"].startswith("shop/details"))
    assert rows and "sidecar:locked.default" in rows[-1]["policy"], rows[-1:]


def test_a_virtual_service_the_sidecar_does_not_import_is_not_seen(lab_files: tuple[Lab, list[Path]]) -> None:
    lab, _ = lab_files
    url = "http://details.shop/"
    assert response_header(lab, "viewer", "narrow", url, "x-via") == (200, None)     # reached, but unrouted
    assert response_header(lab, "outsider", "shop", url, "x-via") == (200, "proxy")  # no Sidecar: it applies
