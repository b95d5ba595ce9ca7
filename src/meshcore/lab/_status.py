"""What the lab reports: pods, services, the agent, and what one `lab up` changed.

These are the plain, frozen results the public API returns (each with ``to_data`` for
JSON/YAML output); :func:`lab_status` builds them from the recorded state and from the
processes as they are now, so a pod whose container exited shows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..model import Diagnostic
from . import _procs as procs
from ._nodeagent import AgentStatus, agent_status
from ._state import LabState, PodRecord


@attrs.frozen
class ContainerStatus:
    """A container's process as the lab sees it."""

    name: str
    pid: int
    running: bool
    command: tuple[str, ...]
    log: str


@attrs.frozen
class PodStatus:
    """A pod: where it runs, its addresses, phase and containers."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    addresses: tuple[str, ...]
    phase: str
    ready: bool
    owner: str
    netns: str
    cgroup: str
    containers: tuple[ContainerStatus, ...]
    notes: tuple[str, ...] = ()

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {
            "namespace": self.namespace, "name": self.name, "labels": dict(self.labels),
            "addresses": list(self.addresses), "phase": self.phase, "ready": self.ready,
            "owner": self.owner, "netns": self.netns, "cgroup": self.cgroup,
            "containers": [{"name": c.name, "pid": c.pid, "running": c.running,
                            "command": list(c.command), "log": c.log} for c in self.containers],
            "notes": list(self.notes),
        }


@attrs.frozen
class ServiceStatus:
    """A service: its ClusterIPs and ports."""

    namespace: str
    name: str
    cluster_ips: tuple[str, ...]
    ports: tuple[Mapping[str, Any], ...]

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {"namespace": self.namespace, "name": self.name, "clusterIPs": list(self.cluster_ips),
                "ports": [dict(p) for p in self.ports]}


@attrs.frozen
class LabStatus:
    """Everything `lab status` shows."""

    name: str
    node: str
    node_netns: str
    cgroup: str
    files: tuple[str, ...]
    pods: tuple[PodStatus, ...]
    services: tuple[ServiceStatus, ...]
    agent: AgentStatus
    notes: tuple[str, ...] = ()

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {
            "name": self.name, "node": self.node, "nodeNetns": self.node_netns, "cgroup": self.cgroup,
            "files": list(self.files), "agent": self.agent.to_data(),
            "pods": [p.to_data() for p in self.pods],
            "services": [s.to_data() for s in self.services],
            "notes": list(self.notes),
        }


@attrs.frozen
class UpResult:
    """What one `lab up` changed."""

    name: str
    created: tuple[str, ...]
    removed: tuple[str, ...]
    restarted: tuple[str, ...]
    kept: tuple[str, ...]
    not_ready: tuple[str, ...]
    diagnostics: tuple[Diagnostic, ...]
    notes: tuple[str, ...]
    agent: AgentStatus | None
    warnings: tuple[str, ...] = ()


def lab_status(state: LabState) -> LabStatus:
    """Pods, services and the agent of the lab ``state`` records, as they are now."""
    pods = []
    for record in sorted(state.pods.values(), key=lambda r: (r.namespace, r.name)):
        containers = tuple(
            ContainerStatus(p.container, p.pid, procs.alive(p.pid, p.start_time), p.argv, p.log)
            for p in record.processes
        )
        pods.append(PodStatus(
            namespace=record.namespace, name=record.name, labels=record.labels,
            addresses=record.addresses, phase=_phase(record, containers),
            ready=record.ready and bool(containers) and all(c.running for c in containers),
            owner=record.owner, netns=record.netns, cgroup=record.cgroup, containers=containers,
            notes=record.notes,
        ))
    services = tuple(
        ServiceStatus(s.namespace, s.name, s.cluster_ips, s.ports)
        for s in sorted(state.services.values(), key=lambda s: (s.namespace, s.name))
    )
    return LabStatus(
        name=state.name, node=state.node_name, node_netns=state.node_netns, cgroup=state.cgroup_root,
        files=tuple(state.files), pods=tuple(pods), services=services,
        agent=agent_status(state), notes=tuple(state.notes),
    )


def _phase(record: PodRecord, containers: Sequence[ContainerStatus]) -> str:
    if record.setup != "ready":
        return "Pending"
    if not containers:
        return "Failed"  # no container could be started (see the pod's notes)
    running = sum(c.running for c in containers)
    if running == len(containers):
        return "Running"
    return "Exited" if running == 0 else "Degraded"
