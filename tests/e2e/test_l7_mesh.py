"""L7 through the lab's node Envoy: Gateway API mesh HTTPRoutes (parentRef: Service), real Envoy, curl.

One lab serves the whole module (its set-up dominates the run time); every test sends
real requests from the client pod with curl to the service's ClusterIP name and checks
which pod answered, what it received and what the client got back.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _lab_support import client_pod, envoy_pid, logged, meshcore_cli, running_lab, write

from meshcore.lab import Lab
from meshcore.model import WorkloadRef
from meshcore.observe import Flow, Layer

pytestmark = pytest.mark.root

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v1}
spec:
  replicas: 1
  selector: {matchLabels: {app: web, version: v1}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      containers:
      - {name: echo, image: meshcore/echo, args: ["--http", "8080", "--tcp", "9000"],
         ports: [{containerPort: 8080}, {containerPort: 9000}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v2}
spec:
  replicas: 1
  selector: {matchLabels: {app: web, version: v2}}
  template:
    metadata: {labels: {app: web, version: v2}}
    spec:
      containers:
      - {name: echo, image: meshcore/echo, args: ["--http", "8080", "--tcp", "9000"],
         ports: [{containerPort: 8080}, {containerPort: 9000}]}
---
apiVersion: v1
kind: Pod
metadata: {name: shadow, labels: {app: shadow}}
spec:
  containers:
  - {name: http, image: python, command: ["python3", "-m", "http.server", "--bind", "::", "8080"], ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v1}
spec:
  selector: {app: web, version: v1}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v2}
spec:
  selector: {app: web, version: v2}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: shadow}
spec:
  selector: {app: shadow}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: tcp}
spec:
  selector: {app: web}
  ports: [{name: tcp, port: 9000}]
---""" + client_pod("client", labels={}, container="c")

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{queryParams: [{name: version, value: v2}]}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{method: DELETE}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs: [{name: web-v1, port: 80, weight: 80}, {name: web-v2, port: 80, weight: 20}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new},
               statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /backend}}}]
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-added, value: mesh}],
                                                            remove: [x-secret]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-served-by, value: meshcore}]}}
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry}}]
    retry: {codes: [503], attempts: 2}
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}}}]
    backendRefs: [{name: web-v1, port: 80}]
  - backendRefs: [{name: web-v1, port: 80}]
"""

#: The same route after a change: everything goes to web-v2.
ROUTE_CHANGED = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - backendRefs: [{name: web-v2, port: 80}]
"""


class Client:
    """curl inside the lab's client pod."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def curl(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
        """Run curl in the client pod (silent, 5 s limit)."""
        return self.lab.run("client", ["curl", "-sS", "-m", "5", *args], timeout=timeout)

    def get(self, url: str, *args: str) -> tuple[int, dict[str, str], Any]:
        """Status, response headers (lower-case names) and the JSON body (or text) of one request."""
        result = self.curl("-D", "/dev/stderr", *args, url)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        head = result.stderr.decode(errors="replace").strip().split("\r\n")
        status = int(head[0].split()[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        text = result.stdout.decode(errors="replace")
        try:
            return status, headers, json.loads(text)
        except ValueError:
            return status, headers, text

    def pods(self, url: str, count: int, *args: str) -> collections.Counter[str]:
        """Which pod answered each of ``count`` requests (one curl, many transfers)."""
        result = self.curl("-w", "\\n", *args, *([url] * count), timeout=60)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        answers = [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]
        assert len(answers) == count
        return collections.Counter(a["pod"].split("-")[1] for a in answers)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path]]:
    """A lab with two web versions, a shadow server, an L4 service and the HTTPRoute above."""
    tmp = tmp_path_factory.mktemp("l7")
    with running_lab([write(tmp, "app.yaml", APP), write(tmp, "route.yaml", ROUTE)]) as lab:
        yield lab, tmp


def test_node_proxy_runs_and_is_reported(mesh: tuple[Lab, Path]) -> None:
    lab, _ = mesh
    proxy = lab.status().agent.proxy
    assert proxy.running and proxy.listeners == 1, proxy
    pid = envoy_pid(lab)
    assert pid == proxy.pid
    # Envoy runs in the lab's cgroup, so the socket LB sees its connections too.
    assert f"/meshcore/{lab.name}/" in Path(f"/proc/{pid}/cgroup").read_text()


def test_routing_by_path_header_query_and_method(mesh: tuple[Lab, Path]) -> None:
    c = Client(mesh[0])
    assert c.get("http://web/")[2]["pod"].startswith("web-v1")
    assert c.get("http://web/v2/items")[2]["pod"].startswith("web-v2")
    assert c.get("http://web/v2x")[2]["pod"].startswith("web-v1")  # PathPrefix is per path element
    assert c.get("http://web/", "-H", "x-version: v2")[2]["pod"].startswith("web-v2")
    assert c.get("http://web/?version=v2")[2]["pod"].startswith("web-v2")
    assert c.get("http://web/?version=v3")[2]["pod"].startswith("web-v1")
    assert c.get("http://web/", "-X", "DELETE")[2]["pod"].startswith("web-v2")


def test_weighted_split_80_20(mesh: tuple[Lab, Path]) -> None:
    counts = Client(mesh[0]).pods("http://web/split", 400)
    # 80/20 over 400 requests: the standard deviation of v2's count is 8; allow ~3.5 of them.
    assert 50 <= counts["v2"] <= 110 and counts["v1"] + counts["v2"] == 400, counts


def test_redirect_and_rewrite(mesh: tuple[Lab, Path]) -> None:
    c = Client(mesh[0])
    status, headers, _ = c.get("http://web/old/page")
    assert status == 301 and headers["location"].endswith("/new/page"), headers
    status, _, body = c.get("http://web/api/items?x=1")
    assert status == 200 and body["path"] == "/backend/items?x=1", body


def test_header_modifiers(mesh: tuple[Lab, Path]) -> None:
    status, headers, body = Client(mesh[0]).get("http://web/headers", "-H", "x-secret: s3cr3t")
    assert status == 200
    assert body["headers"].get("X-Added") == ["mesh"] and "X-Secret" not in body["headers"], body["headers"]
    assert headers.get("x-served-by") == "meshcore", headers


def test_retries_on_5xx(mesh: tuple[Lab, Path]) -> None:
    c = Client(mesh[0])
    # The echo server fails every request carrying x-echo-status; Envoy tries 1 + 2 times.
    status, headers, _ = c.get("http://web/retry", "-H", "x-echo-status: 503")
    assert status == 503
    flows = _flows(mesh[0], lambda f: f.l7.path == "/retry")
    assert flows and "URX" in flows[-1].l7.flags, flows  # upstream retry limit exceeded
    # Without the rule's retry policy a 503 is not retried.
    status, _, _ = c.get("http://web/", "-H", "x-echo-status: 503")
    last = _flows(mesh[0], lambda f: f.l7.path == "/" and f.l7.status == 503)[-1]
    assert status == 503 and "URX" not in last.l7.flags, last


def test_timeout(mesh: tuple[Lab, Path]) -> None:
    c = Client(mesh[0])
    started = time.monotonic()
    status, _, _ = c.get("http://web/slow", "-H", "x-echo-delay-ms: 2000")
    assert status == 504 and time.monotonic() - started < 1.8
    status, _, _ = c.get("http://web/slow", "-H", "x-echo-delay-ms: 50")
    assert status == 200


def test_mirror(mesh: tuple[Lab, Path]) -> None:
    lab = mesh[0]
    status, _, body = Client(lab).get("http://web/mirror/probe-7")
    assert status == 200 and body["pod"].startswith("web-v1")
    shadow = next(p for p in lab.status().pods if p.name == "shadow")
    log = Path(shadow.containers[0].log)
    deadline = time.monotonic() + 5
    while "/mirror/probe-7" not in log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "/mirror/probe-7" in log.read_text(errors="replace")


def _flows(lab: Lab, keep: Callable[[Flow], bool]) -> list[Flow]:
    """L7 flows from the lab's flow journal matching ``keep`` (waits for the access-log flush)."""
    return logged(lab, lambda f: f.layer is Layer.L7 and keep(f))


def test_flows_and_observe(mesh: tuple[Lab, Path]) -> None:
    lab = mesh[0]
    status, _, body = Client(lab).get("http://web/v2/observed")
    assert status == 200 and body["pod"].startswith("web-v2"), (status, body)
    flows = _flows(lab, lambda f: f.l7.path == "/v2/observed")
    assert flows, "no flow logged"
    flow = flows[-1]
    assert flow.l7.method == "GET" and flow.l7.status == 200 and flow.l7.listener == "default/web:80"
    assert str(flow.destination.workload).startswith("default/web-v2") and flow.destination.identity > 0
    client = next(p for p in lab.status().pods if p.name == "client")
    # Envoy's upstream went straight to the pod (not to a VIP translated again).
    assert flow.source.address in client.addresses and flow.source.workload == WorkloadRef("default", "client")
    out = meshcore_cli("observe", "--name", lab.name, "-o", "json", "--pod", "client")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert any(r["path"] == "/v2/observed" and r["status"] == 200 and r["source"] == "default/client"
               and r["destinationWorkload"].startswith("default/web-v2") for r in rows), rows
    text = meshcore_cli("observe", "--name", lab.name).stdout.decode()
    assert "/v2/observed" in text and "web-v2" in text


def test_plan_says_envoy_for_the_routed_port(mesh: tuple[Lab, Path]) -> None:
    lab, tmp = mesh
    out = meshcore_cli("plan", "-f", str(tmp / "app.yaml"), "-f", str(tmp / "route.yaml"), "-o", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    decisions = {f"{d['service']}:{d['port']}": d for d in data["decisions"]}
    web = decisions["default/web:80"]
    assert web["datapath"] == "envoy" and web["reason"], web
    assert decisions["default/tcp:9000"]["datapath"] == "ebpf"


def _load(lab: Lab, stop: threading.Event, results: list[int], url: str) -> None:
    while not stop.is_set():
        per_url = [arg for _ in range(20) for arg in ("-o", "/dev/null", url)]
        r = lab.run("client", ["curl", "-s", "-w", "%{http_code}\\n", "-m", "5", *per_url], timeout=30)
        results += [int(x) for x in r.stdout.decode().split()] or [0]


def test_route_change_under_load_loses_nothing(mesh: tuple[Lab, Path]) -> None:
    lab, tmp = mesh
    stop = threading.Event()
    results: list[int] = []
    worker = threading.Thread(target=_load, args=(lab, stop, results, "http://web/change"))
    worker.start()
    try:
        time.sleep(1.0)
        changed = write(tmp, "route-changed.yaml", ROUTE_CHANGED)
        up = lab.up([tmp / "app.yaml", changed], timeout=60)
        assert up.agent is not None and up.agent.ok, up.agent
        time.sleep(1.0)
        assert Client(lab).get("http://web/")[2]["pod"].startswith("web-v2")
    finally:
        stop.set()
        worker.join(60)
        lab.up([tmp / "app.yaml", tmp / "route.yaml"], timeout=60)
    failed = [] if set(results) == {200} else _flows(lab, lambda f: f.l7.path == "/change" and f.l7.status != 200)
    # On failure, Envoy's own record of the failed requests (response flags, details) says why.
    assert len(results) >= 40 and set(results) == {200}, (collections.Counter(results), failed[-5:])


def test_envoy_killed_restarts_and_l4_is_unaffected(mesh: tuple[Lab, Path]) -> None:
    lab = mesh[0]
    pid = envoy_pid(lab)
    assert pid
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    # The L4-only service keeps answering from the kernel while Envoy is gone.
    r = lab.run("client", ["sh", "-c", "echo whoami | timeout 3 nc -q1 tcp 9000 || "
                           "python3 -c \"import socket;s=socket.create_connection(('tcp',9000),3);"
                           "s.sendall(b'whoami\\n');print(s.recv(200).decode())\""], timeout=20)
    assert r.returncode == 0 and b'"pod"' in r.stdout, r
    deadline = started + 20
    while time.monotonic() < deadline:
        status = lab.status().agent.proxy
        new = envoy_pid(lab)
        if status.running and new and new != pid and status.synced:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"Envoy was not restarted: {lab.status().agent.proxy}")
    for _ in range(50):
        probe = Client(lab).curl("-o", "/dev/null", "-w", "%{http_code}", "http://web/v2/after")
        if probe.stdout == b"200":
            break
        time.sleep(0.1)
    assert Client(lab).get("http://web/v2/after")[2]["pod"].startswith("web-v2")
    assert lab.status().agent.proxy.restarts >= 1


def test_lab_without_l7_starts_no_proxy(lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory()
    lab.up([write(tmp_path, "app.yaml", APP)], timeout=60)
    assert lab.status().agent.proxy.running is False
    assert not (lab.dir / "proxy.json").exists()
