"""Edge addresses: the lab assigns meshcore's Gateways and Ingresses a VIP, as a LoadBalancer IPAM would.

A Gateway of a class whose ``controllerName`` is meshcore's that requests no IP address
(``spec.addresses`` without an IPAddress value, the usual case) gets one from the lab's
IPv4 service range — from the top down, like a LoadBalancer pool, so ClusterIPs (handed
out from the bottom up) never take it — kept across `lab up` runs. The lab writes it into the Gateway's
``status.addresses``, which the gateway adapter serves when the spec requests none.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from ..kube import KubeObject
from ._ipam import LabRanges, ServiceIpAllocator
from ._state import ServiceRecord

GATEWAY_GROUP = "gateway.networking.k8s.io"
#: The GatewayClass controller name the gateway adapter serves (meshcore_gateway.CONTROLLER_NAME).
CONTROLLER_NAME = "meshcore.io/gateway-controller"
#: The IngressClass controller the gateway adapter serves (meshcore_gateway.INGRESS_CONTROLLER).
INGRESS_CONTROLLER = "meshcore.io/ingress-controller"
_DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"


def _requested(spec: Mapping[str, Any]) -> tuple[list[str], bool]:
    """The IP values ``spec.addresses`` requests, and whether it names any other kind of address."""
    ips: list[str] = []
    other = False
    for entry in spec.get("addresses") or []:
        if not isinstance(entry, Mapping):
            continue
        if str(entry.get("type") or "IPAddress") != "IPAddress":
            other = True
        elif entry.get("value"):
            ips.append(str(entry["value"]))
    return ips, other


def our_gateways(objects: Sequence[KubeObject]) -> list[KubeObject]:
    """The Gateways whose GatewayClass (in ``objects``) names meshcore's controller."""
    classes = {o.name for o in objects if o.group == GATEWAY_GROUP and o.kind == "GatewayClass"
               and o.spec.get("controllerName") == CONTROLLER_NAME}
    return [o for o in objects if o.group == GATEWAY_GROUP and o.kind == "Gateway"
            and o.spec.get("gatewayClassName") in classes]


def our_ingresses(objects: Sequence[KubeObject]) -> list[KubeObject]:
    """The Ingresses whose IngressClass (named, by annotation, or the only default one) is meshcore's."""
    classes = [o for o in objects if o.group == "networking.k8s.io" and o.kind == "IngressClass"]
    ours = {o.name for o in classes if o.spec.get("controller") == INGRESS_CONTROLLER}
    defaults = [o.name for o in classes
                if str((o.metadata.get("annotations") or {}).get(_DEFAULT_CLASS, "")).lower() == "true"]
    found = []
    for obj in objects:
        if obj.group != "networking.k8s.io" or obj.kind != "Ingress":
            continue
        name = obj.spec.get("ingressClassName") or (obj.metadata.get("annotations") or {}).get(
            "kubernetes.io/ingress.class") or (defaults[0] if len(defaults) == 1 else None)
        if name in ours:
            found.append(obj)
    return found


def enrich_ingress(obj: KubeObject, record: ServiceRecord | None) -> dict[str, Any]:
    """The Ingress body with the address the lab assigned in ``status.loadBalancer.ingress``."""
    body = copy.deepcopy(dict(obj.body))
    if record is not None:
        if not isinstance(body.get("status"), Mapping):
            body["status"] = {}
        body["status"]["loadBalancer"] = {"ingress": [{"ip": a} for a in record.cluster_ips]}
    return body


def assign_gateway_addresses(gateways: Sequence[KubeObject], services: Mapping[str, ServiceRecord],
                             previous: Mapping[str, ServiceRecord], ranges: LabRanges) -> dict[str, ServiceRecord]:
    """An IPv4 VIP for every Gateway that requests none: the previous one when still free, else the next free one.

    ``services`` are the ClusterIPs just assigned (never handed out again); requested
    Gateway addresses are kept out of the pool too. Gateways that request an IP address,
    or an address of another type (which the adapter rejects), get no record.
    """
    taken = {a for s in services.values() for a in s.cluster_ips}
    wanting = []
    for gw in gateways:
        ips, other = _requested(gw.spec)
        taken.update(ips)
        if not ips and not other:
            wanting.append(gw)
    records: dict[str, ServiceRecord] = {}
    pending = []
    for gw in wanting:
        key = f"{gw.namespace}/{gw.name}"
        old = previous.get(key)
        reuse = next((a for a in (old.cluster_ips if old else ())
                      if ipaddress.ip_address(a) in ranges.service4 and a not in taken), None)
        if reuse is None:
            pending.append(gw)
            continue
        taken.add(reuse)
        records[key] = ServiceRecord(gw.namespace, gw.name, (reuse,))
    allocator = ServiceIpAllocator(ranges.service4, taken, from_top=True)
    for gw in pending:
        records[f"{gw.namespace}/{gw.name}"] = ServiceRecord(gw.namespace, gw.name, (allocator.allocate(),))
    return records


def enrich_gateway(obj: KubeObject, record: ServiceRecord | None) -> dict[str, Any]:
    """The Gateway body with the address the lab assigned in ``status.addresses``."""
    body = copy.deepcopy(dict(obj.body))
    if record is not None:
        if not isinstance(body.get("status"), Mapping):
            body["status"] = {}
        body["status"]["addresses"] = [{"type": "IPAddress", "value": a} for a in record.cluster_ips]
    return body
