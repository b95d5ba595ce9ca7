"""L3/L4 policy on pod veths: its cost on throughput, request/response latency and connection rate.

(a) Pod-to-pod TCP throughput (iperf3, one stream) and request/response latency (1-byte
    ping-pong on one connection, p50/p90/p99) between two pods whose veths carry the
    policy programs with 1,000 rules enforced (the server is selected by an ALLOW policy,
    so every new flow is looked up and default-denied unless allowed), against a pair of
    pods whose veths carry no programs at all. Targets: throughput ratio >= 0.95, p50
    latency ratio <= 1.10.
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
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

import attrs

from meshcore.compile import IpcacheEntry, PolicyEndpoint, PolicyEntry, PolicyOrigin, PolicyPlan, PolicyVerdict
from meshcore import linux
from meshcore.datapath import PolicyEnforcer
from meshcore.model import Direction, WorkloadRef

from _harness import Interrupted, alive, owner, quartiles, ratio_text, signals_ignored

PREFIX = "mcbench-pol"  # unique to this bench: stale sweeps match only its own names

NODE_ADDR = "10.79.0.254"
ECHO_PORT, CONN_PORT, IPERF_PORT = 7000, 7001, 5201
CLIENT_ID, SERVER_ID, FAKE_BASE = 5000, 5001, 10000
MAX_ERROR_SHARE = 0.001
#: pair name → (policy entries, or None for no programs attached).
PAIRS: dict[str, int | None] = {"a": 1000, "b": None, "c": 10, "d": 100_000}

C_SOURCE = r"""#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * pp serve ECHO_PORT CONN_PORT
 *     ECHO_PORT: accept one connection at a time and echo what it sends.
 *     CONN_PORT: listen with TCP_DEFER_ACCEPT and never accept: a handshake completes in
 *     the kernel and the client's RST removes it, so no process is woken per connection.
 * pp worker HOST ECHO_PORT CONN_PORT
 *     for each stdin line "rr SECONDS": one connection, 1-byte ping-pong for that long;
 *     answers "rr COUNT P50_US P90_US P99_US CPU_S".
 *     for each stdin line "conn SECONDS": open and close (RST) connections for that long;
 *     answers "conn CONNECTED FAILED FIRST_ERRNO WALL_S CPU_S".
 * Both exit when their parent dies.
 */

static double now(clockid_t c) {
	struct timespec ts;
	clock_gettime(c, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int listener(int port, int defer) {
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (defer) {
		int secs = 30;
		setsockopt(s, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs);
	}
	if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4096)) {
		perror("listen");
		exit(1);
	}
	return s;
}

static int cmp(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void rr(struct sockaddr_in *a, double secs) {
	static double *lat;
	static size_t cap;
	size_t n = 0;
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
	char c = 'x';
	double c0 = now(CLOCK_PROCESS_CPUTIME_ID);
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(s, (struct sockaddr *)a, sizeof *a)) {
		printf("rr 0 0 0 0 0\n");
		fflush(stdout);
		close(s);
		return;
	}
	double end = now(CLOCK_MONOTONIC) + secs;
	for (;;) {
		double t0 = now(CLOCK_MONOTONIC);
		if (t0 >= end)
			break;
		if (write(s, &c, 1) != 1 || read(s, &c, 1) != 1)
			break;
		if (n == cap) {
			cap = cap ? 2 * cap : 65536;
			lat = realloc(lat, cap * sizeof *lat);
		}
		lat[n++] = (now(CLOCK_MONOTONIC) - t0) * 1e6;
	}
	close(s);
	if (!n) {
		printf("rr 0 0 0 0 0\n");
	} else {
		qsort(lat, n, sizeof *lat, cmp);
		printf("rr %zu %.3f %.3f %.3f %.4f\n", n, lat[n / 2], lat[n * 9 / 10], lat[n * 99 / 100],
		       now(CLOCK_PROCESS_CPUTIME_ID) - c0);
	}
	fflush(stdout);
}

static void conns(struct sockaddr_in *a, double secs) {
	long ok = 0, failed = 0;
	int first = 0;
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID), w;
	while ((w = now(CLOCK_MONOTONIC)) - w0 < secs) {
		for (int i = 0; i < 16; i++) {
			int s = socket(AF_INET, SOCK_STREAM, 0);
			setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
			if (connect(s, (struct sockaddr *)a, sizeof *a) == 0)
				ok++;
			else {
				failed++;
				if (!first)
					first = errno;
			}
			close(s);
		}
	}
	printf("conn %ld %ld %d %.4f %.4f\n", ok, failed, first, w - w0, now(CLOCK_PROCESS_CPUTIME_ID) - c0);
	fflush(stdout);
}

int main(int argc, char **argv) {
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGPIPE, SIG_IGN);
	if (argc == 4 && !strcmp(argv[1], "serve")) {
		int e = listener(atoi(argv[2]), 0);
		int d = listener(atoi(argv[3]), 1);
		(void)d;
		printf("ready\n");
		fflush(stdout);
		for (;;) {
			int c = accept(e, NULL, NULL);
			char buf[64];
			ssize_t got;
			if (c < 0)
				continue;
			while ((got = read(c, buf, sizeof buf)) > 0)
				if (write(c, buf, got) != got)
					break;
			close(c);
		}
	}
	if (argc == 5 && !strcmp(argv[1], "worker")) {
		struct sockaddr_in echo = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
		struct sockaddr_in conn = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[4]))};
		char line[64], what[16];
		double secs;
		inet_pton(AF_INET, argv[2], &echo.sin_addr);
		conn.sin_addr = echo.sin_addr;
		printf("ready\n");
		fflush(stdout);
		while (fgets(line, sizeof line, stdin)) {
			if (sscanf(line, "%15s %lf", what, &secs) != 2)
				return 2;
			if (!strcmp(what, "rr"))
				rr(&echo, secs);
			else
				conns(&conn, secs);
		}
		return 0;
	}
	fprintf(stderr, "usage: pp serve ECHO_PORT CONN_PORT | pp worker HOST ECHO_PORT CONN_PORT\n");
	return 2;
}
"""


def sweep_stale() -> list[str]:
    """Remove what runs of this bench that no longer exist left behind; names what went."""
    gone: list[str] = []
    for name in sorted(os.listdir("/run/netns") if os.path.isdir("/run/netns") else []):
        pid = owner(PREFIX, name)
        if pid is not None and not alive(pid):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            gone.append(f"netns {name}")
    for root in sorted(linux.bpffs().glob(f"{PREFIX}-*")):
        pid = owner(PREFIX, root.name + "-")
        if pid is not None and not alive(pid):
            shutil.rmtree(root, ignore_errors=True)
            gone.append(str(root))
    for tmp in sorted(Path(tempfile.gettempdir()).glob(f"{PREFIX}-*")):
        pid = owner(PREFIX, tmp.name)
        if pid is not None and not alive(pid) and tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            gone.append(str(tmp))
    return gone


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception so every cleanup runs."""
    def raise_(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)
    old = {s: signal.signal(s, raise_) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


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
    node = f"{prefix}-node"
    sh("ip", "netns", "add", node)
    stack.callback(subprocess.run, ["ip", "netns", "del", node], capture_output=True, check=False)
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
            pod = Pod(name, f"{prefix}-{name}", f"10.79.0.{n}", f"h{pair}{role}")
            sh("ip", "netns", "add", pod.netns)
            stack.callback(subprocess.run, ["ip", "netns", "del", pod.netns], capture_output=True, check=False)
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


def compile_tool(directory: Path) -> Path:
    """Build the C ping-pong/connect tool with the system compiler."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise SystemExit("no C compiler (cc, gcc or clang) found: install gcc or clang")
    src, exe = directory / "pp.c", directory / "pp"
    src.write_text(C_SOURCE)
    done = subprocess.run([cc, "-O2", "-Wall", "-o", str(exe), str(src)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"compiling the bench tool failed:\n{done.stderr}")
    return exe


def spawn(stack: contextlib.ExitStack, netns: str, argv: Sequence[str], *, stdin: bool = False,
          ready: bool = True) -> subprocess.Popen[str]:
    """A process in ``netns``, killed by pid when ``stack`` closes; waits for its "ready" line if asked."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdin=subprocess.PIPE if stdin else None,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop() -> None:
        proc.kill()
        proc.wait()
    stack.callback(stop)
    if ready:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"{argv[0]} in {netns} did not start (exit code {proc.wait()})")
    return proc


class Worker:
    """The client tool of one pair, idle until asked to measure."""

    def __init__(self, stack: contextlib.ExitStack, tool: Path, pair: str, client: Pod, server: Pod) -> None:
        self.pair = pair
        self.proc = spawn(stack, client.netns, [str(tool), "worker", server.address, str(ECHO_PORT), str(CONN_PORT)],
                          stdin=True)

    def ask(self, what: str, seconds: float) -> list[str]:
        """Run one measurement; its answer's fields."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{what} {seconds}\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline().split()
        if not out or out[0] != what:
            raise SystemExit(f"the bench client of pair {self.pair} stopped (exit code {self.proc.wait()})")
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


def value_text(xs: list[float], fmt: str) -> str:
    """Median with its interquartile range as ± percent."""
    q1, m, q3 = quartiles(xs)
    return f"{format(m, fmt)} ±{50 * (q3 - q1) / m:4.1f}%"


def ratios(a: list[float], b: list[float]) -> list[float]:
    """Per-round ratios a/b."""
    return [x / y for x, y in zip(a, b, strict=True)]


def run(args: argparse.Namespace, stack: contextlib.ExitStack, say: Callable[[str], None]) -> bool:
    """Build the testbed, measure, print; True when every target is met."""
    prefix = f"{PREFIX}-{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    stack.callback(shutil.rmtree, tmp, True)
    tool = compile_tool(tmp)
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
        spawn(stack, server.netns, [str(tool), "serve", str(ECHO_PORT), str(CONN_PORT)])
        spawn(stack, server.netns, ["iperf3", "-s", "-B", server.address, "-p", str(IPERF_PORT)], ready=False)
        workers[pair] = Worker(stack, tool, pair, client, server)
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
    if os.geteuid() != 0:
        raise SystemExit("bench/policy.py needs root (network namespaces, tc and BPF)")
    if shutil.which("iperf3") is None:
        raise SystemExit("iperf3 is not installed (Debian package iperf3)")
    for gone in sweep_stale():
        print(f"removed leftovers of an earlier run: {gone}", file=sys.stderr)

    def say(text: str) -> None:
        print(f"# {text}", file=sys.stderr, flush=True)
    stack = contextlib.ExitStack()
    ok = False
    try:
        with signals_interrupt():
            ok = run(args, stack, say)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"interrupted ({type(exc).__name__} {exc}); cleaning up", file=sys.stderr)
    finally:
        with signals_ignored():
            stack.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
