"""ClusterIPs as the API server assigns them: given ones kept, the rest allocated from the service ranges.

Manifests read from a repository have no ClusterIPs; assigning them here lets an offline
plan show the frontends a cluster would have.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._objects import KubeObject

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: ClusterIPs are handed out from this offset up (lower ones stay free for users).
FIRST_SERVICE_OFFSET = 10


class ServiceRangeFull(ValueError):
    """A service range has no free address left."""


def parse_network(value: str, family: int, what: str) -> IPNetwork:
    """``value`` as an IPv``family`` network of at least 16 addresses; ``ValueError`` names ``what``."""
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{what}: {value!r} is not a network in CIDR form ({exc})") from None
    if net.version != family:
        raise ValueError(f"{what}: {value} is not an IPv{family} network")
    if net.num_addresses < 16:
        raise ValueError(f"{what}: {value} is too small (at least 16 addresses)")
    return net


@attrs.frozen
class ServiceRanges:
    """The IPv4 and IPv6 networks ClusterIPs are allocated from (by default the lab's)."""

    ipv4: str = "10.96.0.0/16"
    ipv6: str = "fd00:10:96::/112"

    def __attrs_post_init__(self) -> None:
        self.network(4)
        self.network(6)

    def network(self, family: int) -> IPNetwork:
        """The network of one address family (4 or 6)."""
        return parse_network(self.ipv4 if family == 4 else self.ipv6, family, f"service IPv{family} range")


class ServiceIpAllocator:
    """Hands out the lowest free addresses of a service network, in order, skipping taken ones.

    With ``from_top`` it hands out the highest free ones instead, downwards: Gateway
    addresses come from there, as from a LoadBalancer pool, so they never compete with
    ClusterIPs allocated upwards.
    """

    def __init__(self, network: IPNetwork, taken: Iterable[str], *, from_top: bool = False) -> None:
        self.network = network
        self.taken = {ipaddress.ip_address(a) for a in taken}
        self.from_top = from_top
        self.offset = FIRST_SERVICE_OFFSET

    def allocate(self) -> str:
        """The next free address (raises :class:`ServiceRangeFull` when the network is full)."""
        last = self.network.num_addresses - 1  # the broadcast address (IPv4) is never handed out
        while self.offset < last:
            index = last - 1 - (self.offset - FIRST_SERVICE_OFFSET) if self.from_top else self.offset
            candidate = self.network.network_address + index
            self.offset += 1
            if candidate not in self.taken:
                self.taken.add(candidate)
                return str(candidate)
        raise ServiceRangeFull(f"the service range {self.network} is full")


def _is_service(obj: KubeObject) -> bool:
    return obj.api_version == "v1" and obj.kind == "Service"


def given_cluster_ips(obj: KubeObject) -> list[str] | None:
    """The ClusterIPs a Service gives; ``None`` for headless and ExternalName services, which get none."""
    spec = obj.spec
    if spec.get("type") == "ExternalName":
        return None
    many = [str(v) for v in spec.get("clusterIPs") or []] if isinstance(spec.get("clusterIPs"), list) else []
    single = str(spec.get("clusterIP") or "")
    values = many or ([single] if single else [])
    if values[:1] == ["None"]:
        return None
    return values


def _families(spec: Mapping[str, Any], given: Sequence[str]) -> list[int]:
    """The address families a Service gets, in order, from ``ipFamilies`` / ``ipFamilyPolicy`` (IPv4 alone by default)."""
    names = spec.get("ipFamilies") if isinstance(spec.get("ipFamilies"), list) else []
    families = [6 if str(n) == "IPv6" else 4 for n in names or () if str(n) in ("IPv4", "IPv6")]
    if not families:
        families = [ipaddress.ip_address(a).version for a in given] or [4]
    policy = spec.get("ipFamilyPolicy") or ("RequireDualStack" if len(set(families)) > 1 else "SingleStack")
    if policy in ("PreferDualStack", "RequireDualStack"):
        return families[:1] + [6 if families[0] == 4 else 4]
    return families[:1]


def _valid_addresses(values: Sequence[str]) -> bool:
    try:
        for value in values:
            ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def assign_cluster_ips(services: Sequence[KubeObject], ranges: ServiceRanges = ServiceRanges(),
                       previous: Mapping[str, Sequence[str]] | None = None) -> dict[str, tuple[str, ...]]:
    """ClusterIPs per ``namespace/name``, as the API server assigns them.

    Given ClusterIPs are kept; a family the Service asks for (``ipFamilies``,
    ``ipFamilyPolicy``) but does not give reuses its address in ``previous`` when that
    is still free, else gets the next free one of ``ranges``. Headless and ExternalName
    services get none; a Service whose given ClusterIPs are not addresses is left out
    (translating it reports them). Raises :class:`ServiceRangeFull`.
    """
    given: dict[str, list[str]] = {}
    for obj in services:
        key = f"{obj.namespace}/{obj.name}"
        values = given_cluster_ips(obj) if _is_service(obj) else None
        if values is not None and key not in given and _valid_addresses(values):
            given[key] = values
    taken = {address for values in given.values() for address in values}
    chosen: dict[str, dict[int, str]] = {}
    order: dict[str, list[int]] = {}
    pending: list[tuple[str, int]] = []
    for obj in services:
        key = f"{obj.namespace}/{obj.name}"
        if key not in given or key in chosen:
            continue
        chosen[key] = {ipaddress.ip_address(a).version: a for a in given[key]}
        order[key] = _families(obj.spec, given[key])
        for family in order[key]:
            if family in chosen[key]:
                continue
            reuse = next((a for a in (previous or {}).get(key, ())
                          if ipaddress.ip_address(a).version == family and a not in taken), None)
            if reuse is None:
                pending.append((key, family))
            else:
                chosen[key][family] = reuse
                taken.add(reuse)
    allocators = {family: ServiceIpAllocator(ranges.network(family), taken) for family in (4, 6)}
    for key, family in pending:
        chosen[key][family] = allocators[family].allocate()
    return {
        key: tuple([by_family[f] for f in order[key] if f in by_family]
                   + [a for f, a in by_family.items() if f not in order[key]])
        for key, by_family in chosen.items()
    }


def with_cluster_ips(obj: KubeObject, cluster_ips: Sequence[str]) -> KubeObject:
    """The Service with ``spec.clusterIP(s)`` and ``ipFamilies`` set to ``cluster_ips``, read from the same place.

    ``ipFamilyPolicy`` is defaulted when unset, as the API server does; a given one is kept.
    """
    if not cluster_ips:
        return obj
    body = copy.deepcopy(dict(obj.body))
    spec = body.get("spec")
    if not isinstance(spec, dict):
        spec = body["spec"] = {}
    spec["clusterIP"] = cluster_ips[0]
    spec["clusterIPs"] = list(cluster_ips)
    spec["ipFamilies"] = [f"IPv{ipaddress.ip_address(a).version}" for a in cluster_ips]
    spec.setdefault("ipFamilyPolicy", "RequireDualStack" if len(cluster_ips) > 1 else "SingleStack")
    return attrs.evolve(obj, body=body)


def assign_addresses(objects: Sequence[KubeObject], ranges: ServiceRanges = ServiceRanges()) -> list[KubeObject]:
    """``objects`` with every Service given the ClusterIPs the API server would assign (see :func:`assign_cluster_ips`)."""
    assigned = assign_cluster_ips([o for o in objects if _is_service(o)], ranges)
    return [with_cluster_ips(o, assigned.get(f"{o.namespace}/{o.name}", ())) if _is_service(o) else o
            for o in objects]
