"""The underlay of a lab with several nodes: a bridge in a namespace of its own, native routing.

Layout::

    fabric netns mc-<lab>-fabric       bridge mc-fabric, ports node-1 ... node-N
    node netns mc-<lab>-node-N         fabric0 <── veth ──> node-N (on the bridge)
        route 10.244.M.0/24 via 10.244.M.1 dev fabric0 onlink src 10.244.N.1   (each other node M)
        route fd00:10:244:0:M::/80 via fd00:10:244:0:M::1 dev fabric0 onlink src fd00:10:244:0:N::1
        static neighbours: node M's addresses → node M's fabric0 MAC
        unreachable 10.244.N.0/24, fd00:10:244:0:N::/80 (addresses of the node no pod holds)

The nodes carry no addresses of the fabric's: each reaches another node's pod subnet
through that node's own address, answered by a static neighbour entry, so no ARP or
neighbour discovery is needed and packets keep their pods' addresses end to end. A node
that is down has its fabric port down and is an ``unreachable`` route on every other
node, and in every pod of the other nodes: connections to its pods fail at once with "no
route to host" instead of timing out. (The node's ICMP error alone is not enough: it comes
back while the connecting socket is still locked by ``connect()``, and Linux drops it for
IPv6 TCP, which then waits a second to send its SYN again.) Nothing routes out of the lab.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Mapping, Sequence

from pyroute2.netlink.exceptions import NetlinkError

from . import _netns as netns
from ._errors import LabError
from ._state import FabricRecord, NodeRecord, PodRecord

#: The bridge joining the nodes, in the fabric's namespace.
BRIDGE = "mc-fabric"
#: Each node's interface on the fabric, in its namespace.
NODE_LINK = "fabric0"

_RTNH_F_ONLINK = 4
_RTN_UNREACHABLE = 7
_ENOENT = 2
_ESRCH = 3

#: Packets between nodes arrive on the fabric whatever their source: no reverse-path check.
FABRIC_NODE_SYSCTLS: Mapping[str, str] = {
    "net/ipv4/conf/all/rp_filter": "0",
    "net/ipv4/conf/default/rp_filter": "0",
}


def fabric_netns_name(lab: str) -> str:
    """``mc-<lab>-fabric``."""
    return f"mc-{lab}-fabric"


def node_netns_name(lab: str, node: str) -> str:
    """``mc-<lab>-<node>`` (e.g. ``mc-demo-node-2``)."""
    return f"mc-{lab}-{node}"


def port_name(node: NodeRecord) -> str:
    """The node's port on the bridge: its name (``node-2``)."""
    return node.name


def setup_fabric(fabric: FabricRecord) -> None:
    """Create the fabric's namespace and its bridge (kept when they exist)."""
    netns.create(fabric.netns)
    with netns.netlink(fabric.netns) as ipr:
        lo = netns.index_of(ipr, "lo")
        ipr.link("set", index=lo, state="up")
        if not ipr.link_lookup(ifname=fabric.bridge):
            # No spanning tree: a port forwards as soon as it is up.
            ipr.link("add", ifname=fabric.bridge, kind="bridge", br_stp_state=0, br_forward_delay=0)
        ipr.link("set", index=netns.index_of(ipr, fabric.bridge), state="up")


def connect_node(fabric: FabricRecord, node: NodeRecord) -> None:
    """Plug a node into the fabric: a veth from its namespace to a port of the bridge."""
    netns.sysctls(node.netns, FABRIC_NODE_SYSCTLS)
    with netns.netlink(node.netns) as ipr:
        old = ipr.link_lookup(ifname=node.fabric_link)
        if old:
            ipr.link("del", index=old[0])  # an earlier, half-made attempt
        with netns.netlink(fabric.netns) as fab:
            stale = fab.link_lookup(ifname=port_name(node))
            if stale:
                fab.link("del", index=stale[0])
        try:
            ipr.link("add", ifname=node.fabric_link, kind="veth",
                     peer={"ifname": port_name(node), "net_ns_fd": str(netns.path(fabric.netns))})
        except NetlinkError as exc:
            raise LabError(f"cannot connect node {node.name} to the fabric: {exc}") from exc
        ipr.link("set", index=netns.index_of(ipr, node.fabric_link), state="up")
    set_port(fabric, node, up=True)


def set_port(fabric: FabricRecord, node: NodeRecord, *, up: bool) -> None:
    """Put the node's bridge port up (on the fabric) or down (cut off, as a node that is down)."""
    with netns.netlink(fabric.netns) as fab:
        port = netns.index_of(fab, port_name(node))
        bridge = netns.index_of(fab, fabric.bridge)
        fab.link("set", index=port, master=bridge)
        fab.link("set", index=port, state="up" if up else "down")


def _link_mac(node: NodeRecord) -> str:
    with netns.netlink(node.netns) as ipr:
        return netns.mac_of(ipr, netns.index_of(ipr, node.fabric_link))


def route_nodes(nodes: Sequence[NodeRecord]) -> None:
    """Give every node that is up its routes to the others: via the fabric, or unreachable when down."""
    macs = {n.name: _link_mac(n) for n in nodes}
    for node in nodes:
        if node.down:
            continue
        with netns.netlink(node.netns) as ipr:
            link = netns.index_of(ipr, node.fabric_link)
            own = node.ranges
            for net in (own.pod4, own.pod6):
                _unreachable(ipr, str(net))
            for other in nodes:
                if other is node:
                    continue
                theirs = other.ranges
                pairs = ((theirs.pod4, theirs.node_ipv4, own.node_ipv4, socket.AF_INET),
                         (theirs.pod6, theirs.node_ipv6, own.node_ipv6, socket.AF_INET6))
                for net, gateway, source, family in pairs:
                    if other.down:
                        _unreachable(ipr, str(net))
                        continue
                    ipr.neigh("replace", dst=gateway, lladdr=macs[other.name], ifindex=link,
                              state=netns.NUD_PERMANENT, family=family)
                    _delete_route(ipr, str(net), family)  # an unreachable route of the same prefix
                    ipr.route("replace", dst=str(net), gateway=gateway, oif=link, flags=_RTNH_F_ONLINK,
                              prefsrc=source, family=family)


def _unreachable(ipr: object, net: str) -> None:
    family = socket.AF_INET6 if ":" in net else socket.AF_INET
    _delete_route(ipr, net, family)
    ipr.route("add", dst=net, type=_RTN_UNREACHABLE, family=family)  # type: ignore[attr-defined]


def _delete_route(ipr: object, net: str, family: int) -> None:
    """Delete every route to exactly ``net`` (a route and an unreachable route may both exist)."""
    for _ in range(4):
        try:
            ipr.route("del", dst=net, family=family)  # type: ignore[attr-defined]
        except NetlinkError as exc:
            if exc.code in (_ENOENT, _ESRCH):
                return
            raise


def route_pods(pods: Sequence[PodRecord], nodes: Mapping[str, NodeRecord]) -> None:
    """Give every pod on a node that is up an unreachable route to each node that is down, and no other."""
    down = [n for n in nodes.values() if n.down]
    up = [n for n in nodes.values() if not n.down]
    for pod in pods:
        if nodes[pod.node].down or not netns.exists(pod.netns):
            continue
        with netns.netlink(pod.netns) as ipr:
            for node in up:
                for net, family in ((node.ranges.pod4, socket.AF_INET), (node.ranges.pod6, socket.AF_INET6)):
                    _delete_route(ipr, str(net), family)
            for node in down:
                for net in (node.ranges.pod4, node.ranges.pod6):
                    _unreachable(ipr, str(net))


def remove_fabric(fabric: FabricRecord) -> None:
    """Remove the fabric's namespace (its bridge and the nodes' veths go with it)."""
    with contextlib.suppress(LabError):
        netns.remove(fabric.netns)
