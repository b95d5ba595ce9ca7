"""DestinationRule traffic policies in the lab: consistent hashing, outlier ejection and connection limits.

One lab serves the module. ``hash`` has three echo pods and a consistent hash on the
``x-user`` header; ``od`` has one healthy echo pod and one that answers every request
with 503, and ejects a backend after 3 consecutive 5xx answers; ``pool`` allows one
upstream connection and one pending request. Requests go from a client pod through the
service address: the kernel hands them to the node Envoy, which the plan says is there
because of the DestinationRule.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from _lab_support import client_pod, echo_deployment, http_server_code, meshcore_cli, observed, running_lab, write

from meshcore.lab import Lab
from meshcore.proxy import EnvoyOptions

pytestmark = pytest.mark.root

NS = "tpol"

# A backend that fails: every request is answered 503 (with its pod name, like the echo server).
FAILING = http_server_code("""\
        status = 503
        body = json.dumps({'pod': os.environ['POD_NAME']}).encode()
""")


def _echo(name: str, app: str, replicas: int = 1) -> str:
    return echo_deployment(name, NS, labels={"app": app, "role": name}, replicas=replicas)


def _service(name: str) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NS}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"""


APP = "\n---\n".join([
    f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n",
    _echo("hash", "hash", replicas=3), _service("hash"),
    _echo("od-good", "od"), _service("od"),
    f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: od-bad, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: od, role: od-bad}}}}
  template:
    metadata: {{labels: {{app: od, role: od-bad}}}}
    spec:
      containers:
      - name: failing
        image: python
        command: ["{sys.executable}", "-S", "-c", {json.dumps(FAILING)}]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        ports: [{{name: http, containerPort: 8080}}]
""",
    _echo("pool", "pool"), _service("pool"),
    client_pod("client", NS),
])

ISTIO = f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: hash, namespace: {NS}}}
spec:
  host: hash
  trafficPolicy:
    loadBalancer:
      consistentHash: {{httpHeaderName: x-user}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: od, namespace: {NS}}}
spec:
  host: od.{NS}.svc.cluster.local
  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 120s
      maxEjectionPercent: 100
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: pool, namespace: {NS}}}
spec:
  host: pool
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: 1}}
      http: {{http1MaxPendingRequests: 1}}
"""


@pytest.fixture(scope="module")
def lab_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, list[Path]]]:
    """The lab with the app and its DestinationRules; always torn down and checked."""
    tmp = tmp_path_factory.mktemp("traffic")
    files = [write(tmp, "app.yaml", APP), write(tmp, "istio.yaml", ISTIO)]
    with running_lab(files, all_ready=True) as lab:
        yield lab, files


def _curl(lab: Lab, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[bytes]:
    return lab.run("client", ["curl", "-sS", "-m", "10", *args], namespace=NS, timeout=timeout)


def _pods(lab: Lab, url: str, count: int, *args: str) -> list[tuple[int, str]]:
    """(status, answering pod) of ``count`` requests sent one after the other in one curl."""
    result = _curl(lab, "-w", "\\n%{http_code}\\n", *args, *([url] * count))
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    lines = [line for line in result.stdout.decode().splitlines() if line.strip()]
    out = []
    for body, status in zip(lines[::2], lines[1::2], strict=True):
        try:
            pod = str(json.loads(body).get("pod", ""))
        except ValueError:
            pod = ""
        out.append((int(status), pod))
    assert len(out) == count, lines
    return out


def _flows(lab: Lab, keep: Callable[[dict[str, Any]], bool], at_least: int = 1) -> list[dict[str, Any]]:
    """L7 rows of `meshcore observe` in the test namespace matching ``keep``."""
    return observed(lab, "--layer", "l7", "--namespace", NS, keep=keep, at_least=at_least)


def test_plan_sends_the_ports_to_envoy_naming_the_rule(lab_files: tuple[Lab, list[Path]]) -> None:
    _, files = lab_files
    out = meshcore_cli("plan", *(a for f in files for a in ("-f", str(f))), "-o", "json")
    assert out.returncode == 0, out.stderr
    decisions = {d["service"]: d for d in json.loads(out.stdout)["decisions"]}
    hashed = decisions[f"{NS}/hash"]
    assert hashed["datapath"] == "envoy", hashed
    assert hashed["reason"].startswith(f"DestinationRule {NS}/hash sets consistent hashing on header x-user"), hashed
    assert "istio.yaml" in hashed["source"], hashed
    assert decisions[f"{NS}/od"]["datapath"] == "envoy" and "outlier detection" in decisions[f"{NS}/od"]["reason"]
    pool = decisions[f"{NS}/pool"]
    assert pool["datapath"] == "envoy" and "connection pool limits (max_connections, http1_max_pending_requests)" \
        in pool["reason"], pool


def test_consistent_hash_keeps_each_user_on_one_pod(lab_files: tuple[Lab, list[Path]]) -> None:
    lab, _ = lab_files
    chosen: dict[str, str] = {}
    for user in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"):
        answers = _pods(lab, "http://hash/", 20, "-H", f"x-user: {user}")
        pods = {pod for _, pod in answers}
        assert all(status == 200 for status, _ in answers) and len(pods) == 1, (user, answers)
        chosen[user] = pods.pop()
    # Eight users over three pods: the ring spreads them (all on one pod would mean no hashing at all).
    assert len(set(chosen.values())) > 1, chosen
    # Requests without the header have no key to hash: they are still served.
    assert all(status == 200 for status, _ in _pods(lab, "http://hash/", 5))


def test_outlier_detection_ejects_the_failing_backend(lab_files: tuple[Lab, list[Path]]) -> None:
    lab, _ = lab_files
    # Each address of a pod is an endpoint (the pods are dual-stack), ejected on its own
    # consecutive 5xx answers; within 40 requests the failing pod is out of the pool.
    bad = next(p for p in lab.status().pods if p.name.startswith("od-bad") and p.namespace == NS)
    first = _pods(lab, "http://od/first", 40)
    failures = [pod for status, pod in first if status != 200]
    assert len(failures) >= 3 and all(p == bad.name for p in failures), first
    assert all(status == 200 for status, _ in first[-8:]), first
    after = _pods(lab, "http://od/after", 20)
    assert all(status == 200 and pod.startswith("od-good") for status, pod in after), after
    # The access log shows where the requests went: every one after the ejection to the healthy pod.
    flows = _flows(lab, lambda f: f["path"] == "/after", at_least=20)
    assert len(flows) == 20 and all(f["destinationWorkload"].startswith(f"{NS}/od-good") for f in flows), flows[-3:]
    ejected = _flows(lab, lambda f: f["path"] == "/first" and f["status"] == 503, at_least=len(failures))
    assert ejected and all(f["destinationWorkload"] == f"{NS}/{bad.name}" for f in ejected), ejected


_CONCURRENT = """
import json, sys, threading, urllib.request, urllib.error
out = []
def one(i):
    req = urllib.request.Request("http://pool/slow-%d" % i, headers={"x-echo-delay-ms": "1500"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            out.append((r.status, r.headers.get("x-envoy-overloaded", "")))
    except urllib.error.HTTPError as e:
        out.append((e.code, e.headers.get("x-envoy-overloaded", "")))
threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(out))
"""


def test_connection_pool_overflow_answers_503_uo(lab_files: tuple[Lab, list[Path]]) -> None:
    lab, _ = lab_files
    result = lab.run("client", [sys.executable, "-S", "-c", _CONCURRENT], namespace=NS, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    answers = json.loads(result.stdout)
    statuses = collections.Counter(status for status, _ in answers)
    # One connection and one waiting request. Envoy's connection limit is not exact: a host the
    # balancer picks always gets one connection in each worker's pool even past the limit, so at
    # most 1 + endpoints x workers connections are open (the pool pod is dual-stack: two endpoints;
    # the node Envoy runs two workers), and one more request waits. Of 8 slow concurrent requests
    # at least one is served and at least 8 - (1 + 2 * 2 + 1) = 2 are refused by Envoy.
    bound = 1 + 2 * attrs.fields(EnvoyOptions).concurrency.default + 1  # the lab's Envoy keeps the default
    assert statuses[200] >= 1 and statuses[503] >= len(answers) - bound and set(statuses) <= {200, 503}, statuses
    assert all(flag == "true" for status, flag in answers if status == 503), answers
    flows = _flows(lab, lambda f: f["path"].startswith("/slow-") and f["status"] == 503, at_least=statuses[503])
    assert flows and all("UO" in f["flags"] and not f["destinationWorkload"] for f in flows), flows[-3:]
