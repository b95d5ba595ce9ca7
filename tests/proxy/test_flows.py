"""L7 flows: Envoy's access logs over gRPC, decoded into flow records."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from _proxy_support import ProxyEnv, backends, dest, proxy_port, request, service, snapshot, table

from meshcore import model as m
from meshcore.compile import Plan
from meshcore.proxy import FlowRecord, FlowSubscription

pytestmark = pytest.mark.envoy
Apply = Callable[[m.Snapshot], Plan]


def collect(flows: FlowSubscription, listener: str, count: int, timeout: float = 5.0) -> list[FlowRecord]:
    """``count`` flows of ``listener`` in request order (others — earlier tests' stragglers — are skipped).

    Each Envoy worker has its own log stream, so arrival order is not request order.
    """
    got: list[FlowRecord] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        flow = flows.get(timeout=0.1)
        if flow is not None and flow.listener == listener:
            got.append(flow)
    return sorted(got, key=lambda f: f.time)


def test_access_log_flows(apply: Apply, proxy_env: ProxyEnv) -> None:
    with backends("web") as (web,):
        svc = service("web", [web])
        routes = table(
            svc,
            m.HttpRoute("api", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/api"))], destinations=[dest(svc)]),
            m.HttpRoute("teapot", matches=[m.HttpMatch(path=m.StringMatch("Exact", "/tea"))],
                        direct_response=m.DirectResponse(418)),
        )
        port = proxy_port(apply(snapshot([svc], [routes], [web.workload()])), "web")
        with proxy_env.cp.subscribe_flows() as flows:
            assert request(port, "/api/items?x=1", method="POST", body=b"abc").status == 200
            assert request(port, "/tea").status == 418
            assert request(port, "/nowhere").status == 404
            got = {f.path: f for f in collect(flows, "shop/web:80", 3)}
        assert set(got) == {"/api/items?x=1", "/tea", "/nowhere"}
        api = got["/api/items?x=1"]
        assert (api.method, api.status, api.node) == ("POST", 200, proxy_env.node)
        assert (api.route, api.cluster, api.upstream_workload) == ("shop/web:80/api", "shop/web:80", "shop/web")
        assert api.upstream_address == f"127.0.0.2:{web.port}" and api.authority == f"127.0.0.1:{port}"
        assert api.downstream_address.startswith("127.0.0.1:") and 0 < api.latency_ms < 1000
        assert api.protocol == "HTTP/1.1" and api.bytes_received == 3 and not api.flags
        tea = got["/tea"]
        assert (tea.status, tea.route, tea.upstream_address, tea.cluster) == (418, "shop/web:80/teapot", "", "")
        assert (got["/nowhere"].status, got["/nowhere"].flags) == (404, ("NR",))
        assert "POST 127.0.0.1" in str(api) and "→ shop/web" in str(api)


def test_flow_journal_stores_batches_undecoded_and_reads_them_back(apply: Apply, proxy_env: ProxyEnv) -> None:
    from meshcore.proxy import FlowJournalReader

    path = proxy_env.work / f"journal-{time.monotonic_ns()}.bin"
    journal = proxy_env.cp.record_flows(path)
    try:
        with backends("web") as (web,):
            svc = service("web", [web])
            routes = table(svc, m.HttpRoute("api", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/api"))],
                                            destinations=[dest(svc)]))
            port = proxy_port(apply(snapshot([svc], [routes], [web.workload()])), "web")
            for i in range(3):
                assert request(port, f"/api/j{i}").status == 200
            deadline = time.monotonic() + 5
            got: list[dict[str, object]] = []
            while len(got) < 3 and time.monotonic() < deadline:  # Envoy flushes its buffer every second
                time.sleep(0.2)
                got = [f for f in FlowJournalReader(path).read() if str(f["path"]).startswith("/api/j")]
    finally:
        proxy_env.cp.stop_recording(journal)
    assert sorted(str(f["path"]) for f in got) == ["/api/j0", "/api/j1", "/api/j2"]
    assert all((f["method"], f["status"], f["upstreamPod"], f["listener"], f["node"]) ==
               ("GET", 200, "shop/web", "shop/web:80", proxy_env.node) for f in got), got
