"""Changing, breaking and restarting the node proxy: no request lost, every rejection named."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from _proxy_support import (
    PORT_BLOCK,
    SETTINGS,
    ProxyEnv,
    backends,
    compile_for,
    dest,
    free_port_block,
    proxy_port,
    request,
    service,
    snapshot,
    table,
)

from meshcore import model as m
from meshcore.compile import Plan
from meshcore.proxy import (
    ROUTE,
    ControlPlane,
    EnvoyOptions,
    EnvoyStartError,
    EnvoySupervisor,
    NackError,
    ProxyConfigError,
    socket_in_netns,
)

pytestmark = pytest.mark.envoy
Apply = Callable[[m.Snapshot], Plan]


@attrs.define
class Load:
    """Clients sending requests back to back over keep-alive connections."""

    port: int
    answers: list[str] = attrs.field(factory=list)
    failures: list[str] = attrs.field(factory=list)
    stop: threading.Event = attrs.field(factory=threading.Event)
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.stop.is_set():
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.answers.append(json.loads(body)["name"])
                    else:
                        self.failures.append(f"{resp.status} {resp.getheader('x-envoy-response-flags', '')} {body[:80]!r}")
                if resp.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failures.append(repr(exc))
                conn.close()
        conn.close()


@pytest.fixture
def load_factory() -> Iterator[Callable[[int, int], Load]]:
    started: list[tuple[Load, list[threading.Thread]]] = []

    def start(port: int, clients: int = 4) -> Load:
        load = Load(port)
        threads = [threading.Thread(target=load.run, daemon=True) for _ in range(clients)]
        for t in threads:
            t.start()
        started.append((load, threads))
        return load

    yield start
    for load, threads in started:
        load.stop.set()
        for t in threads:
            t.join(10)


def test_route_changes_under_load_lose_no_request(apply: Apply, load_factory: Callable[[int, int], Load]) -> None:
    with backends("a", "b") as (a, b):
        web, svc_b = service("web", [a]), service("b", [b])
        to_a = table(web, m.HttpRoute("r", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/"))], destinations=[dest(web)]))
        to_b = table(web, m.HttpRoute("r", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/"))], destinations=[dest(svc_b)]))
        workloads = [a.workload(), b.workload()]
        get_only = m.AuthorizationPolicy("get-only", "shop", m.WorkloadSelector("shop", {"app": "a"}), "ALLOW",
                                         [m.PolicyRule(operations=[m.Operation(methods=["GET"])])])
        plan = apply(snapshot([web], [to_a], workloads))
        load = load_factory(proxy_port(plan, "web"), 4)
        time.sleep(0.4)
        apply(snapshot([web, svc_b], [to_b], workloads))   # a new cluster, then the route moves to it
        time.sleep(0.4)
        apply(snapshot([web], [to_a], workloads))          # the route moves back, then b's cluster goes
        time.sleep(0.4)
        apply(snapshot([web], [to_a], workloads, [get_only]))  # the listener changes (an RBAC filter)
        time.sleep(0.4)
        with load.lock:
            before_end = len(load.answers)
        time.sleep(0.2)
        load.stop.set()
        print(f"{len(load.answers)} requests across 4 plan changes, {len(load.failures)} failed")
        assert load.failures == []
        assert {"a", "b"} <= set(load.answers)
        assert set(load.answers[before_end:]) == {"a"}
        assert len(load.answers) > 200


def test_cluster_change_reaches_envoy(apply: Apply) -> None:
    """A changed cluster is rebuilt by Envoy and needs its endpoints again (same names)."""
    with backends("web") as (web,):
        svc = service("web", [web])
        routes = table(svc, m.HttpRoute("r", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/"))], destinations=[dest(svc)]))
        apply(snapshot([svc], [routes]))
        plan = apply(snapshot([attrs.evolve(svc, lb_policy="LEAST_REQUEST")], [routes]))
        assert request(proxy_port(plan, "web")).status == 200


def test_rejected_route_is_named_and_the_previous_one_keeps_serving(proxy_env: ProxyEnv, port_base: int) -> None:
    with backends("web", "v2") as (web, v2):
        svc, svc_v2 = service("web", [web]), service("v2", [v2])
        good = table(svc, m.HttpRoute("v2", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/v2"))],
                                      destinations=[dest(svc_v2)]),
                     m.HttpRoute("rest", destinations=[dest(svc)]))
        plan = proxy_env.apply(snapshot([svc, svc_v2], [good]), port_base)
        port = proxy_port(plan, "web")
        where = m.Source("HTTPRoute", "shop", "line-break", file="routes.yaml", line=12)
        # The model does not check header values; Envoy refuses one holding a line break.
        bad_route = m.HttpRoute("v2", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/v2"))],
                                request_headers=m.HeaderModifier(set=[("x-note", "a\r\nx-injected: 1")]),
                                destinations=[dest(svc_v2)], source=where)
        bad = table(svc, bad_route, m.HttpRoute("rest", destinations=[dest(svc)]))
        cp = proxy_env.cp
        version = cp.set_plan(proxy_env.node, compile_for(snapshot([svc, svc_v2], [bad]), proxy_env.node, port_base).envoy,
                              SETTINGS)
        with pytest.raises(NackError) as raised:
            cp.wait_synced(proxy_env.node, version, timeout=10)
        (nack,) = raised.value.nacks
        assert nack.type_url == ROUTE and nack.resources == ("shop/web:80",)
        assert [o.source for o in nack.origins] == [where], nack.message
        assert "HeaderValueValidationError.Value" in nack.message, nack.message
        (diag,) = nack.diagnostics()
        assert diag.code == "MC5001" and diag.source == where and "HTTP route 0 (v2)" in diag.message
        assert cp.nacks(proxy_env.node)[-1] == nack
        assert cp.status(proxy_env.node).errors == (nack,)
        # Envoy keeps the routes it had.
        assert request(port, "/v2/x").name == "v2"
        fixed = proxy_env.apply(snapshot([svc, svc_v2], [good]), port_base)
        assert proxy_port(fixed, "web") == port and cp.status(proxy_env.node).errors == ()
        assert request(port, "/v2/x").name == "v2"


def test_unexpressible_plan_changes_nothing(proxy_env: ProxyEnv, port_base: int) -> None:
    with backends("web") as (web,):
        svc = service("web", [web])
        proxy_env.apply(snapshot([svc], [table(svc, m.HttpRoute("r", destinations=[dest(svc)], timeout_ms=1000))]), port_base)
        before = proxy_env.cp.status(proxy_env.node).version
        where = m.Source("HTTPRoute", "shop", "odd-redirect")
        odd = table(svc, m.HttpRoute("r", redirect=m.Redirect(path="/x", status=305), source=where))
        plan = compile_for(snapshot([svc], [odd]), proxy_env.node, port_base)
        with pytest.raises(ProxyConfigError) as raised:
            proxy_env.cp.set_plan(proxy_env.node, plan.envoy, SETTINGS)
        assert raised.value.origin is not None and raised.value.origin.source == where
        assert "305" in str(raised.value) and raised.value.diagnostic().source == where
        assert proxy_env.cp.status(proxy_env.node).version == before


def test_killed_envoy_is_restarted_and_resynced(control_plane: ControlPlane, proxy_env: ProxyEnv) -> None:
    node = f"mcpx-restart-{os.getpid()}"
    sup = EnvoySupervisor(EnvoyOptions(node, control_plane.endpoint, proxy_env.work / "restart", concurrency=1,
                                       drain_time_s=1, restart_backoff_s=0.1))
    with backends("web") as (web,):
        svc = service("web", [web])
        plan = compile_for(snapshot([svc], [table(svc, m.HttpRoute("r", destinations=[dest(svc)], timeout_ms=2000))]),
                           node, free_port_block(PORT_BLOCK))
        version = control_plane.set_plan(node, plan.envoy, SETTINGS)
        sup.start()
        try:
            control_plane.wait_synced(node, version, timeout=10)
            port = proxy_port(plan, "web")
            assert request(port).name == "web"
            first = sup.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            killed = time.monotonic()
            deadline = killed + 15
            while (sup.pid in (None, first) or not sup.is_ready()) and time.monotonic() < deadline:
                time.sleep(0.02)
            control_plane.wait_synced(node, version, timeout=10)
            assert request(port).name == "web"
            recovered = time.monotonic() - killed
            assert sup.restarts == 1 and [e.returncode for e in sup.exits] == [-signal.SIGKILL]
            assert sup.pid != first
            assert recovered < 5, f"recovery took {recovered:.2f}s"
            print(f"killed Envoy replaced and resynced in {recovered * 1000:.0f} ms")
        finally:
            sup.stop(drain_timeout=0)
        assert sup.pid is None


@pytest.mark.root
def test_envoy_runs_in_a_network_namespace(control_plane: ControlPlane, proxy_env: ProxyEnv) -> None:
    netns = f"mcpx-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    node = f"mcpx-netns-{os.getpid()}"
    sup = EnvoySupervisor(EnvoyOptions(node, control_plane.endpoint, proxy_env.work / "netns", netns=netns,
                                       concurrency=1, drain_time_s=1))
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        svc = service("web", [])
        plan = compile_for(snapshot([svc], [table(svc, m.HttpRoute(
            "hello", direct_response=m.DirectResponse(200, "from the namespace\n")))]), node, 15001)
        version = control_plane.set_plan(node, plan.envoy, SETTINGS)
        sup.start()
        control_plane.wait_synced(node, version, timeout=10)
        # The listener is on the namespace's loopback, not on this one.
        sock = socket_in_netns(netns)
        with sock:
            sock.settimeout(5)
            sock.connect(("127.0.0.1", proxy_port(plan, "web")))
            sock.sendall(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"from the namespace\n")
        assert sup.admin().ready()
    finally:
        sup.stop(drain_timeout=0)
        subprocess.run(["ip", "netns", "del", netns], check=False)
    assert sup.pid is None and not Path(f"/run/netns/{netns}").exists()


def test_emptied_and_restored_plan(apply: Apply) -> None:
    """Envoy drops its subscriptions when everything goes, and gets all of it back after."""
    with backends("web") as (web,):
        svc = service("web", [web])
        routes = table(svc, m.HttpRoute("r", destinations=[dest(svc)], timeout_ms=1000))
        port = proxy_port(apply(snapshot([svc], [routes])), "web")
        apply(snapshot([svc], []))
        with pytest.raises(OSError):
            request(port)
        assert request(proxy_port(apply(snapshot([svc], [routes])), "web")).name == "web"


def test_envoy_outlives_a_control_plane_restart(proxy_env: ProxyEnv) -> None:
    """An agent restart: Envoy keeps serving its last configuration and resyncs from the new server."""
    node = f"mcpx-cp-{os.getpid()}"
    socket_path = proxy_env.work / "restart-cp.sock"
    with backends("web") as (web,):
        svc = service("web", [web])
        plan = compile_for(snapshot([svc], [table(svc, m.HttpRoute("r", destinations=[dest(svc)], timeout_ms=2000))]),
                           node, free_port_block(PORT_BLOCK))
        port = proxy_port(plan, "web")
        first = ControlPlane(f"unix:{socket_path}").start()
        sup = EnvoySupervisor(EnvoyOptions(node, first.endpoint, proxy_env.work / "cp-restart", concurrency=1,
                                           drain_time_s=1))
        second = None
        try:
            version = first.set_plan(node, plan.envoy, SETTINGS)
            sup.start()
            first.wait_synced(node, version, timeout=10)
            first.stop(grace=0)
            assert request(port).name == "web"  # no control plane: Envoy keeps what it has
            second = ControlPlane(f"unix:{socket_path}").start()
            started = time.monotonic()
            second.wait_synced(node, second.set_plan(node, plan.envoy, SETTINGS), timeout=15)
            print(f"Envoy resynced from a restarted control plane in {(time.monotonic() - started) * 1000:.0f} ms")
            assert request(port).name == "web" and sup.restarts == 0
        finally:
            sup.stop(drain_timeout=0)
            first.stop()
            if second is not None:
                second.stop()


def test_envoy_that_cannot_start_is_reported_with_its_log(control_plane: ControlPlane, proxy_env: ProxyEnv) -> None:
    sup = EnvoySupervisor(EnvoyOptions("mcpx-broken", control_plane.endpoint, proxy_env.work / "broken",
                                       extra_args=("--no-such-flag",)))
    with pytest.raises(EnvoyStartError, match=r"(?s)exited \(status 1\) before it was ready.*no-such-flag"):
        sup.start(timeout=10)
    assert sup.pid is None and sup.log_path.exists()
    with pytest.raises(EnvoyStartError, match="network namespace 'mcpx-absent' does not exist"):
        EnvoySupervisor(EnvoyOptions("mcpx-broken", control_plane.endpoint, proxy_env.work / "broken",
                                     netns="mcpx-absent")).start()
