"""Authorization policy (ALLOW / DENY / AUDIT) and peer authentication.

A policy selects workloads (by namespace and labels) and lists rules; a rule matches when
any of its ``sources`` AND any of its ``operations`` AND all of its ``conditions`` match.
Compile splits rules: L3/L4 parts (identities, namespaces, IP blocks, ports) go to the
datapath; L7 parts (methods, paths, hosts, conditions) go to Envoy RBAC.
"""

from __future__ import annotations

import enum

import attrs

from ._labels import Labels, to_labels
from ._source import UNKNOWN, Source
from ._validate import cidr, cidrs, dns_label, port, to_tuple


class PolicyAction(enum.StrEnum):
    """What a matching rule does. DENY is evaluated before ALLOW; AUDIT only records."""

    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"


class Direction(enum.StrEnum):
    """Which traffic of the selected workloads a policy governs."""

    INGRESS = "ingress"
    EGRESS = "egress"


@attrs.frozen(order=True)
class IpBlock:
    """A CIDR with optional exceptions."""

    cidr: str = attrs.field(validator=cidr)
    except_: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, validator=cidrs)


@attrs.frozen(order=True)
class PeerSelector:
    """The other side of a connection; unset fields match anything, set fields AND together.

    ``principals`` are ``<td>/ns/<ns>/sa/<sa>`` patterns (exact, ``prefix*``, ``*suffix``
    or ``*``); ``namespace_labels``/``workload_labels`` select by labels; ``namespaces``
    by name. ``request_principals`` are ``<iss>/<sub>`` patterns of a verified JWT (see
    :class:`~meshcore.model.RequestAuthentication`). ``not_*`` fields exclude.
    """

    principals: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    not_principals: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    namespaces: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    not_namespaces: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    namespace_labels: Labels | None = attrs.field(default=None, converter=attrs.converters.optional(to_labels))
    workload_labels: Labels | None = attrs.field(default=None, converter=attrs.converters.optional(to_labels))
    ip_blocks: tuple[IpBlock, ...] = attrs.field(default=(), converter=to_tuple)
    not_ip_blocks: tuple[IpBlock, ...] = attrs.field(default=(), converter=to_tuple)
    request_principals: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    not_request_principals: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)

    @property
    def needs_l7(self) -> bool:
        """True when matching needs more than addresses (JWT request principals)."""
        return bool(self.request_principals or self.not_request_principals)


@attrs.frozen(order=True)
class PortRange:
    """A port or an inclusive range of ports, with the transport protocol."""

    first: int = attrs.field(validator=port)
    last: int = attrs.field(validator=port)
    protocol: str = attrs.field(default="TCP", validator=attrs.validators.in_(("TCP", "UDP", "SCTP")))

    @classmethod
    def single(cls, number: int, protocol: str = "TCP") -> PortRange:
        """A range holding one port."""
        return cls(number, number, protocol)


@attrs.frozen(order=True)
class Operation:
    """What is being done: ports (L4) and, for HTTP, methods, paths and hosts (L7)."""

    ports: tuple[PortRange, ...] = attrs.field(default=(), converter=to_tuple)
    not_ports: tuple[PortRange, ...] = attrs.field(default=(), converter=to_tuple)
    methods: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    not_methods: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    paths: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    not_paths: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    hosts: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    not_hosts: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)

    @property
    def needs_l7(self) -> bool:
        """True when any HTTP attribute is constrained."""
        return bool(self.methods or self.not_methods or self.paths or self.not_paths or self.hosts or self.not_hosts)


@attrs.frozen(order=True)
class Condition:
    """An extra condition on a request attribute (e.g. ``request.headers[x-user]``)."""

    key: str
    values: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    not_values: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)


@attrs.frozen(order=True)
class PolicyRule:
    """Sources (OR), operations (OR) and conditions (AND); an empty list matches all."""

    sources: tuple[PeerSelector, ...] = attrs.field(default=(), converter=to_tuple)
    operations: tuple[Operation, ...] = attrs.field(default=(), converter=to_tuple)
    conditions: tuple[Condition, ...] = attrs.field(default=(), converter=to_tuple)

    @property
    def needs_l7(self) -> bool:
        """True when any part can only be checked by Envoy."""
        return bool(
            self.conditions
            or any(s.needs_l7 for s in self.sources)
            or any(o.needs_l7 for o in self.operations)
        )


@attrs.frozen(order=True)
class WorkloadSelector:
    """Workloads in ``namespace`` (all namespaces when ``None``) whose labels match."""

    namespace: str | None = None
    labels: Labels = attrs.field(factory=Labels, converter=to_labels)

    def selects(self, namespace: str, labels: Labels) -> bool:
        """True when a workload of ``namespace`` with ``labels`` is selected."""
        return (self.namespace is None or self.namespace == namespace) and labels.matches(self.labels)


@attrs.frozen(order=True)
class AuthorizationPolicy:
    """An ordered authorization policy for the selected workloads.

    ``rules == ()`` matches nothing: an ALLOW policy without rules allows nothing (Istio's
    ``spec: {}``), while a rule with no fields matches everything.
    """

    name: str = attrs.field(validator=attrs.validators.min_len(1))
    namespace: str = attrs.field(validator=dns_label)
    selector: WorkloadSelector
    action: PolicyAction = attrs.field(converter=PolicyAction)
    rules: tuple[PolicyRule, ...] = attrs.field(default=(), converter=to_tuple)
    direction: Direction = attrs.field(default=Direction.INGRESS, converter=Direction)
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)

    @property
    def needs_l7(self) -> bool:
        """True when any rule needs Envoy RBAC."""
        return any(r.needs_l7 for r in self.rules)

    def selects(self, namespace: str, labels: Labels) -> bool:
        """True when a workload of ``namespace`` with ``labels`` is selected."""
        return self.selector.selects(namespace, labels)


class PeerAuthMode(enum.StrEnum):
    """Mutual TLS requirement for inbound traffic."""

    STRICT = "STRICT"
    PERMISSIVE = "PERMISSIVE"
    DISABLE = "DISABLE"
    UNSET = "UNSET"


@attrs.frozen(order=True)
class PortMode:
    """A per-port override of the peer-authentication mode."""

    port: int = attrs.field(validator=port)
    mode: PeerAuthMode = attrs.field(converter=PeerAuthMode)


@attrs.frozen(order=True)
class PeerAuthentication:
    """Peer authentication for the selected workloads; per-port modes override ``mode``."""

    name: str
    namespace: str = attrs.field(validator=dns_label)
    selector: WorkloadSelector
    mode: PeerAuthMode = attrs.field(default=PeerAuthMode.UNSET, converter=PeerAuthMode)
    port_modes: tuple[PortMode, ...] = attrs.field(default=(), converter=to_tuple)
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)


