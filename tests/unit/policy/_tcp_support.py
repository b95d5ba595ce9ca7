"""Shared setup for the node proxy's TCP authorization tests: the shop/db service on a TCP port of the proxy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meshcore import model as m
from meshcore.compile import CompileOptions, Plan, compile_plan
from meshcore.proxy import LISTENER, build_resources

NS = "shop"
DB = m.ServiceRef(NS, "db")
ON_DB = m.WorkloadSelector(NS, {"app": "db"})
#: A connect timeout: what puts a TCP port on the node proxy.
TIMEOUT = m.TrafficPolicy(DB, connection_pool=m.ConnectionPool(connect_timeout_ms=500))
#: Compile options with the node proxy enabled.
PROXY_OPTIONS = CompileOptions(proxy_enabled=True, proxy_port_base=15001, proxy_port_range=8)


def db_plan(workloads: Sequence[m.Workload], policies: Sequence[m.AuthorizationPolicy] = (),
            backends: Sequence[m.Workload] = (), routes: Sequence[m.RouteTable] = (),
            traffic: Sequence[m.TrafficPolicy] = (TIMEOUT,), extra: Sequence[m.Service] = ()) -> Plan:
    """The plan of node n1 for ``workloads`` and a TCP service shop/db (port 5432) on ``backends``."""
    port = m.ServicePort(5432, "TCP", "pg", backends=tuple(m.Backend(w.addresses[0], 5432, workload=w.ref)
                                                           for w in backends))
    db = m.Service("db", NS, vips=("10.96.0.5",), ports=(port,))
    snap = m.Snapshot(
        namespaces=(m.Namespace(NS), m.Namespace("evil")), services=(db, *extra),
        workloads=tuple(workloads), policies=tuple(policies), traffic_policies=tuple(traffic),
        routes=tuple(routes))
    return compile_plan(snap, "n1", PROXY_OPTIONS)


def db_listener_json(plan: Plan) -> dict[str, Any]:
    """The Envoy listener of shop/db:5432 as JSON."""
    return dict(build_resources(plan.envoy).of(LISTENER)["shop/db:5432"].body)
