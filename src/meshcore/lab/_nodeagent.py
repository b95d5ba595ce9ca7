"""The node agent as a process: starting or signalling it, and reading what it reports.

The lab runs one :mod:`meshcore.agent` per lab (``python -m meshcore.agent``) in the
node's network namespace and its own cgroup, with the node's facts as flags; it hands it
a new configuration by writing the objects file and sending SIGHUP. The agent writes its
typed report (:class:`~meshcore.agent.GenerationReport`) after each generation;
:func:`agent_status` reads it, ignoring one left by an agent that is gone.
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
from . import _netns as netns
from . import _procs as procs
from ._containers import python_env
from ._ipam import LabRanges
from ._state import AGENT_LOG, LabState, ProcRecord

AGENT_CGROUP = "_agent"


@attrs.frozen
class AgentStatus:
    """The node agent: whether it runs and its last report."""

    running: bool
    pid: int
    wanted_generation: int
    log: str
    #: The agent's last report (None until it wrote one).
    report: GenerationReport | None = None

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
        return {"running": self.running, "pid": self.pid, "wantedGeneration": self.wanted_generation,
                "appliedGeneration": self.applied_generation, "ok": self.ok, "error": self.error,
                "frontends": self.frontends, "log": self.log, "proxy": self.proxy.to_data(),
                "configStatus": [c.to_data() for c in self.config_status],
                "report": self.report.to_data() if self.report else None}


def agent_alive(state: LabState) -> bool:
    """True when the lab's recorded agent process still runs."""
    return state.agent is not None and procs.alive(state.agent.pid, state.agent.start_time)


def ensure_agent(state: LabState, generation: int, timeout: float, warnings: list[str]) -> AgentStatus:
    """Start the agent (or signal it to reload) and wait until it applied ``generation``."""
    if agent_alive(state):
        assert state.agent is not None
        procs.signal_process(state.agent.pid, state.agent.start_time, signal.SIGHUP)
    else:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": os.environ.get("LANG", "C.UTF-8"),
               **python_env()}
        for passed in ("MESHCORE_DEBUG", "MESHCORE_ENVOY"):
            if os.environ.get(passed):
                env[passed] = os.environ[passed]
        # Not `ip netns exec`: it remounts /sys, hiding the cgroup and BPF filesystems.
        pin_dir = Path(state.bpf_pin_dir)
        ranges = LabRanges.from_data(state.ranges)
        argv = [sys.executable, "-m", "meshcore.agent", "--node", state.node_name, "--cgroup", state.cgroup_root,
                "--state-dir", str(state.dir), "--pin-root", str(pin_dir.parent),
                "--ipv4", ranges.node_ipv4, "--ipv6", ranges.node_ipv6, "--objects", str(state.objects_path)]
        log = str(state.dir / AGENT_LOG)
        pid, started = procs.spawn(argv, env=env, cwd=str(state.dir),
                                   cgroup=str(Path(state.cgroup_root) / AGENT_CGROUP), log=log,
                                   netns=str(netns.path(state.node_netns)))
        state.agent = ProcRecord("agent", pid, started, tuple(argv), log)
        state.save()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = agent_status(state)
        if status.applied_generation == generation or not status.running:
            break
        time.sleep(0.05)
    status = agent_status(state)
    if not status.running:
        warnings.append(f"the node agent is not running; see {state.dir / AGENT_LOG}")
    elif status.applied_generation != generation:
        warnings.append(f"the node agent has not applied this configuration within {timeout:.0f}s; "
                        f"see {state.dir / AGENT_LOG}")
    elif not status.ok:
        warnings.append(f"the node agent could not apply this configuration: {status.error} "
                        "(the previous datapath state keeps enforcing)")
    elif status.error:
        warnings.append(f"the node agent applied this configuration except: {status.error}")
    return status


def agent_status(state: LabState) -> AgentStatus:
    """The agent as it runs and as it last reported."""
    running = agent_alive(state)
    agent_pid = state.agent.pid if state.agent else 0
    report = read_report(state.dir / REPORT_FILE)
    if report is not None and report.pid != agent_pid:
        report = None  # written by an agent that is gone
    return AgentStatus(running=running, pid=agent_pid, wanted_generation=state.generation,
                       log=str(state.dir / AGENT_LOG), report=report)
