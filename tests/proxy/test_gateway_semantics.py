"""Gateway API semantics through a real Envoy: path-element prefixes, the invalid-backend
share answered with 500, hostnames as virtual hosts, and a refused share of TCP connections."""

from __future__ import annotations

import collections
import http.client
from collections.abc import Callable

import pytest
from _proxy_support import NS, backends, dest, proxy_port, request, service, snapshot, table

from meshcore import model as m
from meshcore.compile import Datapath, Plan

pytestmark = pytest.mark.envoy
Apply = Callable[[m.Snapshot], Plan]


def _prefix(value: str) -> list[m.HttpMatch]:
    return [m.HttpMatch(path=m.StringMatch("PathPrefix", value))]


def test_path_prefix_matches_whole_path_elements(apply: Apply) -> None:
    with backends("web", "foo", "bar") as (web, foo, bar):
        svcs = [service(b.name, [b]) for b in (web, foo, bar)]
        routes = table(
            svcs[0],
            m.HttpRoute("foo", matches=_prefix("/foo"), destinations=[dest("foo")]),
            m.HttpRoute("bar", matches=_prefix("/bar/"), destinations=[dest("bar")]),  # trailing "/" is ignored
            m.HttpRoute("all", matches=_prefix("/"), destinations=[dest("web")]),
        )
        port = proxy_port(apply(snapshot(svcs, [routes])), "web")
        cases = {"/foo": "foo", "/foo/": "foo", "/foo/x/y": "foo", "/foobar": "web", "/fo": "web",
                 "/bar": "bar", "/bar/x": "bar", "/barx": "web", "/": "web", "/other?foo": "web"}
        assert {path: request(port, path).name for path in cases} == cases


def test_invalid_backend_share_is_answered_with_500(apply: Apply) -> None:
    with backends("a") as (a,):
        svc_a = service("a", [a])
        web = service("web", [a])
        routes = table(
            web,
            m.HttpRoute("gone", matches=_prefix("/gone"), destinations=[dest(svc_a, 0)],
                        invalid_backends=m.InvalidBackends(1)),
            m.HttpRoute("half", destinations=[dest(svc_a, 1)], invalid_backends=m.InvalidBackends(1)),
        )
        plan = apply(snapshot([web, svc_a], [routes]))
        port = proxy_port(plan, "web")
        assert request(port, "/gone/x").status == 500, "every request of a route with only invalid backends"
        counts: collections.Counter[int] = collections.Counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(400):
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            counts[resp.status] += 1
        conn.close()
        assert set(counts) == {200, 500}, counts
        # 400 draws at p=0.5: sigma is 2.5 points; 10 points is 4 sigma.
        assert 0.40 <= counts[500] / 400 <= 0.60, counts


def test_route_tables_with_hostnames_are_virtual_hosts(apply: Apply) -> None:
    with backends("exact", "wild", "rest", "only") as (exact, wild, rest, only):
        svcs = [service(b.name, [b]) for b in (exact, wild, rest, only)]
        gw = service("gw", [rest], vip="10.96.0.50")
        lone = service("lone", [only], vip="10.96.0.51")

        def plain(svc: m.Service, to: str, hosts: tuple[str, ...] = ()) -> m.RouteTable:
            return m.RouteTable(svc.ref, 80, "L7", hostnames=hosts, http=[m.HttpRoute(to, destinations=[dest(to)])],
                                source=m.Source("HTTPRoute", NS, to))

        tables = [plain(gw, "exact", ("a.example",)), plain(gw, "wild", ("*.b.example",)), plain(gw, "rest"),
                  plain(lone, "only", ("only.example",))]
        plan = apply(snapshot([gw, lone, *svcs], tables))
        decisions = {d.service.name: d for d in plan.decisions}
        assert decisions["gw"].datapath is Datapath.ENVOY
        assert decisions["gw"].reason.startswith("serves hostnames a.example, *.b.example")
        assert decisions["lone"].datapath is Datapath.ENVOY, "a table limited to hostnames is not an L4 split"

        port = proxy_port(plan, "gw")
        cases = {"a.example": "exact", "a.example:80": "exact", "x.b.example": "wild", "y.x.b.example": "wild",
                 "b.example": "rest", "other.example": "rest"}
        got = {host: request(port, "/", headers={"host": host}).name for host in cases}
        assert got == cases
        lone_port = proxy_port(plan, "lone")
        assert request(lone_port, "/", headers={"host": "only.example"}).name == "only"
        assert request(lone_port, "/", headers={"host": "other.example"}).status == 404, "no catch-all table"


def test_tcp_invalid_share_is_refused(apply: Apply) -> None:
    with backends("db") as (db,):
        svc_db = service("db", [db], port=5432, protocol="TCP")
        front = service("front", [db], port=5432, protocol="TCP", vip="10.96.0.60")
        routes = m.RouteTable(front.ref, 5432, "L4", tcp=[m.TcpRoute("split", destinations=[
            m.Destination(svc_db.ref, 5432, 1)], invalid_weight=1)], source=m.Source("TCPRoute", NS, "split"))
        plan = apply(snapshot([front, svc_db], [routes]))
        (decision,) = [d for d in plan.decisions if d.service == front.ref]
        assert decision.datapath is Datapath.ENVOY and "refuses a share of connections" in decision.reason
        port = proxy_port(plan, "front", 5432)
        outcomes: collections.Counter[str] = collections.Counter()
        for _ in range(200):
            try:
                answer = request(port, "/")
                outcomes["db" if answer.name == "db" else "other"] += 1
            except (ConnectionError, http.client.HTTPException):
                outcomes["refused"] += 1
        assert set(outcomes) == {"db", "refused"}, outcomes
        # 200 draws at p=0.5: sigma is 3.5 points; 15 points is over 4 sigma.
        assert 0.35 <= outcomes["refused"] / 200 <= 0.65, outcomes
