"""The internet: one client outside every pod network, for north-south traffic.

A network namespace ``mc-<lab>.internet`` stands for the world outside the cluster. Its
only link is a veth to the (first) node's namespace; it routes nothing but the lab's edge
addresses (the VIPs the lab assigned to Gateways and Ingresses) and that node's own
address, so pods and ClusterIPs are out of reach, as from the internet. Its commands
run in that node's cgroup ``_internet``: the node's socket-level load balancer then hands
their connections to an edge address over to the node proxy (the node address), as a
node's load balancer does for traffic arriving from outside. Ports the kernel serves
alone are sent to pod addresses, which the internet does not reach. IPv4 only.

    lab.run_outside(["curl", "https://shop.example.com", "--resolve", f"shop.example.com:443:{vip}"])
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from . import _cgroups as cgroups
from . import _hostsfiles as hosts
from . import _netns as netns
from ._exec import joiner
from ._machine import NETNS_ETC, tool
from ._state import LabState, ServiceRecord

#: The internet client's address (RFC 2544's benchmarking range: never a pod or service address).
OUTSIDE_IPV4 = "198.18.0.2"
_NODE_VETH = "mcinternet"
_CGROUP = "_internet"


def netns_name(lab: str) -> str:
    """``mc-<lab>.internet``: two parts, so it never collides with a pod's ``mc-<lab>.<ns>.<pod>``."""
    return f"mc-{lab}.internet"


def ensure_outside(state: LabState, edge: Sequence[ServiceRecord]) -> None:
    """Create (or update) the internet namespace, routed to the ``edge`` addresses and the first node only."""
    name = netns_name(state.name)
    first = state.first_node
    node_ipv4 = first.ranges.node_ipv4
    netns.setup_pod_namespace(name)
    cgroups.create(Path(first.cgroup) / _CGROUP)
    vips = sorted({a for r in edge for a in r.cluster_ips if ":" not in a})
    with netns.netlink(first.netns) as node:
        if not node.link_lookup(ifname=_NODE_VETH):
            node.link("add", ifname=_NODE_VETH, kind="veth",
                      peer={"ifname": "eth0", "net_ns_fd": str(netns.path(name))})
        host = netns.index_of(node, _NODE_VETH)
        host_mac = netns.mac_of(node, host)
        with netns.netlink(name) as out:
            out.link("set", index=netns.index_of(out, "lo"), state="up")
            eth0 = netns.index_of(out, "eth0")
            outside_mac = netns.mac_of(out, eth0)
            netns._add_addr(out, eth0, OUTSIDE_IPV4, 32)
            out.link("set", index=eth0, state="up")
            netns._replace_route(out, dst=f"{netns.GATEWAY4}/32", oif=eth0, scope=netns._RT_SCOPE_LINK)
            netns._replace_neigh(out, dst=netns.GATEWAY4, lladdr=host_mac, ifindex=eth0)
            wanted = {f"{a}/32" for a in [*vips, node_ipv4]}
            for route in out.get_routes(family=socket.AF_INET, oif=eth0):
                dst = f"{route.get_attr('RTA_DST')}/{route['dst_len']}"
                if route.get_attr("RTA_GATEWAY") == netns.GATEWAY4 and dst not in wanted:
                    out.route("del", dst=dst, gateway=netns.GATEWAY4, oif=eth0)
            for dst in sorted(wanted):
                netns._replace_route(out, dst=dst, gateway=netns.GATEWAY4, oif=eth0, prefsrc=OUTSIDE_IPV4)
        node.link("set", index=host, state="up")
        netns._replace_route(node, dst=f"{OUTSIDE_IPV4}/32", oif=host, scope=netns._RT_SCOPE_LINK,
                             prefsrc=node_ipv4)
        netns._replace_neigh(node, dst=OUTSIDE_IPV4, lladdr=outside_mac, ifindex=host)
    etc = NETNS_ETC / name
    etc.mkdir(parents=True, exist_ok=True)
    entries = [hosts.HostEntry(r.namespace, r.name, tuple(a for a in r.cluster_ips if ":" not in a)) for r in edge]
    hosts.write_in_place(etc / "hosts", hosts.render(state.name, "internet", "internet", (OUTSIDE_IPV4,), entries))
    hosts.write_in_place(etc / "nsswitch.conf", hosts.render_nsswitch())


def remove_outside(state: LabState) -> None:
    """Remove the internet namespace and its files (its veth goes with it; the cgroup with the lab's)."""
    name = netns_name(state.name)
    netns.remove(name)
    etc = NETNS_ETC / name
    for child in etc.glob("*") if etc.is_dir() else ():
        child.unlink(missing_ok=True)
    if etc.is_dir():
        etc.rmdir()


def run_outside(state: LabState, argv: Sequence[str], *, input: bytes | None = None,
                timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` on the internet client and capture its output."""
    command = [tool("ip"), "netns", "exec", netns_name(state.name), *argv]
    return subprocess.run(command, input=input, capture_output=True, timeout=timeout, check=False,
                          preexec_fn=joiner(str(Path(state.first_node.cgroup) / _CGROUP)))
