"""Services: named, addressable sets of backends with ports and a load-balancing policy."""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from ._errors import ModelError
from ._source import UNKNOWN, Source
from ._validate import _HOSTNAME, dns_label, hostname, ip_address, ip_addresses, non_negative, port, to_tuple
from .workload import Protocol, WorkloadRef


class LbPolicy(enum.StrEnum):
    """How a backend is chosen for a new connection or request."""

    RANDOM = "RANDOM"
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    CONSISTENT_HASH = "CONSISTENT_HASH"


class VipAssignment(enum.StrEnum):
    """Whether a service's virtual IPs are known, still to come, or never exist."""

    #: ``vips`` are the service's addresses (none means it has none, e.g. an ExternalName Service).
    GIVEN = "given"
    #: No addresses yet: the cluster assigns them when the object is created (a Service read from a file).
    PENDING = "pending"
    #: No addresses by design (``clusterIP: None``): clients dial the backends directly.
    HEADLESS = "headless"


class BackendState(enum.StrEnum):
    """Lifecycle of a backend: terminating backends take no new connections."""

    ACTIVE = "active"
    TERMINATING = "terminating"


@attrs.frozen(order=True)
class ServiceRef:
    """A reference to a service by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@attrs.frozen(order=True)
class Backend:
    """One endpoint of a service port: an address and port, with a weight and state."""

    address: str = attrs.field(validator=ip_address)
    port: int = attrs.field(validator=port)
    weight: int = attrs.field(default=1, validator=non_negative)
    workload: WorkloadRef | None = None
    state: BackendState = attrs.field(default=BackendState.ACTIVE, converter=BackendState)

    @property
    def family(self) -> int:
        """4 or 6."""
        return 6 if ":" in self.address else 4  # addresses are validated canonical text


class Resolution(enum.StrEnum):
    """How a service's backends are found."""

    #: ``backends`` are addresses, known ahead (endpoints, workloads).
    STATIC = "static"
    #: ``hostname_backends`` are names; the proxy resolves them and uses every address (Envoy STRICT_DNS).
    DNS = "dns"
    #: As DNS, but each connection goes to one address of the answer at a time (Envoy LOGICAL_DNS).
    DNS_ROUND_ROBIN = "dns-round-robin"


def _dns_name_or_address(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        ip_address(None, attribute, value)
    except ModelError:
        if not isinstance(value, str) or "*" in value or not _HOSTNAME.match(value.removesuffix(".")):
            raise ModelError(attribute.name, f"{value!r} is not a DNS name or an IP address") from None


@attrs.frozen(order=True)
class HostnameBackend:
    """One endpoint of a DNS-resolved service port: a name (or an IP address) the proxy resolves, and a port."""

    hostname: str = attrs.field(validator=_dns_name_or_address)
    port: int = attrs.field(validator=port)
    weight: int = attrs.field(default=1, validator=non_negative)


def _backend_key(b: Backend) -> tuple[str, int, int, str, str, str]:
    ref = b.workload
    return (b.address, b.port, b.weight, ref.namespace if ref else "", ref.name if ref else "", b.state.value)


def _sorted_backends(value: Iterable[Backend]) -> tuple[Backend, ...]:
    # A key function rather than attrs' generated ordering: it is ~10x faster, and
    # services with many endpoints are sorted on every translation.
    return tuple(sorted(value, key=_backend_key))


@attrs.frozen(order=True)
class ServicePort:
    """A port of a service with its protocol and backends (already resolved to endpoints)."""

    port: int = attrs.field(validator=port)
    protocol: Protocol = attrs.field(default=Protocol.TCP, converter=Protocol)
    name: str = ""
    backends: tuple[Backend, ...] = attrs.field(default=(), converter=_sorted_backends)
    #: The endpoints of a DNS-resolved service (see :class:`Resolution`), in the order given.
    hostname_backends: tuple[HostnameBackend, ...] = attrs.field(default=(), converter=to_tuple)

    @property
    def key(self) -> str:
        """``name`` if set, else the port number as text."""
        return self.name or str(self.port)


def _by_port(value: Iterable[ServicePort]) -> tuple[ServicePort, ...]:
    return tuple(sorted(value, key=lambda p: (p.port, p.protocol)))


def _no_vips_unless_given(service: Service, attribute: attrs.Attribute[VipAssignment], value: VipAssignment) -> None:
    if value is not VipAssignment.GIVEN and service.vips:
        raise ModelError(attribute.name, f"a {value.value} service has no virtual IPs, but vips are {', '.join(service.vips)}")


def _unique_ports(_: object, attribute: attrs.Attribute[tuple[ServicePort, ...]], value: tuple[ServicePort, ...]) -> None:
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(value):
        key = (p.port, p.protocol.transport)
        if key in seen:
            raise ModelError(
                f"{attribute.name}[{i}]", f"duplicate port {p.port}/{p.protocol.transport}"
            )
        seen.add(key)


@attrs.frozen(order=True)
class Service:
    """A service: hostnames, virtual IPs (v4/v6), ports with backends, LB policy.

    ``vip_assignment`` tells a service without ``vips`` that will get them (``PENDING``)
    from one that never has any (``HEADLESS``, or ``GIVEN`` with none).
    """

    name: str = attrs.field(validator=dns_label)
    namespace: str = attrs.field(validator=dns_label)
    vips: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, validator=ip_addresses)
    ports: tuple[ServicePort, ...] = attrs.field(
        default=(), converter=_by_port,
        validator=_unique_ports,
    )
    hostnames: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, validator=hostname)
    lb_policy: LbPolicy = attrs.field(default=LbPolicy.RANDOM, converter=LbPolicy)
    vip_assignment: VipAssignment = attrs.field(
        default=VipAssignment.GIVEN, converter=VipAssignment, validator=_no_vips_unless_given)
    #: How backends are found; None is :attr:`Resolution.STATIC` (left out of the plain-data form).
    resolution: Resolution | None = attrs.field(
        default=None, converter=attrs.converters.optional(Resolution),
        order=lambda r: (r or Resolution.STATIC).value)
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)

    @property
    def resolved_by_dns(self) -> bool:
        """True when the proxy finds the backends by resolving ``hostname_backends``."""
        return self.resolution not in (None, Resolution.STATIC)

    def __attrs_post_init__(self) -> None:
        for i, p in enumerate(self.ports):
            if not self.resolved_by_dns and p.hostname_backends:
                raise ModelError(f"ports[{i}].hostname_backends", "only a service with DNS resolution has "
                                 "hostname backends")
            if self.resolution is not None and self.resolved_by_dns and p.backends:
                raise ModelError(f"ports[{i}].backends", f"a service with {self.resolution.value} resolution "
                                 "has hostname backends only")

    @property
    def ref(self) -> ServiceRef:
        """This service's reference."""
        return ServiceRef(self.namespace, self.name)

    def port(self, number: int, transport: str = "TCP") -> ServicePort | None:
        """The service port with this number and transport, if any."""
        return next(
            (p for p in self.ports if p.port == number and p.protocol.transport == transport),
            None,
        )
