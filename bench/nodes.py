"""Node to node vs same node: connection rate and latency across a lab's fabric.

One lab of two nodes. A client pod and one backend run on node-1, a second backend on
node-2; each backend is an Envoy answering every request with a fixed 200 (as in
bench/l7.py), behind a Service of its own (``same``, ``cross``). From the client, through
each service's ClusterIP (the socket-level LB of node-1 picks the backend):

(a) new connections: one process opens a connection and resets it (SO_LINGER 0), again
    and again, alternating between the two services in short slices (every other pair of
    slices reversed), so both paths see the same load of a shared machine; the rate is
    connections per second, the latency that of ``connect()`` (the TCP handshake);
(b) requests: wrk over ``--connections`` kept-alive connections; requests per second and
    latency, the two paths interleaved per round (every other round reversed).

Same node: client veth → node-1 → backend veth. Node to node: client veth → node-1 →
fabric bridge (another namespace) → node-2 → backend veth, with the policy programs on
both pods' veths in both cases. Ratios (node to node / same node) are medians of
per-slice (a) or per-round (b) ratios, with their interquartile range.

Run as root: ``PYTHONPATH=src .venv/bin/python bench/nodes.py [--duration 5] [--rounds 5]``.
Everything lives in a lab named ``nb<pid>`` that is torn down at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _harness import lab_bench_parser, ratio_text
from l7 import APP_PORT, CONCURRENCY, backend_container, lab_files, wait_http, wrk

from meshcore.lab import Lab

PATHS = ("same", "cross")


def manifests(backend_cfg: Path) -> str:
    """The client and a backend on node-1, another backend on node-2, a Service for each backend."""
    backends = "\n---\n".join(f"""
apiVersion: v1
kind: Pod
metadata: {{name: {path}, labels: {{app: {path}}}}}
spec:
  nodeName: {node}
  containers:
{backend_container(backend_cfg)}
---
apiVersion: v1
kind: Service
metadata: {{name: {path}}}
spec:
  selector: {{app: {path}}}
  ports: [{{name: tcp, port: 80, targetPort: {APP_PORT}}}]
""" for path, node in (("same", "node-1"), ("cross", "node-2")))
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: node-1
  containers: [{{name: c, image: busybox, command: ["sleep", "infinity"]}}]
---
{backends}
"""


# Runs in the client pod: connect-and-reset loops to each target, in alternating slices.
CONNECTIONS = r"""
import json, socket, struct, sys, time
targets, seconds, slice_s = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
reset = struct.pack("ii", 1, 0)
slices = {name: [] for name in targets}
latency = {name: [] for name in targets}
names = sorted(targets)
end = time.monotonic() + seconds
turn = 0
while time.monotonic() < end:
    for name in names if turn % 2 == 0 else names[::-1]:
        host, port = targets[name]
        count, started = 0, time.monotonic()
        stop = started + slice_s
        while time.monotonic() < stop:
            s = socket.socket(socket.AF_INET)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
            t = time.perf_counter()
            s.connect((host, port))
            latency[name].append(time.perf_counter() - t)
            s.close()
            count += 1
        slices[name].append(count / (time.monotonic() - started))
    turn += 1
def ms(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
print(json.dumps({"slices": slices, "count": {n: len(v) for n, v in latency.items()},
                  "p50": {n: ms(v, 0.5) for n, v in latency.items()},
                  "p99": {n: ms(v, 0.99) for n, v in latency.items()}}))
"""


def connections(lab: Lab, seconds: float, slice_s: float) -> dict[str, Any]:
    """Connection rates per slice and connect() latency quantiles (ms) for both paths, interleaved."""
    vips = {s.name: s.cluster_ips[0] for s in lab.status().services if s.name in PATHS}
    targets = json.dumps({path: [vips[path], 80] for path in PATHS})
    result = lab.run("client", [sys.executable, "-S", "-c", CONNECTIONS, targets, str(seconds), str(slice_s)],
                     timeout=seconds + 60)
    if result.returncode != 0:
        raise RuntimeError(f"the connection client failed: {result.stderr.decode(errors='replace')}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def main(argv: list[str] | None = None) -> int:
    """Set up the lab, measure both paths interleaved (connections, then requests), print figures and ratios."""
    parser = lab_bench_parser(__doc__.splitlines()[0], duration="seconds per wrk run", rounds=5)
    parser.add_argument("--slice", type=float, default=0.2, help="seconds per connection slice (default 0.2)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/nodes.py needs root (network namespaces, cgroups, BPF)", file=sys.stderr)
        return 2
    lab = Lab(f"nb{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="mcbench-nodes-") as tmp:
        lab_yaml = lab_files(Path(tmp), manifests)
        try:
            up = lab.up([lab_yaml], nodes=2, timeout=60)
            if not up.agents or not all(a.ok for a in up.agents):
                raise RuntimeError(f"the node agents did not apply the configuration: {up.agents}")
            placed = {p.name: p.node for p in lab.status().pods}
            if placed != {"client": "node-1", "same": "node-1", "cross": "node-2"}:
                raise RuntimeError(f"pods placed unexpectedly: {placed}")
            for path in PATHS:
                wait_http(lab, f"http://{path}/")
            connections(lab, 1.0, 0.1)  # warm-up, not counted
            conns = connections(lab, args.rounds * args.duration, args.slice)
            runs: dict[str, list[dict[str, float]]] = {p: [] for p in PATHS}
            for r in range(args.rounds + 1):  # round 0 warms both paths up and is not counted
                for path in PATHS if r % 2 == 0 else PATHS[::-1]:
                    result = wrk(lab, f"http://{path}/", args.duration if r else 1, args.connections)
                    if r:
                        runs[path].append(result)
            report(conns, runs, args)
        finally:
            lab.down()
    return 0


def report(conns: dict[str, Any], runs: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    """Medians per path, and the node-to-node / same-node ratios per slice or round."""
    print(f"(a) connections: {args.rounds * args.duration} s in {args.slice} s slices, connect and reset")
    print(f"    {'path':<6} {'conn/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'connections':>12}")
    for path in PATHS:
        print(f"    {path:<6} {statistics.median(conns['slices'][path]):8.0f} {conns['p50'][path]:8.3f} "
              f"{conns['p99'][path]:8.3f} {conns['count'][path]:12d}")
    pairs = list(zip(conns["slices"]["cross"], conns["slices"]["same"], strict=False))
    rate = [c / s for c, s in pairs if s]
    print(f"    node to node / same node: conn/s {ratio_text(rate)}, connect p50 "
          f"{conns['p50']['cross'] / conns['p50']['same']:.3f}, p99 {conns['p99']['cross'] / conns['p99']['same']:.3f}")
    print(f"(b) requests: {args.rounds} rounds × {args.duration} s, wrk -t1 -c{args.connections} kept alive, "
          f"backends: Envoy direct response (--concurrency {CONCURRENCY})")
    print(f"    {'path':<6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    medians = {}
    for path in PATHS:
        med = {k: statistics.median(r[k] for r in runs[path]) for k in ("rps", "p50", "p99", "errors")}
        medians[path] = med
        print(f"    {path:<6} {med['rps']:8.0f} {med['p50']:8.2f} {med['p99']:8.2f} {med['errors']:7.0f}")
    ratios = {key: [c[key] / s[key] for c, s in zip(runs["cross"], runs["same"], strict=True) if s[key]]
              for key in ("rps", "p50", "p99")}
    print("    node to node / same node: " + ", ".join(f"{k} {ratio_text(v)}" for k, v in ratios.items()))
    if args.json:
        print(json.dumps({"connections": {**conns, "rate_ratios": rate},
                          "requests": {"medians": medians, "runs": runs, "ratios": ratios}}))


if __name__ == "__main__":
    sys.exit(main())
