"""Service → what the model's Service needs: VIPs, ports with protocols and targets, policy.

Backends are resolved separately (see ``_backends``), from EndpointSlices when the service
has any, else from its selector over the pods of its namespace.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ..model import LbPolicy, Protocol, Source, VipAssignment
from ._codes import FieldCode, KubeCode
from ._fields import FieldError, Fields, Problems
from ._objects import KubeObject
from ._values import (
    Findings,
    dual_stack,
    ip_address,
    is_port_name,
    port_name,
    read_metadata,
    service_name,
    transport,
)

#: The cluster DNS domain used for service hostnames.
CLUSTER_DOMAIN = "cluster.local"

_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_AFFINITY = ("None", "ClientIP")

#: ``appProtocol`` values (compared in lower case) and the protocol they mean.
APP_PROTOCOLS: Mapping[str, Protocol] = {
    "http": Protocol.HTTP,
    "kubernetes.io/ws": Protocol.HTTP,
    "grpc-web": Protocol.HTTP,
    "http2": Protocol.HTTP2,
    "kubernetes.io/h2c": Protocol.HTTP2,
    "h2c": Protocol.HTTP2,
    "grpc": Protocol.GRPC,
    "tls": Protocol.TLS,
    "https": Protocol.TLS,
    "kubernetes.io/wss": Protocol.TLS,
    "tcp": Protocol.TCP,
}

#: Istio-style port-name prefixes (``<prefix>`` or ``<prefix>-<suffix>``), longest first.
NAME_PREFIXES: tuple[tuple[str, Protocol], ...] = (
    ("grpc-web", Protocol.HTTP),
    ("http2", Protocol.HTTP2),
    ("https", Protocol.TLS),
    ("http", Protocol.HTTP),
    ("grpc", Protocol.GRPC),
    ("tls", Protocol.TLS),
    ("tcp", Protocol.TCP),
    ("udp", Protocol.UDP),
)


@attrs.frozen
class PortSpec:
    """A service port before backends: number, protocol, name and target port."""

    index: int
    port: int
    protocol: Protocol
    name: str
    #: A container port number, or the name of a container port.
    target: int | str

    @property
    def path(self) -> str:
        """The input path of this port."""
        return f"spec.ports[{self.index}]"


@attrs.frozen
class ServiceSpec:
    """A validated Service; ``selector`` is ``None`` when the service has none."""

    name: str
    namespace: str
    vips: tuple[str, ...]
    ports: tuple[PortSpec, ...]
    selector: Mapping[str, str] | None
    lb_policy: LbPolicy
    publish_not_ready: bool
    external_name: bool
    source: Source
    vip_assignment: VipAssignment = VipAssignment.GIVEN

    @property
    def hostnames(self) -> tuple[str, ...]:
        """The service's fully qualified DNS name."""
        return (f"{self.name}.{self.namespace}.svc.{CLUSTER_DOMAIN}",)


def port_protocol(transport_protocol: Protocol, app_protocol: str | None, name: str) -> Protocol:
    """The application protocol of a port: ``appProtocol`` first, then the name prefix.

    A UDP port stays UDP; a set but unknown ``appProtocol`` (e.g. ``mysql``) means
    opaque TCP, as Istio treats it.
    """
    if transport_protocol is Protocol.UDP:
        return Protocol.UDP
    if app_protocol:
        return APP_PROTOCOLS.get(app_protocol.lower(), Protocol.TCP)
    for prefix, protocol in NAME_PREFIXES:
        if name == prefix or name.startswith(prefix + "-"):
            # A TCP port named udp-* is still TCP: the protocol field decides the transport.
            return Protocol.TCP if protocol is Protocol.UDP else protocol
    return Protocol.TCP


def _vips(spec: Fields, external: bool) -> tuple[str, ...]:
    single = spec.str("clusterIP", "") or ""
    many = spec.strs("clusterIPs")
    if external:
        return ()
    if many and single and many[0] != single:
        raise FieldError("spec.clusterIPs[0]", f"{many[0]!r} must match spec.clusterIP ({single!r})",
                         KubeCode.INVALID_VALUE)
    values = many or ([single] if single else [])
    if values and values[0] == "None":
        if len(values) > 1:
            raise FieldError("spec.clusterIPs", "'None' (headless) must be the only value", KubeCode.INVALID_VALUE)
        return ()
    path = "spec.clusterIPs" if many else "spec.clusterIP"
    vips = [ip_address(v, f"{path}[{i}]" if many else path) for i, v in enumerate(values)]
    dual_stack(vips, "spec.clusterIPs")
    return tuple(vips)


def _target(entry: Fields, port: int) -> int | str:
    target = entry.int_or_str("targetPort")
    path = f"{entry.path}.targetPort"
    if target is None or target == 0:
        return port
    if isinstance(target, int):
        if not 1 <= target <= 65535:
            raise FieldError(path, f"{target} is out of range (1..65535)", FieldCode.OUT_OF_RANGE)
        return target
    if not is_port_name(target):
        raise FieldError(
            path,
            f"{target!r} is neither a port number nor a valid port name (a name has 1-15 "
            "lower-case letters, digits and '-', with at least one letter)",
            KubeCode.INVALID_VALUE,
        )
    return target


def _ports(spec: Fields, findings: Findings, problems: Problems) -> tuple[PortSpec, ...]:
    entries = spec.maps("ports")
    ports: list[PortSpec] = []
    names: dict[str, str] = {}
    numbers: dict[tuple[int, str], str] = {}
    for index, entry in enumerate(entries):
        with problems:
            ports.extend(_port(index, entry, len(entries), names, numbers, findings))
    return tuple(ports)


def _port(index: int, entry: Fields, count: int, names: dict[str, str], numbers: dict[tuple[int, str], str],
          findings: Findings) -> list[PortSpec]:
    """One service port (none when the datapath leaves it out), its name and number checked unique."""
    number = entry.port("port", required=True)
    assert number is not None
    name = port_name(entry)
    if not name and count > 1:
        raise FieldError(f"{entry.path}.name", "required when a Service has more than one port", FieldCode.MISSING)
    if name in names:
        raise FieldError(f"{entry.path}.name", f"port name {name!r} is already used by {names[name]}",
                         KubeCode.DUPLICATE_VALUE)
    names[name] = entry.path
    protocol = entry.str("protocol", "TCP") or "TCP"
    key = (number, protocol)
    if key in numbers:
        raise FieldError(f"{entry.path}.port", f"port {number}/{protocol} is already used by "
                         f"{numbers[key]}", KubeCode.DUPLICATE_VALUE)
    numbers[key] = entry.path
    target = _target(entry, number)
    app_protocol = entry.str("appProtocol")
    transport_protocol = transport(entry, findings)
    if transport_protocol is None:
        return []
    return [PortSpec(index, number, port_protocol(transport_protocol, app_protocol, name), name, target)]


def read_service(obj: KubeObject, findings: Findings) -> ServiceSpec:
    """Validate a Service as the API server does and read what the model needs.

    Every bad field is reported (:class:`~meshcore.kube.FieldErrors`), not only the first.
    """
    problems = Problems()
    root = Fields.of(obj)
    with problems:
        read_metadata(obj, root)
        service_name(obj.name, "metadata.name")
    spec = root.map("spec")
    kind = problems.read(lambda: spec.str("type", "ClusterIP", choices=_TYPES), None)
    external = kind == "ExternalName"
    if external:
        with problems:
            external_name = spec.req_str("externalName")
            findings.warn(
                KubeCode.EXTERNAL_NAME,
                f"type ExternalName ({external_name}) is not supported by the datapath; the service "
                "has no VIPs and no backends",
                "spec.type",
            )
    vips: tuple[str, ...] = problems.read(lambda: _vips(spec, external), ())
    with problems:
        headless = not external and (spec.str("clusterIP") == "None"
                                     or spec.strs("clusterIPs")[:1] == ["None"])
        if not spec.list("ports") and not (external or headless):
            raise FieldError("spec.ports", "required field is missing (only headless and ExternalName "
                             "Services may have no ports)", FieldCode.MISSING)
    ports: tuple[PortSpec, ...] = problems.read(lambda: _ports(spec, findings, problems), ())
    selector: dict[str, str] = problems.read(lambda: spec.str_map("selector"), {})
    affinity = problems.read(lambda: spec.str("sessionAffinity", "None", choices=_AFFINITY), None)
    publish_not_ready = problems.read(lambda: spec.bool("publishNotReadyAddresses"), False)
    problems.check()
    if headless:
        assignment = VipAssignment.HEADLESS
    elif not vips and not external:
        assignment = VipAssignment.PENDING  # the API server assigns ClusterIPs on creation
    else:
        assignment = VipAssignment.GIVEN
    return ServiceSpec(
        name=obj.name,
        namespace=obj.namespace,
        vips=vips,
        ports=ports,
        selector=selector if selector and not external else None,
        lb_policy=LbPolicy.CONSISTENT_HASH if affinity == "ClientIP" else LbPolicy.RANDOM,
        publish_not_ready=publish_not_ready,
        external_name=external,
        source=obj.source,
        vip_assignment=assignment,
    )
