"""NodeAgent.flows(): a kernel drop and a request through the node proxy, both as typed Flows.

A lab with a NetworkPolicy (only the client may reach the server's port) and an HTTPRoute
whose header filter sends the service through the node Envoy: a connection from another pod straight to the
server is dropped by the kernel, a request from the client through the service is
forwarded by the node proxy. The lab's agent journals both; an agent object in this
process — for the same node and state directory, enforcing nothing — reads them back.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _lab_support import client_pod, connect, running_lab, write

from meshcore.agent import NodeAgent, NodeFacts
from meshcore.lab import Lab
from meshcore.model import Direction, WorkloadRef
from meshcore.observe import Enforcer, Flow, Layer, Verdict

pytestmark = pytest.mark.root

APP = """
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  containers:
  - {name: web, image: meshcore/echo, args: ["--http", "8080"], ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: server}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-served-by, value: meshcore}]}
    backendRefs: [{name: web, port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-client}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}]
---""" + client_pod("client") + "---" + client_pod("other")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("agent-flows")
    with running_lab([write(tmp, "app.yaml", APP)], name=f"af{secrets.token_hex(4)}", timeout=60,
                     all_ready=True) as lab:
        yield lab


def reader(lab: Lab) -> NodeAgent:
    """An agent for the lab's node and state directory that only reads (it never applies)."""
    status = lab.status()
    return NodeAgent(NodeFacts(status.node, status.cgroup, lab.dir))


def first(flows: Callable[[], list[Flow]], keep: Callable[[Flow], bool], wait: float = 10) -> Flow:
    deadline = time.monotonic() + wait
    while True:
        found = [f for f in flows() if keep(f)]
        if found or time.monotonic() > deadline:
            assert found, "no such flow in the journal"
            return found[-1]
        time.sleep(0.3)


def test_a_kernel_drop_and_a_proxied_request_arrive_as_flows(lab: Lab) -> None:
    server = next(p for p in lab.status().pods if p.name == "server")
    client = next(p for p in lab.status().pods if p.name == "client")
    assert connect(lab, "other", [(server.addresses[0], 8080)]) == ["TimeoutError"]
    path = f"/agent-flows-{secrets.token_hex(3)}"
    result = lab.run("client", ["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", f"http://web{path}"])
    assert result.stdout == b"200", result.stderr
    agent = reader(lab)

    drop = first(lambda: list(agent.flows()), lambda f: f.verdict is Verdict.DROPPED
                 and f.source.workload == WorkloadRef("default", "other"))
    assert (drop.layer, drop.enforcer, drop.node, drop.protocol, drop.direction, drop.reason) == (
        Layer.L4, Enforcer.KERNEL, lab.status().node, "TCP", Direction.INGRESS, "default-deny")
    assert drop.destination.workload == WorkloadRef("default", "server") and drop.destination.port == 8080
    assert drop.source.identity > 0 and drop.destination.identity > 0 and drop.l7 is None
    assert drop.policy == "default/server-from-client (no rule allows it)", drop

    request = first(lambda: list(agent.flows()), lambda f: f.l7 is not None and f.l7.path == path)
    assert (request.layer, request.enforcer, request.verdict, request.protocol) == (
        Layer.L7, Enforcer.PROXY, Verdict.FORWARDED, "HTTP/1.1")
    assert request.l7 is not None and (request.l7.method, request.l7.status, request.l7.listener) == (
        "GET", 200, "default/web:80")
    assert request.source.workload == WorkloadRef("default", "client") and request.source.identity > 0
    assert request.source.address in client.addresses
    assert request.destination.workload == WorkloadRef("default", "server")
    assert request.destination.address in server.addresses and request.destination.port == 8080

    async def both() -> list[Flow]:
        return [f async for f in agent.aflows() if f in (drop, request)]

    assert set(asyncio.run(both())) == {drop, request}, "the async iterator reads the same journal"


def test_following_picks_up_new_flows(lab: Lab) -> None:
    agent = reader(lab)
    path = f"/followed-{secrets.token_hex(3)}"

    async def follow() -> Flow:
        async def consume() -> Flow:
            async for flow in agent.aflows(follow=True, interval=0.1):
                if flow.l7 is not None and flow.l7.path == path:
                    return flow
            raise AssertionError("a followed iteration ended")

        task = asyncio.create_task(consume())
        await asyncio.sleep(1.0)  # the follower has read what was there before the request
        await asyncio.to_thread(lab.run, "client", ["curl", "-sS", "-m", "5", "-o", "/dev/null", f"http://web{path}"])
        return await asyncio.wait_for(task, 15)

    flow = asyncio.run(follow())
    assert flow.l7 is not None and flow.l7.status == 200 and flow.source.workload == WorkloadRef("default", "client")


def test_the_journal_is_one_bounded_file_in_the_state_directory(lab: Lab) -> None:
    files = sorted(p.name for p in Path(lab.dir).iterdir() if p.name.startswith("flows."))
    journal = [f for f in files if f != "flows.sock"]
    assert journal and journal[0] == "flows.journal" and all(f.startswith("flows.journal") for f in journal), files
    assert "flows.sock" in files, "the agent serves its recent flows from memory too"


def test_the_agents_memory_serves_the_same_flows_as_the_journal(lab: Lab) -> None:
    from meshcore.agent._flowserver import read_served

    assert connect(lab, "other", [(next(p for p in lab.status().pods if p.name == "server").addresses[0], 8080)]) \
        == ["TimeoutError"]
    agent = reader(lab)

    def served() -> list[Flow]:
        return [f for f in read_served(Path(lab.dir) / "flows.sock") if isinstance(f, Flow)]

    drop = first(served, lambda f: f.verdict is Verdict.DROPPED and f.source.workload == WorkloadRef("default", "other"))
    assert drop in list(agent.flows()), "the ring in memory and the journal hold the same flow"


def test_every_request_through_the_node_proxy_is_one_flow(lab: Lab) -> None:
    # 150 requests on one keep-alive connection (curl's URL ranges), faster than Envoy writes its log.
    prefix = f"/each-{secrets.token_hex(3)}-"
    result = lab.run("client", ["curl", "-sS", "-m", "30", "-o", "/dev/null", "-w", "%{http_code}\\n",
                                f"http://web{prefix}[1-150]"], timeout=60)
    assert result.stdout.decode().split() == ["200"] * 150, result.stderr
    agent = reader(lab)

    def ours() -> list[Flow]:
        return [f for f in agent.flows() if f.l7 is not None and f.l7.path.startswith(prefix)]

    deadline = time.monotonic() + 10
    while len(got := ours()) < 150 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert sorted(int(f.l7.path.removeprefix(prefix)) for f in got if f.l7) == list(range(1, 151))
    assert all(f.source.workload == WorkloadRef("default", "client") and f.source.identity > 0
               and f.destination.workload == WorkloadRef("default", "server") and f.l7 is not None
               and (f.l7.method, f.l7.status) == ("GET", 200) and f.l7.latency_ms > 0 for f in got)
