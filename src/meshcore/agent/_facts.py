"""What the agent knows about its node before any configuration arrives."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

__all__ = ["NodeFacts"]


def _labels(value: Mapping[str, str]) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()}


def _path_or_none(value: str | Path | None) -> Path | None:
    return None if value is None or value == "" else Path(value)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class NodeFacts:
    """One node as its agent sees it: name, addresses, where to attach, pin and write.

    - ``cgroup``: the cgroup v2 directory whose processes get socket-level load balancing
      (relative paths are taken under the cgroup2 mount).
    - ``pin_root``: where pins live (``<pin_root>/<name>/``); None means ``<bpffs>/meshcore``.
    - ``state_dir``: where the agent writes its report, the node proxy's files and flows.
    - ``ipv4`` / ``ipv6``: the node's addresses; the node proxy listens there and policy
      treats them as the host.
    - ``labels``: the node's labels (raw Envoy configs' node selectors match them) when
      the input has no ``Node`` object of this name.
    - ``netns``: the network namespace holding the workloads' host-side interfaces
      (None: the agent's own).
    - ``proxy_ipv4`` / ``proxy_ipv6``: addresses of the node's own that its proxy connects
      to endpoints from, so that policy on every node tells the proxy apart from the node
      (empty: the proxy connects from whatever address its route chooses, the node's).
    - ``dns_resolvers``: name servers (``address`` or ``address:port``) the node proxy asks
      for the addresses of DNS-resolved services (empty: the system's).
    """

    name: str
    cgroup: Path = attrs.field(converter=Path)
    state_dir: Path = attrs.field(converter=Path)
    ipv4: str = ""
    ipv6: str = ""
    pin_root: Path | None = attrs.field(default=None, converter=_path_or_none)
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_labels)
    netns: str | None = None
    proxy_ipv4: str = ""
    proxy_ipv6: str = ""
    dns_resolvers: tuple[str, ...] = attrs.field(default=(), converter=_strings)

    @property
    def addresses(self) -> tuple[str, ...]:
        """The node's addresses that are set, IPv4 first."""
        return tuple(a for a in (self.ipv4, self.ipv6) if a)

    @property
    def proxy_addresses(self) -> tuple[str, ...]:
        """The node proxy's source addresses that are set, IPv4 first."""
        return tuple(a for a in (self.proxy_ipv4, self.proxy_ipv6) if a)
