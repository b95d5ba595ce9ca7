"""Status written back through the stand-in API server: one writer at a time, only what changed.

Each "agent" here is what `meshcore agent --from kube` runs, with a stand-in for the
kernel: a KubeSource feeding the agent's runner, which hands every generation to a
StatusWriteBack led through a Lease. The stand-in API server logs every request, so the
tests count the writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _agent_support import LEASE_NAMESPACE, Agent
from _kubectl_support import Kubectl, get_json
from standin_apiserver import DEFAULT_KINDS, GATEWAY, Kind, StandInApiServer


CLASS = f"""
apiVersion: {GATEWAY}/v1
kind: GatewayClass
metadata: {{name: meshcore}}
spec: {{controllerName: meshcore.io/gateway-controller}}
"""
GATEWAY_DOC = f"""
apiVersion: {GATEWAY}/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  gatewayClassName: meshcore
  addresses: [{{type: IPAddress, value: 192.0.2.10}}]
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
"""
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def route(backend: str = "web", parent: str = "edge") -> str:
    return f"""
apiVersion: {GATEWAY}/v1
kind: HTTPRoute
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{name: {parent}}}]
  rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]
"""


def mesh_route(backend: str = "web") -> str:
    return f"""
apiVersion: {GATEWAY}/v1
kind: HTTPRoute
metadata: {{name: mesh, namespace: default}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web, port: 80}}]
  rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]
"""


def create(apiserver: StandInApiServer, *docs: str) -> None:
    """Create objects directly in the stand-in's store (as kubectl apply would)."""
    for doc in docs:
        body = yaml.safe_load(doc)
        api_version, kind = body["apiVersion"], body["kind"]
        found = next(k for k in apiserver.store.kinds if k.api_version == api_version and k.kind == kind)
        apiserver.store.create(found, body["metadata"].get("namespace", ""), body)


def replace_spec(apiserver: StandInApiServer, doc: str) -> None:
    body = yaml.safe_load(doc)
    kind = next(k for k in apiserver.store.kinds if k.api_version == body["apiVersion"] and k.kind == body["kind"])
    current = apiserver.store.get(kind, body["metadata"]["namespace"], body["metadata"]["name"])
    apiserver.store.replace(kind, body["metadata"]["namespace"], body["metadata"]["name"],
                            {**current, "spec": body["spec"]})


def stored(apiserver: StandInApiServer, api_version: str, plural: str, name: str, namespace: str = "default") -> Any:
    return apiserver.store.get(apiserver.store.kind(api_version, plural), namespace, name)


def status_writes(apiserver: StandInApiServer) -> list[str]:
    """Every write to a status subresource the stand-in answered, as ``METHOD path``."""
    return [r.split("?")[0] for r in apiserver.requests
            if r.startswith(("PATCH ", "PUT ", "POST ")) and r.split("?")[0].endswith("/status")]


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what or check}")


@pytest.fixture
def agents(kubeconfig: Path, tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def start(identity: str, **kwargs: Any) -> Agent:
        agent = Agent(kwargs.pop("kubeconfig", kubeconfig), identity, tmp_path, **kwargs)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if not agent._stop.is_set():
            agent.stop()


def route_parents(apiserver: StandInApiServer, name: str = "web") -> list[dict[str, Any]]:
    return list((stored(apiserver, f"{GATEWAY}/v1", "httproutes", name).get("status") or {}).get("parents") or [])


def conditions(entry: dict[str, Any]) -> dict[str, tuple[str, str, int | None]]:
    return {c["type"]: (c["status"], c["reason"], c.get("observedGeneration")) for c in entry.get("conditions") or ()}


def test_two_agents_one_writer_and_nothing_rewritten_when_unchanged(
        apiserver: StandInApiServer, agents: Callable[..., Agent]) -> None:
    create(apiserver, CLASS, GATEWAY_DOC, SERVICE, route())
    a, b = agents("node-a"), agents("node-b")
    wait_until(lambda: a.writeback.passes or b.writeback.passes, what="a first pass")
    wait_until(lambda: a.generations and b.generations, what="both agents' first generation")

    [leader] = [x for x in (a, b) if x.leading]
    follower = b if leader is a else a
    lease = stored(apiserver, "coordination.k8s.io/v1", "leases", "meshcore-status", LEASE_NAMESPACE)
    assert lease["spec"]["holderIdentity"] == leader.election.identity
    assert follower.writeback.passes == 0, "only the Lease holder writes"
    [parent] = route_parents(apiserver)
    assert parent["controllerName"] == "meshcore.io/gateway-controller"
    assert conditions(parent) == {"Accepted": ("True", "Accepted", 1), "ResolvedRefs": ("True", "ResolvedRefs", 1)}
    assert all(c["lastTransitionTime"] for c in parent["conditions"])
    gateway = stored(apiserver, f"{GATEWAY}/v1", "gateways", "edge")["status"]
    assert {c["type"]: c["status"] for c in gateway["conditions"]} == {"Accepted": "True", "Programmed": "True"}
    assert gateway["listeners"][0]["attachedRoutes"] == 1
    assert sorted(status_writes(apiserver)) == [
        f"PATCH /apis/{GATEWAY}/v1/gatewayclasses/meshcore/status",
        f"PATCH /apis/{GATEWAY}/v1/namespaces/default/gateways/edge/status",
        f"PATCH /apis/{GATEWAY}/v1/namespaces/default/httproutes/web/status",
    ], "each object written once, by the one leader"

    # A new generation that changes no status: the leader compares and writes nothing.
    passes, generations = leader.writeback.passes, (len(a.generations), len(b.generations))
    create(apiserver, SERVICE.replace("name: web", "name: other"))
    wait_until(lambda: len(a.generations) > generations[0] and len(b.generations) > generations[1],
               what="both agents' next generation")
    wait_until(lambda: leader.writeback.passes > passes, what="the leader's pass over it")
    assert leader.writeback.last_result is not None and leader.writeback.last_result.unchanged == 3
    assert len(status_writes(apiserver)) == 3
    assert follower.writeback.passes == 0


def test_a_route_change_is_written_with_its_new_generation_and_the_condition_time_moves_only_on_a_change(
        apiserver: StandInApiServer, agents: Callable[..., Agent]) -> None:
    create(apiserver, CLASS, GATEWAY_DOC, SERVICE, route())
    agent = agents("node-a")
    wait_until(lambda: route_parents(apiserver), what="the route's status")
    [before] = route_parents(apiserver)
    time.sleep(1.1)  # condition times are to the second: a rewrite now would show a later one

    replace_spec(apiserver, route(backend="missing"))
    wait_until(lambda: conditions(route_parents(apiserver)[0])["ResolvedRefs"][0] == "False", what="ResolvedRefs")
    [after] = route_parents(apiserver)
    assert conditions(after)["Accepted"] == ("True", "Accepted", 2)
    assert conditions(after)["ResolvedRefs"][1:] == ("BackendNotFound", 2)
    times = {c["type"]: c["lastTransitionTime"] for c in before["conditions"]}
    new_times = {c["type"]: c["lastTransitionTime"] for c in after["conditions"]}
    assert new_times["Accepted"] == times["Accepted"], "Accepted stayed True: its transition time stays"
    assert new_times["ResolvedRefs"] > times["ResolvedRefs"], "ResolvedRefs turned False: a new transition time"
    assert agent.leading


def test_writing_route_status_makes_no_new_generation_on_any_node(
        apiserver: StandInApiServer, agents: Callable[..., Agent]) -> None:
    create(apiserver, SERVICE, mesh_route())
    a, b = agents("node-a"), agents("node-b")
    wait_until(lambda: route_parents(apiserver, "mesh"), what="the mesh route's status")
    [parent] = route_parents(apiserver, "mesh")
    assert parent["controllerName"] == "meshcore.io/mesh-controller"
    time.sleep(1.5)  # a generation caused by the status write would have been handed out by now
    assert a.generations == [1] and b.generations == [1]


def test_the_other_agent_takes_over_once_a_crashed_leaders_lease_lapses(
        apiserver: StandInApiServer, agents: Callable[..., Agent]) -> None:
    create(apiserver, CLASS, GATEWAY_DOC, SERVICE, route())
    a = agents("node-a")
    wait_until(lambda: a.leading and route_parents(apiserver), what="node-a leading and writing")
    b = agents("node-b")
    wait_until(lambda: b.generations, what="node-b's first generation")
    time.sleep(0.5)
    assert not b.leading and b.writeback.passes == 0, "node-b waits while node-a renews"

    a.stop(release=False)  # as a crash: the Lease stays with node-a until it lapses
    crashed = time.monotonic()
    wait_until(lambda: b.leading, timeout=10, what="node-b taking over")
    assert time.monotonic() - crashed >= 1.0, "taken over only after the 2 s Lease lapsed"
    lease = stored(apiserver, "coordination.k8s.io/v1", "leases", "meshcore-status", LEASE_NAMESPACE)
    assert lease["spec"]["holderIdentity"] == "node-b" and lease["spec"]["leaseTransitions"] == 1

    replace_spec(apiserver, route(backend="missing"))
    wait_until(lambda: conditions(route_parents(apiserver)[0])["ResolvedRefs"][0] == "False",
               what="the new leader writing the route's new status")
    assert b.writeback.passes >= 1


def test_a_leader_stopping_releases_the_lease_and_the_other_agent_leads_at_once(
        apiserver: StandInApiServer, agents: Callable[..., Agent]) -> None:
    create(apiserver, SERVICE, mesh_route())
    a = agents("node-a", duration=10)
    wait_until(lambda: a.leading, what="node-a leading")
    b = agents("node-b", duration=10)
    wait_until(lambda: b.generations, what="node-b's first generation")
    a.stop()
    released = time.monotonic()
    wait_until(lambda: b.leading, timeout=5, what="node-b taking the released Lease")
    assert time.monotonic() - released < 5, "a released Lease is taken at the next look, not after 10 s"


def test_status_appears_on_an_httproute_created_with_kubectl(
        kubectl: Kubectl, agents: Callable[..., Agent]) -> None:
    kubectl("apply", "-f", "-", input="---".join([CLASS, GATEWAY_DOC, SERVICE, route()]))
    agents("node-a")

    def accepted() -> Any:
        parents = get_json(kubectl, "httproute", "web").get("status", {}).get("parents") or []
        return parents and parents

    [parent] = wait_until(accepted, what="kubectl get httproute web showing status")
    assert parent["parentRef"]["name"] == "edge"
    assert conditions(parent) == {"Accepted": ("True", "Accepted", 1), "ResolvedRefs": ("True", "ResolvedRefs", 1)}
    # The writer patches one object after another: the Gateway's status may follow the route's.
    def programmed() -> Any:
        shown = kubectl("get", "gateway", "edge", "-o", "jsonpath={.status.conditions[?(@.type=='Programmed')].status}")
        return shown.stdout == "True"

    wait_until(programmed, what="kubectl get gateway edge showing Programmed=True")


def test_other_controllers_route_entries_are_kept_and_ours_removed_when_the_route_leaves_our_gateway(
        apiserver: StandInApiServer, agents: Callable[..., Agent]) -> None:
    theirs = {"parentRef": {"group": GATEWAY, "kind": "Gateway", "name": "other"},
              "controllerName": "example.com/gateway",
              "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
                              "lastTransitionTime": "2024-01-01T00:00:00Z"}]}
    create(apiserver, CLASS, GATEWAY_DOC, SERVICE, route())
    routes = apiserver.store.kind(f"{GATEWAY}/v1", "httproutes")
    current = apiserver.store.get(routes, "default", "web")
    apiserver.store.replace(routes, "default", "web", {**current, "status": {"parents": [theirs]}},
                            subresource="status")
    agents("node-a")
    wait_until(lambda: len(route_parents(apiserver)) == 2, what="our entry beside theirs")
    assert route_parents(apiserver)[0] == theirs

    replace_spec(apiserver, route(parent="other"))  # no longer attached to a Gateway of ours
    wait_until(lambda: len(route_parents(apiserver)) == 1, what="our entry removed")
    assert route_parents(apiserver) == [theirs]


ENVOY_CONFIG = """
apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {name: edge, namespace: default}
spec:
  resources:
  - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
    name: c
    connect_timeout: 1s
"""


def test_an_envoy_config_without_a_status_subresource_is_not_written_and_that_is_logged(
        apiserver: StandInApiServer, agents: Callable[..., Agent], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "meshcore.kubestatus")
    create(apiserver, SERVICE, mesh_route(), ENVOY_CONFIG)
    agent = agents("node-a")
    wait_until(lambda: route_parents(apiserver, "mesh"), what="the route's status")
    wait_until(lambda: agent.writeback.last_result is not None, what="a pass")
    result = agent.writeback.last_result
    assert result is not None and result.not_written == ["CiliumEnvoyConfig default/edge: no status subresource"]
    assert not [w for w in status_writes(apiserver) if "ciliumenvoyconfigs" in w]
    assert "CiliumEnvoyConfig cilium.io/v2 has no status subresource on this API server" in caplog.text


def test_an_envoy_config_gets_its_accepted_condition_where_its_crd_has_a_status_subresource(
        tmp_path: Path, agents: Callable[..., Agent]) -> None:
    kinds = [k if k.kind != "CiliumEnvoyConfig" else Kind("cilium.io", "v2", k.kind, k.plural) for k in DEFAULT_KINDS]
    with StandInApiServer(kinds, bookmark_seconds=0.3) as server:
        create(server, ENVOY_CONFIG, ENVOY_CONFIG.replace("name: c\n", "name: c\n    lb_policy: NOPE\n")
               .replace("name: edge", "name: broken"))
        agents("node-a", kubeconfig=server.kubeconfig(tmp_path / "other-kubeconfig"))

        def status(name: str) -> Any:
            return stored(server, "cilium.io/v2", "ciliumenvoyconfigs", name).get("status")

        wait_until(lambda: status("edge") and status("broken"), what="both configs' status")
        [ok] = status("edge")["conditions"]
        assert (ok["type"], ok["status"], ok["reason"], ok["observedGeneration"]) == ("Accepted", "True", "Accepted", 1)
        [bad] = status("broken")["conditions"]
        assert (bad["status"], bad["reason"]) == ("False", "Invalid")
        assert "lb_policy" in status("broken")["errors"][0]
