"""What the lab reports: pods, services, nodes and their agents, and what one `lab up` changed.

These are the plain, frozen results the public API returns (each with ``to_data`` for
JSON/YAML output); :func:`lab_status` builds them from the recorded state and from the
processes as they are now, so a pod whose container exited shows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..model import Diagnostic
from ..observe import DEFAULT_METRICS_ADDRESS
from . import _procs as procs
from ._agents import AgentStatus, agent_status
from ._state import LabState, NodeRecord, PodRecord


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
    #: The node it runs on.
    node: str = ""
    #: Its sidecar Envoy, while it is in sidecar mode.
    sidecar: ContainerStatus | None = None

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        def container(c: ContainerStatus) -> dict[str, Any]:
            return {"name": c.name, "pid": c.pid, "running": c.running, "command": list(c.command), "log": c.log}

        return {
            "namespace": self.namespace, "name": self.name, "labels": dict(self.labels),
            "addresses": list(self.addresses), "phase": self.phase, "ready": self.ready,
            "owner": self.owner, "node": self.node, "netns": self.netns, "cgroup": self.cgroup,
            "containers": [container(c) for c in self.containers],
            "sidecar": container(self.sidecar) if self.sidecar is not None else None,
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
class NodeStatus:
    """A lab node: its namespace, cgroup, pod ranges, addresses and agent."""

    name: str
    netns: str
    cgroup: str
    pod_cidrs: tuple[str, ...]
    addresses: tuple[str, ...]
    proxy_addresses: tuple[str, ...]
    up: bool
    agent: AgentStatus
    #: Where its agent serves metrics, inside its network namespace.
    metrics: str = ""

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {"name": self.name, "netns": self.netns, "cgroup": self.cgroup, "podCIDRs": list(self.pod_cidrs),
                "addresses": list(self.addresses), "proxyAddresses": list(self.proxy_addresses),
                "up": self.up, "metrics": self.metrics, "agent": self.agent.to_data()}


@attrs.frozen
class FabricStatus:
    """The underlay of a lab of several nodes: the namespace holding the bridge that joins them."""

    netns: str
    bridge: str

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {"netns": self.netns, "bridge": self.bridge}


@attrs.frozen
class LabStatus:
    """Everything `lab status` shows."""

    name: str
    cgroup: str
    files: tuple[str, ...]
    pods: tuple[PodStatus, ...]
    services: tuple[ServiceStatus, ...]
    nodes: tuple[NodeStatus, ...]
    fabric: FabricStatus | None = None
    notes: tuple[str, ...] = ()

    @property
    def node(self) -> str:
        """The first node's name (the only one of a lab of one node)."""
        return self.nodes[0].name

    @property
    def node_netns(self) -> str:
        """The first node's network namespace."""
        return self.nodes[0].netns

    @property
    def agent(self) -> AgentStatus:
        """The first node's agent (the only one of a lab of one node)."""
        return self.nodes[0].agent

    def to_data(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output (``node``, ``nodeNetns``, ``agent``: the first node's)."""
        return {
            "name": self.name, "node": self.node, "nodeNetns": self.node_netns, "cgroup": self.cgroup,
            "files": list(self.files), "agent": self.agent.to_data(),
            "nodes": [n.to_data() for n in self.nodes],
            "fabric": self.fabric.to_data() if self.fabric else None,
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
    #: Every node's agent, in node order.
    agents: tuple[AgentStatus, ...] = ()
    warnings: tuple[str, ...] = ()
    #: The node of every pod (``namespace/name`` → node).
    placement: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def agent(self) -> AgentStatus | None:
        """The first node's agent (the only one of a lab of one node)."""
        return self.agents[0] if self.agents else None


def lab_status(state: LabState) -> LabStatus:
    """Pods, services, nodes and agents of the lab ``state`` records, as they are now."""
    pods = []
    for record in sorted(state.pods.values(), key=lambda r: (r.namespace, r.name)):
        containers = tuple(
            ContainerStatus(p.container, p.pid, procs.alive(p.pid, p.start_time), p.argv, p.log)
            for p in record.processes
        )
        pods.append(PodStatus(
            namespace=record.namespace, name=record.name, labels=record.labels,
            addresses=record.addresses, phase=_phase(record, containers, state.node_of(record)),
            ready=record.ready and bool(containers) and all(c.running for c in containers),
            owner=record.owner, netns=record.netns, cgroup=record.cgroup, containers=containers,
            notes=record.notes, node=record.node,
            sidecar=ContainerStatus(record.sidecar.container, record.sidecar.pid,
                                    procs.alive(record.sidecar.pid, record.sidecar.start_time), record.sidecar.argv,
                                    record.sidecar.log) if record.sidecar is not None else None,
        ))
    services = tuple(
        ServiceStatus(s.namespace, s.name, s.cluster_ips, s.ports)
        for s in sorted(state.services.values(), key=lambda s: (s.namespace, s.name))
    )
    nodes = tuple(
        NodeStatus(n.name, n.netns, n.cgroup, (n.ranges.pod_ipv4, n.ranges.pod_ipv6), n.ranges.node_addresses,
                   n.ranges.proxy_addresses, not n.down, agent_status(state, n),
                   metrics=f"{DEFAULT_METRICS_ADDRESS} in network namespace {n.netns}")
        for n in state.nodes.values()
    )
    fabric = FabricStatus(state.fabric.netns, state.fabric.bridge) if state.fabric is not None else None
    return LabStatus(
        name=state.name, cgroup=state.cgroup_root, files=tuple(state.files), pods=tuple(pods), services=services,
        nodes=nodes, fabric=fabric, notes=tuple(state.notes),
    )


def _phase(record: PodRecord, containers: Sequence[ContainerStatus], node: NodeRecord) -> str:
    if record.setup != "ready":
        return "Pending"
    if node.down:
        return "Unknown"  # as for a pod whose node stopped reporting
    if not containers:
        return "Failed"  # no container could be started (see the pod's notes)
    running = sum(c.running for c in containers)
    if running == len(containers):
        return "Running"
    return "Exited" if running == 0 else "Degraded"
