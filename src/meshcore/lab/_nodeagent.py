"""The node agent as a process: starting or signalling it, and reading what it reports.

The lab runs one agent per lab in the node's network namespace and its own cgroup; it
hands it a new configuration by writing the objects file and sending SIGHUP. The agent
writes back which generation it applied and how that went; :func:`agent_status` reads
that report, ignoring one left by an agent that is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from . import _netns as netns
from . import _procs as procs
from ._containers import python_env
from ._state import AGENT_LOG, LabState, ProcRecord

AGENT_CGROUP = "_agent"


@attrs.frozen
class AgentStatus:
    """The node agent: whether it runs and what it last applied."""

    running: bool
    pid: int
    wanted_generation: int
    applied_generation: int
    ok: bool
    error: str
    frontends: int
    log: str
    #: The node proxy as the agent reports it (``running``, ``pid``, ``listeners``, ...).
    proxy: Mapping[str, Any] = attrs.field(factory=dict)
    #: Each raw Envoy config as Envoy took it: ``kind``, ``namespace``, ``name``, ``accepted``,
    #: ``reason`` and ``errors`` (resource index, type, name and Envoy's message).
    config_status: tuple[Mapping[str, Any], ...] = ()

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {"running": self.running, "pid": self.pid, "wantedGeneration": self.wanted_generation,
                "appliedGeneration": self.applied_generation, "ok": self.ok, "error": self.error,
                "frontends": self.frontends, "log": self.log, "proxy": dict(self.proxy),
                "configStatus": [dict(c) for c in self.config_status]}


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
        if os.environ.get("MESHCORE_DEBUG"):
            env["MESHCORE_DEBUG"] = os.environ["MESHCORE_DEBUG"]
        # Not `ip netns exec`: it remounts /sys, hiding the cgroup and BPF filesystems.
        argv = [sys.executable, "-m", "meshcore.lab.agent", "--lab", state.name, "--state-dir", str(state.dir)]
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
    data: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(state.agent_status_path.read_text())
    running = agent_alive(state)
    agent_pid = state.agent.pid if state.agent else 0
    if data.get("pid") != agent_pid:
        data = {}  # written by an agent that is gone
    return AgentStatus(
        running=running, pid=agent_pid, wanted_generation=state.generation,
        applied_generation=int(data.get("generation", 0)), ok=bool(data.get("ok", False)),
        error=str(data.get("error", "")), frontends=int(data.get("frontends", 0)),
        log=str(state.dir / AGENT_LOG), proxy=dict(data.get("proxy") or {}) if running else {},
        config_status=tuple(c for c in data.get("configStatus") or () if isinstance(c, dict)),
    )

