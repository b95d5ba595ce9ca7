"""The Plan: what enforcing a Snapshot on one node means, for the kernel and for Envoy.

These types are the contract between compile and the enforcers: ``meshcore.datapath``
consumes :class:`BpfPlan`, ``meshcore.proxy`` consumes :class:`EnvoyPlan`. They hold no
model objects' internals beyond references, so enforcers never need the adapters.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from ..model import BackendState, ServiceRef, Source
from ._envoy.plan import EnvoyPlan as EnvoyPlan  # the Plan holds one; defined with its parts
from ._modes import WorkloadMode
from ._sidecar import SidecarPlan
from ._policy_plan import PolicyPlan
from ._tunnel import TunnelPlan


class Datapath(enum.StrEnum):
    """Where a service port is enforced."""

    EBPF = "ebpf"
    ENVOY = "envoy"


@attrs.frozen(order=True)
class BpfBackend:
    """One backend as the kernel sees it: address, port, weight and state."""

    address: str
    port: int
    weight: int = 1
    state: BackendState = BackendState.ACTIVE

    @property
    def family(self) -> int:
        """4 or 6."""
        return 6 if ":" in self.address else 4  # addresses are validated canonical text


def _sorted_backends(value: Iterable[BpfBackend]) -> tuple[BpfBackend, ...]:
    return tuple(sorted(value, key=lambda b: (b.address, b.port, b.weight, b.state.value)))


@attrs.frozen(order=True)
class BpfService:
    """One (VIP, port, transport) frontend and its backends.

    When ``proxy_port`` is set the kernel sends new connections to the node proxy on that
    port instead of choosing a backend (the L7 hand-off).
    """

    vip: str
    port: int
    protocol: str  # "TCP" or "UDP"
    service: ServiceRef
    backends: tuple[BpfBackend, ...] = attrs.field(default=(), converter=_sorted_backends)
    proxy_port: int | None = None
    port_name: str = ""

    @property
    def key(self) -> tuple[str, int, str]:
        """The frontend key (vip, port, protocol)."""
        return (self.vip, self.port, self.protocol)

    @property
    def family(self) -> int:
        """4 or 6."""
        return 6 if ":" in self.vip else 4


def _by_key(value: Iterable[BpfService]) -> tuple[BpfService, ...]:
    return tuple(sorted(value, key=lambda s: s.key))


@attrs.frozen
class BpfPlan:
    """Everything the socket-level datapath enforces, sorted by frontend."""

    services: tuple[BpfService, ...] = attrs.field(default=(), converter=_by_key)


def sorted_bpf_plan(services: tuple[BpfService, ...]) -> BpfPlan:
    """A :class:`BpfPlan` of frontends already in key order (taken as they are, not sorted again)."""
    plan = object.__new__(BpfPlan)
    object.__setattr__(plan, "services", services)
    return plan


@attrs.frozen(order=True)
class Decision:
    """Why a service port is handled by eBPF alone or by the node Envoy."""

    service: ServiceRef
    port: int
    protocol: str
    datapath: Datapath
    reason: str
    source: Source = attrs.field(default=Source(), eq=False, order=False)


@attrs.frozen
class Plan:
    """A compiled plan for one node."""

    node: str
    snapshot_hash: str
    bpf: BpfPlan
    envoy: EnvoyPlan
    decisions: tuple[Decision, ...] = ()
    policy: PolicyPlan = attrs.field(factory=PolicyPlan)
    #: Mutual-TLS tunnels between nodes (None: mutual TLS is off, ``CompileOptions.mtls``).
    tunnel: TunnelPlan | None = None
    #: The proxy mode of each workload of the node, and why.
    modes: tuple[WorkloadMode, ...] = ()
    #: What each sidecar of the node serves.
    sidecars: tuple[SidecarPlan, ...] = ()
