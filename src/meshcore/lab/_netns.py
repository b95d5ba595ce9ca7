"""The lab's network: node namespaces and one namespace per pod, joined by veth pairs.

Layout of a node and its pods (all netlink work through pyroute2)::

    pod netns                         node netns (no route to the outside)
    eth0  10.244.0.5/32  <── veth ──> mc<index>  route 10.244.0.5/32, static neighbour
          fd00:10:244::5/128                     route fd00:10:244::5/128, static neighbour
    routes: 169.254.1.1 dev eth0      lo: 10.244.0.1/32, fd00:10:244::1/128 (the node)
            <pod v4 range> via 169.254.1.1
            <pod v6 range> via fe80::1

A node of a lab with several nodes holds a subnet of the pod ranges (10.244.N.0/24,
fd00:10:244:0:N::/80), has its proxy's address on lo too (the subnet's second host),
and reaches the other nodes through the fabric (see ``_fabric``). Pods always route the
lab's whole pod ranges to their node.

The pod's gateway addresses are link-local and answered by static neighbour entries
that point at the node side of the veth, so no ARP or neighbour discovery is needed.
Pods route only the pod ranges: any other address, including a Service VIP the
datapath did not translate, fails at once with ENETUNREACH and no packet leaves.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as _pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError

from ._errors import LabError
from ._ipam import LabRanges, NodeRanges
from ..linux import NETNS_RUN, enter_netns

NETNS_DIR = NETNS_RUN
GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::1"

_RT_SCOPE_LINK = 253
NUD_PERMANENT = 0x80
_IFA_F_NODAD = 0x02

#: The node forwards between pods and answers unreachable destinations without delay.
NODE_SYSCTLS: Mapping[str, str] = {
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/forwarding": "1",
    "net/ipv4/icmp_ratelimit": "0",
    "net/ipv6/icmp/ratelimit": "0",
    "net/ipv6/conf/default/accept_dad": "0",
    "net/ipv6/conf/all/accept_dad": "0",
}
POD_SYSCTLS: Mapping[str, str] = {
    "net/ipv6/conf/default/accept_dad": "0",
    "net/ipv6/conf/all/accept_dad": "0",
    # Lets non-root processes in the pod use ping, as container runtimes allow.
    "net/ipv4/ping_group_range": "0 2147483647",
}


def path(name: str) -> Path:
    """The bind-mount file of the named network namespace."""
    return NETNS_DIR / name


def exists(name: str) -> bool:
    """True when the named network namespace exists."""
    return path(name).exists()


def create(name: str) -> None:
    """Create the named network namespace (as `ip netns add` does) unless it exists."""
    if exists(name):
        return
    try:
        _pyroute2_netns.create(name)
    except OSError as exc:
        raise LabError(f"cannot create network namespace {name}: {exc}") from exc


def remove(name: str) -> None:
    """Remove the named network namespace; it disappears once no process is left in it."""
    if not exists(name):
        return
    with contextlib.suppress(FileNotFoundError):
        _pyroute2_netns.remove(name)


def sysctls(name: str, values: Mapping[str, str]) -> None:
    """Write sysctls (paths under /proc/sys) inside the named namespace."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            enter_netns(str(path(name)))
            for key, value in values.items():
                with open(f"/proc/sys/{key}", "w") as f:
                    f.write(value)
            code = 0
        except BaseException as exc:
            os.write(write_end, str(exc).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        message = f.read().decode()
    _, status = os.waitpid(child, 0)
    if status != 0:
        raise LabError(f"cannot set sysctls in network namespace {name}: {message}")


@contextlib.contextmanager
def netlink(name: str) -> Iterator[Any]:
    """A pyroute2 handle in the named namespace; netlink errors become :class:`LabError`."""
    try:
        with IPRoute(netns=name, flags=0) as ipr:
            yield ipr
    except NetlinkError as exc:
        raise LabError(f"netlink error in network namespace {name}: {exc}") from exc


def index_of(ipr: Any, ifname: str) -> int:
    """The index of interface ``ifname`` (a :class:`LabError` when there is none)."""
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"interface {ifname} not found")
    return int(found[0])


def mac_of(ipr: Any, index: int) -> str:
    """The MAC address of interface ``index``."""
    return str(ipr.get_links(index)[0].get("IFLA_ADDRESS"))


def _add_addr(ipr: Any, index: int, address: str, prefixlen: int) -> None:
    try:
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen, flags=_IFA_F_NODAD)
    except NetlinkError as exc:
        if exc.code != 17:  # EEXIST: already there from an earlier run
            raise


def _replace_route(ipr: Any, **kwargs: Any) -> None:
    ipr.route("replace", **kwargs)


def _replace_neigh(ipr: Any, **kwargs: Any) -> None:
    ipr.neigh("replace", state=NUD_PERMANENT, **kwargs)


def setup_node(name: str, ranges: NodeRanges) -> None:
    """Bring up a node namespace: loopback with the node's (and its proxy's) addresses, forwarding on."""
    create(name)
    sysctls(name, NODE_SYSCTLS)
    with netlink(name) as ipr:
        lo = index_of(ipr, "lo")
        ipr.link("set", index=lo, state="up")
        for address in (*ranges.node_addresses, *ranges.proxy_addresses):
            _add_addr(ipr, lo, address, 32 if ":" not in address else 128)


class NodeNetwork:
    """An open netlink handle in a node's namespace for adding and removing its pods.

    ``ranges`` are the lab's (pods route all of them to their node), ``node`` the node's own.
    """

    def __init__(self, netns: str, ranges: LabRanges, node: NodeRanges) -> None:
        self.node = netns
        self.ranges = ranges
        self.node_ranges = node
        self._stack = contextlib.ExitStack()
        self._ipr: Any = None

    def __enter__(self) -> NodeNetwork:
        self._ipr = self._stack.enter_context(netlink(self.node))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.close()

    def remove_link(self, host_veth: str) -> None:
        """Delete the node side of a pod's veth pair if it exists (the pod side goes with it)."""
        found = self._ipr.link_lookup(ifname=host_veth)
        if found:
            with contextlib.suppress(NetlinkError):
                self._ipr.link("del", index=found[0])

    def add_pod(self, pod_netns: str, host_veth: str, ipv4: str, ipv6: str) -> None:
        """Create the pod namespace's veth, addresses, routes and neighbours."""
        ranges = self.ranges
        ipr = self._ipr
        self.remove_link(host_veth)
        try:
            ipr.link("add", ifname=host_veth, kind="veth",
                     peer={"ifname": "eth0", "net_ns_fd": str(path(pod_netns))})
        except NetlinkError as exc:
            raise LabError(f"cannot create veth {host_veth} for {pod_netns}: {exc}") from exc
        host = index_of(ipr, host_veth)
        host_mac = mac_of(ipr, host)
        with netlink(pod_netns) as pod:
            lo = index_of(pod, "lo")
            pod.link("set", index=lo, state="up")
            eth0 = index_of(pod, "eth0")
            pod_mac = mac_of(pod, eth0)
            _add_addr(pod, eth0, ipv4, 32)
            _add_addr(pod, eth0, ipv6, 128)
            pod.link("set", index=eth0, state="up")
            _replace_route(pod, dst=f"{GATEWAY4}/32", oif=eth0, scope=_RT_SCOPE_LINK)
            _replace_neigh(pod, dst=GATEWAY4, lladdr=host_mac, ifindex=eth0)
            _replace_neigh(pod, dst=GATEWAY6, lladdr=host_mac, ifindex=eth0, family=socket.AF_INET6)
            _replace_route(pod, dst=str(ranges.pod4), gateway=GATEWAY4, oif=eth0, prefsrc=ipv4)
            _replace_route(pod, dst=str(ranges.pod6), gateway=GATEWAY6, oif=eth0, prefsrc=ipv6,
                           family=socket.AF_INET6)
        ipr.link("set", index=host, state="up")
        own = self.node_ranges
        _replace_route(ipr, dst=f"{ipv4}/32", oif=host, scope=_RT_SCOPE_LINK, prefsrc=own.node_ipv4)
        _replace_route(ipr, dst=f"{ipv6}/128", oif=host, prefsrc=own.node_ipv6, family=socket.AF_INET6)
        _replace_neigh(ipr, dst=ipv4, lladdr=pod_mac, ifindex=host)
        _replace_neigh(ipr, dst=ipv6, lladdr=pod_mac, ifindex=host, family=socket.AF_INET6)


def setup_pod_namespace(name: str) -> None:
    """Create a pod's namespace with the lab's pod sysctls."""
    create(name)
    sysctls(name, POD_SYSCTLS)
