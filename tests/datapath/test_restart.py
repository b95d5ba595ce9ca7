"""Pinned programs and maps keep enforcing when the agent dies, and a new agent reconciles
without flushing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _datapath_support import SRC, Clients, plan, service
from meshcore.datapath import SocketLB

pytestmark = pytest.mark.root

VIP = "10.96.77.20"

AGENT = """
import json, sys, time
from pathlib import Path
from meshcore.compile import BpfBackend, BpfPlan, BpfService
from meshcore.datapath import SocketLB
from meshcore.model import ServiceRef
node, cgroup, pin_root, vip, backends = sys.argv[1:6]
svc = BpfService(vip, 80, "TCP", ServiceRef("test", "svc"),
                 backends=[BpfBackend(a, p, w) for a, p, w in json.loads(backends)])
lb = SocketLB(node, cgroup, Path(pin_root))
lb.open()
lb.apply(BpfPlan(services=[svc]))
ids = {b.address: b.id for s in lb.state().services for b in s.backends}
print(json.dumps(ids), flush=True)
time.sleep(3600)
"""


def test_agent_killed_with_sigkill_leaves_enforcement_and_a_new_agent_writes_nothing(
    clients: Clients, cgroup: Path, pin_root: Path
) -> None:
    node = "mcdp-restart"
    desired = plan(service(VIP, 80, [("b1", 1), ("b2", 1)]))
    backends = [[b.address, b.port, b.weight] for b in desired.services[0].backends]
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, node, str(cgroup), str(pin_root), VIP, json.dumps(backends)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        assert agent.stdout is not None
        ids_before = json.loads(agent.stdout.readline())
        held = clients.popen("hold", VIP, "80")
        assert clients.read_json(held)["backend"] in {"b1", "b2"}
        traffic = clients.popen("client", json.dumps({"op": "tcp_loop", "host": VIP, "port": 80, "seconds": 2.5}))

        time.sleep(0.5)
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(timeout=10)
        time.sleep(0.5)  # no agent at all: new connections still balanced by the pinned programs

        with SocketLB(node, cgroup, pin_root) as lb:
            report = lb.apply(desired)
            assert not report.changed, f"a restarted agent must not rewrite the maps: {report}"
            ids_after = {b.address: b.id for s in lb.state().services for b in s.backends}
        assert ids_after == ids_before

        out, _ = traffic.communicate(timeout=30)
        result = json.loads(out)
        assert result["errors"] == {}, result
        assert set(result["counts"]) == {"b1", "b2"}
        assert sum(result["counts"].values()) > 50, result
        assert held.stdin is not None
        held.stdin.write("after-restart\n")
        held.stdin.flush()
        assert clients.read_json(held) == {"echo": "after-restart"}
    finally:
        if agent.poll() is None:
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait(timeout=10)
        SocketLB(node, cgroup, pin_root).destroy()


def test_leftovers_of_an_interrupted_apply_are_removed_by_the_next_agent(lb: SocketLB, cgroup: Path, pin_root: Path) -> None:
    desired = plan(service(VIP, 80, [("b1", 1)]))
    lb.apply(desired)
    # What a crash between writing a new service's backends/slots and its entry leaves behind.
    from meshcore.datapath.maps import backends, slots
    bmap, slmap = lb._maps["lb_backends"], lb._maps["lb_slots"]
    bmap.update(backends.BackendId(4000), backends.BackendValue.of("10.77.0.12", 8080, 777, 1, 0))
    slmap.update(slots.SlotKey(777, 0), slots.SlotValue(4000))
    lb.close()

    with SocketLB(lb.node, cgroup, pin_root) as again:
        state = again.state()
        assert (state.orphan_backends, state.orphan_slots) == (1, 1)
        report = again.apply(desired)
        assert report.entries_written == 0 and report.entries_deleted == 2
        state = again.state()
        assert (state.orphan_backends, state.orphan_slots) == (0, 0)
        assert [b.address for s in state.services for b in s.backends] == ["10.77.0.11"]
        # New ids are allocated above everything ever seen, leftovers included.
        again.apply(plan(service(VIP, 80, [("b1", 1), ("b2", 1)])))
        assert max(b.id for s in again.state().services for b in s.backends) > 4000
    lb.open()
