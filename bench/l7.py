"""L7 through the node Envoy vs a sidecar pair and a bare Envoy hop: requests/s, p50/p99 latency and CPU with wrk.

Four paths from a client pod to the same HTTP backend, measured side by side in one lab:

(a) direct: wrk → the backend pod's address (no proxy);
(b) node Envoy: wrk → the service's ClusterIP; the socket-level LB hands the connection
    to the node's Envoy (one hop, sidecar-free, programmed over ADS from an HTTPRoute,
    every request's record written to its access-log file, which the node agent reads),
    which connects to the backend pod;
(c) sidecar pair: wrk → the backend pod's port 80, redirected by iptables (nat OUTPUT,
    REDIRECT) to a client-side Envoy in the client pod, which connects to the backend pod,
    where iptables (nat PREROUTING, REDIRECT) hands it to a server-side Envoy in the
    backend pod, which connects to the application on loopback — as classic sidecar
    meshes do. These two Envoys run from static bootstrap files this script writes;
(d) bare one-hop Envoy: wrk → a static Envoy in the node's network namespace (where the
    node Envoy runs), configured like the sidecars (static listener, route and cluster,
    no access log, no xDS), which connects to the backend pod. It is the yardstick for
    (b): what one proxy hop costs on this machine without any mesh machinery.

``--variants`` adds more static Envoys beside (d), each (d) plus one piece of machinery
(an access logger, the node listener's options, an RBAC or JWT filter; see
bench/_l7_variants.py), and the node Envoy dialled at its listener without the socket LB.

The backend is an Envoy answering every request with a fixed 200 (direct response), so
the application costs the same in every path and is never the bottleneck. All proxies
run with the same ``--concurrency``; the node Envoy is the lab's own (started by the
node agent). Rounds interleave the paths (every other round reversed); figures are
medians over rounds. Targets: (b)/(c) p99 ≤ 0.55× and throughput ≥ 2×; (b)/(d) — what
the mesh machinery (ADS-built configuration, access logs, the hand-off) costs on top of
one bare hop — p99 ≤ 1.05× and throughput ≥ 0.95×. The bench also prints each process's
CPU per request (from ``/proc/<pid>/stat``) and the L7 path's CPU (agent + node Envoy)
per 1,000 requests/s beside Istio's published waypoint figure.

Run as root: ``PYTHONPATH=src .venv/bin/python bench/l7.py [--duration 5] [--rounds 3] [--variants all]``.
Everything lives in a lab named ``l7b<pid>`` that is torn down at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import lab_bench_parser
from _l7_variants import LISTENER, VARIANTS, Context, OtelSink, headers, variant_config

from meshcore.lab import Lab, LabStatus
from meshcore.proxy import AdminClient, find_envoy

CONCURRENCY = 2
CLIENT_SIDECAR_PORT = 15001
SERVER_SIDECAR_PORT = 15006
APP_PORT = 8080
SIDECAR_SERVICE_PORT = 80
BARE_PORT = 15080

_ROUTER = {"name": "envoy.filters.http.router",
           "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def _hcm(stat: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat, "http_filters": [_ROUTER],
        "route_config": {"virtual_hosts": [{"name": stat, "domains": ["*"], "routes": routes}]},
    }}


def _listener(name: str, address: str, port: int, routes: list[dict[str, Any]]) -> dict[str, Any]:
    sock: dict[str, Any] = {"address": address, "port_value": port}
    if address == "::":
        sock["ipv4_compat"] = True
    return {"name": name, "address": {"socket_address": sock}, "filter_chains": [{"filters": [_hcm(name, routes)]}]}


def _cluster(name: str, address: str, port: int) -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}]}]}}


def backend_config() -> dict[str, Any]:
    """The application: a fixed 200 for every request on APP_PORT (IPv4 and IPv6)."""
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    return {"static_resources": {"listeners": [_listener("app", "::", APP_PORT, [route])]}}


def backend_container(backend_cfg: Path) -> str:
    """The backend's container in a pod's manifest (an item of ``containers:``): the lab's Envoy with ``backend_cfg``."""
    return f"""  - name: app
    image: envoyproxy/envoy
    command: ["{find_envoy()}", "-c", "{backend_cfg}", "--disable-hot-restart", "--concurrency", "{CONCURRENCY}",
              "-l", "error"]
    ports: [{{containerPort: {APP_PORT}}}]"""


def lab_files(work: Path, manifests: Callable[[Path], str]) -> Path:
    """The backend's configuration and the lab's manifests (which name it) written into ``work``; the manifests."""
    backend = work / "backend.json"
    backend.write_text(json.dumps(backend_config()))
    lab_yaml = work / "lab.yaml"
    lab_yaml.write_text(manifests(backend))
    return lab_yaml


def client_sidecar_config(server_ip: str) -> dict[str, Any]:
    """The client pod's sidecar: outbound traffic redirected to it goes to the server pod."""
    route = {"match": {"prefix": "/api"}, "route": {"cluster": "app"}}
    return {"static_resources": {
        "listeners": [_listener("outbound", "0.0.0.0", CLIENT_SIDECAR_PORT, [route])],
        "clusters": [_cluster("app", server_ip, APP_PORT)],
    }}


def server_sidecar_config() -> dict[str, Any]:
    """The server pod's sidecar: inbound traffic redirected to it goes to the app on loopback."""
    route = {"match": {"prefix": "/"}, "route": {"cluster": "local-app"}}
    return {"static_resources": {
        "listeners": [_listener("inbound", "0.0.0.0", SERVER_SIDECAR_PORT, [route])],
        "clusters": [_cluster("local-app", "127.0.0.1", APP_PORT)],
    }}


def bare_config(server_ip: str, port: int = BARE_PORT) -> dict[str, Any]:
    """Path (d): one static Envoy in the node namespace, routing like the sidecars, nothing else."""
    route = {"match": {"prefix": "/api"}, "route": {"cluster": "app"}}
    return {"static_resources": {
        "listeners": [_listener("bare", "0.0.0.0", port, [route])],
        "clusters": [_cluster("app", server_ip, APP_PORT)],
    }}


def manifests(backend_cfg: Path) -> str:
    """The lab: a client pod, the backend pod (the app Envoy), and an HTTPRoute'd service."""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  containers: [{{name: c, image: busybox, command: ["sleep", "infinity"]}}]
---
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
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app}}
spec:
  parentRefs: [{{group: "", kind: Service, name: app, port: 80}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    backendRefs: [{{name: app, port: 80}}]
"""


_LATENCY = re.compile(r"^\s*(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)")


def parse_wrk(text: str) -> dict[str, float]:
    """Requests/s, p50 and p99 in ms, and errors from wrk's output (with --latency)."""
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    lat = {m.group(1): float(m.group(2)) * scale[m.group(3)] for m in _LATENCY.finditer(text)}
    rps = _RPS.search(text)
    if rps is None or "50" not in lat or "99" not in lat:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    errors = sum(1 for m in _ERRORS.finditer(text))
    return {"rps": float(rps.group(1)), "p50": lat["50"], "p99": lat["99"], "errors": float(errors)}


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def wrk(lab: Lab, url: str, duration: int, connections: int, watch: dict[str, int] | None = None,
        headers: list[str] | None = None, client: str = "client") -> dict[str, float]:
    """One wrk run from the ``client`` pod (in the lab's cgroup, so the socket LB applies).

    With ``watch`` (name → pid), adds ``us/<name>``: that process's CPU microseconds per request.
    """
    argv = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--latency"]
    for header in headers or ():
        argv += ["-H", header]
    argv.append(url)
    before = {name: cpu_seconds(pid) for name, pid in (watch or {}).items()}
    result = lab.run(client, argv, timeout=duration + 30)
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed: {result.stderr.decode(errors='replace')}")
    out = parse_wrk(result.stdout.decode())
    requests = max(1.0, out["rps"] * duration)
    for name, pid in (watch or {}).items():
        out[f"us/{name}"] = (cpu_seconds(pid) - before[name]) * 1e6 / requests
    return out


def node_proxy_port(status: LabStatus) -> int:
    """The port of the node Envoy's one listener (from its admin endpoint)."""
    work = Path(status.agent.log).parent / "envoy"
    admin = AdminClient((work / "admin.address").read_text().strip(), status.node_netns)
    code, body = admin.request("GET", "/listeners?format=json")
    ports = [a["socket_address"]["port_value"] for lst in json.loads(body)["listener_statuses"]
             for a in [lst["local_address"]]]
    if code != 200 or len(ports) != 1:
        raise RuntimeError(f"cannot tell the node Envoy's listener port: {code} {body}")
    return int(ports[0])


def netns_run(netns: str, *argv: str) -> None:
    """Run a command in a pod's network namespace; fail loudly."""
    subprocess.run(["ip", "netns", "exec", netns, *argv], check=True, capture_output=True)


def start_envoy(netns: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """A static-config Envoy inside ``netns``."""
    argv = ["ip", "netns", "exec", netns, find_envoy(), "-c", str(config), "--disable-hot-restart",
            "--concurrency", str(CONCURRENCY), "-l", "error", "--log-path", str(log)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_http(lab: Lab, url: str, timeout: float = 20.0) -> None:
    """Until ``url`` answers 200 from the client pod."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = lab.run("client", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", url], timeout=10)
        if r.stdout == b"200":
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} does not answer 200 from the client pod")


class Sidecars:
    """The sidecar pair of path (c): two Envoys and the iptables REDIRECT rules in the pods."""

    def __init__(self, lab: Lab, work: Path, server_ip: str) -> None:
        self.client_ns = lab.pod("client").netns
        self.server_ns = lab.pod("server").netns
        self.out_rule = ["OUTPUT", "-p", "tcp", "-d", server_ip, "--dport", str(SIDECAR_SERVICE_PORT),
                         "-j", "REDIRECT", "--to-ports", str(CLIENT_SIDECAR_PORT)]
        self.in_rule = ["PREROUTING", "-p", "tcp", "--dport", str(APP_PORT),
                        "-j", "REDIRECT", "--to-ports", str(SERVER_SIDECAR_PORT)]
        (work / "client-sidecar.json").write_text(json.dumps(client_sidecar_config(server_ip)))
        (work / "server-sidecar.json").write_text(json.dumps(server_sidecar_config()))
        self.procs = [start_envoy(self.client_ns, work / "client-sidecar.json", work / "client-sidecar.log"),
                      start_envoy(self.server_ns, work / "server-sidecar.json", work / "server-sidecar.log")]
        self.active = False

    def redirect(self, on: bool) -> None:
        """Install (or remove) the REDIRECT rules; only path (c) runs with them."""
        if on == self.active:
            return
        op = "-A" if on else "-D"
        netns_run(self.client_ns, "iptables", "-t", "nat", op, *self.out_rule)
        netns_run(self.server_ns, "iptables", "-t", "nat", op, *self.in_rule)
        self.active = on

    def stop(self) -> None:
        """Remove the rules and stop both Envoys (by pid)."""
        try:
            self.redirect(False)
        except subprocess.CalledProcessError:
            pass  # the namespace may be gone already
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def main(argv: list[str] | None = None) -> int:
    """Set up the lab, measure the paths in interleaved rounds, print figures and ratios."""
    parser = lab_bench_parser(__doc__.splitlines()[0], duration="seconds per wrk run")
    parser.add_argument("--variants", default="",
                        help="comma-separated variants of (d) to measure too: "
                             f"{', '.join(VARIANTS)}, or all (default none)")
    args = parser.parse_args(argv)
    variants = list(VARIANTS) if args.variants == "all" else [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    if os.geteuid() != 0:
        print("bench/l7.py needs root (network namespaces, cgroups, BPF)", file=sys.stderr)
        return 2
    lab = Lab(f"l7b{os.getpid()}")
    sidecars: Sidecars | None = None
    sink: OtelSink | None = None
    with tempfile.TemporaryDirectory(prefix="mcbench-l7-") as tmp:
        work = Path(tmp)
        lab_yaml = lab_files(work, manifests)
        try:
            up = lab.up([lab_yaml], timeout=60)
            if up.agent is None or not up.agent.ok or not lab.status().agent.proxy.running:
                raise RuntimeError(f"the node agent did not start the node proxy: {up.agent}")
            server_ip = lab.pod("server").ipv4
            sidecars = Sidecars(lab, work, server_ip)
            status = lab.status()
            node_ip = status.nodes[0].addresses[0]
            (work / "bare.json").write_text(json.dumps(bare_config(server_ip)))
            bare = start_envoy(status.node_netns, work / "bare.json", work / "bare.log")
            sidecars.procs.append(bare)  # stopped with the sidecars
            urls = {
                "a": f"http://{server_ip}:{APP_PORT}/api/x",
                "b": "http://app/api/x",
                "c": f"http://{server_ip}:{SIDECAR_SERVICE_PORT}/api/x",
                "d": f"http://{node_ip}:{BARE_PORT}/api/x",
            }
            if "otel" in variants:
                sink = OtelSink(work / "otel.sock")
            ctx = Context(work, Path(status.agent.log).parent / "xds.sock", work / "otel.sock",
                          lab.pod("client").ipv4, lab.pod("server").ipv6)
            extra: dict[str, int] = {}
            for i, name in enumerate(variants, start=1):
                if name == LISTENER:
                    urls[name] = f"http://{node_ip}:{node_proxy_port(status)}/api/x"
                    continue
                base = bare_config(server_ip, BARE_PORT + i)
                (work / f"{name}.json").write_text(json.dumps(variant_config(name, base, ctx)))
                proc = start_envoy(status.node_netns, work / f"{name}.json", work / f"{name}.log")
                sidecars.procs.append(proc)
                extra[name] = proc.pid
                urls[name] = f"http://{node_ip}:{BARE_PORT + i}/api/x"
            for key in urls:
                if key != "c":
                    wait_http(lab, urls[key])
            sidecars.redirect(True)
            wait_http(lab, urls["c"])
            sidecars.redirect(False)
            status = lab.status()
            backend = next(p for p in status.pods if p.name == "server").containers[0].pid
            watch = {"a": {"backend": backend},
                     "b": {"agent": status.agent.pid, "node-envoy": status.agent.proxy.pid,
                           "backend": backend},
                     "c": {"client-sidecar": sidecars.procs[0].pid, "server-sidecar": sidecars.procs[1].pid,
                           "backend": backend},
                     "d": {"bare-envoy": bare.pid, "backend": backend}}
            for name, pid in extra.items():
                watch[name] = {"envoy": pid, "agent": status.agent.pid, "backend": backend}
            if LISTENER in urls:
                watch[LISTENER] = {"envoy": status.agent.proxy.pid, "agent": status.agent.pid, "backend": backend}
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in urls}
            for r in range(args.rounds + 1):  # round 0 warms every path up and is not counted
                order = list(urls) if r % 2 == 0 else list(reversed(urls))
                for key in order:
                    sidecars.redirect(key == "c")
                    result = wrk(lab, urls[key], args.duration if r else 1, args.connections, watch[key],
                                 headers(key) if key in VARIANTS else None)
                    if r:
                        runs[key].append(result)
                sidecars.redirect(False)
            report(runs, args, os.getloadavg())
        finally:
            if sink is not None:
                sink.stop()
            if sidecars is not None:
                sidecars.stop()
            lab.down()
    return 0


#: Istio 1.24's published figure for a waypoint proxy (2 worker threads, 1,000 HTTP
#: requests per second of 1 KB): ~0.25 vCPU (istio.io, "Performance and scalability").
ISTIO_WAYPOINT_VCPU = 0.25


def report(runs: dict[str, list[dict[str, float]]], args: argparse.Namespace,
           load: tuple[float, float, float]) -> None:
    """Print medians per path, the ratios against the targets, the variants, and CPU per 1,000 requests/s."""
    names = {"a": "(a) direct to the pod", "b": "(b) node Envoy (VIP, one hop)",
             "c": "(c) sidecar pair (two hops)", "d": "(d) bare one-hop Envoy (static)",
             **{k: v.label for k, v in VARIANTS.items()}}
    med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in runs.items()}
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} interleaved rounds, "
          f"proxies --concurrency {CONCURRENCY}; load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          "medians [min-max over rounds]")
    print(f"{'path':38} {'req/s':>22} {'p50 ms':>8} {'p99 ms':>22}")
    for k in runs:
        m, rps, p99s = med[k], [x["rps"] for x in runs[k]], [x["p99"] for x in runs[k]]
        print(f"{names[k]:38} {m['rps']:8.0f} [{min(rps):5.0f}-{max(rps):5.0f}] {m['p50']:8.3f} "
              f"{m['p99']:8.3f} [{min(p99s):5.2f}-{max(p99s):5.2f}]")

    def ratios(x: str, y: str) -> tuple[float, float]:
        return med[x]["p99"] / med[y]["p99"], med[x]["rps"] / med[y]["rps"]

    p99, rps = ratios("b", "c")
    print(f"(b)/(c): p99 {p99:.2f}x (target <= 0.55x: {'met' if p99 <= 0.55 else 'NOT met'}), "
          f"throughput {rps:.2f}x (target >= 2x: {'met' if rps >= 2 else 'NOT met'})")
    per_round = [(b["p99"] / c["p99"], b["rps"] / c["rps"]) for b, c in zip(runs["b"], runs["c"], strict=True)]
    print("(b)/(c) per round: " + ", ".join(f"p99 {p:.2f}x rps {t:.2f}x" for p, t in per_round))
    bd_p99, bd_rps = ratios("b", "d")
    print(f"(b)/(d): p99 {bd_p99:.2f}x (target <= 1.05x: {'met' if bd_p99 <= 1.05 else 'NOT met'}), "
          f"throughput {bd_rps:.2f}x (target >= 0.95x: {'met' if bd_rps >= 0.95 else 'NOT met'})")
    per_round = [(b["p99"] / d["p99"], b["rps"] / d["rps"]) for b, d in zip(runs["b"], runs["d"], strict=True)]
    print("(b)/(d) per round: " + ", ".join(f"p99 {p:.2f}x rps {t:.2f}x" for p, t in per_round))
    for x, y in (("d", "c"), ("b", "a")):
        p, t = ratios(x, y)
        print(f"({x})/({y}): p99 {p:.2f}x, throughput {t:.2f}x")
    print("CPU per request (us, medians): " + "; ".join(
        f"({k}) " + ", ".join(f"{m[3:]} {v:.0f}" for m, v in med[k].items() if m.startswith("us/"))
        for k in ("a", "b", "c", "d")))
    l7_us = med["b"]["us/agent"] + med["b"]["us/node-envoy"]
    sidecars_us = med["c"]["us/client-sidecar"] + med["c"]["us/server-sidecar"]
    print(f"CPU per 1,000 requests/s: (b) agent + node Envoy {l7_us / 1000:.3f} vCPU "
          f"(Envoy {med['b']['us/node-envoy'] / 1000:.3f}, agent {med['b']['us/agent'] / 1000:.3f}); "
          f"(c) sidecar pair {sidecars_us / 1000:.3f}; (d) bare Envoy {med['d']['us/bare-envoy'] / 1000:.3f}; "
          f"Istio 1.24 waypoint (published) ~{ISTIO_WAYPOINT_VCPU:.2f}")
    for k in runs:
        if k in VARIANTS:
            m = med[k]
            per_round = [x["us/envoy"] - d["us/bare-envoy"] for x, d in zip(runs[k], runs["d"], strict=True)]
            print(f"{names[k]}: Envoy {m['us/envoy']:.0f} us/req ({statistics.median(per_round):+.0f} vs (d), "
                  f"per round {', '.join(f'{v:+.0f}' for v in per_round)}), agent {m['us/agent']:.1f}, "
                  f"throughput {m['rps'] / med['d']['rps']:.2f}x of (d), p99 {m['p99'] / med['d']['p99']:.2f}x")
    if args.json:
        print(json.dumps({"medians": med, "runs": runs, "load": load,
                          "ratios": {"p99_b_over_c": p99, "rps_b_over_c": rps,
                                     "p99_b_over_d": bd_p99, "rps_b_over_d": bd_rps}}))

if __name__ == "__main__":
    sys.exit(main())
