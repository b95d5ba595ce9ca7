"""The access-log file with a real Envoy: the same flows as the gRPC access log, every request once across rotations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest
from _proxy_support import NS, SETTINGS, ProxyEnv, backends, compile_for, dest, proxy_port, request, service, snapshot, table
from test_flows import collect

from meshcore import model as m
from meshcore.compile import Plan
from meshcore.observe import Flow
from meshcore.proxy import FlowSubscription

pytestmark = pytest.mark.envoy
CLIENT, STRANGER = "127.0.0.20", "127.0.0.21"


def _workload(name: str, address: str) -> m.Workload:
    return m.Workload(name, NS, m.Identity(NS, name), addresses=(address,), labels={"app": name})


def _snapshot(web: m.Workload, svc: m.Service) -> m.Snapshot:
    # Nothing listens there: requests routed to it fail to connect (UF).
    gone = m.Service("gone", NS, vips=("10.96.0.9",), ports=(m.ServicePort(80, "HTTP", "http", backends=(
        m.Backend("127.0.0.9", 9, workload=m.WorkloadRef(NS, "gone")),)),))
    empty = m.Service("empty", NS, vips=("10.96.0.8",), ports=(m.ServicePort(80, "HTTP", "http"),))
    routes = table(
        svc,
        m.HttpRoute("none", matches=[m.HttpMatch(path=m.StringMatch("Exact", "/none"))], destinations=[dest(empty)]),
        m.HttpRoute("api", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/api"))], destinations=[dest(svc)]),
        m.HttpRoute("dead", matches=[m.HttpMatch(path=m.StringMatch("Exact", "/dead"))], destinations=[dest(gone)]),
        m.HttpRoute("teapot", matches=[m.HttpMatch(path=m.StringMatch("Exact", "/tea"))],
                    direct_response=m.DirectResponse(418)),
    )
    web_only = m.WorkloadSelector(NS, {"app": "web"})
    policies = [
        m.AuthorizationPolicy("no-admin", NS, web_only, "DENY", [m.PolicyRule(operations=[m.Operation(paths=["/api/admin*"])])],
                              source=m.Source("AuthorizationPolicy", NS, "no-admin", "authz.yaml", 4)),
        m.AuthorizationPolicy("watch", NS, web_only, "AUDIT", [m.PolicyRule(operations=[m.Operation(paths=["/api/watched"])])]),
        m.AuthorizationPolicy("clients", NS, web_only, "ALLOW", [m.PolicyRule(
            sources=[m.PeerSelector(principals=["cluster.local/ns/shop/sa/client"])])]),
    ]
    return snapshot([svc, gone, empty], [routes], [web, _workload("client", CLIENT), _workload("stranger", STRANGER)],
                    policies)


def _serve(proxy_env: ProxyEnv, snap: m.Snapshot, port_base: int, access_log: Path | None) -> Plan:
    plan = compile_for(snap, proxy_env.node, port_base)
    settings = SETTINGS if access_log is None else attrs.evolve(SETTINGS, access_log_file=str(access_log))
    proxy_env.cp.wait_synced(proxy_env.node, proxy_env.cp.set_plan(proxy_env.node, plan.envoy, settings), 10)
    return plan


def _requests(port: int) -> list[int]:
    return [
        request(port, "/api/items?x=1", method="POST", body=b"abc", source=CLIENT).status,
        request(port, "/api/watched", source=CLIENT).status,
        request(port, "/api/admin/users", source=CLIENT).status,
        request(port, "/api/items", source=STRANGER).status,
        request(port, "/tea", source=CLIENT).status,
        request(port, "/nowhere", source=CLIENT).status,
        request(port, "/dead", source=CLIENT).status,
        request(port, "/none", source=CLIENT).status,
    ]


def _comparable(flow: Flow) -> Flow:
    """The flow without what differs between two runs of the same request (time, client port, latency)."""
    assert flow.l7 is not None
    return attrs.evolve(flow, time=datetime(2000, 1, 1, tzinfo=UTC), source=attrs.evolve(flow.source, port=0),
                        l7=attrs.evolve(flow.l7, latency_ms=0.0))


@pytest.fixture
def following(proxy_env: ProxyEnv) -> Iterator[Path]:
    """The node's access-log file, followed by the control plane for this test."""
    path = proxy_env.work / f"access-{time.monotonic_ns()}.log"
    proxy_env.cp.follow_access_log(proxy_env.node, path, proxy_env.envoy.reopen_access_logs, interval=0.05)
    try:
        yield path
    finally:
        proxy_env.cp.unfollow_access_log(proxy_env.node)


def test_the_file_gives_the_same_flows_as_the_grpc_log(proxy_env: ProxyEnv, port_base: int, following: Path) -> None:
    with backends("web") as (web,):
        snap = _snapshot(web.workload(), service("web", [web]))
        by: dict[str, list[Flow]] = {}
        for mode, access_log in (("grpc", None), ("file", following)):
            port = proxy_port(_serve(proxy_env, snap, port_base, access_log), "web")
            with proxy_env.cp.subscribe_flows() as flows:
                assert _requests(port) == [200, 200, 403, 403, 418, 404, 503, 503]
                by[mode] = collect(flows, "shop/web:80", 8, timeout=10)
        assert [f.l7.path for f in by["file"] if f.l7] == [
            "/api/items?x=1", "/api/watched", "/api/admin/users", "/api/items", "/tea", "/nowhere", "/dead", "/none"]
        assert [_comparable(f) for f in by["file"]] == [_comparable(f) for f in by["grpc"]]
        assert all(0 < g.l7.latency_ms < 1000 for g in by["file"] if g.l7)
        assert following.exists()


def test_every_request_is_one_flow_across_rotations(proxy_env: ProxyEnv, port_base: int, following: Path) -> None:
    # Tiny files: the follower moves the file aside and has Envoy reopen it every dozen lines.
    proxy_env.cp.unfollow_access_log(proxy_env.node)
    proxy_env.cp.follow_access_log(proxy_env.node, following, proxy_env.envoy.reopen_access_logs, interval=0.05,
                                   max_bytes=2048)
    with backends("web") as (web,):
        port = proxy_port(_serve(proxy_env, _snapshot(web.workload(), service("web", [web])), port_base, following),
                          "web")
        sent = [f"/api/n{i}" for i in range(120)]
        got: list[Flow] = []
        with proxy_env.cp.subscribe_flows() as flows:
            for i, path in enumerate(sent):
                assert request(port, path, source=CLIENT).status == 200
                if i % 30 == 29:
                    time.sleep(1.2)  # Envoy writes its buffer to the file every second
            got = _drain(flows, len(sent))
    paths = [f.l7.path for f in got if f.l7 and f.l7.path.startswith("/api/n")]
    assert sorted(paths) == sorted(sent) and len(paths) == len(sent), "every request exactly once"
    assert following.stat().st_size < 4096, "the file was moved aside and reopened (120 lines take ~18 KB)"


def _drain(flows: FlowSubscription, count: int, timeout: float = 10.0) -> list[Flow]:
    got: list[Flow] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(got) < count:
        flow = flows.get(timeout=0.1)
        if flow is not None and flow.l7 is not None and flow.l7.listener == "shop/web:80":
            got.append(flow)
    time.sleep(0.5)  # anything more would be a duplicate
    return got + [f for f in flows.drain() if f.l7 is not None and f.l7.listener == "shop/web:80"]
