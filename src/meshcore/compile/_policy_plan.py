"""The L3/L4 policy plan: numeric identities, the ipcache and flattened policy entries.

These types are the contract between compile and ``meshcore.datapath``'s policy enforcer.
Ports are carried as aligned power-of-two blocks (``port``/``port_bits``) because the
kernel looks them up in an LPM trie: a range becomes a handful of prefixes.
"""

from __future__ import annotations

import enum
import ipaddress
import operator
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ..model import Direction, Labels, Source, WorkloadRef

__all__ = [
    "ANY_IDENTITY", "ANY_PROTOCOL", "CIDR_IDENTITY_BASE", "PolicyEndpoint", "PolicyEntry",
    "PolicyIdentity", "PolicyOrigin", "PolicyPlan", "PolicyVerdict", "IpcacheEntry", "L7Handoff",
]

#: Remote identity wildcard in policy entries.
ANY_IDENTITY = 0
#: Protocol wildcard in policy entries (every IP protocol, ports ignored).
ANY_PROTOCOL = 0
#: Identities derived from CIDRs (ipBlocks) live at and above this value.
CIDR_IDENTITY_BASE = 1 << 24


class PolicyVerdict(enum.StrEnum):
    """What a policy entry does to a new flow it matches."""

    ALLOW = "ALLOW"
    DENY = "DENY"


@attrs.frozen(order=True)
class PolicyIdentity:
    """A numeric identity: a workload identity (namespace, service account, labels) or a CIDR."""

    numeric_id: int
    key: str
    namespace: str = ""
    service_account: str = ""
    labels: Labels = attrs.field(factory=Labels, eq=False, order=False)
    cidr: str = ""

    @property
    def is_cidr(self) -> bool:
        """True for identities derived from an ipBlock CIDR."""
        return bool(self.cidr)


@attrs.frozen(order=True)
class IpcacheEntry:
    """An address prefix and the identity of traffic from or to it (longest prefix wins)."""

    prefix: str
    identity: int

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The prefix as a network."""
        return ipaddress.ip_network(self.prefix)


@attrs.frozen(order=True)
class PolicyPeer:
    """A workload of another node: which pod an address is, to name it in flows (no map entry of its own)."""

    address: str
    workload: WorkloadRef


@attrs.frozen(order=True)
class PolicyEndpoint:
    """A local workload the enforcer attaches to: its identity, addresses and defaults.

    ``*_default_deny`` is set when an ALLOW policy selects the workload in that direction:
    then what no entry allows is dropped; otherwise unmatched traffic passes.
    ``*_allow_policies`` name those ALLOW policies (``namespace/name``), for the flows
    their default deny drops.
    """

    workload: WorkloadRef
    identity: int
    addresses: tuple[str, ...] = ()
    ingress_default_deny: bool = False
    egress_default_deny: bool = False
    ingress_allow_policies: tuple[str, ...] = ()
    egress_allow_policies: tuple[str, ...] = ()


@attrs.frozen(order=True)
class PolicyEntry:
    """One kernel policy entry: (endpoint identity, direction, protocol, remote, port block).

    ``remote == ANY_IDENTITY`` matches any peer; ``protocol == ANY_PROTOCOL`` any protocol
    (and any port); ``port_bits`` is how many leading bits of the 16-bit port are fixed
    (16: exactly ``port``; 0: every port). The verdict already includes every DENY whose
    port block contains this one, so the longest match alone decides per lookup.
    """

    endpoint: int
    direction: Direction
    protocol: int
    remote: int
    port: int
    port_bits: int
    verdict: PolicyVerdict
    policy_index: int

    @property
    def key(self) -> tuple[int, str, int, int, int, int]:
        """The map key this entry occupies."""
        return (self.endpoint, str(self.direction), self.protocol, self.remote, self.port, self.port_bits)

    @property
    def port_range(self) -> tuple[int, int]:
        """The inclusive port range the block covers."""
        span = 1 << (16 - self.port_bits)
        return (self.port, self.port + span - 1)


@attrs.frozen(order=True)
class PolicyOrigin:
    """Where a policy index comes from: the model policy, its rule and its source."""

    index: int
    policy: str
    action: str
    direction: Direction
    rule: int
    source: Source = attrs.field(default=Source(), eq=False, order=False)

    def __str__(self) -> str:
        where = f" ({self.source})" if self.source.location or self.source.object_ref else ""
        return f"{self.action} {self.policy} rule {self.rule} [{self.direction}]{where}"


@attrs.frozen(order=True)
class L7Handoff:
    """A policy (or rule) whose L7 parts are left to Envoy RBAC, and what L4 did with it."""

    policy: str
    rule: int
    reason: str


_ORDER_KEYS: dict[type, Callable[[Any], Any]] = {}


def _sorted(value: Iterable[Any]) -> tuple[Any, ...]:
    """The items in attrs' order, compared by a key computed once per item (not per comparison)."""
    items = list(value)
    if not items:
        return ()
    cls = type(items[0])
    key = _ORDER_KEYS.get(cls)
    if key is None:
        key = _ORDER_KEYS[cls] = operator.attrgetter(*(f.name for f in attrs.fields(cls) if f.order))
    return tuple(sorted(items, key=key))


@attrs.frozen
class PolicyPlan:
    """Everything the L3/L4 policy datapath enforces on one node, sorted."""

    identities: tuple[PolicyIdentity, ...] = attrs.field(default=(), converter=_sorted)
    ipcache: tuple[IpcacheEntry, ...] = attrs.field(default=(), converter=_sorted)
    endpoints: tuple[PolicyEndpoint, ...] = attrs.field(default=(), converter=_sorted)
    entries: tuple[PolicyEntry, ...] = attrs.field(default=(), converter=_sorted)
    origins: tuple[PolicyOrigin, ...] = attrs.field(default=(), converter=_sorted)
    l7: tuple[L7Handoff, ...] = attrs.field(default=(), converter=_sorted)
    #: Other nodes' workloads by address (their identities are in the ipcache).
    peers: tuple[PolicyPeer, ...] = attrs.field(default=(), converter=_sorted)

    def origin(self, index: int) -> PolicyOrigin | None:
        """The origin of a policy index, if any."""
        for o in self.origins:
            if o.index == index:
                return o
        return None

    def endpoint(self, ref: WorkloadRef) -> PolicyEndpoint | None:
        """The endpoint of a local workload, if present."""
        return next((e for e in self.endpoints if e.workload == ref), None)
