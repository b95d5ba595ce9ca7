"""Nodes: the machines workloads run on, with the addresses traffic from them carries."""

from __future__ import annotations

import attrs

from ._labels import Labels, to_labels
from ._source import UNKNOWN, Source
from ._validate import dns_subdomain, ip_addresses, to_tuple


@attrs.frozen(order=True)
class Node:
    """A node: its name, labels, own addresses and the addresses its node proxy connects from.

    Policy tells a node's traffic apart from a pod's and from the world by these: the
    node's ``addresses`` are the host on that node and a remote node everywhere else;
    ``proxy_addresses`` are that node's proxy (Envoy) on every node.
    """

    name: str = attrs.field(validator=dns_subdomain)
    addresses: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, validator=ip_addresses)
    proxy_addresses: tuple[str, ...] = attrs.field(default=(), converter=to_tuple, validator=ip_addresses)
    labels: Labels = attrs.field(factory=Labels, converter=to_labels)
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)
