"""ServiceEntry → model Services; WorkloadEntry → model Workloads.

A ServiceEntry becomes one Service named after it (dots become dashes) with its hosts as
hostnames, its IP ``addresses`` as VIPs and one port per entry of ``ports``. Backends
come from ``endpoints`` (``resolution: STATIC``) or from the workloads its
``workloadSelector`` selects (pods and WorkloadEntries of its namespace). DNS resolution
and CIDR addresses are accepted and reported: the datapath resolves no names yet.
"""

from __future__ import annotations

import ipaddress
import re

import attrs

from meshcore.kube import FieldError, Fields, Inventory, KubeObject, Report
from meshcore.model import (
    Backend,
    Identity,
    LbPolicy,
    Protocol,
    Service,
    ServicePort,
    Workload,
    WorkloadPort,
    WorkloadRef,
)

from ._codes import INVALID_COMBINATION, INVALID_VALUE, NOT_CARRIED
from ._common import export_to, model
from ._hosts import Known

#: ServiceEntry port protocols → model protocols (Istio's protocol names, upper-case).
PROTOCOLS = {
    "HTTP": Protocol.HTTP, "HTTP2": Protocol.HTTP2, "GRPC": Protocol.GRPC, "GRPC-WEB": Protocol.HTTP,
    "HTTPS": Protocol.TLS, "TLS": Protocol.TLS, "TCP": Protocol.TCP, "MONGO": Protocol.TCP,
    "MYSQL": Protocol.TCP, "REDIS": Protocol.TCP, "UDP": Protocol.UDP,
}
RESOLUTIONS = ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN")
LOCATIONS = ("MESH_EXTERNAL", "MESH_INTERNAL")
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$|^\*$")


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _protocol(port: Fields) -> Protocol:
    raw = port.str("protocol")
    if raw is None:
        # Istio derives the protocol from the port name prefix (http-, grpc-, tls-...).
        raw = (port.str("name") or "").split("-", 1)[0].upper()
    return PROTOCOLS.get(raw.upper(), Protocol.TCP)


def model_name(name: str) -> str:
    """A DNS label for the model Service of a ServiceEntry named ``name``."""
    return name.replace(".", "-")[:63].strip("-") or "serviceentry"


@attrs.frozen
class Entry:
    """A translated ServiceEntry."""

    known: Known
    obj: KubeObject


def read_workload_entry(obj: KubeObject, report: Report) -> Workload:
    """One WorkloadEntry as a Workload (its address must be an IP address)."""
    spec = Fields.of(obj).map("spec", required=True)
    return _workload_entry(obj, spec, obj.name, report)


def _workload_entry(obj: KubeObject, spec: Fields, name: str, report: Report) -> Workload:
    address = spec.str("address", "") or ""
    if not _ip(address):
        if address.startswith("unix://"):
            raise FieldError(f"{spec.path}.address", "unix domain socket addresses are not supported",
                             INVALID_VALUE)
        raise FieldError(f"{spec.path}.address", f"{address!r} is not an IP address; the datapath resolves no "
                         "names yet", INVALID_VALUE)
    ports = []
    for pname, number in spec.map("ports").data.items():
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
            raise FieldError(f"{spec.path}.ports.{pname}", f"{number!r} is not a port (1..65535)", INVALID_VALUE)
        ports.append(WorkloadPort(number, str(pname)))
    spec.int("weight", minimum=0, maximum=2**32 - 1)
    account = spec.str("serviceAccount") or "default"
    labels = spec.str_map("labels")
    return model(spec.path, lambda: Workload(
        name=name, namespace=obj.namespace,
        identity=Identity(namespace=obj.namespace, service_account=account),
        addresses=(str(ipaddress.ip_address(address)),), labels=labels, ports=tuple(ports), source=obj.source,
    ))


def read_service_entry(obj: KubeObject, inventory: Inventory, workload_entries: list[Workload],
                       lb: LbPolicy | None, report: Report) -> Entry:
    """One ServiceEntry as a Service (see the module documentation)."""
    spec = Fields.of(obj).map("spec", required=True)
    hosts = spec.strs("hosts")
    if not hosts:
        raise FieldError("spec.hosts", "at least one host is required", INVALID_VALUE)
    for i, h in enumerate(hosts):
        if not _HOST.match(h) or _ip(h):
            raise FieldError(f"spec.hosts[{i}]", f"{h!r} is not a host name (a DNS name or '*.' + DNS name)",
                             INVALID_VALUE)
    resolution = spec.str("resolution", "NONE", choices=RESOLUTIONS)
    spec.str("location", "MESH_EXTERNAL", choices=LOCATIONS)
    exported = export_to(spec)
    vips: list[str] = []
    for i, addr in enumerate(spec.strs("addresses")):
        path = f"spec.addresses[{i}]"
        if _ip(addr):
            vips.append(str(ipaddress.ip_address(addr)))
            continue
        try:
            ipaddress.ip_network(addr, strict=False)
        except ValueError:
            raise FieldError(path, f"{addr!r} is not an IP address or CIDR", INVALID_VALUE) from None
        report.info(obj, NOT_CARRIED, f"CIDR address {addr} is not carried as a VIP", path)
    ports: list[tuple[int, Protocol, str, int | None]] = []
    for p in spec.maps("ports"):
        number = p.port("number", required=True)
        assert number is not None
        name = p.str("name", "") or ""
        target = p.port("targetPort")
        ports.append((number, _protocol(p), name, target))
    if not ports:
        raise FieldError("spec.ports", "at least one port is required", INVALID_VALUE)
    endpoints = spec.maps("endpoints")
    if endpoints and spec.has("workloadSelector"):
        raise FieldError("spec.workloadSelector", "only one of endpoints or workloadSelector may be set",
                         INVALID_COMBINATION)
    if resolution == "NONE" and endpoints:
        raise FieldError("spec.endpoints", "endpoints cannot be set with resolution NONE", INVALID_COMBINATION)
    if resolution == "STATIC" and not endpoints and not spec.has("workloadSelector"):
        raise FieldError("spec.endpoints", "resolution STATIC needs endpoints or a workloadSelector",
                         INVALID_COMBINATION)
    if any("*" in h for h in hosts) and resolution in ("DNS", "DNS_ROUND_ROBIN"):
        raise FieldError("spec.hosts", "wildcard hosts cannot use DNS resolution", INVALID_COMBINATION)

    # (address, {port name → number}, weight, workload name) for every endpoint.
    targets: list[tuple[str, dict[str, int], int, str | None]] = []
    if resolution == "STATIC":
        for e in endpoints:
            addr = e.str("address", "") or ""
            if not _ip(addr):
                raise FieldError(f"{e.path}.address", f"{addr!r} must be an IP address with resolution STATIC",
                                 INVALID_VALUE)
            mapping = {str(k): v for k, v in e.map("ports").data.items() if isinstance(v, int)}
            weight = e.int("weight", 1, minimum=0) or 0
            targets.append((str(ipaddress.ip_address(addr)), mapping, weight or 1, None))
    if spec.has("workloadSelector"):
        selector = spec.map("workloadSelector").str_map("labels")
        selected = inventory.workloads_matching(obj.namespace, selector) + [
            w for w in workload_entries if w.namespace == obj.namespace and w.labels.matches(selector)]
        for w in selected:
            for addr in w.addresses:
                targets.append((addr, {p.name: p.port for p in w.ports if p.name}, 1, w.name))
    if resolution in ("DNS", "DNS_ROUND_ROBIN"):
        report.info(obj, NOT_CARRIED, f"resolution {resolution}: the datapath resolves no names yet, so this "
                    "service has no backends", "spec.resolution")
    elif resolution == "NONE":
        report.info(obj, NOT_CARRIED, "resolution NONE: connections keep their original destination; the "
                    "service has no backends", "spec.resolution")

    service_ports = []
    for number, protocol, name, target in ports:
        backends = []
        for addr, mapping, weight, wname in targets:
            backend_port = mapping.get(name, target or number)
            workload = WorkloadRef(obj.namespace, wname) if wname is not None else None
            backends.append(Backend(addr, backend_port, weight, workload))
        service_ports.append(ServicePort(number, protocol, name, tuple(backends)))
    service = model("spec", lambda: Service(
        name=model_name(obj.name), namespace=obj.namespace, vips=tuple(vips), ports=tuple(service_ports),
        hostnames=tuple(hosts), lb_policy=lb or LbPolicy.RANDOM, source=obj.source,
    ))
    return Entry(Known(service, tuple(hosts), exported), obj)
