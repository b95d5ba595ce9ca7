"""The lab end to end: real namespaces, veths, cgroups, processes and the eBPF datapath."""

from __future__ import annotations

import ipaddress
import json
import re
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshcore.agent import REPORT_FILE, read_report
from meshcore.lab import Lab, LabInputError
from meshcore.lab._machine import NETNS_ETC
from meshcore.lab._netns import NETNS_DIR
from meshcore.lab._procs import alive

from _lab_support import (
    ECHO_APP,
    SRC,
    WHOAMI,
    leftovers,
    meshcore_cli,
    node_processes,
    recorded_pids,
    run_python,
    running_lab,
    unique_name,
    write,
)

pytestmark = pytest.mark.root

# Runs in a pod: HTTP GET through a fresh connection to each target; answers as JSON.
HTTP_GET = r"""
import http.client, json, sys
out = []
for host, port, path, headers in json.loads(sys.argv[1]):
    c = http.client.HTTPConnection(host, port, timeout=3)
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    out.append({"status": r.status, "headers": dict(r.getheaders()), "body": json.loads(r.read() or b"null")})
    c.close()
print(json.dumps(out))
"""


# Runs in a pod or the node: connect to each address; how it failed and how fast.
CONNECT = r"""
import json, socket, sys, time
out = []
for host, port in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(5)
    t = time.monotonic()
    try:
        s.connect((host, port))
        result = "connected"
    except OSError as e:
        result = e.__class__.__name__ + ":" + str(e.errno)
    out.append({"host": host, "result": result, "seconds": time.monotonic() - t})
    s.close()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def echo_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("echo-lab")
    with running_lab([write(tmp, "app.yaml", ECHO_APP)], timeout=30, all_ready=True) as lab:
        yield lab


def _pods(lab: Lab, namespace: str = "default", owner: str = "") -> list[Any]:
    return [p for p in lab.status().pods if p.namespace == namespace and (not owner or p.owner == owner)]


def _service(lab: Lab, name: str, namespace: str = "default") -> Any:
    return next(s for s in lab.status().services if s.name == name and s.namespace == namespace)


def test_pods_reach_each_other_by_ipv4_and_ipv6(echo_lab: Lab) -> None:
    echo = _pods(echo_lab, owner="Deployment/echo")
    assert len(echo) == 2
    targets = [[a, 8080, "/", {}] for p in echo for a in p.addresses]
    answers = run_python(echo_lab, "client", HTTP_GET, json.dumps(targets))
    expected = [p.name for p in echo for _ in p.addresses]
    assert [a["body"]["pod"] for a in answers] == expected
    families = {ipaddress.ip_address(t[0]).version for t in targets}
    assert families == {4, 6}


def test_addresses_and_cluster_ips_come_from_the_lab_ranges(echo_lab: Lab) -> None:
    for pod in echo_lab.status().pods:
        v4, v6 = pod.addresses
        assert ipaddress.ip_address(v4) in ipaddress.ip_network("10.244.0.0/16")
        assert ipaddress.ip_address(v6) in ipaddress.ip_network("fd00:10:244::/64")
    echo = _service(echo_lab, "echo")
    assert [ipaddress.ip_address(a).version for a in echo.cluster_ips] == [4, 6]
    assert ipaddress.ip_address(echo.cluster_ips[0]) in ipaddress.ip_network("10.96.0.0/16")
    assert ipaddress.ip_address(echo.cluster_ips[1]) in ipaddress.ip_network("fd00:10:96::/112")
    assert _service(echo_lab, "basic", "other").cluster_ips == ("10.96.77.77",)  # given: kept


def test_echo_server_reports_request_and_honours_failure_requests(echo_lab: Lab) -> None:
    pod = _pods(echo_lab, owner="Deployment/echo")[0]
    ip = pod.addresses[0]
    targets = [
        [ip, 8080, "/some/path?x=1", {"X-Custom": "yes", "Host": "example.test"}],
        [ip, 8080, "/fail?echo_status=503", {}],
        [ip, 8080, "/", {"x-echo-status": "418", "x-echo-set-header": "X-Extra: 1, X-Other: two"}],
        [ip, 8080, "/slow", {"x-echo-delay-ms": "300"}],
    ]
    started = time.monotonic()
    ok, by_query, by_header, slow = run_python(echo_lab, "client", HTTP_GET, json.dumps(targets))
    assert time.monotonic() - started >= 0.3
    body = ok["body"]
    assert ok["status"] == 200
    assert body["pod"] == pod.name and body["namespace"] == "default"
    assert body["method"] == "GET" and body["path"] == "/some/path?x=1" and body["host"] == "example.test"
    assert body["headers"]["X-Custom"] == ["yes"]
    assert by_query["status"] == 503 and by_query["body"]["pod"] == pod.name
    assert by_header["status"] == 418
    assert by_header["headers"]["X-Extra"] == "1" and by_header["headers"]["X-Other"] == "two"
    assert slow["status"] == 200


def test_conformance_echo_image_runs_the_echo_server_on_its_port(echo_lab: Lab) -> None:
    basic = _pods(echo_lab, "other")[0]
    [answer] = run_python(echo_lab, "client", HTTP_GET, json.dumps([[basic.addresses[0], 3000, "/", {}]]))
    # NAMESPACE comes from a fieldRef in the manifest, as the conformance manifests do it.
    assert answer["body"]["pod"] == basic.name and answer["body"]["namespace"] == "other"


def test_hosts_file_resolves_services_and_the_pod_itself(echo_lab: Lab) -> None:
    code = r"""
import json, socket, sys
out = {}
for name in json.loads(sys.argv[1]):
    try:
        out[name] = sorted({i[4][0] for i in socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)})
    except socket.gaierror:
        out[name] = None
print(json.dumps(out))
"""
    names = ["echo", "echo.default", "echo.default.svc.cluster.local", "basic.other",
             "basic.other.svc.cluster.local", "basic", "client"]
    found = run_python(echo_lab, "client", code, json.dumps(names))
    echo = sorted(_service(echo_lab, "echo").cluster_ips)
    assert found["echo"] == found["echo.default"] == found["echo.default.svc.cluster.local"] == echo
    assert found["basic.other"] == found["basic.other.svc.cluster.local"] == ["10.96.77.77"]
    assert found["basic"] is None  # the short name works only inside the service's namespace
    client = next(p for p in echo_lab.status().pods if p.name == "client")
    assert found["client"] == sorted(client.addresses)


def test_environment_of_containers(echo_lab: Lab) -> None:
    pod = _pods(echo_lab, owner="Deployment/echo")[0]
    pid = pod.containers[0].pid
    env = dict(line.split("=", 1) for line in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in line)
    assert env["POD_NAME"] == pod.name and env["POD_NAMESPACE"] == "default"
    assert env["POD_IP"] == pod.addresses[0]
    assert env["GREETING"] == f"hello {pod.name}"  # $(VAR) expansion
    assert env["ECHO_SERVICE_HOST"] == _service(echo_lab, "echo").cluster_ips[0]


def test_exec_passes_stdin_and_exit_code(echo_lab: Lab) -> None:
    result = meshcore_cli("lab", "exec", "--name", echo_lab.name, "client", "--",
                          "sh", "-c", 'read x; echo "got $x from $POD_NAME"; exit 7', input=b"42\n")
    assert result.returncode == 7, result.stderr
    assert result.stdout == b"got 42 from client\n"
    result = meshcore_cli("lab", "exec", "--name", echo_lab.name, "deploy/echo", "--", "sh", "-c", "echo $POD_NAME")
    first = min(_pods(echo_lab, owner="Deployment/echo"), key=lambda p: p.name)
    assert result.returncode == 0 and result.stdout.decode().strip() == first.name
    result = meshcore_cli("lab", "exec", "--name", echo_lab.name, "-n", "other", "deploy/basic", "--",
                          "cat", "/proc/self/cgroup")
    basic = _pods(echo_lab, "other")[0]
    assert result.stdout.decode().strip().endswith(f"/meshcore/{echo_lab.name}/other/{basic.name}")
    missing = meshcore_cli("lab", "exec", "--name", echo_lab.name, "nosuchpod", "--", "true")
    assert missing.returncode == 1 and b"no pod default/nosuchpod" in missing.stderr


def test_status_output(echo_lab: Lab) -> None:
    result = meshcore_cli("lab", "status", "--name", echo_lab.name, "-o", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    pods = {(p["namespace"], p["name"]): p for p in data["pods"]}
    assert len(pods) == 4
    client = pods[("default", "client")]
    assert client["labels"] == {"app": "client"} and client["phase"] == "Running" and len(client["addresses"]) == 2
    services = {(s["namespace"], s["name"]): s for s in data["services"]}
    assert services[("other", "basic")]["clusterIPs"] == ["10.96.77.77"]
    assert {p["name"] for p in services[("default", "echo")]["ports"]} == {"http", "tcp-echo", "udp-echo"}
    assert data["agent"]["running"] and data["agent"]["ok"]
    table = meshcore_cli("lab", "status", "--name", echo_lab.name)
    assert table.returncode == 0 and b"client" in table.stdout and b"10.96.77.77" in table.stdout


def test_nothing_leaves_the_lab(echo_lab: Lab) -> None:
    targets = [["8.8.8.8", 53], ["2001:4860:4860::8888", 53], ["10.96.200.200", 80], ["fd00:10:96::ffff", 80],
               ["192.168.1.1", 22]]
    for result in run_python(echo_lab, "client", CONNECT, json.dumps(targets)):
        assert result["result"] == "OSError:101", result  # ENETUNREACH, at once
        assert result["seconds"] < 0.5, result
    state = json.loads((echo_lab.dir / "state.json").read_text())
    node = state["nodes"][0]["netns"]
    ran = subprocess.run(["ip", "netns", "exec", node, sys.executable, "-S", "-c", CONNECT, json.dumps(targets[:2])],
                         capture_output=True, timeout=30, check=True)
    for result in json.loads(ran.stdout):
        assert result["result"] == "OSError:101" and result["seconds"] < 0.5, result
    links = subprocess.run(["ip", "-n", node, "-j", "link"], capture_output=True, check=True).stdout
    names = {link["ifname"] for link in json.loads(links)}
    # The pods' veths, and the one to the lab's internet client (a namespace of the lab too).
    assert names == {"lo", "mcinternet"} | {f"mc{i}" for i in (p["index"] for p in state["pods"].values())}
    for netns in (node, f"mc-{echo_lab.name}.internet"):
        for family in ("-4", "-6"):
            routes = json.loads(subprocess.run(["ip", "-n", netns, family, "-j", "route"], capture_output=True,
                                               check=True).stdout)
            assert not [r for r in routes if r["dst"] == "default"], routes


def test_service_vips_balance_tcp_and_udp_over_ipv4_and_ipv6(echo_lab: Lab) -> None:
    v4, v6 = _service(echo_lab, "echo").cluster_ips
    names = {p.name for p in _pods(echo_lab, owner="Deployment/echo")}
    targets = [[vip, port, proto] for vip in (v4, v6) for port, proto in ((9000, "TCP"), (9001, "UDP"))
               for _ in range(12)]
    answers = run_python(echo_lab, "client", WHOAMI, json.dumps(targets))
    for (vip, _port, proto), answer in zip(targets, answers, strict=True):
        assert answer["pod"] in names
        # getpeername() and the UDP reply's source show the VIP, not the backend.
        assert answer["peer"] == vip, (proto, answer)
    for vip in (v4, v6):
        for proto in ("TCP", "UDP"):
            pods = {a["pod"] for t, a in zip(targets, answers, strict=True) if t[0] == vip and t[2] == proto}
            assert pods == names, (vip, proto, pods)  # 12 tries reach both pods
    http = run_python(echo_lab, "client", HTTP_GET, json.dumps([["echo", 80, "/", {}], [v6, 80, "/", {}],
                                                                 ["basic.other", 8080, "/", {}]]))
    assert [a["status"] for a in http] == [200, 200, 200]
    assert http[2]["body"]["namespace"] == "other"


def test_agent_keeps_enforcing_when_a_configuration_fails(echo_lab: Lab) -> None:
    objects = echo_lab.dir / "objects.json"
    data = json.loads(objects.read_text())
    broken = {**data, "generation": data["generation"] + 100, "objects": [{"body": "not an object"}]}
    objects.write_text(json.dumps(broken))
    agent = echo_lab.status().agent
    os.kill(agent.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while echo_lab.status().agent.applied_generation < broken["generation"] and time.monotonic() < deadline:
        time.sleep(0.05)
    after = echo_lab.status().agent
    assert after.applied_generation == broken["generation"] and not after.ok and after.error
    assert after.pid == agent.pid
    vip = _service(echo_lab, "echo").cluster_ips[0]
    answers = run_python(echo_lab, "client", WHOAMI, json.dumps([[vip, 9000, "TCP"], [vip, 9001, "UDP"]]))
    assert [a["peer"] for a in answers] == [vip, vip], answers  # the previous plan still enforces
    result = echo_lab.up(list(echo_lab.status().files))
    assert result.agent is not None and result.agent.ok and not result.warnings


def test_killed_agent_leaves_the_datapath_enforcing_and_up_restarts_it(echo_lab: Lab) -> None:
    agent = echo_lab.status().agent
    os.kill(agent.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while echo_lab.status().agent.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not echo_lab.status().agent.running
    v4, v6 = _service(echo_lab, "echo").cluster_ips
    answers = run_python(echo_lab, "client", WHOAMI, json.dumps([[v4, 9000, "TCP"], [v6, 9001, "UDP"]]))
    assert [a["peer"] for a in answers] == [v4, v6]  # pinned programs and maps keep working
    result = echo_lab.up(list(echo_lab.status().files))
    assert result.agent is not None and result.agent.ok and result.agent.pid != agent.pid
    report = read_report(echo_lab.dir / REPORT_FILE)
    assert report is not None and report.applied, report
    assert "0 entries written" in report.changes[0], report  # reconciled without rewriting anything


def test_invalid_input_changes_nothing(echo_lab: Lab, tmp_path: Path) -> None:
    before = recorded_pids(echo_lab)
    bad = write(tmp_path, "bad.yaml", ECHO_APP + "\n---\napiVersion: v1\nkind: Service\nmetadata: {name: x}\n"
                "spec: {ports: [{port: 99999}]}\n")
    with pytest.raises(LabInputError) as error:
        echo_lab.up([bad])
    assert any("99999" in d.message for d in error.value.diagnostics)
    assert recorded_pids(echo_lab) == before


RECONCILE_A = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: alpha}
spec:
  replicas: 2
  selector: {matchLabels: {app: alpha}}
  template:
    metadata: {labels: {app: alpha}}
    spec:
      containers:
      - {name: web, image: meshcore/echo, args: ["--http", "8080"], ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: alpha}
spec:
  selector: {app: alpha}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  containers:
  - {name: main, image: python, command: ["python3", "-m", "http.server", "8000"], ports: [{containerPort: 8000}]}
"""

RECONCILE_B = RECONCILE_A.replace("alpha", "beta").replace("replicas: 2", "replicas: 1")


def test_reconcile_adds_removes_and_keeps_and_down_leaves_nothing(lab_factory: Any, tmp_path: Path) -> None:
    lab: Lab = lab_factory()
    first = lab.up([write(tmp_path, "a.yaml", RECONCILE_A)])
    alphas = sorted(f"default/{p.name}" for p in _pods(lab, owner="Deployment/alpha"))
    assert len(alphas) == 2 and sorted(first.created) == [*alphas, "default/client"] and not first.not_ready
    client_pid = next(p for p in lab.status().pods if p.name == "client").containers[0].pid
    alpha_netns = [p.netns for p in _pods(lab, owner="Deployment/alpha")]
    alpha_pids = [p for p in recorded_pids(lab) if p[0] != client_pid and p not in node_processes(lab)]

    again = lab.up([tmp_path / "a.yaml"])
    assert again.created == () and again.removed == () and sorted(again.kept) == [*alphas, "default/client"]

    second = lab.up([write(tmp_path, "b.yaml", RECONCILE_B)])
    betas = [f"default/{p.name}" for p in _pods(lab, owner="Deployment/beta")]
    assert len(betas) == 1 and list(second.created) == betas and sorted(second.removed) == alphas, second
    assert list(second.kept) == ["default/client"], second
    status = lab.status()
    assert {p.owner for p in status.pods} == {"Deployment/beta", ""}
    client = next(p for p in status.pods if p.name == "client")
    assert client.containers[0].pid == client_pid and client.phase == "Running"  # unchanged pod kept running
    assert not any((NETNS_DIR / n).exists() for n in alpha_netns)
    assert not any(alive(pid, started) for pid, started in alpha_pids)
    assert [s.name for s in status.services] == ["beta"]
    # python3 -m http.server, started as the container's command, serves; beta answers via its VIP.
    answers = run_python(lab, "client", HTTP_GET, json.dumps([["beta", 80, "/", {}]]))
    assert answers[0]["body"]["pod"] == _pods(lab, owner="Deployment/beta")[0].name
    gone = run_python(lab, "client", CONNECT, json.dumps([["alpha", 80]]))
    assert gone[0]["result"] == "gaierror:-2", gone  # the removed service's name is gone from hosts files

    pids = recorded_pids(lab)
    state = json.loads((lab.dir / "state.json").read_text())
    removed = lab.down()
    assert removed
    assert leftovers(lab.name, pids) == []
    assert not any((NETNS_ETC / r["netns"]).exists() for r in state["pods"].values())
    assert lab.down() == []  # idempotent


INIT_PODS = """
apiVersion: v1
kind: Pod
metadata: {name: init-ok}
spec:
  initContainers:
  - {name: prepare, image: busybox, command: ["sh", "-c", "echo prepared by $POD_NAME > marker"]}
  containers:
  - {name: main, image: busybox, command: ["sh", "-c", "cat marker; exec sleep infinity"]}
---
apiVersion: v1
kind: Pod
metadata: {name: init-fails}
spec:
  initContainers:
  - {name: prepare, image: busybox, command: ["sh", "-c", "exit 3"]}
  containers:
  - {name: main, image: busybox, command: ["sleep", "infinity"]}
"""


def test_init_containers_run_first_and_a_failing_one_stops_the_pod(lab_factory: Any, tmp_path: Path) -> None:
    lab: Lab = lab_factory()
    result = lab.up([write(tmp_path, "init.yaml", INIT_PODS)])
    pods = {p.name: p for p in lab.status().pods}
    assert pods["init-ok"].phase == "Running"
    assert Path(pods["init-ok"].containers[0].log).read_text() == "prepared by init-ok\n"
    assert pods["init-fails"].phase == "Failed" and not pods["init-fails"].containers
    assert any("init container prepare exited with status 3" in n for n in result.notes)


def test_down_after_a_crashed_up_removes_everything(lab_factory: Any, tmp_path: Path) -> None:
    lab: Lab = lab_factory()
    manifest = write(tmp_path, "a.yaml", RECONCILE_A.replace("replicas: 2", "replicas: 4"))
    env = {"PYTHONPATH": SRC, "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
    proc = subprocess.Popen([sys.executable, "-m", "meshcore.cli", "lab", "up", "--name", lab.name, "-f",
                             str(manifest)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = lab.dir / "state.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if len(json.loads(state_file.read_text()).get("pods", {})) >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lab.is_up
    pids = recorded_pids(lab)
    result = meshcore_cli("lab", "down", "--name", lab.name)
    assert result.returncode == 0, result.stderr
    assert leftovers(lab.name, pids) == []


def test_demo_runs_and_cleans_up() -> None:
    name = unique_name()
    result = meshcore_cli("demo", "--name", name, "--requests", "6", timeout=180)
    output = result.stdout.decode()
    assert result.returncode == 0, output + result.stderr.decode()
    assert "Which pod answered" in output and "web-" in output and "api-" in output
    # The plan's decision per port, with the reason: web:80 needs Envoy for its path route.
    assert re.search(r"web:80/TCP\s+│\s+envoy\s+│\s+route 0 \(demo/web-routes", output), output
    assert re.search(r"api:8080/TCP\s+│\s+ebpf", output), output
    # An L7 route served through the node Envoy, and a connection refused by policy with its flow.
    assert re.search(r"GET http://web/api/hello from demo/client → answered by api-\S+ \(route /api", output), output
    assert "demo/stranger → api:8080: TimeoutError" in output
    assert re.search(r"demo/stranger:\d+ \(ID:\d+\) -> demo/api-\S+:8080 .* DROPPED .* by "
                     r"demo/api-from-client-and-web", output), output
    assert leftovers(name, []) == []
