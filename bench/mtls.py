"""Mutual TLS between two lab nodes: the tunnel beside clear text and beside an mTLS sidecar pair.

One lab of two nodes with mutual TLS (``lab up --mtls``). The client pod is on node-1;
on node-2 three backend pods each run an Envoy answering every request with a fixed 200
(as in bench/l7.py) and a Python sink that reads and discards TCP:

- ``tunnel``: no PeerAuthentication (PERMISSIVE): the client's connections go through
  node-1's proxy, an HBONE tunnel (HTTP/2 CONNECT over mutual TLS) and node-2's proxy;
- ``clear``: PeerAuthentication DISABLE: straight through the kernel, clear text;
- ``sidecar``: DISABLE too, reached through a pair of static Envoys doing mTLS — one in
  the client pod (plain HTTP in on loopback, mutual TLS out with the client's certificate)
  and one in the backend pod (mutual TLS in, requiring a client certificate, to the app on
  loopback) — what a sidecar mesh does for one request path;
- ``routed``: PERMISSIVE behind an HTTPRoute: node-1's proxy routes each request (L7) and
  sends it through its internal tunnel listener and the same HBONE tunnel as the client
  (requests only: (b) and (c)).

Measured, the paths interleaved per round (every other round reversed):
(a) bulk throughput: one TCP connection sending 1 MiB writes for ``--duration`` seconds to
    the sink (sidecars: not measured, their listeners speak HTTP); with the whole machine's
    CPU seconds per GB sent (both nodes and the client share its 2 cores), and that CPU by
    component: each node's proxy, the sink, the interrupts' share (softirq: the kernel's
    forwarding and TCP receive), and the rest (the client, the kernel's other work, and
    whatever else the machine ran meanwhile);
(b) new connections/s: connect, one request (``Connection: close``), read the whole answer, close, again;
(c) requests: wrk over ``--connections`` kept-alive connections: requests/s, p50, p99.

Run as root: ``PYTHONPATH=src .venv/bin/python bench/mtls.py [--duration 5] [--rounds 3]``;
``--bulk`` measures only (a) of the tunnel and clear text (for trying tunnel settings).
Everything lives in a lab named ``mb<pid>`` that is torn down at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _harness import lab_bench_parser
from l7 import APP_PORT, CONCURRENCY, backend_container, lab_files, parse_wrk, start_envoy, wait_http

from meshcore.identity import CertificateAuthority
from meshcore.identity._svid import csr_for, key_pem, new_key
from meshcore.lab import Lab
from meshcore.lab._observe_command import node_dirs
from meshcore.lab._state import LabState

PATHS = ("tunnel", "clear", "sidecar", "routed")
SINK_PORT = 9100
CLIENT_SIDECAR_PORT = 15101
SERVER_SIDECAR_PORT = 15443
_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."

SINK = r"""
import socket, threading
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("::", %d)); s.listen(64)
def drain(c):
    buf = bytearray(1 << 20)
    while c.recv_into(buf):
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
""" % SINK_PORT

BULK = r"""
import json, socket, sys, time
host, seconds = sys.argv[1], float(sys.argv[2])
s = socket.create_connection((host, %d))
chunk = b"x" * (1 << 20)
sent, start = 0, time.monotonic()
while time.monotonic() - start < seconds:
    s.sendall(chunk); sent += len(chunk)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
print(json.dumps({"bytes": sent, "seconds": time.monotonic() - start}))
""" % SINK_PORT

CONNS = r"""
import json, socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
count, failed, lat = 0, 0, []
end = time.monotonic() + seconds
while time.monotonic() < end:
    t = time.perf_counter()
    try:
        s = socket.create_connection((host, port), timeout=2)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        while not got.endswith(b"\r\n\r\nok\n"):  # the whole answer (Envoy waits for us to close first)
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        s.close(); count += 1; lat.append(time.perf_counter() - t)
    except OSError:
        failed += 1
lat.sort()
print(json.dumps({"rate": count / seconds, "failed": failed, "p99": lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else 0}))
"""


def manifests(backend_cfg: Path) -> str:
    """The client on node-1; three backends on node-2 (app Envoy plus sink), two of them DISABLE."""
    out = ["""
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node-1
  containers: [{name: c, image: busybox, command: ["sleep", "infinity"]}]
"""]
    for path in PATHS:
        out.append(f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {path}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {path}, labels: {{app: {path}}}}}
spec:
  nodeName: node-2
  serviceAccountName: {path}
  containers:
{backend_container(backend_cfg)}
  - name: sink
    image: busybox
    command: {json.dumps([sys.executable, "-S", "-c", SINK])}
    ports: [{{containerPort: {SINK_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {path}}}
spec:
  selector: {{app: {path}}}
  ports: [{{name: http, port: 80, targetPort: {APP_PORT}}}, {{name: sink, port: {SINK_PORT}}}]
""")
        if path == "routed":
            out.append("""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: routed}
spec:
  parentRefs: [{group: "", kind: Service, name: routed, port: 80}]
  rules: [{backendRefs: [{name: routed, port: 80}]}]
""")
        elif path != "tunnel":
            out.append(f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {path}}}
spec:
  selector: {{matchLabels: {{app: {path}}}}}
  mtls: {{mode: DISABLE}}
""")
    return "\n---\n".join(out)


def _tls_context(work: Path, name: str) -> dict[str, Any]:
    return {"tls_certificates": [{"certificate_chain": {"filename": str(work / f"{name}.crt")},
                                  "private_key": {"filename": str(work / f"{name}.key")}}],
            "validation_context": {"trusted_ca": {"filename": str(work / "ca.crt")}}}


def sidecar_configs(work: Path, server_ip: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Static Envoys: the client's (HTTP in, mTLS out) and the server's (mTLS in, HTTP to the app)."""
    ca = CertificateAuthority.generate("cluster.local")
    (work / "ca.crt").write_text(ca.bundle.pem)
    for name in ("client", "server"):
        key = new_key()
        spiffe = f"spiffe://cluster.local/ns/default/sa/{name}"
        (work / f"{name}.crt").write_text(ca.sign(csr_for(key, spiffe), spiffe))
        (work / f"{name}.key").write_text(key_pem(key))
    hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

    def listener(name: str, port: int, cluster: str, tls: dict[str, Any] | None) -> dict[str, Any]:
        chain: dict[str, Any] = {"filters": [{"name": "hcm", "typed_config": {
            "@type": hcm, "stat_prefix": name, "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]}}}]}
        if tls is not None:
            chain["transport_socket"] = {"name": "tls", "typed_config": tls}
        return {"name": name, "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
                "filter_chains": [chain]}

    def cluster(name: str, address: str, port: int, tls: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}]}]}}
        if tls is not None:
            out["transport_socket"] = {"name": "tls", "typed_config": tls}
        return out

    client = {"static_resources": {
        "listeners": [listener("outbound", CLIENT_SIDECAR_PORT, "server", None)],
        "clusters": [cluster("server", server_ip, SERVER_SIDECAR_PORT,
                             {"@type": _TLS + "UpstreamTlsContext", "common_tls_context": _tls_context(work, "client")})],
    }}
    server = {"static_resources": {
        "listeners": [listener("inbound", SERVER_SIDECAR_PORT, "app",
                               {"@type": _TLS + "DownstreamTlsContext", "require_client_certificate": True,
                                "common_tls_context": _tls_context(work, "server")})],
        "clusters": [cluster("app", "127.0.0.1", APP_PORT, None)],
    }}
    return client, server


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (every core)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


#: The components whose CPU the bulk measurement splits out (the rest is "other").
COMPONENTS = ("node-1 proxy", "node-2 proxy", "sink", "softirq")


def component_pids(lab: Lab, path: str) -> dict[str, list[int]]:
    """The processes of each component while ``path`` is measured: the node proxies and that path's sink."""
    out: dict[str, list[int]] = {}
    for node, where in node_dirs(lab).items():
        data = json.loads((where / "proxy.json").read_text())
        out[f"{node} proxy"] = [int(data["envoy"]["pid"])]
    state = LabState.load(lab.dir)
    out["sink"] = [p.pid for r in state.pods.values() if r.name == path for p in r.processes if p.container == "sink"]
    return out


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each component (user and system time of its processes; softirq machine-wide)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, numbers in pids.items():
        total = 0
        for pid in numbers:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        out[name] = total / tick
    stat = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    out["softirq"] = (stat[5] + stat[6]) / tick
    return out


def run_json(lab: Lab, code: str, *args: str, timeout: float) -> Any:
    result = lab.run("client", [sys.executable, "-S", "-c", code, *args], timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode(errors="replace"))
    return json.loads(result.stdout)


def main(argv: list[str] | None = None) -> int:
    """Set up the lab and the sidecars, measure the paths interleaved, print figures and ratios."""
    parser = lab_bench_parser(__doc__.splitlines()[0], duration="seconds per measurement")
    parser.add_argument("--bulk", action="store_true", help="only bulk throughput, tunnel and clear text")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/mtls.py needs root (network namespaces, cgroups, BPF)", file=sys.stderr)
        return 2
    lab = Lab(f"mb{os.getpid()}")
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="mcbench-mtls-") as tmp:
        work = Path(tmp)
        lab_yaml = lab_files(work, manifests)
        try:
            up = lab.up([lab_yaml], nodes=2, timeout=90, mtls=True)
            if not up.agents or not all(a.ok for a in up.agents):
                raise RuntimeError(f"the node agents did not apply the configuration: {up.agents}")
            pods = {p.name: p for p in lab.status().pods}
            client_cfg, server_cfg = sidecar_configs(work, pods["sidecar"].addresses[0])
            (work / "client-sidecar.json").write_text(json.dumps(client_cfg))
            (work / "server-sidecar.json").write_text(json.dumps(server_cfg))
            procs = [start_envoy(lab.pod("client").netns, work / "client-sidecar.json", work / "c.log"),
                     start_envoy(lab.pod("sidecar").netns, work / "server-sidecar.json", work / "s.log")]
            urls = {"tunnel": "http://tunnel/", "clear": "http://clear/",
                    "sidecar": f"http://127.0.0.1:{CLIENT_SIDECAR_PORT}/", "routed": "http://routed/"}
            vips = {s.name: s.cluster_ips[0] for s in lab.status().services}
            targets = {"tunnel": (pods["tunnel"].addresses[0], APP_PORT), "clear": (pods["clear"].addresses[0], APP_PORT),
                       "sidecar": ("127.0.0.1", CLIENT_SIDECAR_PORT), "routed": (vips["routed"], 80)}
            for url in urls.values():
                wait_http(lab, url)
            paths = PATHS[:2] if args.bulk else PATHS
            runs: dict[str, list[dict[str, float]]] = {p: [] for p in paths}
            for r in range(args.rounds + 1):  # round 0 warms every path up and is not counted
                seconds = args.duration if r else 1
                for path in paths if r % 2 == 0 else paths[::-1]:
                    row: dict[str, float] = {}
                    if path in ("tunnel", "clear"):
                        pids = component_pids(lab, path)
                        components, before = cpu_seconds(pids), busy_seconds()
                        bulk = run_json(lab, BULK, pods[path].addresses[0], str(seconds), timeout=seconds + 60)
                        cpu, spent = busy_seconds() - before, cpu_seconds(pids)
                        gb = bulk["bytes"] / 1e9
                        row["gbps"] = bulk["bytes"] * 8 / bulk["seconds"] / 1e9
                        row["cpu_s_per_gb"] = cpu / gb
                        for name in COMPONENTS:
                            row[f"cpu {name}"] = (spent[name] - components[name]) / gb
                        row["cpu other"] = row["cpu_s_per_gb"] - sum(row[f"cpu {name}"] for name in COMPONENTS)
                    if args.bulk:
                        if r:
                            runs[path].append(row)
                        continue
                    host, port = targets[path]
                    conns = run_json(lab, CONNS, host, str(port), str(seconds), timeout=seconds + 60)
                    row["conn_per_s"], row["conn_p99"], row["conn_failed"] = conns["rate"], conns["p99"], conns["failed"]
                    result = lab.run("client", ["wrk", "-t", "1", "-c", str(args.connections), "-d", f"{seconds}s",
                                                "--latency", urls[path]], timeout=seconds + 60)
                    if result.returncode != 0:
                        raise RuntimeError(f"wrk failed: {result.stderr.decode(errors='replace')}")
                    row.update({f"rq_{k}": v for k, v in parse_wrk(result.stdout.decode()).items()})
                    if r:
                        runs[path].append(row)
            report(runs, args)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(10)
            lab.down()
    return 0


def report(runs: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    """Medians per path, and the tunnel's ratios to clear text and to the sidecar pair per round."""
    def med(path: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[path])

    print(f"{args.rounds} rounds × {args.duration} s per measurement; wrk -t1 -c{args.connections}; "
          f"backends: Envoy direct response (--concurrency {CONCURRENCY}); 2 cores shared by everything")
    print("    bulk CPU s/GB by component: " + ", ".join(
        f"{path} " + " ".join(f"{name}={med(path, f'cpu {name}'):.2f}" for name in (*COMPONENTS, "other"))
        for path in ("tunnel", "clear")))
    if args.bulk:
        for path in ("tunnel", "clear"):
            print(f"    {path:<8} {med(path, 'gbps'):7.2f} Gbit/s {med(path, 'cpu_s_per_gb'):6.2f} CPU s/GB")
        values = sorted(t["gbps"] / c["gbps"] for t, c in zip(runs["tunnel"], runs["clear"], strict=True))
        print(f"    tunnel / clear text: throughput {statistics.median(values):.2f} [{values[0]:.2f}-{values[-1]:.2f}]")
        if args.json:
            print(json.dumps(runs))
        return
    print(f"    {'path':<8} {'Gbit/s':>7} {'CPU s/GB':>9} {'conn/s':>7} {'conn p99':>9} {'req/s':>7} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for path in PATHS:
        bulk = (f"{med(path, 'gbps'):7.2f} {med(path, 'cpu_s_per_gb'):9.2f}" if path in ("tunnel", "clear")
                else f"{'-':>7} {'-':>9}")
        print(f"    {path:<8} {bulk} {med(path, 'conn_per_s'):7.0f} {med(path, 'conn_p99'):9.2f} "
              f"{med(path, 'rq_rps'):7.0f} {med(path, 'rq_p50'):7.2f} {med(path, 'rq_p99'):7.2f} "
              f"{med(path, 'rq_errors') + med(path, 'conn_failed'):6.0f}")

    def ratio(key: str, other: str) -> str:
        values = sorted(t[key] / o[key] for t, o in zip(runs["tunnel"], runs[other], strict=True) if o[key])
        return f"{statistics.median(values):.2f} [{values[0]:.2f}-{values[-1]:.2f}]" if values else "-"

    print(f"    tunnel / clear text: throughput {ratio('gbps', 'clear')}, conn/s {ratio('conn_per_s', 'clear')}, "
          f"req/s {ratio('rq_rps', 'clear')}, p99 {ratio('rq_p99', 'clear')}")
    print(f"    tunnel / sidecar pair: conn/s {ratio('conn_per_s', 'sidecar')}, req/s {ratio('rq_rps', 'sidecar')}, "
          f"p99 {ratio('rq_p99', 'sidecar')}")
    routed = sorted(r["rq_rps"] / t["rq_rps"] for r, t in zip(runs["routed"], runs["tunnel"], strict=True))
    print(f"    routed / tunnel: req/s {statistics.median(routed):.2f} [{routed[0]:.2f}-{routed[-1]:.2f}]")
    if args.json:
        print(json.dumps(runs))


if __name__ == "__main__":
    sys.exit(main())
