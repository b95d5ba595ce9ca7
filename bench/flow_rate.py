"""Flows at the kernel's rate: new pod-to-pod connections/s with policy and flows on, against no mesh.

Workload (bench/tools/conn_echo.c): 2 client threads, each opening a new TCP connection
per exchange (connect, 1 byte echoed, close with RST), against a 2-thread server; p50/p99
latency from connect() to the echo's arrival.

Three paths, measured interleaved in every round (each round takes the next of the six
orders, so no path always runs first, middle or last):

(plain)  two network namespaces routed through a node namespace exactly as the lab wires
         pods (veth, /32 routes, static neighbours), no programs anywhere: no mesh;
(mesh)   two pods of a lab whose NetworkPolicy selects the server, so the kernel judges
         every connection; the lab's node agent runs and takes the flows (its CPU share
         is measured over the slice);
(kernel) the same pods with the agent stopped (SIGSTOP): what the kernel programs alone
         cost.

Targets: mesh >= 0.95x the plain rate with p99 <= 1.2x and the agent <= 0.1 core; kernel
>= 0.97x. Ratios are medians of same-round ratios [interquartile range]; the machine is
shared, so the load average is printed with them.

After the rounds, one mesh slice runs with ``kernel.bpf_stats_enabled=1`` (restored
afterwards) and prints each meshcore program's runs and mean run time, and the kernel
time per connection.

``--soak SECONDS`` instead runs the mesh path at full rate for that long and prints, every
``--every`` seconds, the rate, the agent's RSS, CPU share and open files, and the size of
the lab's state directory (and its flow files), then whether memory and files stayed
bounded: the state directory within the journal's bound, RSS and open files flat once the
agent's in-memory ring is full (run it for 300 s or more so the journal reaches its bound
too: about 64 KiB/s are journaled at the default event rate).

Run as root: ``PYTHONPATH=src .venv/bin/python bench/flow_rate.py [--rounds 12] [--duration 2]`` (about 3
minutes with the lab's start). Short slices in many rounds resolve more on a shared machine:
load from other work changes slowly, so slices of one round see about the same.
Everything lives in a lab named ``frb<pid>`` and namespaces ``mcbench-fr-<pid>-*``, removed at
the end (a later run removes what a killed run left behind).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _harness import alive, compile_tool, cpu_seconds, owner, ratio_text, rss_bytes, tree_bytes

from meshcore.agent import JournalLimits
from meshcore.agent._agent import DEFAULT_FLOW_EVENT_RATE
from meshcore.datapath import PolicyEnforcer, _libbpf
from meshcore.datapath._tc import in_netns
from meshcore.lab import Lab, LabRanges
from meshcore.lab._exec import joiner, pod_command
from meshcore.lab._netns import NodeNetwork, remove, setup_node, setup_pod_namespace

PREFIX = "mcbench-fr"
PORT = 7000
THREADS = 2
TOOL = Path(__file__).parent / "tools" / "conn_echo.c"
PATHS = ("plain", "mesh", "kernel")
ORDERS = tuple(itertools.permutations(PATHS))

LAB_YAML = f"""
apiVersion: v1
kind: Pod
metadata: {{name: server, labels: {{app: server}}}}
spec:
  containers: [{{name: main, image: busybox, command: ["sleep", "infinity"], ports: [{{containerPort: {PORT}}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, labels: {{app: client}}}}
spec:
  containers: [{{name: main, image: busybox, command: ["sleep", "infinity"]}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: server-from-client}}
spec:
  podSelector: {{matchLabels: {{app: server}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}]
    ports: [{{port: {PORT}}}]
"""


def sweep_stale() -> None:
    """Remove the namespaces of runs of this bench that are gone."""
    for name in sorted(os.listdir("/run/netns") if os.path.isdir("/run/netns") else []):
        pid = owner(PREFIX, name)
        if pid is not None and not alive(pid):
            remove(name)
    for name in Lab.names():
        if name.startswith("frb") and name[3:].isdigit() and not alive(int(name[3:])):
            with contextlib.suppress(Exception):
                Lab(name).down()


class Plain:
    """Two namespaces routed through a node namespace like lab pods, with no programs: the yardstick."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        prefix = f"{PREFIX}-{os.getpid()}"
        self.node, self.client, self.server = f"{prefix}-node", f"{prefix}-a", f"{prefix}-b"
        ranges = LabRanges()
        for name in (self.node, self.client, self.server):
            stack.callback(remove, name)
        setup_node(self.node, ranges)
        self.server_ip = str(ranges.pod4[11])
        with NodeNetwork(self.node, ranges) as net:
            for netns, index, veth in ((self.client, 10, "frbplaina"), (self.server, 11, "frbplainb")):
                setup_pod_namespace(netns)
                net.add_pod(netns, veth, str(ranges.pod4[index]), str(ranges.pod6[index]))


def start(stack: contextlib.ExitStack, argv: list[str], cgroup: str | None = None) -> subprocess.Popen[str]:
    """A server process that answers "ready"; stopped (by pid) when ``stack`` closes."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=joiner(cgroup) if cgroup else None)

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    stack.callback(stop)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"{argv[-3:]} did not start: {line} {proc.stdout.read()}")
    return proc


class Paths:
    """How to run the client on each path, and the agent to watch."""

    def __init__(self, stack: contextlib.ExitStack, lab: Lab, tool: Path) -> None:
        self.lab = lab
        self.tool = tool
        self.plain = Plain(stack)
        start(stack, ["ip", "netns", "exec", self.plain.server, str(tool), "serve", str(PORT), str(THREADS)])
        server = lab.pod("server")
        command, _ = pod_command(server, [str(tool), "serve", str(PORT), str(THREADS)])
        start(stack, command, server.cgroup)
        self.mesh_server_ip = server.ipv4
        self.client = lab.pod("client")
        self.agent_pid = lab.status().agent.pid
        self.stopped = False
        stack.callback(self.agent_running, True)

    def agent_running(self, running: bool) -> None:
        """SIGCONT or SIGSTOP the lab's agent."""
        if running != (not self.stopped):
            os.kill(self.agent_pid, signal.SIGCONT if running else signal.SIGSTOP)
            self.stopped = not running

    def client_argv(self, path: str, seconds: float) -> tuple[list[str], str | None]:
        args = [str(self.tool), "client", self.plain.server_ip if path == "plain" else self.mesh_server_ip,
                str(PORT), str(THREADS), str(seconds)]
        if path == "plain":
            return ["ip", "netns", "exec", self.plain.client, *args], None
        command, _ = pod_command(self.client, args)
        return command, self.client.cgroup

    def measure(self, path: str, seconds: float) -> dict[str, float]:
        """One slice on ``path``: connections/s, latency percentiles (ms), and the agent's CPU share."""
        self.agent_running(path != "kernel")
        argv, cgroup = self.client_argv(path, seconds)
        cpu0, t0 = cpu_seconds(self.agent_pid), time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                              preexec_fn=joiner(cgroup) if cgroup else None, check=False)
        cpu1, t1 = cpu_seconds(self.agent_pid), time.monotonic()
        self.agent_running(True)
        fields = done.stdout.split()
        if done.returncode or len(fields) != 8:
            raise RuntimeError(f"client on {path} failed: {done.stdout} {done.stderr}")
        conns, errors, first, wall = int(fields[0]), int(fields[1]), int(fields[2]), float(fields[3])
        if errors > max(10, conns // 1000):
            raise RuntimeError(f"{path}: {errors} failed connections of {conns + errors} (first errno {first})")
        return {"rate": conns / wall, "p50": int(fields[5]) / 1000, "p90": int(fields[6]) / 1000,
                "p99": int(fields[7]) / 1000, "agent": (cpu1 - cpu0) / (t1 - t0), "errors": errors}


def bpf_programs(lab: Lab) -> dict[int, str]:
    """Program id → name of the lab's tc programs (on its pods' veths) and cgroup programs."""
    state = lab.status()
    found: dict[int, str] = {}
    out = subprocess.run(["ip", "netns", "exec", state.node_netns, "bpftool", "-j", "net", "show"],
                         capture_output=True, text=True, check=True).stdout
    for section in json.loads(out):
        for hook in section.get("tc", []):
            found[int(hook["id"])] = str(hook.get("name", hook["id"])).split(":")[0]
    cg = subprocess.run(["bpftool", "-j", "cgroup", "show", state.cgroup], capture_output=True, text=True,
                        check=False).stdout
    for prog in json.loads(cg or "[]"):
        found[int(prog["id"])] = str(prog.get("name", prog["id"]))
    return found


def prog_stats(ids: dict[int, str]) -> dict[str, tuple[int, int]]:
    """name → (run_cnt, run_time_ns) summed over programs of that name."""
    out = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                                    check=True).stdout)
    stats: dict[str, tuple[int, int]] = {}
    for prog in out:
        name = ids.get(int(prog["id"]))
        if name is not None:
            cnt, ns = stats.get(name, (0, 0))
            stats[name] = (cnt + int(prog.get("run_cnt", 0)), ns + int(prog.get("run_time_ns", 0)))
    return stats


@contextlib.contextmanager
def bpf_stats_enabled() -> Iterator[None]:
    """kernel.bpf_stats_enabled=1 for the block, then what it was."""
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = knob.read_text().strip()
    knob.write_text("1")
    try:
        yield
    finally:
        knob.write_text(before)


def kernel_time(paths: Paths, seconds: float) -> None:
    """One mesh slice with BPF run-time statistics: where the kernel's time per connection goes."""
    ids = bpf_programs(paths.lab)
    with bpf_stats_enabled():
        before = prog_stats(ids)
        result = paths.measure("mesh", seconds)
        after = prog_stats(ids)
    conns = result["rate"] * seconds
    print(f"\nkernel programs over one mesh slice ({result['rate']:.0f} conn/s, bpf_stats on):")
    print(f"  {'program':16} {'runs/conn':>10} {'ns/run':>8} {'ns/conn':>8}")
    total = 0.0
    for name in sorted(after):
        cnt = after[name][0] - before.get(name, (0, 0))[0]
        ns = after[name][1] - before.get(name, (0, 0))[1]
        if cnt:
            total += ns / conns
            print(f"  {name:16} {cnt / conns:10.2f} {ns / cnt:8.0f} {ns / conns:8.0f}")
    print(f"  total {total:.0f} ns of program time per connection")


class _TestRunOpts(ctypes.Structure):
    """libbpf's ``struct bpf_test_run_opts``."""

    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int),
                ("duration", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32)]


def _frame(src: str, dst: str, sport: int, dport: int, flags: int) -> bytes:
    """An Ethernet + IPv4 + TCP frame (checksums are not looked at)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp


def _run_ns(prog_id: int, ifindex: int, frame: bytes, repeat: int) -> float:
    """Mean run time of a program on ``frame`` as seen on ``ifindex`` (BPF_PROG_TEST_RUN)."""
    lib = _libbpf.lib
    lib.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.c_void_p]
    lib.bpf_prog_test_run_opts.restype = ctypes.c_int
    fd = lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        raise RuntimeError(f"program {prog_id}: error {-fd}")
    data = ctypes.create_string_buffer(frame, len(frame))
    skb = (ctypes.c_uint8 * 192)()  # struct __sk_buff: ifindex is its 11th __u32
    struct.pack_into("<I", skb, 10 * 4, ifindex)
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.addressof(data), data_size_in=len(frame),
                        ctx_in=ctypes.addressof(skb), ctx_size_in=192, repeat=repeat)
    try:
        ret = lib.bpf_prog_test_run_opts(fd, ctypes.byref(opts))
        if ret < 0:
            raise RuntimeError(f"test run of program {prog_id}: error {-ret}")
        return float(opts.duration)
    finally:
        os.close(fd)


def kernel_paths(paths: Paths, repeat: int) -> None:
    """Each path through the policy programs, timed alone (BPF_PROG_TEST_RUN on the lab's own programs)."""
    lab = paths.lab
    status = lab.status()
    client, server = lab.pod("client"), lab.pod("server")
    out = subprocess.run(["ip", "netns", "exec", status.node_netns, "bpftool", "-j", "net", "show"],
                         capture_output=True, text=True, check=True).stdout
    progs = {(h["devname"], h["kind"]): (int(h["id"]), int(h["ifindex"])) for sec in json.loads(out)
             for h in sec.get("tc", [])}
    c_in, c_ifindex = progs[(client.host_veth, "clsact/ingress")]
    c_out, _ = progs[(client.host_veth, "clsact/egress")]
    s_out, s_ifindex = progs[(server.host_veth, "clsact/egress")]
    cip, sip = client.ipv4, server.ipv4
    enforcer = PolicyEnforcer(status.node, Path(lab._load().bpf_pin_dir).parent, netns=status.node_netns)
    rows = []
    with enforcer, in_netns(status.node_netns):
        enforcer.set_event_rate(0)
        rows.append(("not IP (fixed cost)", _run_ns(c_in, c_ifindex, b"\x02" * 12 + b"\x08\x06" + b"\0" * 46,
                                                        repeat)))
        rows.append(("SYN, egress, counted", _run_ns(c_in, c_ifindex, _frame(cip, sip, 1001, PORT, 0x02), repeat)))
        rows.append(("SYN, ingress + policy, counted",
                     _run_ns(s_out, s_ifindex, _frame(cip, sip, 1001, PORT, 0x02), repeat)))
        enforcer.set_event_rate(None)
        rows.append(("SYN, ingress + policy, event", _run_ns(s_out, s_ifindex, _frame(cip, sip, 1002, PORT, 0x02),
                                                             min(repeat, 5000))))
        rows.append(("established, client's packet", _run_ns(c_in, c_ifindex, _frame(cip, sip, 1001, PORT, 0x10),
                                                             repeat)))
        rows.append(("established, reply", _run_ns(c_out, c_ifindex, _frame(sip, cip, PORT, 1001, 0x10), repeat)))
        enforcer.set_event_rate(DEFAULT_FLOW_EVENT_RATE)
    print(f"\npolicy program paths, each run {repeat} times alone (BPF_PROG_TEST_RUN, mean ns per run):")
    for name, ns in rows:
        print(f"  {name:32} {ns:6.0f}")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} on {os.cpu_count()} cpus"


def rounds(paths: Paths, args: argparse.Namespace) -> None:
    """Interleaved rounds of the three paths; per-round ratios against plain."""
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in PATHS}
    for path in PATHS:  # warm-up, not counted
        paths.measure(path, 1)
    loads = []
    for r in range(args.rounds):
        order = ORDERS[r % len(ORDERS)]
        for path in order:
            runs[path].append(paths.measure(path, args.duration))
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1}: " + ", ".join(
            f"{p} {runs[p][-1]['rate']:.0f}/s p99 {runs[p][-1]['p99']:.2f}ms" for p in PATHS)
            + f", agent {runs['mesh'][-1]['agent']:.3f} core; load {loads[-1]:.1f}", flush=True)
    print(f"\n{THREADS} client threads, new connection per 1-byte echo, {args.rounds} rounds of "
          f"{args.duration}s; load average during rounds {min(loads):.1f}-{max(loads):.1f} ({load()})")
    print(f"{'path':8} {'conn/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for p in PATHS:
        med = {m: statistics.median(x[m] for x in runs[p]) for m in ("rate", "p50", "p99")}
        print(f"{p:8} {med['rate']:8.0f} {med['p50']:8.3f} {med['p99']:8.3f}")

    def ratio(path: str, metric: str) -> list[float]:
        return [x[metric] / y[metric] for x, y in zip(runs[path], runs["plain"], strict=True) if y[metric]]

    agent = statistics.median(x["agent"] for x in runs["mesh"])
    mesh_rate, mesh_p99, kernel_rate = ratio("mesh", "rate"), ratio("mesh", "p99"), ratio("kernel", "rate")
    print(f"mesh/plain   rate {ratio_text(mesh_rate)} (target >= 0.95: "
          f"{'met' if statistics.median(mesh_rate) >= 0.95 else 'NOT met'}), p99 {ratio_text(mesh_p99)} "
          f"(target <= 1.2: {'met' if statistics.median(mesh_p99) <= 1.2 else 'NOT met'})")
    print(f"kernel/plain rate {ratio_text(kernel_rate)} (target >= 0.97: "
          f"{'met' if statistics.median(kernel_rate) >= 0.97 else 'NOT met'}), p99 {ratio_text(ratio('kernel', 'p99'))}")
    print(f"agent CPU during mesh slices: {agent:.3f} core (target <= 0.1: {'met' if agent <= 0.1 else 'NOT met'})")
    if args.json:
        print(json.dumps({"runs": runs, "loads": loads}))


def flow_files(lab: Lab) -> int:
    """Bytes of the flow files in the lab's state directory."""
    return sum(p.stat().st_size for p in lab.dir.glob("flows*") if p.is_file())


def open_files(pid: int) -> int:
    """Open file descriptors of a process."""
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


def soak(paths: Paths, args: argparse.Namespace) -> bool:
    """The mesh path at full rate for ``args.soak`` seconds; True when memory and files stayed flat."""
    pid, lab = paths.agent_pid, paths.lab
    print(f"{'t s':>5} {'conn/s':>8} {'agent core':>10} {'RSS MiB':>8} {'fds':>5} {'state MiB':>9} "
          f"{'flows MiB':>9}", flush=True)
    samples: list[tuple[float, int, int, int]] = []
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < args.soak:
        result = paths.measure("mesh", min(args.every, args.soak - elapsed))
        rss, fds, state = rss_bytes(pid), open_files(pid), tree_bytes(lab.dir)
        samples.append((time.monotonic() - t0, rss, fds, state))
        print(f"{samples[-1][0]:5.0f} {result['rate']:8.0f} {result['agent']:10.3f} {rss / 2**20:8.1f} {fds:5d} "
              f"{state / 2**20:9.2f} {flow_files(lab) / 2**20:9.2f}", flush=True)
    # Bounded: the state directory never exceeds the journal's bound (plus 1 MiB for the
    # report and logs), and over the last third (the ring in memory is full by then at
    # full rate) RSS moves by less than 8 MiB and open files by at most 2.
    bound = JournalLimits().total_bytes + 2**20
    late = samples[len(samples) * 2 // 3:]
    rss_growth = max(s[1] for s in late) - min(s[1] for s in late)
    fd_growth = max(s[2] for s in late) - min(s[2] for s in late)
    peak_state = max(s[3] for s in samples)
    flat = rss_growth < 8 * 2**20 and fd_growth <= 2 and peak_state <= bound
    print(f"last third: RSS within {rss_growth / 2**20:.1f} MiB, fds within {fd_growth}; state directory at most "
          f"{peak_state / 2**20:.1f} MiB (bound {bound / 2**20:.0f} MiB): {'bounded' if flat else 'GROWING'} "
          f"({load()})")
    return flat


def main(argv: list[str] | None = None) -> int:
    """Set everything up, run rounds (or the soak), tear everything down."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12,
                        help="interleaved rounds (default 12; 0: only the kernel time)")
    parser.add_argument("--duration", type=float, default=2, help="seconds per slice (default 2)")
    parser.add_argument("--soak", type=float, default=0, help="run the soak for this many seconds instead")
    parser.add_argument("--every", type=float, default=10, help="soak sample interval in seconds (default 10)")
    parser.add_argument("--no-bpf-stats", action="store_true", help="skip the per-program kernel time slice")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/flow_rate.py needs root (network namespaces, cgroups, BPF)", file=sys.stderr)
        return 2
    sweep_stale()
    lab = Lab(f"frb{os.getpid()}")
    ok = True
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-{os.getpid()}-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        tool = compile_tool(TOOL, work)
        (work / "lab.yaml").write_text(LAB_YAML)
        stack.callback(lab.down)
        up = lab.up([work / "lab.yaml"], timeout=60)
        if up.agent is None or not up.agent.ok:
            raise RuntimeError(f"the lab's node agent did not apply the configuration: {up.agent}")
        paths = Paths(stack, lab, tool)
        print(f"agent pid {paths.agent_pid}; {load()}", flush=True)
        if args.soak:
            ok = soak(paths, args)
        else:
            if args.rounds:
                rounds(paths, args)
            if not args.no_bpf_stats:
                kernel_time(paths, args.duration)
                kernel_paths(paths, 100_000)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
