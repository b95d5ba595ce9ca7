"""L7 flows: Envoy's access logs over gRPC, decoded into Flows live or stored undecoded and read back."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from _proxy_support import ProxyEnv, backends, dest, proxy_port, request, service, snapshot, table

from meshcore import model as m
from meshcore.agent import FlowJournal, FlowJournalReader
from meshcore.compile import Plan
from meshcore.model import WorkloadRef
from meshcore.observe import Enforcer, Flow, Layer, Peer, Verdict
from meshcore.proxy import FlowSubscription

pytestmark = pytest.mark.envoy
Apply = Callable[[m.Snapshot], Plan]


def collect(flows: FlowSubscription, listener: str, count: int, timeout: float = 5.0) -> list[Flow]:
    """``count`` flows of ``listener`` in request order (others — earlier tests' stragglers — are skipped).

    Each Envoy worker has its own log stream, so arrival order is not request order.
    """
    got: list[Flow] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        flow = flows.get(timeout=0.1)
        if flow is not None and flow.l7 is not None and flow.l7.listener == listener:
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
            got = {f.l7.path: f for f in collect(flows, "shop/web:80", 3) if f.l7}
        assert set(got) == {"/api/items?x=1", "/tea", "/nowhere"}
        api = got["/api/items?x=1"]
        assert api.l7 is not None
        assert (api.layer, api.enforcer, api.verdict, api.node) == (Layer.L7, Enforcer.PROXY, Verdict.FORWARDED,
                                                                   proxy_env.node)
        assert (api.l7.method, api.l7.status, api.l7.authority) == ("POST", 200, f"127.0.0.1:{port}")
        assert (api.l7.route, api.l7.cluster) == ("shop/web:80/api", "shop/web:80")
        assert api.destination == Peer("127.0.0.2", web.port, WorkloadRef("shop", "web"), "shop")
        assert api.source.address == "127.0.0.1" and api.source.port > 0 and 0 < api.l7.latency_ms < 1000
        assert api.protocol == "HTTP/1.1" and api.l7.bytes_received == 3 and not api.l7.flags
        tea = got["/tea"]
        assert tea.l7 is not None and (tea.l7.status, tea.l7.route, tea.l7.cluster) == (418, "shop/web:80/teapot", "")
        assert tea.destination == Peer()
        nowhere = got["/nowhere"].l7
        assert nowhere is not None and (nowhere.status, nowhere.flags) == (404, ("NR",))
        assert "POST /api/items?x=1 200" in str(api) and "-> shop/web:" in str(api)


def test_a_journal_records_batches_undecoded_with_the_names_of_their_time(apply: Apply, proxy_env: ProxyEnv) -> None:
    path = proxy_env.work / f"journal-{time.monotonic_ns()}" / "flows.journal"
    path.parent.mkdir()
    stop = proxy_env.cp.record_flows(FlowJournal(path))
    try:
        with backends("web") as (web,):
            svc = service("web", [web])
            routes = table(svc, m.HttpRoute("api", matches=[m.HttpMatch(path=m.StringMatch("Prefix", "/api"))],
                                            destinations=[dest(svc)]))
            port = proxy_port(apply(snapshot([svc], [routes], [web.workload()])), "web")
            for i in range(3):
                assert request(port, f"/api/j{i}").status == 200
            deadline = time.monotonic() + 5
            got: list[Flow] = []
            while len(got) < 3 and time.monotonic() < deadline:  # Envoy flushes its buffer every second
                time.sleep(0.2)
                got = [f for f in FlowJournalReader(path).read() if f.l7 and f.l7.path.startswith("/api/j")]
    finally:
        stop()
    assert sorted(f.l7.path for f in got if f.l7) == ["/api/j0", "/api/j1", "/api/j2"]
    assert all(f.l7 and (f.l7.method, f.l7.status, f.l7.listener, f.destination.workload, f.node) ==
               ("GET", 200, "shop/web:80", WorkloadRef("shop", "web"), proxy_env.node) for f in got), got
