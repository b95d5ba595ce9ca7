"""Node → model Node: its labels, its addresses and the addresses of its node proxy.

A node's own addresses are its ``status.addresses`` of type ``InternalIP`` and
``ExternalIP``; host names are left out (policy works on addresses). The addresses its
node proxy connects from are not part of the Kubernetes API: meshcore's agent (and the
lab) publish them in the annotation ``meshcore.io/proxy-addresses``, comma-separated.
"""

from __future__ import annotations

from ..model import Node
from ._fields import Fields, Problems
from ._objects import KubeObject
from ._values import Findings, build, ip_address, read_metadata

#: Annotation listing the addresses a node's proxy connects from (comma-separated IPs).
PROXY_ADDRESSES_ANNOTATION = "meshcore.io/proxy-addresses"
#: ``status.addresses`` types that are IP addresses of the node itself.
_IP_TYPES = ("InternalIP", "ExternalIP")


def translate_node(obj: KubeObject, findings: Findings | None = None) -> Node:
    """The node with its labels, IP addresses and proxy addresses; every bad address is reported."""
    problems = Problems()
    meta = problems.read(read_metadata, Fields({}, "metadata"), obj, Fields.of(obj))
    labels: dict[str, str] = problems.read(meta.str_map, {}, "labels")
    annotations: dict[str, str] = problems.read(meta.str_map, {}, "annotations")
    addresses: list[str] = []
    status = problems.read(Fields.of(obj).map, Fields({}, "status"), "status")
    for entry in problems.read(status.maps, [], "addresses"):
        with problems:
            kind = entry.str("type", "") or ""
            value = entry.req_str("address")
            if kind in _IP_TYPES:
                address = ip_address(value, f"{entry.path}.address")
                if address not in addresses:
                    addresses.append(address)
    proxy: list[str] = []
    text = annotations.get(PROXY_ADDRESSES_ANNOTATION, "")
    for item in (part.strip() for part in text.split(",")):
        if item:
            with problems:
                proxy.append(ip_address(item, f"metadata.annotations.{PROXY_ADDRESSES_ANNOTATION}"))
    problems.check()
    return build({"name": "metadata.name", "labels": "metadata.labels", "addresses": "status.addresses",
                  "proxy_addresses": f"metadata.annotations.{PROXY_ADDRESSES_ANNOTATION}"}, "metadata",
                 lambda: Node(name=obj.name, addresses=addresses, proxy_addresses=list(dict.fromkeys(proxy)),
                              labels=labels, source=obj.source))
