"""Cost of routes that depend on the client: compile with and without them, side by side.

A node with N pods in 20 namespaces and S proxied HTTP services. In the "plain" run each
service has one header route; in the "per-client" run the same route is limited to the
clients of 5 namespaces (as `exportTo` or `sourceNamespace` give), and in "own-namespace"
to the clients of the service's own namespace (20 different conditions), so compile
classifies the node's pods (once per distinct condition set) and builds one extra route
configuration per view.
Prints the compile time of both, their ratio, and the number of filter chains and route
configurations; both runs are interleaved so the machine's noise hits them alike.

    .venv/bin/python bench/client_views.py [--pods 1000] [--services 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from meshcore import model as m
from meshcore.compile import CompileOptions, compile_plan

NAMESPACES = 20


def snapshot(pods: int, services: int, kind: str) -> m.Snapshot:
    """The synthetic node: ``pods`` clients, ``services`` proxied services each with one backend pod."""
    namespaces = tuple(m.Namespace(f"ns-{i}") for i in range(NAMESPACES))
    workloads = [
        m.Workload(f"pod-{i}", f"ns-{i % NAMESPACES}", m.Identity(f"ns-{i % NAMESPACES}", "default"),
                   addresses=(f"10.{1 + i // 65000}.{(i // 250) % 256}.{i % 250 + 1}",), labels={"app": f"a{i % 7}"},
                   node="n1")
        for i in range(pods)
    ]
    svcs, tables = [], []
    for s in range(services):
        ns = f"ns-{s % NAMESPACES}"
        clients = {"plain": None, "per-client": m.ClientMatch(namespaces=[f"ns-{i}" for i in range(5)]),
                   "own-namespace": m.ClientMatch(namespaces=[ns])}[kind]
        backend = workloads[s % pods]
        svc = m.Service(f"svc-{s}", ns, vips=(f"10.96.{s // 250}.{s % 250 + 1}",), ports=(m.ServicePort(
            80, "HTTP", "http", backends=(m.Backend(backend.addresses[0], 8080, workload=backend.ref),)),))
        svcs.append(svc)
        tables.append(m.RouteTable(svc.ref, 80, "L7", http=(
            m.HttpRoute("canary", matches=[m.HttpMatch(headers=[m.HeaderMatch("x-canary", m.StringMatch("Exact", "1"))],
                                                       clients=clients)],
                        destinations=[m.Destination(svc.ref)], timeout_ms=1000),
            m.HttpRoute("rest", destinations=[m.Destination(svc.ref)]),
        )))
    return m.Snapshot(namespaces=namespaces, workloads=tuple(workloads), services=tuple(svcs), routes=tuple(tables))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    snaps = {kind: snapshot(args.pods, args.services, kind) for kind in ("plain", "per-client", "own-namespace")}
    options = CompileOptions(proxy_enabled=True, proxy_port_base=20000, proxy_port_range=10000)
    times: dict[str, list[float]] = {kind: [] for kind in snaps}
    plans = {}
    for _ in range(args.rounds):
        for kind, snap in snaps.items():
            start = time.perf_counter()
            plans[kind] = compile_plan(snap, "n1", options)
            times[kind].append(time.perf_counter() - start)
    print(f"{args.pods} pods, {args.services} proxied services, {args.rounds} rounds (median)")
    for kind, plan in plans.items():
        chains = sum(1 + len(lst.client_views) for lst in plan.envoy.listeners)
        print(f"  {kind:<13} compile {statistics.median(times[kind]) * 1000:8.1f} ms   "
              f"{chains} HTTP filter chains, {len(plan.envoy.route_configs)} route configurations")
    for kind in ("per-client", "own-namespace"):
        ratio = statistics.median(times[kind]) / statistics.median(times["plain"])
        print(f"  {kind} / plain compile time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
