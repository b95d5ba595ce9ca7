"""`meshcore agent --from kube` on a lab node, fed by kubectl through a stand-in API server.

No kube-apiserver can run here: tests/kubeapi/standin_apiserver.py stands in for it
(tests/kubeapi prove it faithful with the real kubectl). The lab plays kubelet and CNI
(pods in network namespaces, their addresses); everything the agent knows comes from
the API: kubectl creates the Deployments, Pods, Services and the HTTPRoute and writes
the pods' status as a kubelet would. Then: traffic flows; kubectl changes the route and
the agent applies it and writes the route's status back; the API server dies and comes back with its history gone (watches
answered 410) and the agent relists, applies nothing new and traffic keeps flowing; the
agent itself restarts and finds the kernel already right (0 entries written).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _lab_support import client_pod, running_lab, write

from meshcore.agent import REPORT_FILE, GenerationReport, read_report
from meshcore.lab import Lab
from meshcore.lab import _netns as netns
from meshcore.lab import _procs as procs
from meshcore.lab._containers import python_env
from meshcore.lab._agents import AGENT_CGROUP
from meshcore.lab._state import LabState, ProcRecord
from meshcore.linux import socket_in_netns

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kubeapi"))
from standin_apiserver import StandInApiServer  # noqa: E402

pytestmark = pytest.mark.root


def _web(version: str) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web-{version}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web, version: {version}}}}}
  template:
    metadata: {{labels: {{app: web, version: {version}}}}}
    spec:
      containers:
      - {{name: echo, image: meshcore/echo, args: ["--http", "8080"], ports: [{{containerPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-{version}}}
spec:
  selector: {{app: web, version: {version}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"""


APP = _web("v1") + "---" + _web("v2") + """---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---""" + client_pod("client", labels={}, container="c")


def route(version: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web, port: 80}}]
  rules:
  - backendRefs: [{{name: web-{version}, port: 80}}]
"""


def _for_kubectl(body: dict[str, Any]) -> dict[str, Any]:
    """An object as a user writes it: no status, no server-set metadata."""
    meta = {k: v for k, v in body["metadata"].items() if k not in ("uid", "creationTimestamp", "resourceVersion")}
    return {k: v for k, v in {**body, "metadata": meta}.items() if k != "status"}


class KubeNode:
    """The lab's node run by `meshcore agent --from kube` against the stand-in API server."""

    def __init__(self, lab: Lab, apiserver: StandInApiServer, kubeconfig: Path) -> None:
        self.lab = lab
        self.apiserver = apiserver
        self.kubeconfig = kubeconfig
        self.state = LabState.load(lab.dir)
        self.node = self.state.first_node
        assert self.node.agent is not None
        argv = self.node.agent.argv
        self.facts = argv[:argv.index("--objects")]  # the lab agent's node facts
    def listener(self) -> socket.socket:
        """A socket on 127.0.0.1 in the node's network namespace, at the stand-in's port."""
        sock = socket_in_netns(netns.path(self.node.netns))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.apiserver.port))
        return sock

    def stop_agent(self) -> None:
        agent = self.node.agent
        assert agent is not None
        procs.stop([(agent.pid, agent.start_time)], timeout=10)
        assert not procs.alive(agent.pid, agent.start_time)

    def start_agent(self, *, find_pods: bool = False) -> None:
        """The lab's agent command line with ``--from kube`` instead of the objects file.

        The lab wired the pods (as a CNI would): their host-side interfaces are given on the
        command line, unless ``find_pods``: then the agent finds them under the node's cgroup
        (the kubelet's cgroup root here).
        """
        found = ["--pod-cgroups", self.node.cgroup] if find_pods else \
            [f"--interface={r.namespace}/{r.name}={r.host_veth}" for r in self.state.pods.values()]
        argv = [*self.facts, "--from", "kube",
                "--kubeconfig", str(self.kubeconfig), "--metrics", "off", *found]
        log = str(self.node.agent_log)
        pid, started = procs.spawn(argv, env={"PATH": "/usr/bin:/bin", **python_env()}, cwd=self.node.state_dir,
                                   cgroup=str(Path(self.node.cgroup) / AGENT_CGROUP), log=log,
                                   netns=str(netns.path(self.node.netns)))
        self.node.agent = ProcRecord("agent", pid, started, tuple(argv), log)
        self.state.save()  # `lab down` stops it with the rest

    def report(self) -> GenerationReport | None:
        report = read_report(Path(self.node.state_dir) / REPORT_FILE)
        agent = self.node.agent
        return report if report is not None and agent is not None and report.pid == agent.pid else None

    def wait_report(self, accept: Callable[[GenerationReport], bool], timeout: float = 30) -> GenerationReport:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            report = self.report()
            if report is not None and accept(report):
                return report
            time.sleep(0.1)
        raise AssertionError(f"no such report within {timeout}s; last: {self.report()}; log:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.node.agent_log.read_text(errors="replace")


def answered_by(lab: Lab, count: int = 6) -> set[str]:
    """The versions (v1, v2) of the pods that answered ``count`` requests to http://web/ from the client."""
    result = lab.run("client", ["curl", "-sS", "-m", "5", "-w", "\\n", *(["http://web/"] * count)], timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return {json.loads(line)["pod"].split("-")[1] for line in result.stdout.decode().splitlines() if line.strip()}


def wait_answered_by(lab: Lab, versions: set[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        seen = answered_by(lab)
        if seen == versions:
            return
        time.sleep(0.3)
    raise AssertionError(f"answered by {seen}, expected {versions}")


@pytest.fixture
def kube_node(tmp_path: Path) -> Iterator[KubeNode]:
    """A lab whose pods run, its own agent replaced by one reading the stand-in API server, filled by kubectl."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not installed (Debian: apt-get install kubectl; scripts/test.sh installs it)")
    apiserver = StandInApiServer(bookmark_seconds=0.5)
    apiserver.start()
    kubeconfig = apiserver.kubeconfig(tmp_path / "kubeconfig")
    with running_lab([write(tmp_path, "app.yaml", APP)], all_ready=True) as lab:
        node = KubeNode(lab, apiserver, kubeconfig)
        apiserver.stop()
        apiserver.start(sockets=[node.listener()])
        try:
            yield node
        finally:
            apiserver.stop()


def _kubectl(node: KubeNode, tmp_path: Path) -> Callable[..., str]:
    env = {"KUBECONFIG": str(node.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def kubectl(*args: str, input: str | None = None) -> str:
        result = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=env,
                                timeout=30, check=False)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    return kubectl


def _lab_objects_to_api(lab: Lab, kubectl: Callable[..., str]) -> list[Any]:
    """The lab's pods (with the addresses it gave them), Deployments and Services, put to the API with kubectl.

    Their status goes through the status subresource, as a kubelet reports it.
    """
    objects = [o for o in lab.objects() if o.kind in ("Deployment", "Service", "Pod")]
    for obj in objects:
        kubectl("apply", "-f", "-", input=json.dumps(_for_kubectl(dict(obj.body))))
    for pod in (o for o in objects if o.kind == "Pod"):
        kubectl("patch", "pod", pod.name, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": pod.body["status"]}))
    return objects


def test_agent_from_kube_routes_follows_kubectl_and_survives_api_restarts(kube_node: KubeNode,
                                                                          tmp_path: Path) -> None:
    node, lab = kube_node, kube_node.lab
    kubectl = _kubectl(node, tmp_path)
    objects = _lab_objects_to_api(lab, kubectl)
    kubectl("apply", "-f", "-", input=route("v1"))
    assert sorted(kubectl("get", "pods", "-o", "name").split()) == sorted(
        f"pod/{o.name}" for o in objects if o.kind == "Pod")

    node.stop_agent()
    node.start_agent()
    first = node.wait_report(lambda r: r.applied)
    assert first.generation == 1, first
    assert any(d.code == "MC0500" for d in first.diagnostics)  # no Istio CRDs on this "cluster"
    wait_answered_by(lab, {"v1"})

    kubectl("apply", "-f", "-", input=route("v2"))
    changed = node.wait_report(lambda r: r.generation > first.generation)
    assert changed.applied and changed.generation == 2, changed
    wait_answered_by(lab, {"v2"})

    # The only agent holds the Lease, so it wrote the route's status for its new generation.
    deadline = time.monotonic() + 15
    parents: list[Any] = []
    while time.monotonic() < deadline and not any(
            c.get("observedGeneration") == 2 for p in parents for c in p.get("conditions", ())):
        parents = json.loads(kubectl("get", "httproute", "web", "-o", "json")).get("status", {}).get("parents", [])
        time.sleep(0.2)
    [parent] = parents
    assert parent["controllerName"] == "meshcore.io/mesh-controller", parent
    assert {c["type"]: (c["status"], c["observedGeneration"]) for c in parent["conditions"]} == {
        "Accepted": ("True", 2), "ResolvedRefs": ("True", 2)}, node.log()[-3000:]

    # The API server dies; it comes back with its history gone: every watch is answered 410.
    node.apiserver.stop()
    time.sleep(2)
    assert answered_by(lab) == {"v2"}  # the datapath keeps enforcing without the API server
    node.apiserver.start(compacted=True, sockets=[node.listener()])
    deadline = time.monotonic() + 30
    while node.log().count("listing again") < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert node.log().count("listing again") >= 4, node.log()[-3000:]  # every kind relisted after 410 Gone
    time.sleep(1.5)  # a new generation, if the relist made one, would be reported by now
    report = node.report()
    assert report is not None and report.generation == changed.generation  # nothing new was applied
    assert answered_by(lab) == {"v2"}

    # The agent itself restarts: it reads everything again and finds the kernel already right.
    node.stop_agent()
    node.start_agent()
    again = node.wait_report(lambda r: r.applied)
    kernel = next(c for c in again.changes if c.startswith("kernel "))
    assert "0 entries written, 0 deleted" in kernel, again.changes
    wait_answered_by(lab, {"v2"})


DENY_V2 = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: no-one-to-v2}
spec:
  podSelector: {matchLabels: {app: web, version: v2}}
  policyTypes: [Ingress]
"""


def _reaches(lab: Lab, address: str) -> bool:
    """Whether the client's HTTP request to ``address``:8080 is answered (3 s limit)."""
    return lab.run("client", ["curl", "-sS", "-m", "3", "-o", "/dev/null", f"http://{address}:8080/"],
                   timeout=30).returncode == 0


def test_agent_from_kube_finds_pods_in_the_kubelet_cgroup_layout_and_enforces_policy_on_them(
        kube_node: KubeNode, tmp_path: Path) -> None:
    """No --interface: the agent finds each pod by its uid in kubepods, its namespace and its veth; policy holds."""
    node, lab = kube_node, kube_node.lab
    kubectl = _kubectl(node, tmp_path)
    _lab_objects_to_api(lab, kubectl)
    kubectl("apply", "-f", "-", input=DENY_V2)
    # Scheduled here, but no sandbox ever: it must be reported, not guessed.
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ghost", "labels": {"app": "ghost"}},
        "spec": {"nodeName": node.node.name, "containers": [{"name": "c", "image": "busybox"}]}}))
    pods = {r.name.split("-")[1] if r.name.startswith("web-") else r.name: r for r in node.state.pods.values()}
    uids = {key: kubectl("get", "pod", record.name, "-o", "jsonpath={.metadata.uid}") for key, record in pods.items()}
    ghost_uid = kubectl("get", "pod", "ghost", "-o", "jsonpath={.metadata.uid}")
    kubepods = Path(node.node.cgroup) / "kubepods"
    systemd = Path(node.node.cgroup) / "kubepods.slice"
    moved: dict[str, tuple[Path, Path]] = {}

    def as_kubelet(key: str, cgroup: Path) -> None:
        """Move the lab pod's processes into the cgroup the kubelet would have made for its uid."""
        record = pods[key]
        cgroup.mkdir(parents=True)
        moved[key] = (Path(record.cgroup), cgroup)
        for pid in (Path(record.cgroup) / "cgroup.procs").read_text().split():
            (cgroup / "cgroup.procs").write_text(pid)

    try:
        as_kubelet("client", kubepods / "besteffort" / f"pod{uids['client']}")
        as_kubelet("v1", kubepods / "besteffort" / f"pod{uids['v1']}")
        # web-v2's sandbox does not exist yet (as far as the agent can tell).
        node.stop_agent()
        node.start_agent(find_pods=True)
        first = node.wait_report(lambda r: r.applied)
        missing = {d.source.name: d.message for d in first.diagnostics if d.code == "MC0501"}
        assert set(missing) == {pods["v2"].name, "ghost"}, first.diagnostics
        assert f"no cgroup for pod uid {ghost_uid} under {node.node.cgroup}" in missing["ghost"], missing
        assert f"no cgroup for pod uid {uids['v2']}" in missing[pods["v2"].name], missing
        assert _reaches(lab, pods["v1"].ipv4)
        # Not found is not attached: the policy that refuses everyone is not enforced on web-v2 yet.
        assert _reaches(lab, pods["v2"].ipv4)

        # The sandbox appears (systemd driver's layout): the agent's next look finds it, and the policy holds.
        escaped = uids["v2"].replace("-", "_")
        as_kubelet("v2", systemd / "kubepods-besteffort.slice" / f"kubepods-besteffort-pod{escaped}.slice")
        found = node.wait_report(lambda r: r.generation > first.generation, timeout=20)
        assert {d.source.name for d in found.diagnostics if d.code == "MC0501"} == {"ghost"}, found.diagnostics
        assert not _reaches(lab, pods["v2"].ipv4)  # refused by the kernel on web-v2's host-side veth
        assert _reaches(lab, pods["v1"].ipv4)
    finally:
        node.stop_agent()
        for back, cgroup in moved.values():  # the lab's pods go back where the lab keeps them
            for pid in (cgroup / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    (back / "cgroup.procs").write_text(pid)
        for made in (kubepods, systemd):
            for directory in sorted((p for p in made.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                    reverse=True):
                directory.rmdir()
            if made.exists():
                made.rmdir()
