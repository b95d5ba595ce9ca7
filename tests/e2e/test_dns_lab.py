"""DNS-resolved external services: ServiceEntry resolution DNS / DNS_ROUND_ROBIN and hostname WorkloadEntries.

The "external" server is a lab pod no Service selects; the lab's name server knows it as
``origin.external.test`` (ConfigMap ``meshcore-lab-dns``). Clients resolve a ServiceEntry's
host to its address (its virtual IP), the socket-level balancer hands the connection to
the node proxy, and the proxy's DNS cluster resolves the endpoint's name to the pod —
nothing leaves the lab.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _lab_support import client_pod, curl_json, running_lab, write

from meshcore.lab import Lab

pytestmark = pytest.mark.root

APP = "\n---\n".join([
    """apiVersion: v1
kind: Pod
metadata: {name: origin, labels: {app: origin}}
spec:
  containers:
  - {name: echo, image: meshcore/echo, args: ["--http", "8080"], ports: [{containerPort: 8080}]}
""",
    client_pod("client", labels={}),
    """apiVersion: v1
kind: ConfigMap
metadata: {name: meshcore-lab-dns, namespace: default}
data:
  origin.external.test: pod default/origin
  direct.external.test: pod default/origin
  vm.corp.test: pod default/origin
""",
])

ENTRIES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.external.test]
  addresses: [240.240.0.10]
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: origin.external.test, ports: {http: 8080}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: direct}
spec:
  hosts: [direct.external.test]
  addresses: [240.240.0.11]
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: rr}
spec:
  hosts: [rr.external.test]
  addresses: [240.240.0.12]
  resolution: DNS_ROUND_ROBIN
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  endpoints: [{address: origin.external.test, ports: {tcp: 8080}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm}
spec:
  address: vm.corp.test
  labels: {app: vm}
  ports: {http: 8080}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy}
spec:
  hosts: [legacy.corp.test]
  addresses: [240.240.0.13]
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: vm}}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab with the external pod, its names and the ServiceEntries above."""
    tmp: Path = tmp_path_factory.mktemp("dns")
    with running_lab([write(tmp, "app.yaml", APP), write(tmp, "entries.yaml", ENTRIES)], all_ready=True) as up:
        yield up


def _resolve(lab: Lab, name: str) -> tuple[int, list[str]]:
    code = ("import json, socket, sys\n"
            "try:\n"
            "    print(json.dumps(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 80, socket.AF_INET)})))\n"
            "except socket.gaierror as e:\n"
            "    print(json.dumps([e.__class__.__name__]))\n")
    result = lab.run("client", ["python3", "-c", code, name], timeout=20)
    return result.returncode, json.loads(result.stdout.decode() or "[]")


def test_clients_resolve_service_entry_hosts_to_their_addresses_and_unknown_names_fail(lab: Lab) -> None:
    assert _resolve(lab, "api.external.test") == (0, ["240.240.0.10"])
    assert _resolve(lab, "API.External.Test.") == (0, ["240.240.0.10"])
    origin = [p for p in lab.status().pods if p.name.startswith("origin")][0]
    assert _resolve(lab, "origin.external.test") == (0, sorted(a for a in origin.addresses if ":" not in a))
    assert _resolve(lab, "nowhere.example.com") == (0, ["gaierror"])


@pytest.mark.parametrize("url", ["http://api.external.test/", "http://direct.external.test/",
                                 "http://legacy.corp.test/"])
def test_the_node_proxy_resolves_the_endpoints_by_name(lab: Lab, url: str) -> None:
    for _ in range(3):
        status, body = curl_json(lab, "client", url)
        assert status == 200 and str(body["pod"]).startswith("origin"), body


def test_dns_round_robin_over_tcp(lab: Lab) -> None:
    code = ("import socket\n"
            "s = socket.create_connection(('rr.external.test', 9000), timeout=3)\n"
            "s.sendall(b'GET / HTTP/1.0\\r\\nHost: rr\\r\\n\\r\\n')\n"
            "print(s.recv(200).decode().split('\\r\\n')[0])\n")
    result = lab.run("client", ["python3", "-c", code], timeout=20)
    assert result.returncode == 0 and result.stdout.decode().startswith("HTTP/1.1 200"), result
