"""Names the lab resolves by DNS: the table, the pods' resolv.conf, and one name server per node.

The table (``dns.json`` in the lab directory, served by :mod:`._dns`) has two views:

- ``proxy``, for the node proxy resolving the endpoints of DNS-resolved services: the
  names of every ConfigMap called ``meshcore-lab-dns`` (any namespace), whose ``data``
  maps a name to its addresses — IP addresses separated by commas, ``pod NAMESPACE/NAME``
  (that pod's addresses) or ``service NAMESPACE/NAME`` (that Service's ClusterIPs);
- ``client``, for pods: the same, with the hosts of each ServiceEntry that has IP
  ``addresses`` answered with those addresses (its virtual IPs), as a mesh's DNS proxy
  answers a client.

Kubernetes Services keep being found through each pod's hosts file (see ``_hostsfiles``);
resolv.conf only adds the node's name server for the rest. Nothing is ever asked
outside the lab.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..kube import KubeObject
from . import _netns as netns
from . import _procs as procs
from ._hostsfiles import write_in_place
from ._state import LabState, NodeRecord, ProcRecord

CONFIGMAP = "meshcore-lab-dns"
TABLE_FILE = "dns.json"
DNS_CGROUP = "_dns"
DNS_LOG = "dns.log"


def _addresses(value: str, state: LabState) -> list[str] | str:
    """The addresses a ConfigMap value names, or why it names none."""
    kind, _, ref = value.strip().partition(" ")
    if kind in ("pod", "service") and "/" in ref:
        namespace, _, name = ref.strip().partition("/")
        if kind == "pod":
            pod = state.pods.get(f"{namespace}/{name}")
            return list(pod.addresses) if pod is not None else f"no pod {namespace}/{name} in the lab"
        service = state.services.get(f"{namespace}/{name}")
        return list(service.cluster_ips) if service is not None else f"no Service {namespace}/{name} in the lab"
    out = []
    for text in value.split(","):
        try:
            out.append(str(ipaddress.ip_address(text.strip())))
        except ValueError:
            return (f"{value!r} is neither IP addresses (comma-separated), 'pod NAMESPACE/NAME' nor "
                    "'service NAMESPACE/NAME'")
    return out


def build_table(state: LabState, others: Sequence[KubeObject]) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """The two views of the table and warnings about entries left out."""
    proxy: dict[str, list[str]] = {}
    warnings: list[str] = []
    for obj in others:
        if obj.api_version != "v1" or obj.kind != "ConfigMap" or obj.name != CONFIGMAP:
            continue
        data = obj.body.get("data") or {}
        for name, value in sorted(data.items()):
            found = _addresses(str(value), state)
            if isinstance(found, str):
                warnings.append(f"ConfigMap {obj.namespace}/{obj.name}: name {name}: {found}; not resolved")
                continue
            proxy[str(name).lower().rstrip(".")] = found
    client = dict(proxy)
    for obj in others:
        if obj.kind != "ServiceEntry" or not obj.api_version.startswith("networking.istio.io/"):
            continue
        spec: Any = obj.body.get("spec") or {}
        vips = []
        for text in spec.get("addresses") or ():
            try:
                vips.append(str(ipaddress.ip_address(str(text))))
            except ValueError:
                continue  # a CIDR block is no address to answer with
        for host in spec.get("hosts") or ():
            if vips and "*" not in str(host):
                client[str(host).lower().rstrip(".")] = vips
    return {"proxy": proxy, "client": client}, warnings


def write_table(state: LabState, others: Sequence[KubeObject]) -> list[str]:
    """Write the table and every pod's resolv.conf (the name server of its node); returns the warnings."""
    table, warnings = build_table(state, others)
    path = Path(state.dir) / TABLE_FILE
    fresh = path.with_suffix(".new")
    fresh.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(fresh, path)
    for record in state.pods.values():
        etc = Path(record.etc_dir)
        node = state.nodes.get(record.node) or next(iter(state.nodes.values()), None)
        if etc.is_dir() and node is not None:
            write_in_place(etc / "resolv.conf", resolv_conf(state.name, node))
    return warnings


def resolv_conf(lab: str, node: NodeRecord) -> str:
    """A pod's resolv.conf: its node's name server, no search domains, and a quick failure."""
    return (f"# meshcore lab {lab}: the name server of node {node.name}; rewritten by every `lab up`\n"
            f"nameserver {node.ranges.node_ipv4}\noptions timeout:1 attempts:2\n")


def dns_alive(node: NodeRecord) -> bool:
    """True when the node's recorded name server still runs."""
    return node.dns is not None and procs.alive(node.dns.pid, node.dns.start_time)


def ensure_dns(state: LabState) -> None:
    """Start the name server of every node that is up and has none running."""
    table = Path(state.dir) / TABLE_FILE
    for node in state.nodes.values():
        if node.down or dns_alive(node):
            continue
        own = [*node.ranges.node_addresses, *node.ranges.proxy_addresses]
        # The server needs only the standard library: run its file, without site-packages.
        argv = [sys.executable, "-S", str(Path(__file__).with_name("_dns.py")), "--table", str(table),
                *(a for address in node.ranges.node_addresses for a in ("--listen", address)),
                *(a for address in own for a in ("--own", address))]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"}
        log = str(Path(node.state_dir) / DNS_LOG)
        pid, started = procs.spawn(argv, env=env, cwd=node.state_dir, cgroup=str(Path(node.cgroup) / DNS_CGROUP),
                                   log=log, netns=str(netns.path(node.netns)))
        node.dns = ProcRecord("dns", pid, started, tuple(argv), log)
        state.save()


def stop_dns(state: LabState, node: NodeRecord) -> None:
    """Stop the node's name server."""
    if node.dns is not None:
        procs.stop([(node.dns.pid, node.dns.start_time)])
        node.dns = None
        state.save()
