"""An Istio Gateway served in a lab: istio-ingressgateway's Service, a Gateway, a bound VirtualService.

There are no gateway proxies: the Service exposing the workloads the Gateway selects
(``istio: ingressgateway``; a plain echo pod stands in for them) is where the node Envoy
serves the Gateway's hosts. curl from a client pod to that Service with some Host and
path → which backend answered. One lab serves the whole module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from _lab_support import client_pod, curl_json, meshcore_cli, running_lab, write

from meshcore.lab import Lab
from testcerts import Authority

pytestmark = pytest.mark.root


def _echo(name: str, namespace: str = "default", labels: str = "") -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {labels or f"{{app: {name}}}"}}}
spec:
  containers:
  - {{name: echo, image: meshcore/echo, args: ["--http", "8080"], ports: [{{containerPort: 8080}}]}}
"""


CA = Authority()
CERT = CA.issue(["bookinfo.example"])

MANIFESTS = "\n---\n".join([
    """
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
""",
    # The gateway workload: it only gives the Service its backends (requests never reach it).
    _echo("istio-ingressgateway-1", "istio-system", "{istio: ingressgateway}"),
    """
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  type: LoadBalancer
  selector: {istio: ingressgateway}
  ports: [{name: http2, port: 80, targetPort: 8080}, {name: https, port: 443, targetPort: 8443}]
""", CERT.secret("bookinfo-cert", "istio-system"),
    _echo("productpage"), _echo("reviews"),
    """
apiVersion: v1
kind: Service
metadata: {name: productpage}
spec:
  selector: {app: productpage}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---""" + client_pod("client", labels={}, container="c") + """---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [bookinfo.example]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [bookinfo.example]
    tls: {mode: SIMPLE, credentialName: bookinfo-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo}
spec:
  hosts: [bookinfo.example]
  gateways: [istio-system/bookinfo-gateway]
  http:
  - match: [{uri: {prefix: /productpage}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
  - match: [{uri: {prefix: /reviews}, headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, port: {number: 9080}}}]
"""])

GATEWAY_URL = "http://istio-ingressgateway.istio-system"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path]]:
    """The lab with the ingress gateway Service, the Gateway and its VirtualService."""
    tmp = tmp_path_factory.mktemp("istio-gateway")
    with running_lab([write(tmp, "bookinfo.yaml", MANIFESTS)]) as running:
        yield running, tmp


def _get(lab: Lab, host: str, path: str, *args: str) -> tuple[int, str]:
    """Status and answering pod ("" when the answer is not the echo server's) of one request."""
    status, body = curl_json(lab, "client", f"{GATEWAY_URL}{path}", "-H", f"Host: {host}", *args, timeout=20)
    return status, str(body["pod"]) if isinstance(body, dict) and "pod" in body else ""


def test_requests_for_the_gateway_host_reach_the_virtual_service_backends(lab: tuple[Lab, Path]) -> None:
    running = lab[0]
    assert _get(running, "bookinfo.example", "/productpage") == (200, "productpage")
    assert _get(running, "bookinfo.example", "/reviews/1", "-H", "end-user: jason") == (200, "reviews")
    # No rule matches: Envoy answers 404, as Istio's gateway does.
    assert _get(running, "bookinfo.example", "/reviews/1")[0] == 404


def test_other_hosts_get_404_and_never_reach_the_gateway_workload(lab: tuple[Lab, Path]) -> None:
    running = lab[0]
    assert _get(running, "other.example", "/productpage") == (404, "")


def test_plan_serves_the_gateway_service_port_on_envoy_naming_gateway_and_virtual_service(
        lab: tuple[Lab, Path]) -> None:
    running, tmp = lab
    entries = json.loads((running.dir / "objects.json").read_text())["objects"]
    objects = tmp / "objects.yaml"
    with objects.open("w") as out:
        yaml.safe_dump_all([e["body"] for e in entries], out)
    out = meshcore_cli("plan", "-f", str(objects), "-o", "json")
    assert out.returncode == 0, out.stderr
    decisions = {(d["service"], d["port"]): d for d in json.loads(out.stdout)["decisions"]}
    decision = decisions[("istio-system/istio-ingressgateway", 80)]
    assert decision["datapath"] == "envoy", decision
    assert "Gateway istio-system/bookinfo-gateway: default/bookinfo" in decision["reason"], decision


def test_an_https_server_terminates_tls_with_its_credential_name_certificate(lab: tuple[Lab, Path]) -> None:
    running, tmp = lab
    (tmp / "ca.pem").write_text(CA.pem)
    services = {(s.namespace, s.name): s for s in running.status().services}
    vip = next(a for a in services[("istio-system", "istio-ingressgateway")].cluster_ips if ":" not in a)
    status, body = curl_json(running, "client", "https://bookinfo.example/productpage", "--cacert",
                             str(tmp / "ca.pem"), "--resolve", f"bookinfo.example:443:{vip}", timeout=20)
    assert status == 200 and body["pod"] == "productpage", body
