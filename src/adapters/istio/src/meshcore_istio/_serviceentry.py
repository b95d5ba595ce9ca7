"""ServiceEntry → model Services; WorkloadEntry → model Workloads.

A ServiceEntry becomes one Service named after it (dots become dashes) with its hosts as
hostnames, its IP ``addresses`` as VIPs (an address listed twice is one VIP) and one port
per entry of ``ports``. Backends come from ``endpoints`` (``resolution: STATIC``) or from
the workloads its ``workloadSelector`` selects (pods and WorkloadEntries of its
namespace). What Istio's validation refuses was refused before (see ``_admission`` and
``_webhook``); what it accepts but meshcore does not apply yet is a warning naming it:
a ServiceEntry without ports, a partial wildcard host (``*x.example``), an endpoint or
WorkloadEntry whose address is a hostname, a unix domain socket or absent (reached
through its network's gateway). CIDR addresses are accepted and reported.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import attrs

from meshcore.kube import Fields, Inventory, KubeObject, Report
from meshcore.model import (
    Backend,
    HostnameBackend,
    Identity,
    Labels,
    LbPolicy,
    Protocol,
    Resolution,
    Service,
    ServicePort,
    Workload,
    WorkloadPort,
    WorkloadRef,
)

from ._codes import IstioCode
from ._common import export_to, model
from ._hosts import Known
from ._webhook import partial_wildcard

#: ServiceEntry port protocols → model protocols (Istio's protocol names, upper-case).
PROTOCOLS = {
    "HTTP": Protocol.HTTP, "HTTP2": Protocol.HTTP2, "GRPC": Protocol.GRPC, "GRPC-WEB": Protocol.HTTP,
    "HTTPS": Protocol.TLS, "TLS": Protocol.TLS, "TCP": Protocol.TCP, "MONGO": Protocol.TCP,
    "MYSQL": Protocol.TCP, "REDIS": Protocol.TCP, "UDP": Protocol.UDP,
}
RESOLUTIONS = ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN")
_RESOLUTIONS = {"DNS": Resolution.DNS, "DNS_ROUND_ROBIN": Resolution.DNS_ROUND_ROBIN}
LOCATIONS = ("MESH_EXTERNAL", "MESH_INTERNAL")


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


@attrs.frozen
class NamedWorkload:
    """A WorkloadEntry whose address is a DNS name: a backend of the DNS-resolved ServiceEntries selecting it."""

    obj: KubeObject
    hostname: str
    labels: Labels
    ports: dict[str, int]

    @property
    def namespace(self) -> str:
        """The WorkloadEntry's namespace."""
        return self.obj.namespace


def read_workload_entry(obj: KubeObject, report: Report) -> Workload | NamedWorkload | None:
    """One WorkloadEntry as a Workload (or a named one); None (with a warning) when meshcore cannot reach it."""
    spec = Fields.of(obj).map("spec", required=True)
    return _workload_entry(obj, spec, obj.name, report)


def _unreachable(address: str, *, names: bool = False) -> str | None:
    """Why an endpoint address (valid for Istio) is not applied, or None (an IP address; a name if ``names``)."""
    if _ip(address) or (names and address and not address.startswith("unix://")):
        return None
    if not address:
        return "an endpoint without address (reached through its network's gateway) is not supported"
    if address.startswith("unix://"):
        return f"unix domain socket address {address} is not supported"
    return f"hostname address {address} is only resolved for a ServiceEntry with resolution DNS or DNS_ROUND_ROBIN"


def _workload_entry(obj: KubeObject, spec: Fields, name: str, report: Report) -> Workload | NamedWorkload | None:
    address = spec.str("address", "") or ""
    problem = _unreachable(address, names=True)
    if problem is not None:
        report.warn(obj, IstioCode.NOT_SUPPORTED, f"{problem}: this WorkloadEntry is not applied",
                    f"{spec.path}.address")
        return None
    if not _ip(address):
        ports_by_name = {str(k): int(v) for k, v in spec.map("ports").data.items()}
        return NamedWorkload(obj, address.lower().removesuffix("."), Labels(spec.str_map("labels")), ports_by_name)
    ports = []
    for pname, number in spec.map("ports").data.items():
        ports.append(WorkloadPort(int(number), str(pname)))
    account = spec.str("serviceAccount") or "default"
    labels = spec.str_map("labels")
    return model(spec.path, lambda: Workload(
        name=name, namespace=obj.namespace,
        identity=Identity(namespace=obj.namespace, service_account=account),
        addresses=(str(ipaddress.ip_address(address)),), labels=labels, ports=tuple(ports), source=obj.source,
    ))


def read_service_entry(obj: KubeObject, inventory: Inventory, workload_entries: list[Workload],
                       lb: LbPolicy | None, report: Report,
                       named: Sequence[NamedWorkload] = (), used: set[int] | None = None) -> Entry | None:
    """One ServiceEntry as a Service (see the module documentation); None (with a warning) when not applied."""
    spec = Fields.of(obj).map("spec", required=True)
    hosts = []
    for i, h in enumerate(spec.strs("hosts")):
        if partial_wildcard(h):
            report.warn(obj, IstioCode.NOT_SUPPORTED, f"partial wildcard host {h!r} is not supported (Istio warns it "
                        "is not allowed): this host is not applied", f"spec.hosts[{i}]")
            continue
        hosts.append(h)
    resolution = spec.str("resolution", "NONE", choices=RESOLUTIONS)
    spec.str("location", "MESH_EXTERNAL", choices=LOCATIONS)
    exported = export_to(spec)
    vips: list[str] = []
    for i, addr in enumerate(spec.strs("addresses")):
        path = f"spec.addresses[{i}]"
        if _ip(addr):
            vip = str(ipaddress.ip_address(addr))
            if vip not in vips:  # Istio accepts an address listed twice; it is one VIP
                vips.append(vip)
            continue
        report.info(obj, IstioCode.NOT_CARRIED, f"CIDR address {addr} is not carried as a VIP", path)
    ports: list[tuple[int, Protocol, str, int | None]] = []
    for p in spec.maps("ports"):
        number = p.port("number", required=True)
        assert number is not None
        name = p.str("name", "") or ""
        target = p.port("targetPort")
        ports.append((number, _protocol(p), name, target))
    if not ports:
        report.warn(obj, IstioCode.NOT_SUPPORTED, "a ServiceEntry without ports is not supported (meshcore routes by "
                    "port): this ServiceEntry is not applied", "spec.ports" if spec.has("ports") else "spec")
        return None
    if not hosts:
        return None  # every host was a partial wildcard, each reported above
    endpoints = spec.maps("endpoints")

    dns = resolution in ("DNS", "DNS_ROUND_ROBIN")
    # (address or name, {port name → number}, weight, workload name) for every endpoint.
    targets: list[tuple[str, dict[str, int], int, str | None]] = []
    if resolution == "STATIC" or dns:
        for e in endpoints:
            addr = e.str("address", "") or ""
            problem = _unreachable(addr, names=dns)
            if problem is not None:
                report.warn(obj, IstioCode.NOT_SUPPORTED, f"{problem}: this endpoint is not applied",
                            f"{e.path}.address")
                continue
            mapping = {str(k): v for k, v in e.map("ports").data.items() if isinstance(v, int)}
            weight = e.int("weight", 1, minimum=0) or 0
            address = str(ipaddress.ip_address(addr)) if _ip(addr) else addr.lower().removesuffix(".")
            targets.append((address, mapping, weight or 1, None))
    if spec.has("workloadSelector"):
        selector = spec.map("workloadSelector").str_map("labels")
        selected = inventory.workloads_matching(obj.namespace, selector) + [
            w for w in workload_entries if w.namespace == obj.namespace and w.labels.matches(selector)]
        for w in selected:
            for addr in w.addresses:
                targets.append((addr, {p.name: p.port for p in w.ports if p.name}, 1, w.name))
        for n in named:
            if n.namespace == obj.namespace and n.labels.matches(selector):
                if not dns:
                    continue  # reported once for the WorkloadEntry when no DNS ServiceEntry selects it
                if used is not None:
                    used.add(id(n))
                targets.append((n.hostname, dict(n.ports), 1, None))
    if dns and not endpoints and not spec.has("workloadSelector"):
        # No endpoints: the proxy resolves the hosts themselves (Istio's validation made them FQDNs).
        targets = [(h.lower(), {}, 1, None) for h in hosts]
    if resolution == "NONE":
        report.info(obj, IstioCode.NOT_CARRIED, "resolution NONE: connections keep their original destination; the "
                    "service has no backends", "spec.resolution")

    service_ports = []
    for number, protocol, name, target in ports:
        if dns:
            named_backends = tuple(HostnameBackend(addr, mapping.get(name, target or number), weight)
                                   for addr, mapping, weight, _ in targets)
            service_ports.append(ServicePort(number, protocol, name, hostname_backends=named_backends))
            continue
        backends = []
        for addr, mapping, weight, wname in targets:
            backend_port = mapping.get(name, target or number)
            workload = WorkloadRef(obj.namespace, wname) if wname is not None else None
            backends.append(Backend(addr, backend_port, weight, workload))
        service_ports.append(ServicePort(number, protocol, name, tuple(backends)))
    service = model("spec", lambda: Service(
        name=model_name(obj.name), namespace=obj.namespace, vips=tuple(vips), ports=tuple(service_ports),
        hostnames=tuple(hosts), lb_policy=lb or LbPolicy.RANDOM, source=obj.source,
        resolution=_RESOLUTIONS.get(resolution or ""),
    ))
    return Entry(Known(service, tuple(hosts), exported), obj)
