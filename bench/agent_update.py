"""The node agent's endpoint-change path: one endpoint change, diffed and written, at N services.

What the node agent does when a new plan arrives (``KernelLoadBalancer`` in
``meshcore.agent``): ``BpfIndex.diff(new)`` against the frontends it last applied (one pass over
the new plan; the previous plan's index is kept, not rebuilt) and then ``SocketLB.apply_diff``.
Measured per change, p50 and p99 over ``--changes`` changes:

- ``diff_bpf``, the new plan freshly built (every BpfService a new object, as a full
  recompile gives today) and the new plan reusing the previous plan's unchanged
  BpfService objects (equality short-circuits on identity);
- with ``--kernel`` (root): the agent's kernel path — ``KernelLoadBalancer.apply`` — against a real
  socket LB holding N services in a cgroup of its own, and, for comparison, a full
  ``SocketLB.apply(plan)``.

Run: ``PYTHONPATH=src .venv/bin/python bench/agent_update.py [--services 10000] [--changes 200] [--kernel]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import os
import sys
import time
from collections.abc import Callable

from meshcore.compile import BpfBackend, BpfPlan, BpfService, diff_bpf
from meshcore.compile import BpfIndex
from meshcore.model import ServiceRef

from _harness import percentile_ms

PORT = 8080
PREFIX = "mcagentupd"


def make_plan(n: int) -> BpfPlan:
    """``n`` services of three backends each."""
    base_vip, base_be = ipaddress.IPv4Address("10.96.0.0"), ipaddress.IPv4Address("10.1.0.0")
    return BpfPlan(services=[
        BpfService(str(base_vip + i), 80, "TCP", ServiceRef("default", f"svc-{i}"),
                   backends=[BpfBackend(str(base_be + 3 * i + j), PORT) for j in range(3)])
        for i in range(n)
    ])


def changed_plan(plan: BpfPlan, k: int, reuse: bool) -> BpfPlan:
    """``plan`` with one service's third backend replaced (change ``k``); others shared or rebuilt."""
    services = list(plan.services)
    i = (k * 7919) % len(services)
    s = services[i]
    extra = BpfBackend(str(ipaddress.IPv4Address("10.250.0.0") + k), PORT)
    services[i] = BpfService(s.vip, s.port, s.protocol, s.service, backends=(*s.backends[:2], extra))
    if not reuse:
        services = [x if j == i else BpfService(x.vip, x.port, x.protocol, x.service, backends=x.backends,
                                                 proxy_port=x.proxy_port, port_name=x.port_name)
                    for j, x in enumerate(services)]
    return BpfPlan(services=services)


def timed(changes: int, step: Callable[[int], None], prepare: Callable[[int], None]) -> list[float]:
    """Seconds per ``step(k)``, with ``prepare(k)`` and a garbage collection outside the timing."""
    out = []
    for k in range(changes):
        prepare(k)
        gc.collect()
        t0 = time.perf_counter()
        step(k)
        out.append(time.perf_counter() - t0)
    return out


def line(title: str, values: list[float]) -> str:
    """One result line."""
    return f"  {title:44} p50 {percentile_ms(values, 50):8.3f} ms   p99 {percentile_ms(values, 99):8.3f} ms"


def bench_diff(plan: BpfPlan, changes: int) -> None:
    """``diff_bpf`` on a fresh and on an object-reusing new plan."""
    for reuse in (False, True):
        new: dict[str, BpfPlan] = {}

        def prepare(k: int) -> None:
            new["plan"] = changed_plan(plan, k, reuse)

        def step(k: int) -> None:
            d = diff_bpf(plan, new["plan"])
            if len(d.changed) != 1 or d.added or d.removed:
                raise SystemExit(f"diff_bpf found {d}: the measurement is not valid")

        what = "reusing unchanged services" if reuse else "fresh plan (every service a new object)"
        print(line(f"diff_bpf, {what}", timed(changes, step, prepare)))
        index = BpfIndex(plan)

        def step_index(k: int) -> None:
            d = index.diff(new["plan"])
            if len(d.changed) != 1 or d.added or d.removed:
                raise SystemExit(f"BpfIndex.diff found {d}: the measurement is not valid")

        print(line(f"BpfIndex.diff, {what}", timed(changes, step_index, prepare)))


def bench_kernel(plan: BpfPlan, changes: int) -> None:
    """The agent's KernelLoadBalancer and a full apply against a real socket LB."""
    from meshcore import linux
    from meshcore.datapath import SocketLB, cgroup2_mount
    from meshcore.agent import KernelLoadBalancer

    prefix = f"{PREFIX}{os.getpid()}"
    with contextlib.ExitStack() as stack:
        group = cgroup2_mount() / prefix
        group.mkdir()
        stack.callback(group.rmdir)
        lb = SocketLB(prefix, group, linux.bpffs() / prefix)
        stack.callback(lb.destroy)
        applier = KernelLoadBalancer(lb)
        t0 = time.perf_counter()
        applier.apply(plan)
        print(f"  (setup: {len(plan.services):,} services applied in {time.perf_counter() - t0:.2f} s)")
        for reuse in (False, True):
            new: dict[str, BpfPlan] = {}

            def prepare(k: int, reuse: bool = reuse) -> None:
                new["plan"] = changed_plan(plan, k, reuse)

            def step(k: int) -> None:
                if not applier.apply(new["plan"]).changed:
                    raise SystemExit("the endpoint change wrote nothing: the measurement is not valid")
                applier.apply(plan)  # back, untimed below: the next change starts from ``plan``

            agent = timed(changes, step, prepare)
            what = "reusing unchanged services" if reuse else "fresh plan"
            # ``step`` applies twice (there and back); each is one endpoint change.
            print(line(f"agent path (BpfIndex.diff + apply_diff), {what}", [t / 2 for t in agent]))
        full = timed(changes, lambda k: (lb.apply(new["plan"]), lb.apply(plan)) and None,
                     lambda k: new.__setitem__("plan", changed_plan(plan, k, False)))
        print(line("full SocketLB.apply(plan), fresh plan", [t / 2 for t in full]))
        lb.close()


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--kernel", action="store_true", help="also through a real socket LB (root)")
    args = parser.parse_args(argv)
    plan = make_plan(args.services)
    print(f"one endpoint change at {args.services:,} services, {args.changes} changes; target p99 <= 5 ms")
    bench_diff(plan, args.changes)
    if args.kernel:
        if os.geteuid() != 0:
            print("--kernel needs root", file=sys.stderr)
            return 2
        bench_kernel(plan, args.changes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
