"""A lab of two nodes: services, L7, identities and policy across the fabric, and node faults.

One lab serves the module: node-1 holds ``client`` and ``other``, node-2 holds ``client-2``,
``other-2``, ``server`` (placed by nodeSelector) and ``web``; the ``spread`` Deployment has
a replica on each node. A NetworkPolicy admits only ``app: client`` to ``server``; an
HTTPRoute and an Istio AuthorizationPolicy (with an L7 part, so the kernel admits only a
node proxy to ``web``'s port) govern ``web``. Every test sends real traffic from pods on
both nodes and checks that the answer is the same for a client on the server's node and
for one across the fabric. Tests that disturb the lab (an agent killed, a node down) put
it back before they end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _lab_support import WHOAMI, client_pod, curl_json, meshcore_cli, observed, run_python, running_lab, write

from meshcore.lab import Lab
from meshcore.lab._state import LabState

pytestmark = pytest.mark.root

SERVER = """
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  nodeSelector: {zone: b}
  containers:
  - {name: echo, image: meshcore/echo, args: ["--http", "8080", "--tcp", "9000", "--udp", "9001"],
     ports: [{name: http, containerPort: 8080}, {containerPort: 9000}, {containerPort: 9001, protocol: UDP}]}
"""

APP = "\n---\n".join([
    """
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 2
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      containers:
      - {name: echo, image: meshcore/echo, args: ["--tcp", "9000"], ports: [{containerPort: 9000}]}
""",
    """
apiVersion: v1
kind: Node
metadata: {name: node-2, labels: {zone: b}}
""",
    *(f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {sa}}}
""" for sa in ("client", "other", "web")),
    *(client_pod(name, account=app, labels={"app": app}).replace(
        "spec:", f"spec:\n  nodeName: {node}", 1)
      for name, app, node in (("client", "client", "node-1"), ("other", "other", "node-1"),
                              ("client-2", "client", "node-2"), ("other-2", "other", "node-2"))),
    SERVER,
    """
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: node-2
  serviceAccountName: web
  containers:
  - {name: echo, image: meshcore/echo, args: ["--http", "8080"], ports: [{name: http, containerPort: 8080}]}
""",
    """
apiVersion: v1
kind: Service
metadata: {name: server}
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {app: server}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: tcp, port: 9000}
  - {name: udp, port: 9001, protocol: UDP}
""",
    """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
""",
    """
apiVersion: v1
kind: Service
metadata: {name: spread}
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {app: spread}
  ports: [{name: tcp, port: 9000}]
""",
    """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-clients}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
""",
    """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-route, value: multinode}]}}]
    backendRefs: [{name: web, port: 80}]
""",
    """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-readers}
spec:
  selector:
    matchLabels: {app: web}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
    to: [{operation: {methods: [GET]}}]
""",
])

# Runs in a pod, a node or the fabric: connect to each (host, port), optionally from a given
# source address (even one the namespace does not have); how it ended and how fast.
CONNECT = r"""
import json, socket, sys, time
targets, source = json.loads(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else ""
out = []
for host, port in targets:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(1.5)
    if source:
        s.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT: may send from an address it does not have
        s.bind((source, 0))
    t = time.monotonic()
    try:
        s.connect((host, port)); result = "ok"
    except OSError as e:
        result = type(e).__name__
    out.append({"result": result, "seconds": time.monotonic() - t})
    s.close()
print(json.dumps(out))
"""



@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("multinode")
    with running_lab([write(tmp, "app.yaml", APP)], nodes=2, timeout=60, all_ready=True) as lab:
        yield lab


def _status(lab: Lab) -> dict[str, Any]:
    out = meshcore_cli("lab", "status", "--name", lab.name, "-o", "json")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def _pod(lab: Lab, name: str) -> Any:
    return next(p for p in lab.status().pods if p.name == name)


def _node(lab: Lab, name: str) -> Any:
    return next(n for n in lab.status().nodes if n.name == name)


def _vips(lab: Lab, service: str) -> tuple[str, ...]:
    return next(s for s in lab.status().services if s.name == service).cluster_ips


def _connect(lab: Lab, pod: str, targets: list[tuple[str, int]], source: str = "") -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = run_python(lab, pod, CONNECT, json.dumps(targets), *([source] if source else []))
    return answer


def _connect_in(netns: str, targets: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """CONNECT run in a network namespace that is not a pod's (a node's, the fabric's)."""
    ran = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-S", "-c", CONNECT, json.dumps(targets)],
                         capture_output=True, timeout=30, check=True)
    answer: list[dict[str, Any]] = json.loads(ran.stdout)
    return answer


def _results(answers: list[dict[str, Any]]) -> list[str]:
    return [a["result"] for a in answers]


def test_pods_are_placed_by_name_selector_and_spread_and_status_names_nodes_and_fabric(lab: Lab) -> None:
    status = _status(lab)
    nodes = {p["name"]: p["node"] for p in status["pods"]}
    assert {k: v for k, v in nodes.items() if not k.startswith("spread")} == {
        "client": "node-1", "other": "node-1", "client-2": "node-2", "other-2": "node-2",
        "server": "node-2", "web": "node-2"}
    assert sorted(v for k, v in nodes.items() if k.startswith("spread")) == ["node-1", "node-2"]
    assert status["fabric"] == {"netns": f"mc-{lab.name}-fabric", "bridge": "mc-fabric"}
    assert [n["name"] for n in status["nodes"]] == ["node-1", "node-2"]
    assert all(n["up"] and n["agent"]["ok"] for n in status["nodes"])
    # Each node's pods have addresses from its own subnet.
    for node in status["nodes"]:
        for pod in (p for p in status["pods"] if p["node"] == node["name"]):
            assert pod["addresses"][0].rsplit(".", 1)[0] == node["podCIDRs"][0].rsplit(".", 1)[0], (pod, node)
    # The number of nodes is fixed while the lab is up: nothing is changed.
    refused = meshcore_cli("lab", "up", "--name", lab.name, "--nodes", "3", "-f", *LabState.load(lab.dir).files)
    assert refused.returncode == 1 and f"up with 2 nodes; run `meshcore lab down --name {lab.name}` first".encode() \
        in refused.stderr, refused
    assert [n.name for n in lab.status().nodes] == ["node-1", "node-2"]
    # `lab exec` reaches pods on either node; each runs on the node it is placed on.
    for pod, node in (("client", "node-1"), ("client-2", "node-2")):
        ran = meshcore_cli("lab", "exec", "--name", lab.name, pod, "--", "sh", "-c", "echo $NODE_NAME")
        assert ran.returncode == 0 and ran.stdout.decode().strip() == node, ran


def test_service_traffic_crosses_nodes_over_tcp_and_udp_ipv4_and_ipv6(lab: Lab) -> None:
    v4, v6 = _vips(lab, "server")
    targets = [[vip, port, proto] for vip in (v4, v6) for port, proto in ((9000, "TCP"), (9001, "UDP"))]
    for client in ("client", "client-2"):  # across the fabric, and beside the server
        answers = run_python(lab, client, WHOAMI, json.dumps(targets))
        assert [a["pod"] for a in answers] == ["server"] * len(targets), (client, answers)
        # getpeername() and the UDP reply's source show the VIP: translated on the client's node.
        assert [a["peer"] for a in answers] == [t[0] for t in targets], (client, answers)
    # A service with a backend on each node is balanced over both from either node.
    s4, s6 = _vips(lab, "spread")
    for client in ("client", "client-2"):
        answers = run_python(lab, client, WHOAMI, json.dumps([[vip, 9000, "TCP"] for vip in (s4, s6)] * 10))
        assert len({a["pod"] for a in answers}) == 2, answers


def test_http_route_goes_through_the_client_nodes_envoy_to_the_other_node(lab: Lab) -> None:
    proxies = {n.name: n.proxy_addresses for n in lab.status().nodes}
    for client, node in (("client", "node-1"), ("client-2", "node-2")):
        status, body = curl_json(lab, client, "http://web/hello")
        assert status == 200 and body["pod"] == "web", (client, status, body)
        assert body["headers"].get("X-Route") == ["multinode"], body  # the route's filter ran
        # The pod was reached by the node proxy of the client's node, from its own address.
        assert body["remote"].rsplit(":", 1)[0].strip("[]") in proxies[node], (client, body["remote"], proxies)
    rows = observed(lab, "--kind", "l7", "--pod", "web", keep=lambda r: r["path"] == "/hello", at_least=2)
    assert {r["node"] for r in rows} == {"node-1", "node-2"}, rows


def test_network_policy_decides_alike_for_clients_on_both_nodes(lab: Lab) -> None:
    server = _pod(lab, "server")
    targets = [(a, 9000) for a in server.addresses] + [(_vips(lab, "server")[0], 9000)]
    for client in ("client", "client-2"):
        assert _results(_connect(lab, client, targets)) == ["ok"] * 3, client
    for other in ("other", "other-2"):
        assert _results(_connect(lab, other, targets)) == ["TimeoutError"] * 3, other
    # The refusal is the server's node's (ingress on its veth): observe names that node.
    rows = observed(lab, "--pod", "server", "--verdict", "dropped",
                    keep=lambda r: r["source"] in ("default/other", "default/other-2") and r["destinationPort"] == 9000,
                    at_least=2)
    assert {r["node"] for r in rows} == {"node-2"} and {r["source"] for r in rows} == {"default/other",
                                                                                      "default/other-2"}, rows
    assert all(r["reason"] == "default-deny" and "server-from-clients" in r["policy"] for r in rows), rows
    # Each node counts its own drops in its metrics.
    drops = {n: _metric(lab, n, "meshcore_drops_total", reason="default-deny", direction="ingress")
             for n in ("node-1", "node-2")}
    assert drops["node-2"] >= 2 and drops["node-1"] == 0, drops


def _metric(lab: Lab, node: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels, scraped from the node's agent inside its namespace."""
    netns = _node(lab, node).netns
    text = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sS", "-m", "5", "http://127.0.0.1:9878/metrics"],
                          capture_output=True, timeout=30, check=True).stdout.decode()
    assert f"# TYPE {name} " in text, text[:2000]
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(w in line for w in wanted))


def test_authorization_policy_decides_alike_across_nodes_and_only_a_node_proxy_reaches_the_port(lab: Lab) -> None:
    for client in ("client", "client-2"):
        assert curl_json(lab, client, "http://web/read")[0] == 200, client
        assert curl_json(lab, client, "http://web/read", "-X", "POST")[0] == 403, client
    for other in ("other", "other-2"):
        assert curl_json(lab, other, "http://web/read")[0] == 403, other
    # The rule has an HTTP part: straight to the pod, the kernel admits no one but a node
    # proxy — not an allowed client, not the client's node (a remote node), on either node.
    web = [(a, 8080) for a in _pod(lab, "web").addresses]
    for client in ("client", "client-2"):
        assert _results(_connect(lab, client, web)) == ["TimeoutError"] * 2, client
    assert _results(_connect_in(_node(lab, "node-1").netns, web)) == ["TimeoutError"] * 2
    # What each node's agent saw at web's veth: the other node's proxy, as a node proxy (3);
    # the other node itself, as a remote node (4), refused.
    rows = observed(lab, "--kind", "l4", "--pod", "web", "--node", "node-2",
                    keep=lambda r: r["sourceAddress"] in (*_node(lab, "node-1").proxy_addresses,
                                                          *_node(lab, "node-1").addresses), at_least=2)
    identities = {(r["sourceAddress"] in _node(lab, "node-1").proxy_addresses, r["sourceIdentity"], r["verdict"])
                  for r in rows}
    assert (True, 3, "FORWARDED") in identities and (False, 4, "DROPPED") in identities, rows


def test_only_known_pods_and_nodes_pass_from_the_fabric(lab: Lab) -> None:
    fabric = LabState.load(lab.dir).fabric
    assert fabric is not None
    server = _pod(lab, "server")
    node2 = _node(lab, "node-2")
    stranger = "10.244.250.250"  # inside the lab's pod range, but no pod's or node's address
    ip = ["ip", "-n", fabric.netns]
    subprocess.run([*ip, "addr", "add", f"{stranger}/32", "dev", fabric.bridge], check=True)
    subprocess.run([*ip, "route", "add", node2.pod_cidrs[0], "via", node2.addresses[0], "dev", fabric.bridge,
                    "onlink"], check=True)
    client2 = _pod(lab, "client-2").addresses[0]
    try:
        # Plugged into the fabric, an unknown address is the world: the default-deny server drops it.
        # (Nothing routes back to it, so no connection can succeed; the verdicts below tell why.)
        assert _results(_connect_in(fabric.netns, [(server.addresses[0], 9000), (client2, 9)])) == \
            ["TimeoutError"] * 2
    finally:
        subprocess.run([*ip, "route", "del", node2.pod_cidrs[0]], check=False)
        subprocess.run([*ip, "addr", "del", f"{stranger}/32", "dev", fabric.bridge], check=False)
    rows = observed(lab, "--node", "node-2", keep=lambda r: r["sourceAddress"] == stranger, at_least=2)
    verdicts = {r["destinationAddress"]: (r["sourceIdentity"], r["verdict"], r["reason"]) for r in rows}
    assert verdicts[server.addresses[0]] == (2, "DROPPED", "default-deny"), rows
    # Policy decides, not a firewall: a pod no policy selects lets the world in.
    assert verdicts[client2] == (2, "FORWARDED", "no-policy"), rows


def test_a_pod_cannot_claim_another_pods_address_across_nodes(lab: Lab) -> None:
    server = _pod(lab, "server")
    allowed = _pod(lab, "client-2").addresses[0]  # an app=client pod on the server's node
    # `other` (node-1) sends with client-2's address: dropped as it leaves its own node.
    assert _results(_connect(lab, "other", [(server.addresses[0], 9000)], source=allowed)) == ["TimeoutError"]
    rows = observed(lab, "--verdict", "dropped", "--node", "node-1",
                    keep=lambda r: r["reason"] == "spoofed-source" and r["sourceAddress"] == allowed)
    assert rows and rows[0]["destinationAddress"] == server.addresses[0], rows


def test_killing_one_nodes_agent_leaves_every_nodes_traffic_flowing(lab: Lab) -> None:
    state = LabState.load(lab.dir)
    agent = state.nodes["node-2"].agent
    assert agent is not None
    os.kill(agent.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _node(lab, "node-2").agent.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _node(lab, "node-2").agent.running
    try:
        v4, v6 = _vips(lab, "server")
        for client in ("client", "client-2"):  # into node-2, and out of it
            answers = run_python(lab, client, WHOAMI, json.dumps([[v4, 9000, "TCP"], [v6, 9001, "UDP"]]))
            assert [a["pod"] for a in answers] == ["server", "server"], (client, answers)
            assert curl_json(lab, client, "http://web/after-kill")[0] == 200, client
        s4, _ = _vips(lab, "spread")
        answers = run_python(lab, "client-2", WHOAMI, json.dumps([[s4, 9000, "TCP"]] * 10))
        assert len({a["pod"] for a in answers}) == 2, answers  # node-2 still reaches node-1's replica
        assert _results(_connect(lab, "other-2", [(_pod(lab, "server").addresses[0], 9000)])) == ["TimeoutError"]
    finally:
        result = lab.up(LabState.load(lab.dir).files, timeout=60)  # the lab starts the agent again
    restarted = next(a for a in result.agents if a.node == "node-2")
    assert restarted.ok and restarted.pid != agent.pid, restarted
    assert curl_json(lab, "client", "http://web/restarted")[0] == 200


def test_a_node_taken_down_leaves_every_service_and_its_pods_fail_fast(lab: Lab) -> None:
    server = _pod(lab, "server")
    v4, v6 = _vips(lab, "server")
    s4, s6 = _vips(lab, "spread")
    out = meshcore_cli("lab", "node", "down", "--name", lab.name, "node-2")
    assert out.returncode == 0, out.stderr
    try:
        assert not _node(lab, "node-2").up and not _node(lab, "node-2").agent.running
        assert _pod(lab, "server").phase == "Unknown"
        # What node-1's agent gets: node-2's pods not ready, so their endpoints are gone everywhere.
        objects = json.loads(Path(_node_dir(lab, "node-1"), "objects.json").read_text())["objects"]
        pod = next(o["body"] for o in objects
                   if o["body"]["kind"] == "Pod" and o["body"]["metadata"]["name"] == "server")
        assert pod["status"]["conditions"] == [{"type": "Ready", "status": "False"}], pod["status"]
        # Its pods' addresses and a service left without backends fail at once, not by timeout.
        answers = _connect(lab, "client", [(server.addresses[0], 9000), (server.addresses[1], 9000),
                                           (v4, 9000), (v6, 9000)])
        assert _results(answers) == ["OSError", "OSError", "ConnectionRefusedError", "ConnectionRefusedError"], answers
        assert max(a["seconds"] for a in answers) < 0.5, answers
        # A service with a backend on each node is served by the node that is left.
        answers = run_python(lab, "client", WHOAMI, json.dumps([[vip, 9000, "TCP"] for vip in (s4, s6)] * 5))
        assert {a["pod"] for a in answers} == {_spread_pod(lab, "node-1")}, answers
        assert curl_json(lab, "client", "http://web/down")[0] == 503  # no endpoint: Envoy answers
    finally:
        back = meshcore_cli("lab", "node", "up", "--name", lab.name, "node-2")
        assert back.returncode == 0, back.stderr
    assert _node(lab, "node-2").agent.ok and _pod(lab, "server").phase == "Running"
    assert [a["pod"] for a in run_python(lab, "client", WHOAMI, json.dumps([[v4, 9000, "TCP"]]))] == ["server"]


def _node_dir(lab: Lab, node: str) -> str:
    return LabState.load(lab.dir).nodes[node].state_dir


def _spread_pod(lab: Lab, node: str) -> str:
    return next(p.name for p in lab.status().pods if p.owner == "Deployment/spread" and p.node == node)
