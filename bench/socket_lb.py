"""Socket-level load balancing: connection rate through a VIP, and endpoint-change latency.

(a) New TCP connections per second from a client in the LB's cgroup, to a service VIP vs
    directly to the backend's IP, in alternating paired runs; the ratio is the median of
    the pairs. The client opens and closes connections itself, closing with RST so
    TIME_WAIT never caps the rate. A third line shows the direct rate from a process with
    no programs attached at all (the cost of the hooks on traffic that is not a service).
(c) Latency of one endpoint change reaching the kernel maps with N services installed,
    p50 and p99: through ``apply_diff`` (the agent's fast path) and through a full
    ``apply`` of the whole plan.

Needs root; everything runs in namespaces and a cgroup of its own (prefix ``mcbench-``)
that are removed at the end.

    sudo .venv/bin/python bench/socket_lb.py [--seconds 2] [--pairs 5] [--services 10000]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pyroute2 import NetNS, netns

from meshcore.compile import BpfBackend, BpfPlan, BpfService, diff_bpf
from meshcore.datapath import SocketLB, cgroup2_mount
from meshcore.model import ServiceRef

VIP, BACKEND, PORT = "10.96.0.10", "10.78.0.2", 8080

SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(4096)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""

CLIENT = """
import socket, struct, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
linger = struct.pack("ii", 1, 0)
n, errors = 0, 0
end = time.perf_counter() + seconds
start = time.perf_counter()
while time.perf_counter() < end:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    try:
        s.connect((host, port))
        n += 1
    except OSError:
        errors += 1
    s.close()
print(n / (time.perf_counter() - start), errors)
"""


@contextlib.contextmanager
def topology(tag: str) -> Iterator[tuple[str, str]]:
    """A client and a server namespace joined by a veth; removed on exit."""
    client, server = f"mcbench-{tag}-c", f"mcbench-{tag}-s"
    made = []
    try:
        for name in (client, server):
            netns.create(name)
            made.append(name)
        with NetNS(client) as ns:
            ns.link("add", ifname="c0", kind="veth", peer={"ifname": "s0", "net_ns_fd": server})
            idx = ns.link_lookup(ifname="c0")[0]
            ns.addr("add", index=idx, address="10.78.0.1", prefixlen=24)
            ns.link("set", index=idx, state="up")
        with NetNS(server) as ns:
            idx = ns.link_lookup(ifname="s0")[0]
            ns.addr("add", index=idx, address=BACKEND, prefixlen=24)
            ns.link("set", index=idx, state="up")
        yield client, server
    finally:
        for name in made:
            netns.remove(name)


@contextlib.contextmanager
def cgroup(tag: str) -> Iterator[Path]:
    """A cgroup of our own; our clients have exited before it is removed."""
    path = cgroup2_mount() / f"mcbench-{tag}"
    path.mkdir()
    try:
        yield path
    finally:
        path.rmdir()


def rate(client_ns: str, group: Path | None, host: str, seconds: float) -> float:
    """Connections per second one client achieved."""
    def join() -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))
    out = subprocess.run(
        ["ip", "netns", "exec", client_ns, sys.executable, "-c", CLIENT, host, str(PORT), str(seconds)],
        capture_output=True, text=True, check=True, preexec_fn=join,
    ).stdout.split()
    if int(out[1]):
        raise SystemExit(f"{out[1]} connections to {host} failed: the measurement is not valid")
    return float(out[0])


def bench_rate(client_ns: str, group: Path, seconds: float, pairs: int) -> None:
    """(a): VIP vs direct, paired and alternating."""
    vip: list[float] = []
    direct: list[float] = []
    bare: list[float] = []
    ratios: list[float] = []
    rate(client_ns, group, VIP, 0.5)  # warm up caches and the accept loop
    for i in range(pairs):
        order = [(VIP, vip), (BACKEND, direct)] if i % 2 == 0 else [(BACKEND, direct), (VIP, vip)]
        for host, sink in order:
            sink.append(rate(client_ns, group, host, seconds))
        ratios.append(vip[-1] / direct[-1])
        bare.append(rate(client_ns, None, BACKEND, seconds))
    print(f"(a) new TCP connections/s, {pairs} paired runs of {seconds:g}s (median):")
    print(f"    to the service VIP                 {statistics.median(vip):10.0f}")
    print(f"    directly to the backend IP         {statistics.median(direct):10.0f}")
    print(f"    direct, no programs attached       {statistics.median(bare):10.0f}")
    print(f"    VIP/direct ratio (median of pairs) {statistics.median(ratios):10.3f}   target >= 0.97")
    print(f"    pairs: {' '.join(f'{r:.3f}' for r in ratios)}")


def services(n: int) -> list[BpfService]:
    """N services with two backends each (not reachable: only the maps matter here)."""
    base_vip, base_be = ipaddress.IPv4Address("10.100.0.0"), ipaddress.IPv4Address("10.200.0.0")
    return [
        BpfService(
            str(base_vip + i), 80, "TCP", ServiceRef("bench", f"s{i}"),
            backends=[BpfBackend(str(base_be + 4 * i + j), PORT) for j in range(2)],
        )
        for i in range(n)
    ]


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) in milliseconds."""
    ordered = sorted(values)
    return 1e3 * ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def bench_latency(lb: SocketLB, n: int, changes: int) -> None:
    """(c): one endpoint change at a time, with n services installed."""
    svcs = services(n)
    t0 = time.perf_counter()
    lb.apply(BpfPlan(services=svcs))
    initial = time.perf_counter() - t0
    current = BpfPlan(services=svcs)
    fast, full = [], []
    for k in range(changes):
        i = (k * 7919) % n
        changed = list(current.services)
        s = changed[i]
        extra = BpfBackend(str(ipaddress.IPv4Address("10.250.0.0") + k), PORT)
        changed[i] = BpfService(s.vip, s.port, s.protocol, s.service, backends=(*s.backends[:2], extra))
        new = BpfPlan(services=changed)
        diff = diff_bpf(current, new)
        t0 = time.perf_counter()
        report = lb.apply_diff(diff)
        fast.append(time.perf_counter() - t0)
        assert report.changed
        # Put it back through the full-plan path.
        t0 = time.perf_counter()
        report = lb.apply(current)
        full.append(time.perf_counter() - t0)
        assert report.changed
    print(f"(c) one endpoint change reaching the maps, {n} services installed ({changes} changes each):")
    print(f"    apply_diff  p50 {pct(fast, 50):7.3f} ms   p99 {pct(fast, 99):7.3f} ms   target p99 <= 5 ms")
    print(f"    full apply  p50 {pct(full, 50):7.3f} ms   p99 {pct(full, 99):7.3f} ms")
    print(f"    (initial apply of {n} services: {initial:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one rate run")
    parser.add_argument("--pairs", type=int, default=5, help="paired VIP/direct runs")
    parser.add_argument("--services", type=int, default=10000, help="services installed for (c)")
    parser.add_argument("--changes", type=int, default=200, help="endpoint changes timed for (c)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/socket_lb.py needs root (namespaces, cgroups, BPF)")
    tag = secrets.token_hex(3)
    pin_root = Path(f"/sys/fs/bpf/mcbench-{tag}")
    with topology(tag) as (client_ns, server_ns), cgroup(tag) as group:
        server = subprocess.Popen(
            ["ip", "netns", "exec", server_ns, sys.executable, "-c", SERVER, BACKEND, str(PORT)],
            stdout=subprocess.PIPE, text=True,
        )
        lb = SocketLB(f"mcbench-{tag}", group, pin_root)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            with lb:
                lb.apply(BpfPlan(services=[BpfService(VIP, PORT, "TCP", ServiceRef("bench", "echo"),
                                                      backends=[BpfBackend(BACKEND, PORT)])]))
                bench_rate(client_ns, group, args.seconds, args.pairs)
                bench_latency(lb, args.services, args.changes)
        finally:
            lb.destroy()
            os.kill(server.pid, signal.SIGKILL)
            server.wait()


if __name__ == "__main__":
    main()
