"""The three proxy modes side by side in one lab: latency, requests/s, CPU per 1,000 requests, memory per proxy.

One client and one server per mode, in the same mode, on one lab node:

- ``none``: ``c-none`` → service ``app-none`` → ``app-none``: the kernel balances, no proxy;
- ``node``: ``c-node`` → service ``app-node`` (an HTTPRoute: the port needs L7) → the node's
  shared Envoy → ``app-node``: one hop;
- ``sidecar``: ``c-side`` → service ``app-side`` (the same HTTPRoute) → ``c-side``'s own
  Envoy (which routes) → ``app-side``'s own Envoy (inbound) → the app: two hops, as in a
  sidecar mesh — steered by bpf/sidecar.bpf.c, configured over ADS like the node Envoy.

Every server is an Envoy answering every request with a fixed 200 (as in bench/l7.py), so
the application costs the same in each. Two measurements per mode, rounds interleaved
(every other round reversed), medians over rounds:

(a) ``wrk`` over ``--connections`` kept-alive connections for ``--duration`` seconds:
    requests/s, p50, p99, and the proxies' CPU microseconds per request;
(b) a paced client at ``--rate`` requests/s (1,000 by default, over 4 kept-alive
    connections) for ``--duration`` seconds: the proxies' vCPU (CPU seconds per second),
    CPU milliseconds per 1,000 requests, and each proxy's resident memory (RSS) at the end.
    At 1,000 requests/s this is what Istio publishes for its own proxies (1.24: a sidecar
    ~0.20 vCPU and ~60 MB, a waypoint ~0.25 vCPU), printed beside as an anchor; different
    hardware and load generators, so compare orders of magnitude, not digits.

"Proxies" are the Envoys on the mode's path: none for ``none``, the node Envoy for
``node`` (shared by every workload of the node: its memory is per node, not per pod), the
two sidecars for ``sidecar`` (its memory is per pod). Run as root:
``PYTHONPATH=src .venv/bin/python bench/modes.py [--duration 5] [--rounds 3] [--rate 1000]``.
Everything lives in a lab named ``mo<pid>`` that is torn down at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import cpu_seconds, lab_bench_parser, rss_bytes
from l7 import APP_PORT, backend_container, lab_files, wrk

from meshcore.lab import Lab

MODES = {"none": "none", "node": "node", "sidecar": "sidecar"}
#: Istio 1.24's published figures at 1,000 requests/s (https://istio.io/v1.24/docs/ops/deployment/performance-and-scalability/).
ANCHOR = {"sidecar": "Istio 1.24 sidecar: ~0.20 vCPU, ~60 MB per proxy",
          "node": "Istio 1.24 waypoint: ~0.25 vCPU",
          "none": "Istio 1.24 ztunnel (L4 only): ~0.06 vCPU"}

#: Paced requests: ``rate`` per second for ``seconds`` over ``connections`` kept-alive connections.
PACED = r"""
import http.client, json, sys, threading, time
host, rate, seconds, connections = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
done, failed = [0], [0]
lock = threading.Lock()
def run(n):
    c = http.client.HTTPConnection(host, 80, timeout=5)
    interval = connections / rate
    start = time.monotonic()
    i = 0
    while True:
        due = start + i * interval
        if due - start >= seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            c.request("GET", "/api/x")
            ok = c.getresponse().read() and True
        except Exception:
            ok = False
            c.close()
            c = http.client.HTTPConnection(host, 80, timeout=5)
        with lock:
            done[0] += 1
            failed[0] += 0 if ok else 1
        i += 1
threads = [threading.Thread(target=run, args=(n,)) for n in range(connections)]
begin = time.monotonic()
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"requests": done[0], "failed": failed[0], "seconds": time.monotonic() - begin}))
"""


def manifests(backend_cfg: Path) -> str:
    """A client and a server per mode, a service per server; the node and sidecar ones routed."""
    out = []
    for short, mode in (("none", "none"), ("node", "node"), ("side", "sidecar")):
        out.append(f"""
apiVersion: v1
kind: Pod
metadata: {{name: c-{short}, annotations: {{meshcore.io/proxy-mode: {mode}}}}}
spec:
  containers: [{{name: c, image: busybox, command: ["sleep", "infinity"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: app-{short}, labels: {{app: app-{short}}}, annotations: {{meshcore.io/proxy-mode: {mode}}}}}
spec:
  containers:
{backend_container(backend_cfg)}
---
apiVersion: v1
kind: Service
metadata: {{name: app-{short}}}
spec:
  selector: {{app: app-{short}}}
  ports: [{{name: http, port: 80, targetPort: {APP_PORT}}}]
""")
        if short != "none":
            out.append(f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app-{short}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: app-{short}, port: 80}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    backendRefs: [{{name: app-{short}, port: 80}}]
""")
    return "---".join(out)


def _client(mode: str) -> str:
    return {"none": "c-none", "node": "c-node", "sidecar": "c-side"}[mode]


def _host(mode: str) -> str:
    return {"none": "app-none", "node": "app-node", "sidecar": "app-side"}[mode]


def proxies(lab: Lab) -> dict[str, dict[str, int]]:
    """Each mode's proxies on its path: name → pid."""
    status = lab.status()
    pods = {p.name: lab.pod(p.name) for p in status.pods}
    sidecar = {name: pods[name].sidecar.pid for name in ("c-side", "app-side") if pods[name].sidecar is not None}
    return {"none": {}, "node": {"node-envoy": status.agent.proxy.pid}, "sidecar": sidecar}


def loaded(lab: Lab, mode: str, duration: int, connections: int, watch: dict[str, int]) -> dict[str, float]:
    """One wrk run from the mode's client: requests/s, p50, p99 and the proxies' CPU µs per request."""
    out = wrk(lab, f"http://{_host(mode)}/api/x", duration, connections, watch, client=_client(mode))
    out["proxy_us_per_request"] = sum(out[f"us/{name}"] for name in watch)
    return out


def paced(lab: Lab, mode: str, rate: float, duration: int, watch: dict[str, int]) -> dict[str, float]:
    """The paced client at ``rate``: the proxies' vCPU, CPU ms per 1,000 requests, RSS per proxy."""
    before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    start = time.monotonic()
    result = lab.run(_client(mode), [sys.executable, "-S", "-c", PACED, _host(mode), str(rate), str(duration), "4"],
                     timeout=duration + 60)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"the paced client failed: {result.stderr.decode(errors='replace')}")
    done = json.loads(result.stdout)
    cpu = sum(cpu_seconds(pid) - before[n] for n, pid in watch.items())
    out = {"rate": done["requests"] / done["seconds"], "failed": float(done["failed"]),
           "vcpu": cpu / elapsed, "cpu_ms_per_1000": cpu * 1e6 / max(1, done["requests"])}
    for name, pid in watch.items():
        out[f"rss_mb/{name}"] = rss_bytes(pid) / 2**20
    return out


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(load: dict[str, list[dict[str, float]]], rated: dict[str, list[dict[str, float]]],
           watch: dict[str, dict[str, int]], args: argparse.Namespace) -> dict[str, Any]:
    """Print the table and return the figures."""
    figures: dict[str, Any] = {}
    print(f"\nwrk, {args.connections} connections, {args.duration} s, median of {args.rounds} rounds; "
          f"then {args.rate:g} requests/s paced")
    print(f"{'mode':8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'µs/req':>7} | {'vCPU':>5} {'ms/1000':>7} "
          f"{'MB per proxy':>14}  anchor")
    for mode in MODES:
        w, p = load[mode], rated[mode]
        mem = {name: _median(p, f"rss_mb/{name}") for name in watch[mode]}
        row = {"rps": _median(w, "rps"), "p50_ms": _median(w, "p50"), "p99_ms": _median(w, "p99"),
               "proxy_us_per_request": _median(w, "proxy_us_per_request"), "paced_rate": _median(p, "rate"),
               "vcpu": _median(p, "vcpu"), "cpu_ms_per_1000": _median(p, "cpu_ms_per_1000"),
               "failed": sum(r["failed"] for r in p) + sum(r["errors"] for r in w), "rss_mb": mem}
        figures[mode] = row
        shown = ", ".join(f"{n} {v:.0f}" for n, v in mem.items()) or "-"
        print(f"{mode:8} {row['rps']:8.0f} {row['p50_ms']:7.2f} {row['p99_ms']:7.2f} "
              f"{row['proxy_us_per_request']:7.0f} | {row['vcpu']:5.2f} {row['cpu_ms_per_1000']:7.0f} "
              f"{shown:>14}  {ANCHOR[mode]}")
    if any(f["failed"] for f in figures.values()):
        print("some requests failed: " + ", ".join(f"{m} {f['failed']:.0f}" for m, f in figures.items()))
    return figures


def main(argv: list[str] | None = None) -> int:
    """Set up the lab, measure the three modes in interleaved rounds, print the figures."""
    parser = lab_bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="paced requests per second (default 1000)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/modes.py needs root (network namespaces, cgroups, BPF)", file=sys.stderr)
        return 2
    lab = Lab(f"mo{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="mcbench-modes-") as tmp:
        lab_yaml = lab_files(Path(tmp), manifests)
        try:
            up = lab.up([lab_yaml], timeout=90)
            if up.warnings or not all(a.ok for a in up.agents):
                raise RuntimeError(f"the lab is not ready: {up.warnings} {up.agents}")
            watch = proxies(lab)
            load: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
            rated: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
            for r in range(args.rounds + 1):  # round 0 warms every path up and is not counted
                order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
                for mode in order:
                    result = loaded(lab, mode, args.duration if r else 1, args.connections, watch[mode])
                    paced_result = paced(lab, mode, args.rate, args.duration if r else 1, watch[mode])
                    if r:
                        load[mode].append(result)
                        rated[mode].append(paced_result)
            figures = report(load, rated, watch, args)
            if args.json:
                print(json.dumps(figures, indent=2))
        finally:
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
