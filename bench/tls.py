"""North-south TLS through the node Envoy: HTTPS requests/s and new TLS handshakes/s beside plain HTTP.

One lab, one Gateway with two listeners for the hostname ``gw.default`` carrying the
same HTTPRoute: ``http`` (port 80) and ``https`` (port 443, terminating TLS with a
certificate made at run time, delivered to the node Envoy over SDS); both are virtual
hosts of the node Envoy. The backend is an Envoy answering every request with a
fixed 200, so it is never the bottleneck. Every client runs on the lab's internet client
(outside every pod network), as traffic from outside would arrive:

(h) plain HTTP, keep-alive: wrk → http://gw.default/ (the lab names edge addresses in the internet client's hosts file);
(s) HTTPS, keep-alive: wrk → https://gw.default/ (one handshake per connection, then requests);
(n) HTTPS, a new connection per request: wrk with ``Connection: close`` (a full TLS
    handshake for every request, as clients without keep-alive or session reuse do);
and, for (n), the TLS handshakes the node Envoy completed per second, read from its own
counters (``ssl.handshake`` of its listeners, through its admin endpoint) before and
after the run: server-side handshakes, not the client's view.

Rounds interleave the paths (every other round reversed); figures are medians over
rounds. Run as root: ``PYTHONPATH=src:tests/fixtures .venv/bin/python bench/tls.py
[--duration 5] [--rounds 3]`` (the certificate comes from tests/fixtures/testcerts.py,
which needs ``cryptography``). Everything lives in a lab named ``tlsb<pid>``, torn down
at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from meshcore.lab import Lab

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
from _harness import lab_bench_parser  # noqa: E402
from l7 import APP_PORT, CONCURRENCY, backend_container, lab_files, parse_wrk  # noqa: E402
from testcerts import Authority  # noqa: E402

def manifests(backend_cfg: Path, secret: str) -> str:
    """The backend, the Gateway with an HTTP and an HTTPS listener, and one route on both."""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: server, labels: {{app: server}}}}
spec:
  containers:
{backend_container(backend_cfg)}
---
apiVersion: v1
kind: Service
metadata: {{name: app}}
spec:
  selector: {{app: server}}
  ports: [{{name: http, port: 80, targetPort: {APP_PORT}}}]
---
{secret}---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: meshcore}}
spec: {{controllerName: meshcore.io/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: meshcore
  listeners:
  - {{name: http, port: 80, protocol: HTTP, hostname: gw.default}}
  - {{name: https, port: 443, protocol: HTTPS, hostname: gw.default, tls: {{certificateRefs: [{{name: gw-cert}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]
"""


def wrk(lab: Lab, url: str, duration: int, connections: int, *extra: str) -> dict[str, float]:
    """One wrk run from the internet client."""
    argv = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--latency", *extra, url]
    result = lab.run_outside(argv, timeout=duration + 30)
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed: {result.stderr.decode(errors='replace')}")
    return parse_wrk(result.stdout.decode())


def envoy_handshakes(lab: Lab) -> int:
    """TLS handshakes the node Envoy completed so far, over all its listeners (from its admin endpoint)."""
    admin = (lab.dir / "envoy" / "admin.address").read_text().strip()
    netns = lab.status().node_netns
    result = subprocess.run(["ip", "netns", "exec", netns, "curl", "-s", f"http://{admin}/stats?filter=ssl.handshake$"],
                            capture_output=True, text=True, timeout=10, check=True)
    return sum(int(line.rsplit(":", 1)[1]) for line in result.stdout.splitlines()
               if line.startswith("listener.") and line.rsplit(":", 1)[0].endswith(".ssl.handshake"))


def new_connections(lab: Lab, duration: int, connections: int) -> dict[str, float]:
    """Run (n), with the handshakes per second the node Envoy counted meanwhile."""
    before = envoy_handshakes(lab)
    out = wrk(lab, "https://gw.default/", duration, connections, "-H", "Connection: close")
    out["handshakes"] = (envoy_handshakes(lab) - before) / duration
    return out


def main(argv: list[str] | None = None) -> int:
    """Set up the lab, measure the four paths in interleaved rounds, print medians."""
    parser = lab_bench_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/tls.py needs root (network namespaces, cgroups, BPF)", file=sys.stderr)
        return 2
    lab = Lab(f"tlsb{os.getpid()}")
    secret = Authority().issue(["gw", "gw.default"], rsa_key=True).secret("gw-cert")
    with tempfile.TemporaryDirectory(prefix="mcbench-tls-") as tmp:
        lab_yaml = lab_files(Path(tmp), lambda backend: manifests(backend, secret))
        try:
            up = lab.up([lab_yaml], timeout=60)
            if up.agent is None or not up.agent.ok:
                raise RuntimeError(f"the node agent did not apply the lab: {up.agent}")
            paths: dict[str, Any] = {
                "h": lambda d: wrk(lab, "http://gw.default/", d, args.connections),
                "s": lambda d: wrk(lab, "https://gw.default/", d, args.connections),
                "n": lambda d: new_connections(lab, d, args.connections),
            }
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in paths}
            for r in range(args.rounds + 1):  # round 0 warms every path up and is not counted
                for key in (list(paths) if r % 2 == 0 else list(reversed(paths))):
                    result = paths[key](args.duration if r else 1)
                    if r:
                        runs[key].append(result)
            report(runs, args)
        finally:
            lab.down()
    return 0


def report(runs: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    """Medians per path, with the range over rounds, and HTTPS relative to plain HTTP."""
    names = {"h": "(h) HTTP keep-alive", "s": "(s) HTTPS keep-alive", "n": "(n) HTTPS new conn/request"}
    print(f"node Envoy --concurrency {CONCURRENCY}; wrk -t1 -c{args.connections} -d{args.duration}s; "
          f"{args.rounds} interleaved rounds; medians [min-max]")
    print(f"{'path':34} {'per second':>22} {'p50 ms':>8} {'p99 ms':>8}")
    med: dict[str, dict[str, float]] = {}
    for k, name in names.items():
        med[k] = {m: statistics.median(x[m] for x in runs[k]) for m in runs[k][0]}
        rps = [x["rps"] for x in runs[k]]
        lat = f"{med[k]['p50']:8.3f} {med[k]['p99']:8.3f}" if "p50" in med[k] else f"{'-':>8} {'-':>8}"
        print(f"{name:34} {med[k]['rps']:8.0f} [{min(rps):5.0f}-{max(rps):5.0f}] {lat}")
    shakes = [x["handshakes"] for x in runs["n"]]
    print(f"new TLS handshakes/s in the node Envoy during (n): {med['n']['handshakes']:.0f} "
          f"[{min(shakes):.0f}-{max(shakes):.0f}]")
    print(f"(s)/(h) throughput {med['s']['rps'] / med['h']['rps']:.2f}x; "
          f"(n)/(h) {med['n']['rps'] / med['h']['rps']:.2f}x")
    if args.json:
        print(json.dumps({"medians": med, "runs": runs}))


if __name__ == "__main__":
    sys.exit(main())
