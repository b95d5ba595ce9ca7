"""One EndpointSlice change through the node agent's whole path: translate → compile → diff → kernel.

A synthetic cluster of N Services, each with one EndpointSlice (the cluster of
bench/compile_scale.py), is applied to a ``NodeAgent``; then each change replaces one
Service's EndpointSlice (one endpoint moves to a new address). Measured per change, p50
and p99, side by side in one run:

- **whole path** — what the agent did before generations were incremental: translate
  every object, compile the whole snapshot, diff the plan against the kernel's
  (``KernelLoadBalancer.apply``) and write the difference. Seconds per change at 10,000
  services, so only ``--whole`` changes are measured.
- **change** — ``NodeAgent.apply_changes([slice])``: the kept translation replaces one
  Service, compile recompiles its frontends, the kernel is told that frontend alone, and
  the generation report is written, as the runner does for a source handing out changes.
- **full list** — ``NodeAgent.apply_objects(all objects)`` with one slice changed: the
  agent finds the change by comparing the list with the objects it holds (an objects
  file rewritten whole, as the lab does), then takes the same path as a change.

Kernel: with ``--kernel`` (root) the load balancer is a real ``SocketLB`` in a cgroup of
its own (like bench/agent_update.py); otherwise a stand-in that writes nothing, so the
numbers are the Python path alone. The "kernel" column is the time inside the load
balancer. Policy is a stand-in (no pods on the node) and no node proxy runs (no L7).
Each size runs in a fresh process; the same changes run at N and N/10 (default 10,000
and 1,000), and the ratios compare them (×1 is a cost independent of the cluster's
size). A garbage collection runs before each timed change, outside the timing (it also
leaves the CPU caches cold, as after the seconds between two changes on a busy node);
``--natural-gc`` leaves the collector alone instead, as in the agent's own process, which
settles the heap after a whole generation (``meshcore.agent.settle_heap``): the pauses
that remain land where they fall.

    PYTHONPATH=src .venv/bin/python bench/agent_path.py [--services 10000] [--changes 200] [--kernel]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

PREFIX = "mcagentpath"


def cluster(services: int, endpoints: int) -> list[dict[str, Any]]:
    """Namespaces, Services and one EndpointSlice per Service (as bench/compile_scale.py builds them)."""
    out: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{n}"}}
                                 for n in range(min(100, services))]
    for i in range(services):
        a, b = divmod(i, 250)
        out.append({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": f"svc-{i}", "namespace": f"ns-{i % 100}"},
                    "spec": {"clusterIP": f"10.96.{a}.{b + 1}", "ports": [
                        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
        out.append(endpoint_slice(i, [f"10.{100 + i // 6500}.{(i // 25) % 256}.{(i % 25) * 10 + e}"
                                      for e in range(endpoints)], version=1))
    return out


def endpoint_slice(i: int, addresses: list[str], version: int) -> dict[str, Any]:
    """Service ``svc-<i>``'s EndpointSlice holding ``addresses``."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"svc-{i}-abcde", "namespace": f"ns-{i % 100}", "resourceVersion": str(version),
                         "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses]}


def changed_slice(bodies: list[dict[str, Any]], services: int, k: int) -> tuple[int, dict[str, Any]]:
    """Change ``k``: one Service's slice with its first endpoint moved to a new address (the index of that slice)."""
    i = (k * 7919) % services
    index = min(100, services) + 2 * i + 1
    old = bodies[index]
    addresses = [e["addresses"][0] for e in old["endpoints"]]
    addresses[0] = f"10.250.{k // 250 % 256}.{k % 250 + 1}"
    return index, endpoint_slice(i, addresses, version=int(old["metadata"]["resourceVersion"]) + 1)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) in milliseconds."""
    ordered = sorted(values)
    return 1e3 * ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


class Timed:
    """A load balancer wrapped to time what happens inside it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.spent = 0.0
        self.done = 0.0
        self.done_cpu = 0.0

    def apply(self, plan: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner.apply(plan)
        finally:
            self._finished(t0)

    def apply_change(self, plan: Any, since: Any, diff: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner.apply_change(plan, since, diff)
        finally:
            self._finished(t0)

    def _finished(self, t0: float) -> None:
        self.done, self.done_cpu = time.perf_counter(), time.thread_time()
        self.spent += self.done - t0

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.inner.close()


class NoWrites:
    """A load balancer that keeps the plan it is given and writes nothing."""

    def apply(self, plan: Any) -> Any:
        from meshcore.compile import BpfIndex
        BpfIndex(plan).diff(plan)  # what finding the difference costs, with nothing to write
        return _Nothing()

    def apply_change(self, plan: Any, since: Any, diff: Any) -> Any:
        return _Nothing()

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


class _Nothing:
    changed = False

    def summary(self) -> str:
        return "nothing"


class NoPolicy:
    """No pods on the node: nothing to enforce."""

    def apply(self, plan: Any, interfaces: Mapping[Any, str]) -> Any:
        return _Nothing()

    def flows(self, timeout: float, *, follow: bool) -> Iterator[object]:
        return iter(())

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


@contextlib.contextmanager
def load_balancer(kernel: bool) -> Iterator[Any]:
    """A KernelLoadBalancer on a real SocketLB in a cgroup of its own, or the stand-in."""
    if not kernel:
        yield NoWrites()
        return
    from meshcore import linux
    from meshcore.agent import KernelLoadBalancer
    from meshcore.datapath import SocketLB, cgroup2_mount

    prefix = f"{PREFIX}{os.getpid()}"
    with contextlib.ExitStack() as stack:
        group = cgroup2_mount() / prefix
        group.mkdir()
        stack.callback(group.rmdir)
        lb = SocketLB(prefix, group, linux.bpffs() / prefix)
        stack.callback(lb.destroy)
        yield KernelLoadBalancer(lb)


Timings = tuple[list[float], list[float], list[float], list[float]]


#: Collect garbage before each timed step (off with --natural-gc).
COLLECT = True


def timed(count: int, step: Callable[[int], None], lb: Timed) -> Timings:
    """Per ``step(k)``: seconds until the kernel write returned, in the load balancer, in all, and
    the CPU time this thread spent until the kernel write returned."""
    reached, kernel, total, cpu = [], [], [], []
    for k in range(count):
        if COLLECT:
            gc.collect()
        lb.spent = 0.0
        c0 = time.thread_time()
        t0 = time.perf_counter()
        step(k)
        total.append(time.perf_counter() - t0)
        reached.append(lb.done - t0)
        kernel.append(lb.spent)
        cpu.append(lb.done_cpu - c0)
    return reached, kernel, total, cpu


def measure(services: int, endpoints: int, changes: int, whole: int, full_lists: int, kernel: bool) -> dict[str, Any]:
    """Every path at this size, in this process."""
    from meshcore import compile_plan, translate
    from meshcore.agent import NodeAgent, NodeFacts, settle_heap
    from meshcore.kube import make_object

    bodies = cluster(services, endpoints)
    out: dict[str, Any] = {}

    def to_objects(listed: list[dict[str, Any]]) -> list[Any]:
        return [make_object(b, file="cluster.json", line=i + 1, cluster_scoped=b["kind"] == "Namespace")
                for i, b in enumerate(listed)]

    # The agent's state directory is on tmpfs, as /run is on a node (its report is written there).
    shm = Path("/dev/shm")
    with load_balancer(kernel) as inner, tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as state:
        lb = Timed(inner)
        agent = NodeAgent(NodeFacts("node-1", "meshcore/bench", Path(state)), load_balancer=lb, policy=NoPolicy(),
                          adapters=[])
        objects = to_objects(bodies)
        t0 = time.perf_counter()
        first = agent.apply_objects(objects)
        out["first_s"] = time.perf_counter() - t0
        assert first.applied and first.frontends == services, first
        del objects
        if not COLLECT:
            settle_heap()  # what AgentRunner(settle_heap=True) does after a whole generation

        current = {"k": 0}

        def one_change(k: int) -> None:
            index, body = changed_slice(bodies, services, current["k"])
            current["k"] += 1
            bodies[index] = body
            report = agent.apply_changes([make_object(body, file="cluster.json", line=index + 1)])
            if not report.applied or not report.changes[0].startswith("kernel") or report.frontends != services:
                raise SystemExit(f"the change was not applied: {report}")

        # The first change after a whole generation builds the lookups later changes use.
        t0 = time.perf_counter()
        one_change(0)
        out["first_change_s"] = time.perf_counter() - t0
        out["change"] = timed(changes, one_change, lb)

        def one_list(k: int) -> None:
            index, body = changed_slice(bodies, services, current["k"])
            current["k"] += 1
            bodies[index] = body
            report = agent.apply_objects(to_objects(bodies))
            if not report.applied:
                raise SystemExit(f"the list was not applied: {report}")

        out["list"] = timed(full_lists, one_list, lb)

        # The whole path, as the agent took it before: everything translated and compiled again.
        def whole_path(k: int) -> None:
            index, body = changed_slice(bodies, services, current["k"])
            current["k"] += 1
            bodies[index] = body
            objects = to_objects(bodies)
            result = translate(objects=objects, adapters=[])
            plan = compile_plan(result.snapshot, "node-1")
            lb.apply(plan.bpf)

        out["whole"] = timed(whole, whole_path, lb)
        lb.close()
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def line(title: str, values: Timings) -> str:
    reached, kernel, total, cpu = values
    return (f"  {title:28} {pct(reached, 50):9.3f} {pct(reached, 99):9.3f}"
            f" | {pct(cpu, 50):9.3f} {pct(cpu, 99):9.3f}"
            f" | {pct(kernel, 50):6.3f} {pct(kernel, 99):6.3f}"
            f" | {pct(total, 50):9.3f} {pct(total, 99):9.3f}")


def main(argv: list[str] | None = None) -> int:
    """Measure both sizes, each in a fresh process, and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--full-lists", type=int, default=20)
    parser.add_argument("--whole", type=int, default=5)
    parser.add_argument("--kernel", action="store_true", help="through a real socket LB (root)")
    parser.add_argument("--natural-gc", action="store_true", help="no collection before each change")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global COLLECT
    COLLECT = not args.natural_gc
    if args.child:
        print(json.dumps(measure(args.services, args.endpoints, args.changes, args.whole, args.full_lists,
                                 args.kernel)))
        return 0
    if args.kernel and os.geteuid() != 0:
        print("--kernel needs root", file=sys.stderr)
        return 2

    def run(n: int) -> dict[str, Any]:
        cmd = [sys.executable, __file__, "--child", "--services", str(n), "--endpoints", str(args.endpoints),
               "--changes", str(args.changes), "--full-lists", str(args.full_lists), "--whole", str(args.whole)]
        cmd += ["--kernel"] if args.kernel else []
        cmd += ["--natural-gc"] if args.natural_gc else []
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    small, big = run(max(1, args.services // 10)), run(args.services)
    where = "a real socket LB" if args.kernel else "a stand-in load balancer (no kernel writes)"
    collector = "left alone" if args.natural_gc else "run before each change, untimed"
    print(f"agent_path: one EndpointSlice change through the agent, {args.endpoints} endpoints per service, "
          f"into {where}; garbage collection {collector}; target p99 <= 5 ms at {args.services:,} services")
    print("  per change, p50 and p99 in ms: until the kernel write returned | the same, on-CPU time only | "
          "inside the load balancer | the whole generation, report written")
    for size, result in ((args.services // 10, small), (args.services, big)):
        print(f" {size:,} services (first generation {result['first_s']:.2f} s, "
              f"first change after it {1e3 * result['first_change_s']:.1f} ms; peak memory {result['peak_mib']:.0f} MiB)")
        print(line(f"whole path ({args.whole} changes)", result["whole"]))
        print(line(f"full list ({args.full_lists} changes)", result["list"]))
        print(line(f"change ({args.changes} changes)", result["change"]))
        reached, cpu = result["change"][0], result["change"][3]
        worst = max(range(len(reached)), key=reached.__getitem__)
        print(f"  {'':28} slowest change {1e3 * reached[worst]:.3f} ms ({1e3 * cpu[worst]:.3f} ms on CPU); "
              f"most CPU {1e3 * max(cpu):.3f} ms")
    print(" ratios (until the kernel write returned, p50)")
    for key, label in (("whole", "whole path"), ("list", "full list"), ("change", "change")):
        growth = pct(big[key][0], 50) / max(pct(small[key][0], 50), 1e-9)
        print(f"  {label:30} at {args.services:,} / at {args.services // 10:,}: ×{growth:7.2f}")
    for key, label in (("whole", "whole path"), ("list", "full list")):
        print(f"  {label + ' / change':30} at {args.services:,}: "
              f"×{pct(big[key][0], 50) / max(pct(big['change'][0], 50), 1e-9):8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
