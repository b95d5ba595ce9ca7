"""What each piece of the node Envoy's machinery costs per request, measured where little else does.

bench/l7.py measures the L7 path end to end in a lab, where a request costs Envoy ~80-100
µs of CPU and a shared machine's noise is ±10 µs per round: too coarse for pieces that
cost 1-5 µs. Here every Envoy serves a direct response (no upstream) on loopback with one
worker, so a request costs it ~20 µs, and the variants of bench/_l7_variants.py — the
ways of getting each request's record out of Envoy (file, gRPC access log, OpenTelemetry)
and the HTTP filters (RBAC, JWT; evaluated, told to pass on the route, or not created for
it) — are each applied to one such Envoy. Rounds run every Envoy in turn (every other
round reversed) with ``wrk -t1 -c8``; the figure per variant is the median over rounds of
its Envoy CPU per request minus the plain one's in the same round, with the interquartile
range. gRPC receivers (access logs, OpenTelemetry) are one process that discards what it
gets: their own cost is not counted here (bench/l7.py counts the node agent's).

Run: ``PYTHONPATH=src .venv/bin/python bench/envoy_costs.py [--rounds 10] [--duration 3] [--variants file,rbac]``
(no root needed; ports 19400 and up on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _l7_variants import VARIANTS, Context, headers, variant_config

from meshcore.proxy import find_envoy

BASE_PORT = 19400
#: The variants that apply to a listener without an upstream (the node's options need one).
DEFAULT = ("file", "als", "als1m", "otel", "rbac", "rbacoff", "rbacskip", "jwtnone", "jwt", "jwtoff", "jwtskip")
_TICK = os.sysconf("SC_CLK_TCK")

_SINK = """
import sys
from concurrent.futures import ThreadPoolExecutor
import grpc

def stream(requests, context):
    for _ in requests:
        pass
    return b""

def export(request, context):
    return b""

ident = lambda b: b
server = grpc.server(ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((
    grpc.method_handlers_generic_handler("envoy.service.accesslog.v3.AccessLogService", {
        "StreamAccessLogs": grpc.stream_unary_rpc_method_handler(stream, None, ident)}),
    grpc.method_handlers_generic_handler("opentelemetry.proto.collector.logs.v1.LogsService", {
        "Export": grpc.unary_unary_rpc_method_handler(export, None, ident)}),
))
server.add_insecure_port("unix:" + sys.argv[1])
server.start()
print("ready", flush=True)
sys.stdin.read()
server.stop(0)
"""


def base_config(port: int) -> dict[str, Any]:
    """A listener on 127.0.0.1:``port`` answering 200 to every request, nothing else."""
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "bench", "route_config": {"virtual_hosts": [{"name": "bench", "domains": ["*"],
                                                                       "routes": [route]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    return {"static_resources": {"clusters": [], "listeners": [{
        "name": "bench", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}]}]}}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def run_wrk(port: int, duration: int, extra: list[str]) -> float:
    """Requests per second of one wrk run."""
    argv = ["wrk", "-t1", "-c8", f"-d{duration}s"]
    for header in extra:
        argv += ["-H", header]
    out = subprocess.run([*argv, f"http://127.0.0.1:{port}/x"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None or "Non-2xx" in out:
        raise SystemExit(f"wrk on port {port} did not get 200s:\n{out}")
    return float(found.group(1))


def main(argv: list[str] | None = None) -> int:
    """Start one Envoy per variant (and a plain one), measure in interleaved rounds, print the costs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run (default 3)")
    parser.add_argument("--variants", default=",".join(DEFAULT), help=f"comma-separated (default {','.join(DEFAULT)})")
    args = parser.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    bad = [v for v in names if v not in DEFAULT]
    if bad:
        parser.error(f"unknown or unsuitable variant(s) {', '.join(bad)}: choose from {', '.join(DEFAULT)}")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="mcbench-costs-") as tmp:
        work = Path(tmp)
        sink = subprocess.Popen([sys.executable, "-c", _SINK, str(work / "sink.sock")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert sink.stdout is not None
            if sink.stdout.readline().strip() != "ready":
                raise SystemExit("the gRPC sink did not start")
            ctx = Context(work, work / "sink.sock", work / "sink.sock", "127.0.0.1", "::1")
            ports: dict[str, int] = {}
            for i, name in enumerate(["plain", *names]):
                ports[name] = BASE_PORT + i
                cfg = base_config(ports[name]) if name == "plain" else variant_config(name, base_config(ports[name]), ctx)
                (work / f"{name}.json").write_text(json.dumps(cfg))
                procs[name] = subprocess.Popen(
                    [find_envoy(), "-c", str(work / f"{name}.json"), "--disable-hot-restart", "--concurrency", "1",
                     "-l", "error", "--file-flush-interval-msec", "1000"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(2)
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                raise SystemExit(f"Envoy did not start for: {', '.join(dead)}")
            us: dict[str, list[float]] = {n: [] for n in procs}
            order = list(procs)
            for r in range(args.rounds + 1):  # round 0 warms up and is not counted
                for name in order if r % 2 == 0 else reversed(order):
                    before = cpu_seconds(procs[name].pid)
                    duration = args.duration if r else 1
                    rps = run_wrk(ports[name], duration, headers(name) if name in VARIANTS else [])
                    if r:
                        us[name].append((cpu_seconds(procs[name].pid) - before) * 1e6 / (rps * duration))
            report(us, args)
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait()
            assert sink.stdin is not None
            sink.stdin.close()
            sink.wait()
    return 0


def report(us: dict[str, list[float]], args: argparse.Namespace) -> None:
    """Each variant's Envoy CPU per request, and its cost over the plain Envoy (median of per-round differences)."""
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"wrk -t1 -c8 -d{args.duration}s, {args.rounds} interleaved rounds, one Envoy worker each, direct "
          f"responses on loopback; load average at the end {load}")
    print(f"{'':40} {'Envoy us/req':>12} {'cost':>7} {'[interquartile]':>17}")
    print(f"{'plain (direct response, nothing else)':40} {statistics.median(us['plain']):12.1f}")
    for name, values in us.items():
        if name == "plain":
            continue
        diffs = sorted(v - p for v, p in zip(values, us["plain"], strict=True))
        q = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else [diffs[0]] * 3
        print(f"{VARIANTS[name].label.removeprefix('(d) + '):40} {statistics.median(values):12.1f} "
              f"{statistics.median(diffs):+7.1f} [{q[0]:+6.1f} {q[2]:+6.1f}]")


if __name__ == "__main__":
    sys.exit(main())
