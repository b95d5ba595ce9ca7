"""Switching a workload's proxy mode under load fails no request: node → sidecar → node.

``s`` serves HTTP (service ``s``, balanced by the kernel, and service ``s-routed``, whose
route needs a proxy); ``t`` serves HTTP too. One client per mode (``c-none``, ``c-node``,
``c-side``) and a container of ``s`` itself keep sending requests over keep-alive
connections while ``s`` is switched to sidecar mode (``lab up`` returns once its sidecar
serves) and back (its sidecar is taken out of the path first, then drained and stopped).
Every request must succeed, and each phase must have been served the way its mode says.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _lab_support import logged, running_lab, write

from meshcore.lab import Lab
from meshcore.lab._exec import joiner, pod_command

pytestmark = pytest.mark.root

#: Sends GET requests for ``seconds`` over ``connections`` keep-alive connections, one after the other,
#: each replaced by a new one every 20 requests (so connections open in every phase); a response asking to
#: close (a draining proxy) is followed by a new connection too. Prints what happened.
LOAD = r"""
import http.client, json, sys, time
host, path, seconds, connections = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
headers = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
conns = [None] * connections
ok, failed, errors, pods = 0, 0, [], {}
end = time.monotonic() + seconds
i = 0
while time.monotonic() < end:
    n = i % connections
    i += 1
    try:
        if conns[n] is None:
            conns[n] = http.client.HTTPConnection(host, 80, timeout=5)
        conns[n].request("GET", path, headers=headers)
        r = conns[n].getresponse()
        body = r.read()
        if r.status != 200:
            raise OSError(f"status {r.status}")
        pod = json.loads(body).get("pod", "")
        pods[pod] = pods.get(pod, 0) + 1
        ok += 1
        if (r.getheader("connection") or "").lower() == "close" or i % (20 * connections) < connections:
            conns[n].close()
            conns[n] = None
    except Exception as exc:
        failed += 1
        errors.append(f"{time.time():.3f} {type(exc).__name__}: {exc}")
        if conns[n] is not None:
            conns[n].close()
        conns[n] = None
    time.sleep(0.01)
print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:10], "pods": pods}))
"""


def _app(s_mode: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: s, labels: {{app: s}}, annotations: {{meshcore.io/proxy-mode: {s_mode}}}}}
spec:
  containers:
  - {{name: echo, image: meshcore/echo, args: ["--http", "8080"], ports: [{{containerPort: 8080}}]}}
  - {{name: load, image: busybox, command: ["sleep", "infinity"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: t, labels: {{app: t}}}}
spec:
  containers:
  - {{name: echo, image: meshcore/echo, args: ["--http", "8080"], ports: [{{containerPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: s}}
spec:
  selector: {{app: s}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: s-routed}}
spec:
  selector: {{app: s}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: s-routed}}
spec:
  parentRefs: [{{group: "", kind: Service, name: s-routed, port: 80}}]
  rules:
  - matches: [{{headers: [{{name: x-route, value: "1"}}]}}]
    backendRefs: [{{name: s, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: t}}
spec:
  selector: {{app: t}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
""" + "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: c-{m}, annotations: {{meshcore.io/proxy-mode: {mode}}}}}
spec:
  containers: [{{name: c, image: busybox, command: ["sleep", "infinity"]}}]
""" for m, mode in (("none", "none"), ("node", "node"), ("side", "sidecar")))


def _load(lab: Lab, pod: str, host: str, seconds: float, headers: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    record = lab.pod(pod)
    command, env = pod_command(record, [sys.executable, "-S", "-c", LOAD, host, "/", str(seconds), "3",
                                        json.dumps(headers or {})])
    return subprocess.Popen(command, env=env, cwd=record.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=joiner(record.cgroup))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("switch")
    return {mode: write(tmp, f"{mode}.yaml", _app(mode)) for mode in ("node", "sidecar")}


@pytest.fixture(scope="module")
def lab(files: dict[str, Path]) -> Iterator[Lab]:
    with running_lab([files["node"]], timeout=90) as up:
        yield up


def test_switching_to_a_sidecar_and_back_under_load_fails_no_request(lab: Lab, files: dict[str, Path]) -> None:
    seconds = 30.0
    loads = {
        "c-none -> s": _load(lab, "c-none", "s", seconds),
        "c-node -> s": _load(lab, "c-node", "s", seconds),
        "c-side -> s": _load(lab, "c-side", "s", seconds),
        "c-node -> s-routed": _load(lab, "c-node", "s-routed", seconds, {"x-route": "1"}),
        "s -> t": _load(lab, "s", "t", seconds),
    }
    time.sleep(3)
    started = time.time()
    up = lab.up([files["sidecar"]], timeout=60)
    assert not up.warnings and all(a.ok for a in up.agents), (up.warnings, up.agents)
    switched = time.time()
    time.sleep(6)
    back = lab.up([files["node"]], timeout=60)
    assert not back.warnings and all(a.ok for a in back.agents), (back.warnings, back.agents)
    restored = time.time()
    results = {}
    for name, proc in loads.items():
        out, err = proc.communicate(timeout=seconds + 30)
        assert proc.returncode == 0, (name, err.decode(errors="replace"))
        results[name] = json.loads(out)
    # Every request of every client succeeded, through both switches.
    assert all(r["failed"] == 0 and r["ok"] > 100 for r in results.values()), results
    assert restored - started < seconds - 3, "the switches took longer than the load ran"
    # While it was a sidecar, the pod's own Envoy carried its traffic both ways ...
    during = logged(lab, lambda f: f.node == "sidecar/default/s" and switched - 2 <= f.time.timestamp() <= restored,
                    at_least=10)
    served = {str(f.destination.workload) for f in during}
    assert served >= {"default/s", "default/t"}, [(f.source, f.destination) for f in during[:5]]
    # ... and after it stopped, the kernel and the node proxy carry it again, and the pod runs no sidecar.
    record = lab.pod("s")
    assert record.sidecar is None and not (Path(record.cgroup) / "sidecar").exists()
    statuses = [s for n in lab.status().nodes for s in (n.agent.report.sidecars if n.agent.report else ())]
    assert not [s for s in statuses if s.workload == "default/s"], statuses
