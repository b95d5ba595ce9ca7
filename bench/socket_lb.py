"""Socket-level load balancing vs kube-proxy's iptables rules: connection rates and update latency.

(a) New TCP connections per second from a client in the socket LB's cgroup, to a service
    VIP vs directly to a backend IP, on a node with no iptables rules. A third line is the
    direct rate from a cgroup with no programs attached (the hooks' cost on traffic that is
    not a service).
(b) New TCP connections per second to a service VIP with 1, 1,000 and 10,000 services
    installed: through the socket LB vs through iptables DNAT rules written the way
    kube-proxy (iptables mode) writes them — KUBE-SERVICES jumping per service to a
    KUBE-SVC-* chain that picks a KUBE-SEP-* chain with ``-m statistic --mode random``, which
    DNATs; KUBE-MARK-MASQ, KUBE-POSTROUTING and the filter-table jumps included. One more
    line shows the tax those rules put on a connection that is not to a service at all.
(c) Latency of one endpoint change reaching the kernel maps with 10,000 services
    installed, p50 and p99: ``apply_diff`` (the fast path), ``diff_bpf`` + ``apply_diff``,
    and a full ``apply`` of the whole plan.

Every configuration exists at once, so the measurements interleave: one socket-LB node
per size (a cgroup with its own pinned programs and maps, all in one network namespace
without iptables rules) and one kube-proxy node per size (a network namespace of its own
holding that many services' rules, loaded with one ``iptables-restore``), all routed to
one server namespace. Each configuration has its own client process, idle until told to
run; a round cycles through all of them in 50 ms slices, every other cycle in reverse
order (ABBA), so they all see the same load of a shared machine. Each rate is reported
per wall-clock second and per CPU-second of the client (connections divided by the time
the client ran, which includes the handshake's softirq work done in its context: what an
otherwise idle core would reach). Ratios are medians of per-round ratios, with their
interquartile range.

The client is a small C program, ``bench/tools/conn.c`` (built by make when missing or
stale): it opens and closes connections itself, closing with RST (SO_LINGER 0) so
TIME_WAIT never caps the rate. By default the server side is the kernel's backlog: the
listener uses TCP_DEFER_ACCEPT, so a handshake completes without waking any process and
the client's RST drops it; ``--server accept`` runs an accept-and-close loop instead.
Before measuring, every slot of each socket LB's reverse-translation array has been taken
by a real connection, as on a node that has been running for a while.

Needs root. Everything lives in namespaces, cgroups and bpffs pins named
``mcbench-slb-<pid>-*``; they are removed at the end, on Ctrl-C or SIGTERM, and a later run
removes what a run killed outright (SIGKILL) left behind. No rule touches the host's
own network namespace.

    sudo .venv/bin/python bench/socket_lb.py --quick     # under 2 minutes
    sudo .venv/bin/python bench/socket_lb.py             # full, under 10 minutes
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import hashlib
import ipaddress
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
from pyroute2 import NetNS
from pyroute2.netlink.exceptions import NetlinkError

from meshcore.compile import BpfBackend, BpfPlan, BpfService, diff_bpf
from meshcore import linux
from meshcore.datapath import BpfError, DatapathError, SocketLB
from meshcore.model import ServiceRef

from _harness import (
    ask, make_cgroup, make_netns, percentile_ms, ratio_text, ratios, require_root, run_cleanly, spawn, sweep_stale,
    tool, value_text, verdict,
)

PREFIX = "mcbench-slb"  # unique to this bench: stale sweeps match only its own names
VIP, PORT = "10.96.0.10", 8080
BACKENDS = ("10.78.1.2", "10.78.1.3")  # on the server namespace's loopback
CLUSTER_CIDR = "10.78.0.0/16"  # the pod range: clients and backends are pods, so no SNAT
SERVICE = ServiceRef("bench", "echo")
MAX_ERROR_SHARE = 0.001  # failed connects tolerated in one run before it counts as invalid


# --- leftovers of killed runs ---------------------------------------------------------------


def release_pins(root: Path) -> None:
    """Detach and unpin the socket LBs a killed run left under ``root`` (one directory per node)."""
    for node in sorted(p for p in root.iterdir() if p.is_dir()):
        with contextlib.suppress(Exception):
            SocketLB(node.name, "/", root).destroy()


# --- the pieces of the testbed --------------------------------------------------------------


@attrs.frozen
class Node:
    """A client side: a network namespace and the cgroup its client runs in."""

    netns: str
    cgroup: Path


@attrs.frozen
class Config:
    """One thing measured: a client on ``node`` connecting to ``host``."""

    key: str
    node: Node
    host: str
    reverse_slots: int = 0  # connections to this VIP take every slot of a reverse-translation array this big


def make_topology(stack: contextlib.ExitStack, prefix: str, clients: Sequence[str]) -> tuple[str, dict[str, str]]:
    """A server namespace holding the backends, and one client namespace per name, each on
    its own veth to the server, routed through it; removed when ``stack`` closes."""
    server = make_netns(stack, f"{prefix}-srv")
    with NetNS(server) as ns:
        lo = ns.link_lookup(ifname="lo")[0]
        ns.link("set", index=lo, state="up")
        for b in BACKENDS:
            ns.addr("add", index=lo, address=b, prefixlen=32)
    out: dict[str, str] = {}
    for i, name in enumerate(clients):
        full = make_netns(stack, f"{prefix}-{name}")
        net = ipaddress.IPv4Network(f"10.78.0.{4 * i}/30")
        c_addr, s_addr = str(net[1]), str(net[2])
        with NetNS(full) as ns:
            ns.link("add", ifname="c0", kind="veth", peer={"ifname": f"s{i}", "net_ns_fd": server})
            idx = ns.link_lookup(ifname="c0")[0]
            ns.addr("add", index=idx, address=c_addr, prefixlen=30)
            ns.link("set", index=idx, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            # A default route, as a node has one: without it connect() to a VIP fails before
            # kube-proxy's nat OUTPUT rules could DNAT it. It leads only to the server
            # namespace, which forwards nothing.
            ns.route("add", dst="0.0.0.0/0", gateway=s_addr)
        with NetNS(server) as ns:
            idx = ns.link_lookup(ifname=f"s{i}")[0]
            ns.addr("add", index=idx, address=s_addr, prefixlen=30)
            ns.link("set", index=idx, state="up")
        out[name] = full
    return server, out


def start_server(stack: contextlib.ExitStack, conn: Path, server_ns: str, mode: str) -> None:
    """The listener on every backend address (``mode`` backlog or accept); killed by pid when
    ``stack`` closes."""
    spawn(stack, [str(conn), str(linux.netns_path(server_ns)), str(os.getpid()), "server", str(PORT), mode],
          "the bench server")


def reverse_slots(lb: SocketLB) -> int:
    """max_entries of the node's reverse-translation array (connected sockets), read with bpftool from its pin."""
    pin = lb.pin_dir / "maps" / "lb_rev_sock"
    tool = shutil.which("bpftool")
    if tool is not None:
        done = subprocess.run([tool, "-j", "map", "show", "pinned", str(pin)], capture_output=True, text=True)
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return int(json.loads(done.stdout)["max_entries"])
    return 131072  # LB_REV_SOCK_SLOTS in bpf/sock_lb.h


def fillers(n: int) -> list[tuple[str, str, list[str]]]:
    """``n`` other services (name, VIP, two backend addresses), unreachable: only their rules count."""
    vip0, be0 = ipaddress.IPv4Address("10.100.0.0"), ipaddress.IPv4Address("10.200.0.0")
    return [(f"s{i}", str(vip0 + i), [str(be0 + 4 * i + j) for j in range(2)]) for i in range(n)]


def lb_plan(n: int) -> BpfPlan:
    """The measured service plus ``n - 1`` others, two backends each."""
    svcs = [BpfService(VIP, PORT, "TCP", SERVICE, backends=[BpfBackend(b, PORT) for b in BACKENDS])]
    svcs += [
        BpfService(vip, PORT, "TCP", ServiceRef("bench", name), backends=[BpfBackend(b, PORT) for b in bes])
        for name, vip, bes in fillers(n - 1)
    ]
    return BpfPlan(services=svcs)


# --- kube-proxy's rules ---------------------------------------------------------------------


def _chain(kind: str, text: str) -> str:
    # kube-proxy names chains by a hash of what they stand for; any stable hash will do.
    digest = hashlib.sha256(text.encode()).digest()
    return f"KUBE-{kind}-{base64.b32encode(digest).decode()[:16]}"


def kube_proxy_rules(n: int) -> str:
    """An ``iptables-restore`` input with ``n`` ClusterIP services as kube-proxy (iptables
    mode) writes them; the measured service sits in the middle of KUBE-SERVICES, where a
    service lands on average (kube-proxy writes them in map order)."""
    services = [(f"s{i}", vip, bes) for i, (_, vip, bes) in enumerate(fillers(n - 1))]
    services.insert(len(services) // 2, ("echo", VIP, list(BACKENDS)))
    nat_chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    jumps: list[str] = []
    bodies: list[str] = []
    for name, vip, bes in services:
        port_name = f"bench/{name}:http"
        svc = _chain("SVC", f"{port_name}tcp")
        nat_chains.append(svc)
        dst = f"-d {vip}/32 -p tcp -m comment --comment \"{port_name} cluster IP\" -m tcp --dport {PORT}"
        jumps.append(f"-A KUBE-SERVICES {dst} -j {svc}")
        bodies.append(f"-A {svc} ! -s {CLUSTER_CIDR} {dst} -j KUBE-MARK-MASQ")
        for k, be in enumerate(bes):
            sep = _chain("SEP", f"{port_name}tcp{be}:{PORT}")
            nat_chains.append(sep)
            left = len(bes) - k
            pick = f"-m statistic --mode random --probability {1 / left:.11f} " if left > 1 else ""
            bodies.append(f"-A {svc} -m comment --comment \"{port_name} -> {be}:{PORT}\" {pick}-j {sep}")
            bodies.append(f"-A {sep} -s {be}/32 -m comment --comment \"{port_name}\" -j KUBE-MARK-MASQ")
            bodies.append(
                f"-A {sep} -p tcp -m comment --comment \"{port_name}\" -m tcp -j DNAT --to-destination {be}:{PORT}"
            )
    new = "-m conntrack --ctstate NEW"
    fw = "-m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"
    ext = "-m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"
    portals = "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
    lines = [
        "*filter",
        ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        *(f":{c} - [0:0]" for c in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD",
                                   "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL")),
        f"-A INPUT {new} {fw}",
        "-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS",
        f"-A INPUT {new} {ext}",
        f"-A FORWARD {new} {fw}",
        "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD",
        f"-A FORWARD {new} {portals}",
        f"-A FORWARD {new} {ext}",
        f"-A OUTPUT {new} {fw}",
        f"-A OUTPUT {new} {portals}",
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT",
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" "
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "COMMIT",
        "*nat",
        ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]",
        *(f":{c} - [0:0]" for c in nat_chains),
        f"-A PREROUTING {portals}",
        f"-A OUTPUT {portals}",
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" "
        "-j MASQUERADE --random-fully",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
        *jumps,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last "
        "rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
        *bodies,
        "COMMIT",
        "",
    ]
    return "\n".join(lines)


def iptables_tools(flavour: str) -> tuple[str, str]:
    """The restore and save commands for ``flavour`` (system, nft or legacy), and a version line."""
    restore = {"system": "iptables-restore", "nft": "iptables-nft-restore", "legacy": "iptables-legacy-restore"}[flavour]
    path = shutil.which(restore)
    if path is None:
        raise SystemExit(f"{restore} not found: install the Debian package iptables")
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.strip()
    return path, version or restore


def load_rules(restore: str, ns: str, n: int) -> tuple[float, int]:
    """Load ``n`` services' rules into namespace ``ns`` with one restore: (seconds, rule count)."""
    text = kube_proxy_rules(n)
    t0 = time.perf_counter()
    done = subprocess.run(["ip", "netns", "exec", ns, restore], input=text, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{restore} failed in namespace {ns}:\n{done.stderr.strip()[:2000]}")
    return took, sum(1 for line in text.splitlines() if line.startswith("-A "))


# --- measuring ------------------------------------------------------------------------------


@attrs.frozen
class Sample:
    """One run's result: connections per wall-clock second, and per second the client was on a CPU."""

    wall: float
    cpu: float


class Worker:
    """A client process living in one configuration's namespace and cgroup, idle between slices."""

    def __init__(self, stack: contextlib.ExitStack, conn: Path, cfg: Config) -> None:
        self.cfg = cfg
        self.what = f"the bench client for {cfg.key}"
        group = cfg.node.cgroup

        def join() -> None:
            (group / "cgroup.procs").write_text("0")
        argv = [str(conn), str(linux.netns_path(cfg.node.netns)), str(os.getpid()), "worker", cfg.host, str(PORT)]
        self.proc = spawn(stack, argv, self.what, stdin=True, preexec_fn=join)

    def run(self, seconds: float) -> tuple[int, float, float]:
        """Connect for ``seconds``: (connections, wall seconds, CPU seconds); too many failures abort."""
        out = ask(self.proc, f"{seconds}", self.what)
        if len(out) != 5:
            raise SystemExit(f"{self.what} stopped (exit code {self.proc.wait()})")
        ok, failed = int(out[0]), int(out[1])
        if failed > MAX_ERROR_SHARE * (ok + failed) or ok == 0:
            raise SystemExit(
                f"{self.cfg.key}: {failed} of {ok + failed} connections to {self.cfg.host} failed "
                f"({os.strerror(int(out[2]))}): the measurement is not valid"
            )
        return ok, float(out[3]), float(out[4])


Results = dict[str, list[Sample]]


def warm(w: Worker) -> None:
    """Bring a configuration to its steady state: caches and conntrack warm and, for a socket LB
    VIP, every slot of its reverse-translation array taken, as on a node that has run for a
    while (each translated connect takes over the slot of its socket cookie)."""
    w.run(0.3)
    if w.cfg.reverse_slots:
        made = 0
        while made < 1.2 * w.cfg.reverse_slots:
            made += w.run(1.0)[0]


def rounds(workers: Sequence[Worker], n: int, seconds: float, slice_s: float,
           progress: Callable[[str], None]) -> Results:
    """``n`` rounds; in each, every configuration runs ``seconds`` in all, in slices of
    ``slice_s`` cycling through the configurations, every other cycle in reverse (ABBA), so
    all of them see the same machine load. One Sample per configuration and round."""
    cycles = max(2, 2 * round(seconds / slice_s / 2))
    piece = seconds / cycles
    out: Results = {w.cfg.key: [] for w in workers}
    for w in workers:
        warm(w)
    progress(f"{n} rounds x {len(workers)} configurations x {seconds:g} s")
    for i in range(n):
        total = {w.cfg.key: [0.0, 0.0, 0.0] for w in workers}  # connections, wall s, CPU s
        for c in range(cycles):
            for w in (workers if c % 2 == 0 else list(reversed(workers))):
                for k, x in enumerate(w.run(piece)):
                    total[w.cfg.key][k] += x
        for key, (conns, wall, cpu) in total.items():
            out[key].append(Sample(conns / wall, conns / cpu))
        progress(f"round {i + 1}/{n} done")
    return out


METRICS = (("wall", "per second"), ("cpu", "per CPU-second of the client"))


def values(samples: list[Sample], metric: str) -> list[float]:
    """One metric of every round."""
    return [getattr(x, metric) for x in samples]


def per_round(a: list[Sample], b: list[Sample], metric: str) -> list[float]:
    """Ratios a/b of the same round."""
    return ratios(values(a, metric), values(b, metric))


def rate_text(xs: list[float]) -> str:
    """Median rate with its interquartile range as ± percent."""
    return value_text(xs, "9,.0f")


def services_text(n: int) -> str:
    """'1 service', '1,000 services'."""
    return f"{n:,} service{'' if n == 1 else 's'}"


def report_rates(r: Results, sizes: list[int], ipt_version: str) -> dict[str, bool]:
    """Print (a) and (b) for both metrics; return which targets each metric meets."""
    small, largest = sizes[0], sizes[-1]
    met: dict[str, bool] = {}
    w = 24
    print(f"\n(a) new TCP connections/s on a node without iptables rules, {services_text(small)} installed")
    print(f"    {'':34}" + "".join(f"{title:>{w + 6}}" for _, title in METRICS))
    for key, label in (("vip", "to the service VIP (socket LB)"), ("direct", "directly to a backend IP"),
                       ("bare", "direct, no programs attached")):
        print(f"    {label:34}" + "".join(f"{rate_text(values(r[key], m)):>{w + 6}}" for m, _ in METRICS))
    line = []
    for m, _ in METRICS:
        vd = per_round(r["vip"], r["direct"], m)
        met[f"a-{m}"] = statistics.median(vd) >= 0.97
        line.append(f"{ratio_text(vd)} {verdict(met[f'a-{m}']):>6}")
    print(f"    {'VIP/direct (target >= 0.97)':34}" + "".join(f"{x:>{w + 6}}" for x in line))
    nohooks = [f"{ratio_text(per_round(r['direct'], r['bare'], m))}" for m, _ in METRICS]
    print(f"    {'direct: programs/none':34}" + "".join(f"{x:>{w + 6}}" for x in nohooks))
    added = statistics.median(
        1e6 / v.cpu - 1e6 / d.cpu for v, d in zip(r["vip"], r["direct"]))
    print(f"    CPU time per connection: {1e6 / statistics.median(values(r['direct'], 'cpu')):.1f} us direct; "
          f"translating the VIP adds {added:.2f} us (median of per-round differences)")

    print(f"\n(b) new TCP connections/s to a service VIP with N services installed; iptables: {ipt_version}")
    for m, title in METRICS:
        print(f"  {title}:")
        print(f"    {'':34}" + "".join(f"{f'N={n:,}':>{w}}" for n in sizes))
        print(f"    {'socket LB':34}" + "".join(f"{rate_text(values(r[f'lb{n}'], m)):>{w}}" for n in sizes))
        print(f"    {'iptables, kube-proxy rules':34}" + "".join(
            f"{rate_text(values(r[f'kp{n}'], m)):>{w}}" for n in sizes))
        ratios = {n: per_round(r[f"lb{n}"], r[f"kp{n}"], m) for n in sizes}
        print(f"    {'socket LB / iptables':34}" + "".join(f"{ratio_text(ratios[n]):>{w}}" for n in sizes))
        flat = {n: per_round(r[f"lb{n}"], r[f"lb{small}"], m) for n in sizes}
        print(f"    {f'socket LB / socket LB at N={small:,}':34}" + "".join(
            f"{ratio_text(flat[n]):>{w}}" for n in sizes))
        if m == "cpu":
            print(f"    {'CPU us per connection, socket LB':34}" + "".join(
                f"{1e6 / statistics.median(values(r[f'lb{n}'], m)):>{w}.1f}" for n in sizes))
            print(f"    {'CPU us per connection, iptables':34}" + "".join(
                f"{1e6 / statistics.median(values(r[f'kp{n}'], m)):>{w}.1f}" for n in sizes))
        big = statistics.median(ratios[largest])
        worst = max(abs(statistics.median(flat[n]) - 1) for n in sizes)
        met[f"b4-{m}"], met[f"bflat-{m}"] = big >= 4, worst <= 0.05
        print(f"    at N={largest:,} socket LB / iptables = {big:.2f}x (target >= 4x: {verdict(big >= 4)}); "
              f"socket LB within {100 * worst:.1f}% across N (target 5%: {verdict(worst <= 0.05)})")
        tax = per_round(r["kpdirect"], r["bare"], m)
        print(f"    a connection to no service on the iptables node with N={largest:,}: "
              f"{rate_text(values(r['kpdirect'], m)).strip()}, {ratio_text(tax)} of a node without rules")
    return met


def bench_latency(lb: SocketLB, plan: BpfPlan, changes: int) -> bool:
    """(c): one endpoint change at a time on top of ``plan`` (already applied); True if on target.

    A garbage collection runs before each timed call, so Python's collector (triggered by
    building the next 10,000-service plan) does not land inside one.
    """
    current = plan
    n = len(plan.services)
    fast: list[float] = []
    fast_cpu: list[float] = []
    with_diff: list[float] = []
    full: list[float] = []
    for k in range(changes):
        i = 1 + (k * 7919) % (n - 1)  # a filler, never the measured service
        changed = list(current.services)
        s = changed[i]
        extra = BpfBackend(str(ipaddress.IPv4Address("10.250.0.0") + k), PORT)
        changed[i] = BpfService(s.vip, s.port, s.protocol, s.service, backends=(*s.backends[:2], extra))
        new = BpfPlan(services=changed)
        gc.collect()
        c0 = time.thread_time()
        t0 = time.perf_counter()
        diff = diff_bpf(current, new)
        t1 = time.perf_counter()
        c1 = time.thread_time()
        report = lb.apply_diff(diff)
        t2 = time.perf_counter()
        c2 = time.thread_time()
        if not report.changed:
            raise SystemExit("(c): the endpoint change wrote nothing: the measurement is not valid")
        fast.append(t2 - t1)
        fast_cpu.append(c2 - c1)
        with_diff.append(t2 - t0)
        # Put it back through the full-plan path (what the lab agent does on every change).
        gc.collect()
        t0 = time.perf_counter()
        report = lb.apply(current)
        full.append(time.perf_counter() - t0)
        if not report.changed:
            raise SystemExit("(c): the full apply wrote nothing: the measurement is not valid")
    ok = percentile_ms(fast, 99) <= 5.0
    print(f"\n(c) one endpoint change reaching the kernel maps, {n:,} services installed, {changes} changes")
    print(f"    apply_diff                 p50 {percentile_ms(fast, 50):8.3f} ms   p99 {percentile_ms(fast, 99):8.3f} ms   "
          f"target p99 <= 5 ms: {verdict(ok)}")
    print(f"    apply_diff, on-CPU time    p50 {percentile_ms(fast_cpu, 50):8.3f} ms   p99 {percentile_ms(fast_cpu, 99):8.3f} ms")
    print(f"    diff_bpf + apply_diff      p50 {percentile_ms(with_diff, 50):8.3f} ms   p99 {percentile_ms(with_diff, 99):8.3f} ms")
    print(f"    full apply(plan)           p50 {percentile_ms(full, 50):8.3f} ms   p99 {percentile_ms(full, 99):8.3f} ms")
    return ok


# --- the run --------------------------------------------------------------------------------


def machine_line(ipt_version: str) -> str:
    """What the numbers were measured on."""
    load = Path("/proc/loadavg").read_text().split()[:3]
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"{os.cpu_count()} CPUs ({model or platform.machine()}), kernel {platform.release()}, "
            f"{ipt_version}, load average {' '.join(load)} at start")


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    """Build the testbed on ``stack``, measure and print."""
    sizes = sorted(set(args.sizes))
    largest = sizes[-1]
    prefix = f"{PREFIX}-{os.getpid()}"
    restore, ipt_version = iptables_tools(args.iptables)
    started = time.perf_counter()

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"  [{time.perf_counter() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)

    print(f"socket_lb bench: {machine_line(ipt_version)}")
    print(f"command: {' '.join(sys.argv)}")
    conn = tool("conn")
    server_ns, client_ns = make_topology(stack, prefix, ["lb", *(f"kp{n}" for n in sizes)])
    start_server(stack, conn, server_ns, args.server)

    # Socket-LB nodes: one cgroup (with its own pinned programs and maps) per size, all in
    # one network namespace without iptables rules.
    pin_root = linux.bpffs() / prefix
    stack.callback(lambda: pin_root.rmdir() if pin_root.exists() else None)
    plain = Node(client_ns["lb"], make_cgroup(stack, f"{prefix}-plain"))
    lb_nodes: dict[int, Node] = {}
    lbs: dict[int, SocketLB] = {}
    plans: dict[int, BpfPlan] = {}
    for n in sizes:
        group = make_cgroup(stack, f"{prefix}-lb{n}")
        lb = SocketLB(f"{prefix}-lb{n}", group, pin_root, bpf_object=args.bpf_object)
        stack.callback(lb.destroy)
        lb.open()
        plans[n] = lb_plan(n)
        t0 = time.perf_counter()
        lb.apply(plans[n])
        print(f"setup: socket LB with {services_text(n)} applied in {time.perf_counter() - t0:.2f} s")
        lb_nodes[n], lbs[n] = Node(client_ns["lb"], group), lb

    # kube-proxy nodes: one network namespace per size holding that many services' rules;
    # their clients run in the cgroup without programs.
    kp_nodes: dict[int, Node] = {}
    for n in sizes:
        took, count = load_rules(restore, client_ns[f"kp{n}"], n)
        print(f"setup: iptables with {services_text(n)} ({count:,} rules) loaded by one restore in {took:.2f} s")
        kp_nodes[n] = Node(client_ns[f"kp{n}"], plain.cgroup)

    small = sizes[0]
    # The comparisons that need the finest resolution (VIP/direct, the socket LB across N)
    # are between neighbours; ABBA order does the rest.
    configs = [
        Config("bare", plain, BACKENDS[0]),
        Config("direct", lb_nodes[small], BACKENDS[0]),
        Config("vip", lb_nodes[small], VIP, reverse_slots(lbs[small])),
        *(Config(f"lb{n}", lb_nodes[n], VIP, reverse_slots(lbs[n])) for n in sizes[1:]),
        *(Config(f"kp{n}", kp_nodes[n], VIP) for n in sizes),
        Config("kpdirect", kp_nodes[largest], BACKENDS[0]),
    ]
    workers = [Worker(stack, conn, c) for c in configs]
    progress("warming up (taking every slot of each socket LB's reverse-translation array)")
    r = rounds(workers, args.rounds, args.seconds, args.slice, progress)
    r[f"lb{small}"] = r["vip"]
    server = ("the kernel's backlog (TCP_DEFER_ACCEPT, no server process)" if args.server == "backlog"
              else "an accept-and-close loop")
    print(f"\n{args.rounds} rounds; in each, all {len(configs)} configurations ran {args.seconds:g} s in all, "
          f"in slices of {args.slice * 1e3:g} ms")
    print("cycling through them, every other cycle in reverse order (ABBA), so they share the machine's load.")
    print(f"Server side: {server}. Every slot of the socket LBs' reverse-translation arrays taken before measuring.")
    print("Rates: median over rounds, ± half the interquartile range. Ratios: median of the per-round "
          "ratios [interquartile range].")
    print("'per CPU-second of the client' divides by the time the client ran (its own work and the "
          "handshake's softirq work),")
    print("not by wall time: what an otherwise idle core would reach; other tenants' load moves it less.")
    met = report_rates(r, sizes, ipt_version)
    progress("timing endpoint changes")
    met["c"] = bench_latency(lbs[largest], plans[largest], args.changes)
    print(f"\nload average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}; "
          f"{time.perf_counter() - started:.0f} s in all")
    summary = [
        ("VIP/direct >= 0.97", "a"), (f">= 4x iptables at N={largest:,}", "b4"),
        ("flat within 5%", "bflat"),
    ]
    print("targets (per second / per CPU-second): " + "; ".join(
        f"{label} {verdict(met[f'{k}-wall'])}/{verdict(met[f'{k}-cpu'])}" for label, k in summary
    ) + f"; endpoint change p99 <= 5 ms {verdict(met['c'])}")
    progress("cleaning up")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line; ``--quick`` sets shorter defaults."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (under 2 minutes)")
    parser.add_argument("--seconds", type=float,
                        help="seconds each configuration runs per round (default 1, quick 0.5)")
    parser.add_argument("--rounds", type=int, help="rounds, each a sample of every configuration (default 25, quick 6)")
    parser.add_argument("--slice", type=float, default=0.05, help="seconds a configuration runs before the next (0.05)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 1000, 10000],
                        help="service counts, comma-separated (default 1,1000,10000)")
    parser.add_argument("--changes", type=int, help="endpoint changes timed for (c) (default 200, quick 50)")
    parser.add_argument("--iptables", choices=["system", "nft", "legacy"], default="system",
                        help="iptables backend for (b): the system's iptables-restore (default), nft or legacy")
    parser.add_argument("--server", choices=["backlog", "accept"], default="backlog",
                        help="backlog (default): the kernel completes and drops each handshake, no server "
                             "process runs; accept: a server process accepts and closes every connection")
    parser.add_argument("--bpf-object", type=Path, default=None,
                        help="socket LB object to load instead of the packaged one (to compare a variant)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (0.5 if args.quick else 1.0)
    args.rounds = args.rounds or (6 if args.quick else 25)
    args.changes = args.changes or (50 if args.quick else 200)
    if min(args.sizes) < 1 or args.seconds <= 0 or args.rounds < 1 or args.changes < 1 or args.slice <= 0:
        parser.error("--sizes, --seconds, --rounds, --slice and --changes must be positive")
    if max(args.sizes) < 2:
        parser.error("--sizes needs a size of at least 2 (endpoint changes go to the other services)")
    return args


def main() -> None:
    args = parse_args()
    require_root("bench/socket_lb.py", "network namespaces, cgroups, BPF, iptables")
    sweep_stale(PREFIX, release_pins)
    run_cleanly("bench/socket_lb.py", lambda stack: run(args, stack),
                failures=(DatapathError, BpfError, NetlinkError, OSError))


if __name__ == "__main__":
    main()
