"""Pinned programs and maps keep enforcing when the node agent dies, and a new agent reconciles
without flushing (the real `meshcore agent` process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _datapath_support import PORT, SRC, V4, Clients, plan, service
from meshcore.agent import REPORT_FILE, GenerationReport, read_report
from meshcore.datapath import PolicyEnforcer, SocketLB

pytestmark = pytest.mark.root

VIP = "10.96.77.20"

# What the node agent is told: one Service with its endpoints (the backend servers).
MANIFEST = f"""
apiVersion: v1
kind: Service
metadata: {{name: svc, namespace: test}}
spec: {{clusterIP: {VIP}, ports: [{{port: 80, targetPort: {PORT}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-1, namespace: test, labels: {{kubernetes.io/service-name: svc}}}}
addressType: IPv4
ports: [{{port: {PORT}}}]
endpoints: [{{addresses: [{V4["b1"]}]}}, {{addresses: [{V4["b2"]}]}}]
"""


def _start_agent(node: str, cgroup: Path, pin_root: Path, manifest: Path, state: Path) -> subprocess.Popen[str]:
    """``meshcore agent`` as a node runs it: node facts as flags, configuration from files."""
    return subprocess.Popen(
        [sys.executable, "-m", "meshcore.agent", "--node", node, "--cgroup", str(cgroup), "--pin-root",
         str(pin_root), "--state-dir", str(state), "-f", str(manifest), "--metrics", "off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SRC)},
    )


def _report(state: Path, agent: subprocess.Popen[str], timeout: float = 30) -> GenerationReport:
    """The agent's first report, once written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = read_report(state / REPORT_FILE)
        if report is not None and report.pid == agent.pid:
            return report
        if agent.poll() is not None:
            pytest.fail(f"the agent exited with {agent.returncode}: {agent.stderr.read() if agent.stderr else ''}")
        time.sleep(0.05)
    pytest.fail("the agent wrote no report")


def test_agent_killed_with_sigkill_leaves_enforcement_and_a_new_agent_writes_nothing(
    clients: Clients, cgroup: Path, pin_root: Path, tmp_path: Path
) -> None:
    node = "mcdp-restart"
    manifest = tmp_path / "svc.yaml"
    manifest.write_text(MANIFEST)
    agent = _start_agent(node, cgroup, pin_root, manifest, tmp_path / "state")
    again: subprocess.Popen[str] | None = None
    try:
        first = _report(tmp_path / "state", agent)
        assert first.applied and first.frontends == 1, first
        with SocketLB(node, cgroup, pin_root) as lb:
            ids_before = {b.address: b.id for s in lb.state().services for b in s.backends}
        assert set(ids_before) == {V4["b1"], V4["b2"]}
        held = clients.popen("hold", VIP, "80")
        assert clients.read_json(held)["backend"] in {"b1", "b2"}
        traffic = clients.popen("client", json.dumps({"op": "tcp_loop", "host": VIP, "port": 80, "seconds": 2.5}))

        time.sleep(0.5)
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(timeout=10)
        time.sleep(0.5)  # no agent at all: new connections still balanced by the pinned programs

        again = _start_agent(node, cgroup, pin_root, manifest, tmp_path / "state")
        second = _report(tmp_path / "state", again)
        assert second.applied and "0 entries written, 0 deleted" in second.changes[0], \
            f"a restarted agent must not rewrite the maps: {second}"
        with SocketLB(node, cgroup, pin_root) as lb:
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
        for proc in (agent, again):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        SocketLB(node, cgroup, pin_root).destroy()
        PolicyEnforcer(node, pin_root).destroy()


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

