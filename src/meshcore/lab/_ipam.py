"""Address management: pod addresses and Service ClusterIPs from the lab's ranges."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping

import attrs

from ..kube import IPNetwork, ServiceRangeFull, ServiceRanges, parse_network
from ..kube import ServiceIpAllocator as _Allocator
from ._errors import LabError

#: Pod addresses start here: offset 1 is the node's own address.
FIRST_POD_INDEX = 2


def _network(value: str, family: int, field: str) -> IPNetwork:
    try:
        return parse_network(value, family, field)
    except ValueError as exc:
        raise LabError(str(exc)) from None


@attrs.frozen
class LabRanges:
    """The address ranges of a lab: pods and ClusterIPs, IPv4 and IPv6."""

    pod_ipv4: str = "10.244.0.0/16"
    pod_ipv6: str = "fd00:10:244::/64"
    service_ipv4: str = "10.96.0.0/16"
    service_ipv6: str = "fd00:10:96::/112"

    def __attrs_post_init__(self) -> None:
        nets: list[IPNetwork] = [self.pod4, self.pod6, self.service4, self.service6]
        for i, a in enumerate(nets):
            for b in nets[i + 1:]:
                if a.version == b.version and a.overlaps(b):
                    raise LabError(f"the lab ranges {a} and {b} overlap")

    @property
    def pod4(self) -> ipaddress.IPv4Network:
        """The IPv4 pod network."""
        net = _network(self.pod_ipv4, 4, "pod IPv4 range")
        assert isinstance(net, ipaddress.IPv4Network)
        return net

    @property
    def pod6(self) -> ipaddress.IPv6Network:
        """The IPv6 pod network."""
        net = _network(self.pod_ipv6, 6, "pod IPv6 range")
        assert isinstance(net, ipaddress.IPv6Network)
        return net

    @property
    def service4(self) -> IPNetwork:
        """The IPv4 ClusterIP network."""
        return _network(self.service_ipv4, 4, "service IPv4 range")

    @property
    def service6(self) -> IPNetwork:
        """The IPv6 ClusterIP network."""
        return _network(self.service_ipv6, 6, "service IPv6 range")

    @property
    def services(self) -> ServiceRanges:
        """The ClusterIP ranges, as the Kubernetes helpers allocate from them."""
        return ServiceRanges(self.service_ipv4, self.service_ipv6)

    def to_data(self) -> dict[str, str]:
        """Plain data for the state file."""
        return {"pod_ipv4": self.pod_ipv4, "pod_ipv6": self.pod_ipv6,
                "service_ipv4": self.service_ipv4, "service_ipv6": self.service_ipv6}

    @classmethod
    def from_data(cls, data: Mapping[str, str]) -> LabRanges:
        """Read back what :meth:`to_data` wrote."""
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in attrs.fields(cls)}})


#: Bits of the lab's pod ranges that number the nodes of a lab with several nodes.
NODE_BITS_IPV4 = 8
NODE_BITS_IPV6 = 16
#: The most nodes a lab may have (node N holds subnet N of the pod ranges; subnet 0 is unused).
MAX_NODES = (1 << NODE_BITS_IPV4) - 1


@attrs.frozen
class NodeRanges:
    """One node's pod ranges: its own address first, its proxy's next (when it has one), then pods.

    A lab of one node (the default) gives it the whole pod ranges and no proxy address;
    each node of a lab of several gets a subnet and a proxy address of its own.
    """

    pod_ipv4: str
    pod_ipv6: str
    has_proxy_address: bool = False

    @property
    def pod4(self) -> ipaddress.IPv4Network:
        """The node's IPv4 pod network."""
        net = _network(self.pod_ipv4, 4, "node IPv4 range")
        assert isinstance(net, ipaddress.IPv4Network)
        return net

    @property
    def pod6(self) -> ipaddress.IPv6Network:
        """The node's IPv6 pod network."""
        net = _network(self.pod_ipv6, 6, "node IPv6 range")
        assert isinstance(net, ipaddress.IPv6Network)
        return net

    @property
    def node_ipv4(self) -> str:
        """The node's own IPv4 address (the first host of its range)."""
        return str(self.pod4.network_address + 1)

    @property
    def node_ipv6(self) -> str:
        """The node's own IPv6 address (the first host of its range)."""
        return str(self.pod6.network_address + 1)

    @property
    def node_addresses(self) -> tuple[str, str]:
        """IPv4 then IPv6 address of the node."""
        return (self.node_ipv4, self.node_ipv6)

    @property
    def proxy_addresses(self) -> tuple[str, ...]:
        """The addresses the node proxy connects from (the second host), none for a lone node."""
        if not self.has_proxy_address:
            return ()
        return (str(self.pod4.network_address + 2), str(self.pod6.network_address + 2))

    @property
    def first_pod_index(self) -> int:
        """The offset of the first pod address."""
        return FIRST_POD_INDEX + (1 if self.has_proxy_address else 0)

    def pod_addresses(self, index: int) -> tuple[str, str]:
        """The IPv4 and IPv6 address of pod number ``index`` (same offset in both ranges)."""
        return (str(self.pod4.network_address + index), str(self.pod6.network_address + index))

    @property
    def max_pod_index(self) -> int:
        """The highest usable pod index (the smaller range decides)."""
        return min(self.pod4.num_addresses - 2, self.pod6.num_addresses - 1)


def lone_node_ranges(ranges: LabRanges) -> NodeRanges:
    """The ranges of a lab's only node: all of the lab's pod ranges."""
    return NodeRanges(ranges.pod_ipv4, ranges.pod_ipv6)


def node_ranges(ranges: LabRanges, number: int) -> NodeRanges:
    """The ranges of node ``number`` (from 1) of a lab with several nodes: subnet ``number``."""
    pod4, pod6 = ranges.pod4, ranges.pod6
    prefix4, prefix6 = pod4.prefixlen + NODE_BITS_IPV4, pod6.prefixlen + NODE_BITS_IPV6
    if prefix4 > 28 or prefix6 > 120:
        raise LabError(f"the pod ranges {pod4} / {pod6} are too small for several nodes: each node takes "
                       f"a /{prefix4} / /{prefix6}; give an IPv4 range of /20 or larger and an IPv6 range "
                       "of /104 or larger")
    if not 1 <= number <= MAX_NODES:
        raise LabError(f"a lab has 1 to {MAX_NODES} nodes, not {number}")
    net4 = ipaddress.IPv4Network((int(pod4.network_address) + (number << (32 - prefix4)), prefix4))
    net6 = ipaddress.IPv6Network((int(pod6.network_address) + (number << (128 - prefix6)), prefix6))
    return NodeRanges(str(net4), str(net6), has_proxy_address=True)


def next_pod_index(ranges: NodeRanges, used: Collection[int]) -> int:
    """The lowest free pod index of a node."""
    index = ranges.first_pod_index
    while index in used:
        index += 1
    if index > ranges.max_pod_index:
        raise LabError(f"the pod ranges {ranges.pod_ipv4} / {ranges.pod_ipv6} are full")
    return index


class ServiceIpAllocator(_Allocator):
    """The Kubernetes helpers' allocator, raising :class:`LabError` when the network is full."""

    def allocate(self) -> str:
        """The next free address."""
        try:
            return super().allocate()
        except ServiceRangeFull as exc:
            raise LabError(str(exc)) from None
