"""L3/L4 policy on pod veths: its cost on throughput, request/response latency and connection rate.

(a) Pod-to-pod TCP throughput (iperf3, one stream) and request/response latency (1-byte
    ping-pong on one connection, p50/p90/p99, by ``bench/tools/pingpong.c``) between two
    pods whose veths carry the policy programs with 1,000 rules enforced (the server is
    selected by an ALLOW policy, so every new flow is looked up and default-denied unless
    allowed), against a pair of pods whose veths carry no programs at all. Targets:
    throughput ratio >= 0.95, p50 latency ratio <= 1.10.
(b) New TCP connections per second between two pods under a policy map of 10 entries vs
    one of 100,000 entries (10,000 remote identities x 10 ports, with 10,000 more ipcache
    prefixes). Every connection is a new flow: ipcache lookups, a policy lookup, a
    conntrack entry and a verdict event. Target: the 100,000-entry rate within 5% of the
    10-entry rate.

Topology: one node network namespace with a bridge; eight pod namespaces, each on a veth
whose host side is a bridge port (pairs A: 1,000 rules, B: no programs, C: 10 entries,
D: 100,000 entries). A, C and D each have their own PolicyEnforcer (own programs and
pinned maps), as three nodes would. The events ring buffers are not read during the
bench: an agent reading them costs the same for every configuration, and a full ring
buffer makes reserving an event fail fast.

Pairs run interleaved in the same run: each round measures A and B (and C and D) back to
back, in alternating order (ABBA); latency and connection rate alternate in short
slices. A and B are roles, not pods: the 1,000-rule programs move between the first two
pairs every round, so what differs between the pairs themselves cancels out. Ratios are medians of per-round ratios with their interquartile range; the
machine is shared, so only same-round ratios mean anything.

Needs root. Namespaces and pins are named ``mcbench-pol-<pid>-*``; they are removed at
the end, on Ctrl-C or SIGTERM, and a later run removes what a killed run left behind.

    sudo PYTHONPATH=src .venv/bin/python bench/policy.py --quick    # under 2 minutes
    sudo PYTHONPATH=src .venv/bin/python bench/policy.py            # full, about 7 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from meshcore.compile import IpcacheEntry, PolicyEndpoint, PolicyEntry, PolicyOrigin, PolicyPlan, PolicyVerdict
from meshcore import linux
from meshcore.datapath import PolicyEnforcer
from meshcore.model import Direction, WorkloadRef

from _harness import ask, make_netns, ratio_text, ratios, require_root, run_cleanly, spawn, sweep_stale, tool, value_text

PREFIX = "mcbench-pol"  # unique to this bench: stale sweeps match only its own names

NODE_ADDR = "10.79.0.254"
ECHO_PORT, CONN_PORT, IPERF_PORT = 7000, 7001, 5201
CLIENT_ID, SERVER_ID, FAKE_BASE = 5000, 5001, 10000
MAX_ERROR_SHARE = 0.001
#: pair name → (policy entries, or None for no programs attached).
PAIRS: dict[str, int | None] = {"a": 1000, "b": None, "c": 10, "d": 100_000}

def sh(*args: str) -> None:
    """Run a command; a failure stops the bench with its message."""
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.strip()}")


@attrs.frozen
class Pod:
    """A pod of the bench: its namespace, address and host-side veth."""

    name: str
    netns: str
    address: str
    veth: str

    @property
    def ref(self) -> WorkloadRef:
        """The pod as a workload."""
        return WorkloadRef("bench", self.name)


def make_topology(stack: contextlib.ExitStack, prefix: str,
                  names: Sequence[str]) -> tuple[str, dict[str, tuple[Pod, Pod]]]:
    """The node namespace with a bridge and a client and a server pod per pair; removed when ``stack`` closes."""
    node = make_netns(stack, f"{prefix}-node")
    sh("ip", "-n", node, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", node, "addr", "add", f"{NODE_ADDR}/24", "dev", "br0")
    sh("ip", "-n", node, "link", "set", "br0", "up")
    pairs: dict[str, tuple[Pod, Pod]] = {}
    n = 0
    for pair in names:
        pods = []
        for role in ("cli", "srv"):
            n += 1
            name = f"{pair}-{role}"
            pod = Pod(name, make_netns(stack, f"{prefix}-{name}"), f"10.79.0.{n}", f"h{pair}{role}")
            sh("ip", "-n", node, "link", "add", pod.veth, "type", "veth", "peer", "name", "eth0", "netns", pod.netns)
            sh("ip", "-n", node, "link", "set", pod.veth, "master", "br0", "up")
            sh("ip", "-n", pod.netns, "addr", "add", f"{pod.address}/24", "dev", "eth0")
            sh("ip", "-n", pod.netns, "link", "set", "eth0", "up")
            sh("ip", "-n", pod.netns, "link", "set", "lo", "up")
            pods.append(pod)
        pairs[pair] = (pods[0], pods[1])
    return node, pairs


def fake_address(i: int) -> str:
    """The address of the i-th remote identity that is not part of the traffic (in 10.80.0.0/12)."""
    return str(ipaddress.IPv4Address("10.80.0.0") + i)


def policy_plan(pairs: Sequence[tuple[Pod, Pod]], entries: int) -> PolicyPlan:
    """``entries`` ingress entries for the servers (default-deny): the clients' identity on the
    bench's ports, and the rest spread over other identities, 10 ports each."""
    allowed = [PolicyEntry(SERVER_ID, Direction.INGRESS, socket.IPPROTO_TCP, CLIENT_ID, port, 16,
                           PolicyVerdict.ALLOW, 1) for port in (ECHO_PORT, CONN_PORT, IPERF_PORT)]
    others = []
    identities = max(1, (entries - len(allowed) + 9) // 10)
    for i in range(entries - len(allowed)):
        ident, port = FAKE_BASE + i // 10, 8000 + i % 10
        others.append(PolicyEntry(SERVER_ID, Direction.INGRESS, socket.IPPROTO_TCP, ident, port, 16,
                                  PolicyVerdict.ALLOW, 1))
    ipcache = [IpcacheEntry(f"{pod.address}/32", ident)
               for pair in pairs for pod, ident in zip(pair, (CLIENT_ID, SERVER_ID), strict=True)]
    if entries > len(allowed):
        ipcache += [IpcacheEntry(f"{fake_address(i)}/32", FAKE_BASE + i) for i in range(identities)]
    endpoints = [e for client, server in pairs for e in (
        PolicyEndpoint(client.ref, CLIENT_ID, (client.address,)),
        PolicyEndpoint(server.ref, SERVER_ID, (server.address,), ingress_default_deny=True))]
    origin = PolicyOrigin(1, "bench/allow-client", "ALLOW", Direction.INGRESS, 0)
    return PolicyPlan(ipcache=ipcache, endpoints=endpoints, entries=[*allowed, *others], origins=[origin])


def enforce(stack: contextlib.ExitStack, prefix: str, node: str, pair: str, pods: tuple[Pod, Pod],
            entries: int, spare: tuple[Pod, Pod] | None = None) -> PolicyEnforcer:
    """A PolicyEnforcer of its own for one pair, holding ``entries`` policy entries, attached to both veths;
    its plan also knows the ``spare`` pair, so the programs can move there."""
    enforcer = PolicyEnforcer(f"{prefix}-{pair}", linux.bpffs() / f"{prefix}-{pair}", netns=node,
                              host_addresses=(NODE_ADDR,))
    stack.callback(shutil.rmtree, linux.bpffs() / f"{prefix}-{pair}", True)
    enforcer.open()
    stack.callback(enforcer.destroy)
    enforcer.apply(policy_plan([pods, *([spare] if spare else [])], entries))
    for pod in pods:
        enforcer.attach(pod.veth, pod.ref)
    counts = enforcer.counts()
    if counts["pol_policy"] != entries:
        raise SystemExit(f"pair {pair}: {counts['pol_policy']} policy entries in the map, expected {entries}")
    return enforcer


def start_in(stack: contextlib.ExitStack, netns: str, argv: Sequence[str], *, stdin: bool = False,
             ready: bool = True) -> subprocess.Popen[str]:
    """A process in ``netns``, killed by pid when ``stack`` closes; waits for its "ready" line if asked."""
    return spawn(stack, ["ip", "netns", "exec", netns, *argv], f"{Path(argv[0]).name} in {netns}", stdin=stdin,
                 ready=ready, quiet=True)


class Worker:
    """The client tool of one pair, idle until asked to measure."""

    def __init__(self, stack: contextlib.ExitStack, pingpong: Path, pair: str, client: Pod, server: Pod) -> None:
        self.pair = pair
        self.proc = start_in(stack, client.netns,
                             [str(pingpong), "worker", server.address, str(ECHO_PORT), str(CONN_PORT)], stdin=True)

    def ask(self, what: str, seconds: float) -> list[str]:
        """Run one measurement; its answer's fields."""
        out = ask(self.proc, f"{what} {seconds}", f"the bench client of pair {self.pair}")
        if out[0] != what:
            raise SystemExit(f"the bench client of pair {self.pair} answered {' '.join(out)!r} to {what!r}")
        return out[1:]

    def rr(self, seconds: float) -> list[float]:
        """(round trips, p50, p90, p99 in microseconds)."""
        count, p50, p90, p99, _ = (float(x) for x in self.ask("rr", seconds))
        if count == 0:
            raise SystemExit(f"pair {self.pair}: the ping-pong connection failed: the measurement is not valid")
        return [count, p50, p90, p99]

    def conn(self, seconds: float) -> tuple[int, float]:
        """(connections, wall seconds); too many failures abort."""
        ok, failed, errno_, wall, _ = self.ask("conn", seconds)
        good, bad = int(ok), int(failed)
        if bad > MAX_ERROR_SHARE * (good + bad) or good == 0:
            raise SystemExit(f"pair {self.pair}: {bad} of {good + bad} connections failed "
                             f"({os.strerror(int(errno_))}): the measurement is not valid")
        return good, float(wall)


def iperf(client: Pod, server: Pod, seconds: float) -> float:
    """One iperf3 run (whole seconds, at least one) from ``client`` to ``server``: received bits per second."""
    whole = max(1, round(seconds))  # iperf3 takes whole seconds; -t 0 would mean "forever"
    try:
        done = subprocess.run(["ip", "netns", "exec", client.netns, "iperf3", "-c", server.address,
                               "-p", str(IPERF_PORT), "-t", str(whole), "-J"],
                              capture_output=True, text=True, timeout=whole + 30, check=False)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"iperf3 {client.name} -> {server.name} did not finish") from None
    try:
        rate = float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"])
    except (ValueError, KeyError) as exc:
        raise SystemExit(f"iperf3 {client.name} -> {server.name} failed: {done.stderr.strip() or exc}") from None
    return rate


def run(args: argparse.Namespace, stack: contextlib.ExitStack, say: Callable[[str], None]) -> bool:
    """Build the testbed, measure, print; True when every target is met."""
    prefix = f"{PREFIX}-{os.getpid()}"
    pingpong = tool("pingpong")
    layout = {**PAIRS, "a": None} if args.control else PAIRS
    node, pairs = make_topology(stack, prefix, list(layout))
    started = time.monotonic()
    movable: PolicyEnforcer | None = None
    for pair, entries in layout.items():
        if entries is not None:
            t0 = time.monotonic()
            enforcer = enforce(stack, prefix, node, pair, pairs[pair], entries, pairs["b"] if pair == "a" else None)
            movable = enforcer if pair == "a" else movable
            say(f"pair {pair}: {entries:,} policy entries applied and attached in {time.monotonic() - t0:.1f} s")
        elif pair == "b" and not args.control:
            say("pair b: no programs; pair a's move here every other round")
        else:
            say(f"pair {pair}: no programs attached")
    workers = {}
    for pair, (client, server) in pairs.items():
        start_in(stack, server.netns, [str(pingpong), "serve", str(ECHO_PORT), str(CONN_PORT)])
        start_in(stack, server.netns, ["iperf3", "-s", "-B", server.address, "-p", str(IPERF_PORT)], ready=False)
        workers[pair] = Worker(stack, pingpong, pair, client, server)
    time.sleep(0.5)  # iperf3 servers listening
    for w in workers.values():  # warm: caches, conntrack, the first flow's verdict
        w.rr(0.2)
        w.conn(0.3)
    tput: dict[str, list[float]] = {"a": [], "b": []}
    lat: dict[str, list[list[float]]] = {"a": [], "b": []}
    rate: dict[str, list[float]] = {"c": [], "d": []}
    slices = max(2, 2 * round(args.seconds / args.slice / 2))
    piece = args.seconds / slices
    say(f"{args.rounds} rounds: iperf3 {args.seconds:g} s per pair, ping-pong and connection rate "
        f"{args.seconds:g} s per pair in {slices} slices (ABBA)")
    carrier = "a"
    for r in range(args.rounds):
        # A and B are roles: the programs move between the two pairs every round, so what
        # differs between the pairs themselves (addresses, bridge ports) cancels out.
        want = "a" if r % 2 == 0 else "b"
        if movable is not None and want != carrier:
            for pod in pairs[carrier]:
                movable.detach(pod.veth)
            for pod in pairs[want]:
                movable.attach(pod.veth, pod.ref)
        carrier = want
        phys = {"a": want, "b": "b" if want == "a" else "a"}
        order = ("a", "b") if (r // 2) % 2 == 0 else ("b", "a")
        for p in order:
            tput[p].append(iperf(*pairs[phys[p]], args.seconds))
        got: dict[str, list[list[float]]] = {"a": [], "b": []}
        conns = {p: [0, 0.0] for p in ("c", "d")}
        for s in range(slices):
            for p in (order if s % 2 == 0 else tuple(reversed(order))):
                got[p].append(workers[phys[p]].rr(piece))
            for p in (("c", "d") if (s + r) % 2 == 0 else ("d", "c")):
                n, wall = workers[p].conn(piece)
                conns[p][0] += n
                conns[p][1] += wall
        for p in ("a", "b"):
            # Per round: the median of the slices' percentiles (slices are equally long).
            lat[p].append([statistics.median(x[k] for x in got[p]) for k in (1, 2, 3)])
        for p in ("c", "d"):
            rate[p].append(conns[p][0] / conns[p][1])
        say(f"round {r + 1}/{args.rounds}: throughput A/B {tput['a'][-1] / tput['b'][-1]:.3f}, "
            f"p50 A/B {lat['a'][-1][0] / lat['b'][-1][0]:.3f}, conn/s D/C {rate['d'][-1] / rate['c'][-1]:.3f}")
    elapsed = time.monotonic() - started

    print()
    print(f"{platform.node()}: {os.cpu_count()} CPUs, kernel {platform.release()}; "
          f"{args.rounds} rounds x {args.seconds:g} s; measured in {elapsed:.0f} s")
    print()
    print("(a) pod to pod: " + ("CONTROL, no programs on A either" if args.control
                                  else "1,000 rules enforced (A) vs no programs attached (B)"))
    print(f"  throughput A   {value_text([x / 1e9 for x in tput['a']], '7.2f')} Gbit/s")
    print(f"  throughput B   {value_text([x / 1e9 for x in tput['b']], '7.2f')} Gbit/s")
    t_ratio = ratios(tput["a"], tput["b"])
    print(f"  ratio A/B      {ratio_text(t_ratio)}   target >= 0.95")
    for k, name in enumerate(("p50", "p90", "p99")):
        a, b = [x[k] for x in lat["a"]], [x[k] for x in lat["b"]]
        print(f"  {name} latency A {value_text(a, '7.1f')} us   B {value_text(b, '7.1f')} us   "
              f"ratio A/B {ratio_text(ratios(a, b))}" + ("   target <= 1.10" if k == 0 else ""))
    l_ratio = ratios([x[0] for x in lat["a"]], [x[0] for x in lat["b"]])
    print()
    print("(b) new TCP connections per second: 10 policy entries (C) vs 100,000 (D)")
    print(f"  10 entries     {value_text(rate['c'], '9,.0f')} /s")
    print(f"  100,000        {value_text(rate['d'], '9,.0f')} /s")
    c_ratio = ratios(rate["d"], rate["c"])
    print(f"  ratio D/C      {ratio_text(c_ratio)}   target 0.95-1.05")
    met = {
        "throughput >= 0.95": statistics.median(t_ratio) >= 0.95,
        "p50 latency <= 1.10": statistics.median(l_ratio) <= 1.10,
        "connection rate flat within 5%": abs(statistics.median(c_ratio) - 1) <= 0.05,
    }
    print()
    for name, ok in met.items():
        print(f"  {name}: {'met' if ok else 'MISSED'}")
    return all(met.values())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 rounds x 2 s (under 2 minutes)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 16, quick 6)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per measurement (default 4, quick 2)")
    parser.add_argument("--slice", type=float, default=0.25, help="slice length for ABBA interleaving (s)")
    parser.add_argument("--control", action="store_true",
                        help="attach nothing to pair A either: (a) then shows the bias of the setup itself")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (6 if args.quick else 16)
    args.seconds = args.seconds or (2.0 if args.quick else 4.0)
    if args.rounds < 1 or args.seconds <= 0 or args.slice <= 0:
        parser.error("--rounds, --seconds and --slice must be positive")
    return args


def main() -> None:
    """Entry point: measure with everything cleaned up whatever happens."""
    args = parse_args()
    require_root("bench/policy.py", "network namespaces, tc and BPF")
    if shutil.which("iperf3") is None:
        raise SystemExit("iperf3 is not installed (Debian package iperf3)")
    sweep_stale(PREFIX)

    def say(text: str) -> None:
        print(f"# {text}", file=sys.stderr, flush=True)
    ok = run_cleanly("bench/policy.py", lambda stack: run(args, stack, say))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
