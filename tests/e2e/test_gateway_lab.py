"""GATEWAY-HTTP core and L4 routes through a lab Gateway: real Envoy, eBPF, curl from a client pod.

The expectations come from the Gateway API specification, written conformance-style:
a request to the Gateway (by its name, which the lab puts in every pod's hosts file)
with some Host, path and headers → which backend pod answered, the status code, the
headers the backend received or the client got. The lab assigns the Gateway its
address (it requests none), as a LoadBalancer IPAM would; TCPRoute and UDPRoute
listeners stay in eBPF. One lab serves the whole module.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _lab_support import client_pod, meshcore_cli, run_python, running_lab, write

from meshcore.lab import Lab

pytestmark = pytest.mark.root


def _echo(name: str, namespace: str = "default") -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}}}}}
spec:
  containers:
  - {{name: echo, image: meshcore/echo, args: ["--http", "8080", "--tcp", "9000", "--udp", "9001"],
     ports: [{{containerPort: 8080}}, {{containerPort: 9000}}, {{containerPort: 9001, protocol: UDP}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: tcp, port: 9000}}
  - {{name: udp, port: 9001, protocol: UDP}}
"""


APP = "\n---\n".join([
    """
apiVersion: v1
kind: Namespace
metadata: {name: other}
""",
    _echo("web-v1"), _echo("web-v2"), _echo("backend", "other"),
    # A second Service on the same pod in the other namespace: the ReferenceGrant names
    # only "granted", so "refused" stays out of reach of routes in default.
    """
apiVersion: v1
kind: Service
metadata: {name: granted, namespace: other}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: refused, namespace: other}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 80, targetPort: 8080}]
""", client_pod("client", labels={}, container="c")])

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: meshcore}
spec: {controllerName: meshcore.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: meshcore
  listeners:
  - {name: exact, port: 80, protocol: HTTP, hostname: exact.example.com}
  - {name: wild, port: 80, protocol: HTTP, hostname: "*.wild.example.com"}
  - {name: tcp, port: 9000, protocol: TCP}
  - {name: udp, port: 9001, protocol: UDP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: exact}
spec:
  parentRefs: [{name: gw, sectionName: exact}]
  hostnames: [exact.example.com]
  rules:
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /prefix}}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs: [{name: web-v1, port: 80, weight: 70}, {name: web-v2, port: 80, weight: 30}]
  - matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: gateway}]
        add: [{name: x-add, value: added}]
        remove: [x-remove]
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /redirect}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: moved.example.com, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /cross-refused}}]
    backendRefs: [{name: refused, namespace: other, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /cross-granted}}]
    backendRefs: [{name: granted, namespace: other, port: 80}]
  - backendRefs: [{name: web-v1, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wild-specific}
spec:
  parentRefs: [{name: gw, sectionName: wild}]
  # Only the first name intersects the listener's *.wild.example.com.
  hostnames: [specific.wild.example.com, unrelated.example.org]
  rules: [{backendRefs: [{name: web-v2, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wild-any}
spec:
  parentRefs: [{name: gw, sectionName: wild}]
  rules: [{backendRefs: [{name: web-v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: routes-from-default, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service, name: granted}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: tcp}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules: [{backendRefs: [{name: web-v1, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: udp}
spec:
  parentRefs: [{name: gw, sectionName: udp}]
  rules: [{backendRefs: [{name: web-v2, port: 9001}]}]
"""

# Runs in the client pod: one `whoami` to the Gateway by name over TCP and UDP.
WHOAMI = r"""
import json, socket, sys
out = {}
for proto, port in (("TCP", 9000), ("UDP", 9001)):
    addr = socket.getaddrinfo("gw", port, socket.AF_INET)[0][4]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "UDP" else socket.SOCK_STREAM)
    s.settimeout(3)
    if proto == "UDP":
        s.sendto(b"whoami", addr)
        data = s.recvfrom(4096)[0]
    else:
        s.connect(addr)
        s.sendall(b"whoami\n")
        data = s.recv(4096)
    s.close()
    out[proto] = json.loads(data)["pod"]
print(json.dumps(out))
"""


class Gateway:
    """curl from the client pod to the Gateway ``gw`` (by name), with a chosen Host header."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def get(self, host: str, path: str, *args: str) -> tuple[int, dict[str, str], Any]:
        """Status, response headers (lower-case names) and the JSON body (or text) of one request."""
        result = self.lab.run("client", ["curl", "-sS", "-m", "5", "-D", "/dev/stderr", "-H", f"Host: {host}",
                                         *args, f"http://gw{path}"], timeout=20)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        head = result.stderr.decode(errors="replace").strip().split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        text = result.stdout.decode(errors="replace")
        try:
            return int(head[0].split()[1]), headers, json.loads(text)
        except ValueError:
            return int(head[0].split()[1]), headers, text

    def pod(self, host: str, path: str, *args: str) -> str:
        """The pod that answered a request (which must succeed)."""
        status, _, body = self.get(host, path, *args)
        assert status == 200 and isinstance(body, dict), (status, body)
        return str(body["pod"])

    def pods(self, host: str, path: str, count: int) -> collections.Counter[str]:
        """Which pod answered each of ``count`` requests (one curl, many transfers)."""
        result = self.lab.run("client", ["curl", "-sS", "-m", "5", "-w", "\\n", "-H", f"Host: {host}",
                                         *([f"http://gw{path}"] * count)], timeout=60)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        return collections.Counter(json.loads(line)["pod"] for line in result.stdout.decode().splitlines()
                                   if line.strip())


@pytest.fixture(scope="module")
def gateway_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path]]:
    """The lab with the Gateway, its routes and backends; torn down (and checked) afterwards."""
    tmp = tmp_path_factory.mktemp("gateway")
    files = [write(tmp, "app.yaml", APP), write(tmp, "gateway.yaml", GATEWAY)]
    with running_lab(files) as lab:
        yield lab, tmp


def _enriched(lab: Lab, tmp: Path) -> Path:
    """The objects the node agent translates (the Gateway with its assigned address) as a file."""
    entries = json.loads((lab.dir / "objects.json").read_text())["objects"]
    path = tmp / "enriched.yaml"
    with path.open("w") as out:
        yaml.safe_dump_all([e["body"] for e in entries], out)
    return path


def _gateway_vip(lab: Lab) -> str:
    services = {(s.namespace, s.name): s for s in lab.status().services}
    (vip,) = services[("default", "gw")].cluster_ips
    return vip


def test_the_lab_assigns_the_gateway_an_address_and_it_is_programmed(gateway_lab: tuple[Lab, Path]) -> None:
    lab, tmp = gateway_lab
    vip = _gateway_vip(lab)
    assert vip.startswith("10.96.")
    hosts = lab.run("client", ["cat", "/etc/hosts"]).stdout.decode()
    assert any(line.split()[:2] == [vip, "gw"] for line in hosts.splitlines()), hosts
    out = meshcore_cli("status", "-f", str(_enriched(lab, tmp)), "-o", "json")
    assert out.returncode == 0, out.stderr
    status = next(s["status"] for s in json.loads(out.stdout)["statuses"]
                  if s["kind"] == "Gateway" and s["name"] == "gw")
    assert status["addresses"] == [{"type": "IPAddress", "value": vip}]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["Programmed"] == ("True", "Programmed"), conditions
    # Only the HTTP port needs the node proxy.
    assert lab.status().agent.proxy.listeners == 1


def test_route_attaches_to_a_listener_by_exact_hostname(gateway_lab: tuple[Lab, Path]) -> None:
    gw = Gateway(gateway_lab[0])
    assert gw.pod("exact.example.com", "/").startswith("web-v1")


def test_route_attaches_to_a_listener_by_wildcard_hostname(gateway_lab: tuple[Lab, Path]) -> None:
    gw = Gateway(gateway_lab[0])
    assert gw.pod("x.wild.example.com", "/") == "web-v1"
    assert gw.pod("a.b.wild.example.com", "/") == "web-v1"  # a Gateway wildcard covers any depth
    # The route naming the precise host wins over the one inheriting the listener's wildcard.
    assert gw.pod("specific.wild.example.com", "/") == "web-v2"


def test_requests_for_hosts_no_listener_and_route_share_get_404(gateway_lab: tuple[Lab, Path]) -> None:
    gw = Gateway(gateway_lab[0])
    # unrelated.example.org is a route hostname outside its listener's: not served.
    assert gw.get("unrelated.example.org", "/")[0] == 404
    assert gw.get("wild.example.com", "/")[0] == 404  # the wildcard needs at least one more label
    assert gw.get("nomatch.example.com", "/")[0] == 404


def test_path_matching(gateway_lab: tuple[Lab, Path]) -> None:
    gw = Gateway(gateway_lab[0])
    assert gw.pod("exact.example.com", "/exact") == "web-v2"
    assert gw.pod("exact.example.com", "/exact/more") == "web-v1"  # Exact is the whole path
    assert gw.pod("exact.example.com", "/prefix") == "web-v2"
    assert gw.pod("exact.example.com", "/prefix/deeper") == "web-v2"
    assert gw.pod("exact.example.com", "/prefixed") == "web-v1"  # PathPrefix matches whole elements


def test_header_matching(gateway_lab: tuple[Lab, Path]) -> None:
    gw = Gateway(gateway_lab[0])
    assert gw.pod("exact.example.com", "/", "-H", "x-version: v2") == "web-v2"
    assert gw.pod("exact.example.com", "/", "-H", "X-Version: v2") == "web-v2"  # names are case-insensitive
    assert gw.pod("exact.example.com", "/", "-H", "x-version: v3") == "web-v1"


def test_cross_namespace_backend_needs_a_reference_grant(gateway_lab: tuple[Lab, Path]) -> None:
    gw = Gateway(gateway_lab[0])
    status, _, _ = gw.get("exact.example.com", "/cross-refused")
    assert status == 500
    status, _, body = gw.get("exact.example.com", "/cross-granted")
    assert status == 200 and body["pod"] == "backend" and body["namespace"] == "other", body


def test_weighted_backends(gateway_lab: tuple[Lab, Path]) -> None:
    counts = Gateway(gateway_lab[0]).pods("exact.example.com", "/split", 200)
    # 70/30 over 200 requests: the standard deviation of web-v2's count is 6.5; allow ~3.5 of them.
    assert sum(counts.values()) == 200 and 37 <= counts["web-v2"] <= 83, counts


def test_request_header_modifier(gateway_lab: tuple[Lab, Path]) -> None:
    status, _, body = Gateway(gateway_lab[0]).get(
        "exact.example.com", "/headers", "-H", "x-set: client", "-H", "x-add: client", "-H", "x-remove: secret")
    assert status == 200
    received = body["headers"]
    assert received.get("X-Set") == ["gateway"], received
    assert sorted(received.get("X-Add", [])) == ["added", "client"], received
    assert "X-Remove" not in received, received


def test_request_redirect(gateway_lab: tuple[Lab, Path]) -> None:
    status, headers, _ = Gateway(gateway_lab[0]).get("exact.example.com", "/redirect/page?q=1")
    assert status == 301
    assert headers["location"] == "http://moved.example.com/redirect/page?q=1", headers


def test_tcp_and_udp_routes_are_served_by_ebpf_alone(gateway_lab: tuple[Lab, Path]) -> None:
    lab, tmp = gateway_lab
    answers = run_python(lab, "client", WHOAMI)
    assert answers == {"TCP": "web-v1", "UDP": "web-v2"}, answers
    out = meshcore_cli("plan", "-f", str(_enriched(lab, tmp)), "-o", "json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    decisions = {(d["service"], d["port"]): d["datapath"] for d in plan["decisions"]}
    assert decisions[("default/gw", 9000)] == "ebpf" and decisions[("default/gw", 9001)] == "ebpf"
    assert decisions[("default/gw", 80)] == "envoy"
    vip = _gateway_vip(lab)
    frontends = {(s["vip"], s["port"], s["protocol"]): s for s in plan["bpf"]["services"]}
    pods = {p.name: p.addresses[0] for p in lab.status().pods}
    assert [b["address"] for b in frontends[(vip, 9000, "TCP")]["backends"]] == [pods["web-v1"]]
    assert [b["address"] for b in frontends[(vip, 9001, "UDP")]["backends"]] == [pods["web-v2"]]


def test_the_gateway_keeps_its_address_across_lab_up(gateway_lab: tuple[Lab, Path]) -> None:
    lab, tmp = gateway_lab
    before = _gateway_vip(lab)
    extra = write(tmp, "extra.yaml", """
apiVersion: v1
kind: Service
metadata: {name: extra}
spec:
  selector: {app: web-v1}
  ports: [{name: http, port: 80, targetPort: 8080}]
""")
    up = lab.up([tmp / "app.yaml", tmp / "gateway.yaml", extra], timeout=60)
    assert up.agent is not None and up.agent.ok, up.agent
    assert _gateway_vip(lab) == before
    assert Gateway(lab).pod("exact.example.com", "/exact") == "web-v2"
