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

    @property
    def node_ipv4(self) -> str:
        """The node's own IPv4 address (the first host of the pod range)."""
        return str(self.pod4.network_address + 1)

    @property
    def node_ipv6(self) -> str:
        """The node's own IPv6 address (the first host of the pod range)."""
        return str(self.pod6.network_address + 1)

    def pod_addresses(self, index: int) -> tuple[str, str]:
        """The IPv4 and IPv6 address of pod number ``index`` (same offset in both ranges)."""
        return (str(self.pod4.network_address + index), str(self.pod6.network_address + index))

    @property
    def max_pod_index(self) -> int:
        """The highest usable pod index (the smaller range decides)."""
        return min(self.pod4.num_addresses - 2, self.pod6.num_addresses - 1)

    def to_data(self) -> dict[str, str]:
        """Plain data for the state file."""
        return {"pod_ipv4": self.pod_ipv4, "pod_ipv6": self.pod_ipv6,
                "service_ipv4": self.service_ipv4, "service_ipv6": self.service_ipv6}

    @classmethod
    def from_data(cls, data: Mapping[str, str]) -> LabRanges:
        """Read back what :meth:`to_data` wrote."""
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in attrs.fields(cls)}})


def next_pod_index(ranges: LabRanges, used: Collection[int]) -> int:
    """The lowest free pod index."""
    index = FIRST_POD_INDEX
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
