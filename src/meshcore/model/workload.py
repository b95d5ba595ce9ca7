"""Workloads: the addressable things (pods, VMs) that serve and call services."""

from __future__ import annotations

import enum

import attrs

from ._labels import Labels, to_labels
from ._source import UNKNOWN, Source
from ._validate import dns_label, dns_subdomain, ip_addresses, port, to_tuple
from .identity import Identity


class Protocol(enum.StrEnum):
    """Application protocol of a port; decides whether L7 handling is possible."""

    TCP = "TCP"
    UDP = "UDP"
    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    TLS = "TLS"

    @property
    def transport(self) -> str:
        """``"UDP"`` for UDP, ``"TCP"`` for everything else."""
        return "UDP" if self is Protocol.UDP else "TCP"

    @property
    def is_http(self) -> bool:
        """True for protocols Envoy can route at L7 (HTTP, HTTP2, GRPC)."""
        return self in (Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC)


class ProxyMode(enum.StrEnum):
    """Which proxy, if any, handles a workload's own traffic."""

    #: Kernel only: socket-level LB and L3/L4 policy, no proxy of its own and no mutual TLS
    #: (host-network pods, and pods opted out).
    NONE = "none"
    #: The kernel, and the shared node Envoy where L7 is needed (the default).
    NODE = "node"
    #: An Envoy of the pod's own: the kernel steers its connections, both ways, through it.
    SIDECAR = "sidecar"
    #: The older name of :attr:`NODE` (the value ``mesh`` is read as ``node``).
    MESH = "node"

    @classmethod
    def _missing_(cls, value: object) -> ProxyMode | None:
        return cls.NODE if value == "mesh" else None

    @property
    def meshed(self) -> bool:
        """True when the workload's connections are its own in the mesh (mutual TLS, client-dependent routes)."""
        return self is not ProxyMode.NONE


@attrs.frozen(order=True)
class WorkloadRef:
    """A reference to a workload by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@attrs.frozen(order=True)
class WorkloadPort:
    """A port a workload listens on; ``name`` lets services target it by name."""

    port: int = attrs.field(validator=port)
    name: str = ""
    protocol: Protocol = attrs.field(default=Protocol.TCP, converter=Protocol)


@attrs.frozen(order=True)
class Workload:
    """A pod or VM with addresses, identity, labels, ports, node and proxy mode."""

    name: str = attrs.field(validator=dns_subdomain)
    namespace: str = attrs.field(validator=dns_label)
    identity: Identity
    addresses: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, validator=ip_addresses)
    labels: Labels = attrs.field(factory=Labels, converter=to_labels)
    ports: tuple[WorkloadPort, ...] = attrs.field(default=(), converter=to_tuple)
    node: str = ""
    proxy_mode: ProxyMode = attrs.field(default=ProxyMode.NODE, converter=ProxyMode)
    #: Why the workload has its proxy mode (the annotation that chose it); empty when set
    #: through the model, or when it is the default.
    proxy_mode_reason: str = ""
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)

    @property
    def ref(self) -> WorkloadRef:
        """This workload's reference."""
        return WorkloadRef(self.namespace, self.name)

    def port_named(self, name: str) -> WorkloadPort | None:
        """The declared port with this name, if any."""
        return next((p for p in self.ports if p.name == name), None)
