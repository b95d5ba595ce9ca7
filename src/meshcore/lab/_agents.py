"""Node agents as processes: starting or signalling them, and reading what they report.

The lab runs one :mod:`meshcore.agent` per node (``python -m meshcore.agent``) in the
node's network namespace and its own cgroup, with the node's facts as flags; it hands
it a new configuration by writing the node's objects file and sending SIGHUP. Each agent
writes its typed report (:class:`~meshcore.agent.GenerationReport`) after each
generation; :func:`agent_status` reads it, ignoring one left by an agent that is gone.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from ..agent import REPORT_FILE, ConfigStatus, GenerationReport, ProxyStatus, read_report
from ..agent._proxy import recorded_processes
from . import _netns as netns
from . import _procs as procs
from ._ca import ca_agent_args
from ._containers import python_env
from ._state import LabState, NodeRecord, ProcRecord

AGENT_CGROUP = "_agent"


@attrs.frozen
class AgentStatus:
    """A node's agent: whether it runs and its last report."""

    running: bool
    pid: int
    wanted_generation: int
    log: str
    #: The agent's last report (None until it wrote one).
    report: GenerationReport | None = None
    #: The node it runs on.
    node: str = ""

    @property
    def applied_generation(self) -> int:
        """The generation the last report is about."""
        return self.report.generation if self.report else 0

    @property
    def ok(self) -> bool:
        """True when the last reported generation was applied."""
        return self.report is not None and self.report.applied

    @property
    def error(self) -> str:
        """Why the last generation was not applied, or what of it was left out."""
        return self.report.error if self.report else ""

    @property
    def frontends(self) -> int:
        """Service frontends in force."""
        return self.report.frontends if self.report else 0

    @property
    def proxy(self) -> ProxyStatus:
        """The node proxy as the agent last reported it (not running when the agent is not)."""
        return self.report.proxy if self.report and self.running else ProxyStatus()

    @property
    def config_status(self) -> tuple[ConfigStatus, ...]:
        """Each raw Envoy config as the node's Envoy took it."""
        return self.report.config_status if self.report else ()

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {"node": self.node, "running": self.running, "pid": self.pid, "wantedGeneration": self.wanted_generation,
                "appliedGeneration": self.applied_generation, "ok": self.ok, "error": self.error,
                "frontends": self.frontends, "log": self.log, "proxy": self.proxy.to_data(),
                "configStatus": [c.to_data() for c in self.config_status],
                "report": self.report.to_data() if self.report else None}


def agent_alive(node: NodeRecord) -> bool:
    """True when the node's recorded agent process still runs."""
    return node.agent is not None and procs.alive(node.agent.pid, node.agent.start_time)


def _start_agent(state: LabState, node: NodeRecord) -> None:
    # A node Envoy left by an agent that was killed still serves its last configuration;
    # the new agent starts its own, so the old one goes first.
    procs.stop(recorded_processes(Path(node.state_dir)))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": os.environ.get("LANG", "C.UTF-8"),
           **python_env()}
    for passed in ("MESHCORE_DEBUG", "MESHCORE_ENVOY"):
        if os.environ.get(passed):
            env[passed] = os.environ[passed]
    ranges = node.ranges
    argv = [sys.executable, "-m", "meshcore.agent", "--node", node.name, "--cgroup", node.cgroup,
            "--state-dir", node.state_dir, "--pin-root", node.pin_root,
            "--ipv4", ranges.node_ipv4, "--ipv6", ranges.node_ipv6, "--objects", str(node.objects_path),
            # The node proxy resolves DNS-resolved services through the node's name server.
            "--dns-resolver", ranges.node_ipv4]
    if ranges.proxy_addresses:
        argv += ["--proxy-ipv4", ranges.proxy_addresses[0], "--proxy-ipv6", ranges.proxy_addresses[1]]
    argv += ca_agent_args(state, node)
    log = str(node.agent_log)
    # Not `ip netns exec`: it remounts /sys, hiding the cgroup and BPF filesystems.
    pid, started = procs.spawn(argv, env=env, cwd=node.state_dir, cgroup=str(Path(node.cgroup) / AGENT_CGROUP),
                               log=log, netns=str(netns.path(node.netns)))
    node.agent = ProcRecord("agent", pid, started, tuple(argv), log)
    state.save()


def stop_agent(state: LabState, node: NodeRecord) -> None:
    """Stop the node's agent and the node Envoy it started (its pinned datapath keeps enforcing)."""
    if node.agent is not None:
        procs.stop([(node.agent.pid, node.agent.start_time)])
    procs.stop(recorded_processes(Path(node.state_dir)))


def ensure_agents(state: LabState, generation: int, timeout: float, warnings: list[str]) -> list[AgentStatus]:
    """Start every node's agent that is up (or signal it to reload); wait until they applied ``generation``."""
    nodes = [n for n in state.nodes.values() if not n.down]
    for node in nodes:
        if agent_alive(node):
            assert node.agent is not None
            procs.signal_process(node.agent.pid, node.agent.start_time, signal.SIGHUP)
        else:
            _start_agent(state, node)
    deadline = time.monotonic() + timeout
    pending = list(nodes)
    while pending and time.monotonic() < deadline:
        pending = [n for n in pending if _waiting(agent_status(state, n), generation)]
        if pending:
            time.sleep(0.05)
    statuses = [agent_status(state, n) for n in state.nodes.values()]
    for node, status in zip(state.nodes.values(), statuses, strict=True):
        if not node.down:
            warnings.extend(_problems(state, node, status, generation, timeout))
    return statuses


def _waiting(status: AgentStatus, generation: int) -> bool:
    return status.running and status.applied_generation != generation


def _problems(state: LabState, node: NodeRecord, status: AgentStatus, generation: int,
              timeout: float) -> list[str]:
    which = f"the node agent of {node.name}" if len(state.nodes) > 1 else "the node agent"
    if not status.running:
        return [f"{which} is not running; see {node.agent_log}"]
    if status.applied_generation != generation:
        return [f"{which} has not applied this configuration within {timeout:.0f}s; see {node.agent_log}"]
    if not status.ok:
        return [f"{which} could not apply this configuration: {status.error} "
                "(the previous datapath state keeps enforcing)"]
    if status.error:
        return [f"{which} applied this configuration except: {status.error}"]
    return []


def agent_status(state: LabState, node: NodeRecord) -> AgentStatus:
    """The node's agent as it runs and as it last reported."""
    running = agent_alive(node)
    agent_pid = node.agent.pid if node.agent else 0
    report = read_report(Path(node.state_dir) / REPORT_FILE)
    if report is not None and report.pid != agent_pid:
        report = None  # written by an agent that is gone
    return AgentStatus(running=running, pid=agent_pid, wanted_generation=state.generation,
                       log=str(node.agent_log), report=report, node=node.name)


def agent_statuses(state: LabState) -> list[AgentStatus]:
    """Every node's agent, in node order."""
    return [agent_status(state, n) for n in state.nodes.values()]
