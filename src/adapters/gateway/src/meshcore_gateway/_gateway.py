"""GatewayClass and Gateway: which are ours, their listeners, conflicts and addresses.

A GatewayClass is ours when its ``controllerName`` is :data:`CONTROLLER_NAME`. A Gateway
of one of our accepted classes is served as a model Service of the same namespace and
name, with one port per listener port. Its VIPs are the IPAddress values of
``spec.addresses``; when the spec requests none, the IPAddress values of
``status.addresses`` — the addresses an address manager (such as the lab, or a
LoadBalancer IPAM writing the status back) assigned.
A listener serves traffic when it is accepted, not conflicted and its references
resolve; conflicting listeners are all rejected (none is picked as the winner).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Mapping

import attrs

from meshcore.kube import FieldCode, FieldError, Fields, Inventory, KubeObject, LabelSelector, read_selector
from meshcore.model import Certificate, Protocol

from ._codes import GatewayCode
from ._common import CONTROLLER_NAME, GATEWAY_GROUP, Meta, read_meta
from ._hostnames import ANY, check_hostname
from ._referencegrant import ReferenceGrants
from ._refs import CORE_GROUPS

PROTOCOLS = ("HTTP", "HTTPS", "TLS", "TCP", "UDP")
#: Route kinds each listener protocol carries (TLS: passthrough and terminated).
PROTOCOL_KINDS: Mapping[str, tuple[str, ...]] = {
    "HTTP": ("HTTPRoute", "GRPCRoute"),
    "HTTPS": ("HTTPRoute", "GRPCRoute"),
    "TLS": ("TLSRoute",),
    "TCP": ("TCPRoute",),
    "UDP": ("UDPRoute",),
}
#: The model protocol of the Service port a listener becomes.
PORT_PROTOCOL: Mapping[str, Protocol] = {
    "HTTP": Protocol.HTTP, "HTTPS": Protocol.TLS, "TLS": Protocol.TLS, "TCP": Protocol.TCP, "UDP": Protocol.UDP,
}
_FROM = ("Same", "All", "Selector")


@attrs.frozen
class ClassInfo:
    """A GatewayClass: whether it is ours and whether it is accepted."""

    obj: KubeObject = attrs.field(eq=False)
    name: str
    controller: str
    meta: Meta
    accepted: bool
    reason: str
    message: str

    @property
    def ours(self) -> bool:
        """True when meshcore is its controller."""
        return self.controller == CONTROLLER_NAME


def read_gateway_class(obj: KubeObject) -> ClassInfo:
    """Read a GatewayClass; ours is accepted unless it asks for parameters (we take none)."""
    meta = read_meta(obj)
    spec = Fields.of(obj).map("spec", required=True)
    controller = spec.req_str("controllerName")
    if spec.has("parametersRef"):
        ref = spec.map("parametersRef")
        what = f"{ref.str('kind') or '?'} {ref.str('name') or '?'}"
        return ClassInfo(obj, obj.name, controller, meta, False, "InvalidParameters",
                         f"parametersRef ({what}) is not supported: meshcore gateways take no parameters")
    return ClassInfo(obj, obj.name, controller, meta, True, "Accepted", "handled by meshcore")


@attrs.frozen
class CertRef:
    """A listener ``tls.certificateRefs`` entry."""

    path: str
    group: str
    kind: str
    namespace: str
    name: str


@attrs.frozen
class Listener:
    """A Gateway listener with everything its status and route attachment need."""

    index: int
    name: str
    port: int
    protocol: str
    hostname: str
    tls_mode: str | None
    cert_refs: tuple[CertRef, ...]
    namespaces_from: str
    selector: LabelSelector | None
    #: (group, kind) of the route kinds this listener carries, as reported in status.
    supported_kinds: tuple[tuple[str, str], ...]
    accepted: tuple[bool, str, str] = (True, "Accepted", "listener accepted")
    resolved: tuple[bool, str, str] = (True, "ResolvedRefs", "all references resolved")
    conflict: tuple[str, str] | None = None
    #: The certificates of ``cert_refs`` (all of them, when the references resolve).
    certificates: tuple[Certificate, ...] = ()

    @property
    def path(self) -> str:
        """The input path of this listener."""
        return f"spec.listeners[{self.index}]"

    @property
    def serving(self) -> bool:
        """True when the listener carries traffic: accepted, unconflicted, references resolved."""
        return self.accepted[0] and self.resolved[0] and self.conflict is None

    @property
    def family(self) -> str:
        """``HTTP`` for HTTP and HTTPS (L7 tables), else the protocol."""
        return "HTTP" if self.protocol in ("HTTP", "HTTPS") else self.protocol

    def allows_kind(self, kind: str) -> bool:
        """True when routes of ``kind`` may attach."""
        return (GATEWAY_GROUP, kind) in self.supported_kinds

    def allows_namespace(self, namespace: str, gateway_namespace: str, labels: Mapping[str, str]) -> bool:
        """True when routes from ``namespace`` (with these labels) may attach."""
        if self.namespaces_from == "All":
            return True
        if self.namespaces_from == "Selector":
            return self.selector is not None and self.selector.matches(labels)
        return namespace == gateway_namespace


def _cert_refs(tls: Fields, namespace: str) -> tuple[CertRef, ...]:
    out = []
    for entry in tls.maps("certificateRefs"):
        out.append(CertRef(entry.path, entry.str("group", "") or "", entry.str("kind", "Secret") or "Secret",
                           entry.str("namespace") or namespace, entry.req_str("name")))
    return tuple(out)


def _read_listener(entry: Fields, index: int, namespace: str) -> Listener:
    name = entry.req_str("name")
    port = entry.port("port", required=True)
    assert port is not None
    raw_protocol = entry.req_str("protocol")
    protocol = raw_protocol.upper() if raw_protocol.upper() in PROTOCOLS else raw_protocol
    hostname = entry.str("hostname") or ANY
    if hostname:
        check_hostname(hostname, f"{entry.path}.hostname")
        if protocol in ("TCP", "UDP"):
            raise FieldError(f"{entry.path}.hostname", f"must not be set for protocol {protocol}",
                             GatewayCode.INVALID_VALUE)
    tls_mode = None
    certs: tuple[CertRef, ...] = ()
    if entry.has("tls"):
        if protocol in ("HTTP", "TCP", "UDP"):
            raise FieldError(f"{entry.path}.tls", f"must not be set for protocol {protocol}", GatewayCode.INVALID_VALUE)
        tls = entry.map("tls")
        tls_mode = tls.str("mode", "Terminate", choices=("Terminate", "Passthrough"))
        if protocol == "HTTPS" and tls_mode != "Terminate":
            raise FieldError(f"{tls.path}.mode", "must be Terminate for protocol HTTPS", GatewayCode.INVALID_VALUE)
        certs = _cert_refs(tls, namespace)
        if tls_mode == "Terminate" and not certs and not tls.map("options").data:
            raise FieldError(f"{tls.path}.certificateRefs", "certificateRefs or options must be set when mode "
                             "is Terminate", GatewayCode.INVALID_VALUE)
    elif protocol == "TLS":
        raise FieldError(f"{entry.path}.tls", "required for protocol TLS (with mode set)", FieldCode.MISSING)
    allowed = entry.map("allowedRoutes")
    spaces = allowed.map("namespaces")
    namespaces_from = spaces.str("from", "Same", choices=_FROM) or "Same"
    selector = None
    if namespaces_from == "Selector":
        selector = read_selector(spaces.map("selector", required=True))
    listener = Listener(index, name, port, protocol, hostname, tls_mode, certs, namespaces_from, selector, ())
    return _check_kinds(listener, allowed)


def _check_kinds(listener: Listener, allowed: Fields) -> Listener:
    native = PROTOCOL_KINDS.get(listener.protocol, ())
    kinds = allowed.maps("kinds")
    if not kinds:
        return attrs.evolve(listener, supported_kinds=tuple((GATEWAY_GROUP, k) for k in native))
    supported: list[tuple[str, str]] = []
    invalid: list[str] = []
    for entry in kinds:
        group = entry.str("group", GATEWAY_GROUP) or ""
        kind = entry.req_str("kind")
        if group == GATEWAY_GROUP and kind in native:
            if (group, kind) not in supported:
                supported.append((group, kind))
        else:
            invalid.append(f"{kind}.{group}" if group else kind)
    if invalid:
        return attrs.evolve(listener, supported_kinds=tuple(supported), resolved=(
            False, "InvalidRouteKinds",
            f"route kinds {', '.join(invalid)} are not supported on a {listener.protocol} listener"))
    return attrs.evolve(listener, supported_kinds=tuple(supported))


def _check_protocol(listener: Listener) -> Listener:
    if listener.protocol not in PROTOCOLS:
        return attrs.evolve(listener, accepted=(False, "UnsupportedProtocol",
                                                f"protocol {listener.protocol!r} is not supported "
                                                f"(supported: {', '.join(PROTOCOLS)})"))
    return listener


def _check_certs(listener: Listener, gateway_namespace: str, grants: ReferenceGrants,
                 inventory: Inventory) -> Listener:
    """Resolve the certificates of a listener terminating TLS; any reference that cannot serve closes it."""
    terminating = listener.protocol == "HTTPS" or (listener.protocol == "TLS" and listener.tls_mode == "Terminate")
    if not terminating or not listener.resolved[0]:
        return listener
    if listener.tls_mode is None:
        return attrs.evolve(listener, resolved=(False, "InvalidCertificateRef",
                                                "an HTTPS listener needs tls.certificateRefs"))
    found: list[Certificate] = []
    for ref in listener.cert_refs:
        if ref.group not in CORE_GROUPS or ref.kind != "Secret":
            return attrs.evolve(listener, resolved=(False, "InvalidCertificateRef",
                                                    f"certificate {ref.kind} {ref.name}: only Secrets are supported"))
        if not grants.allows(GATEWAY_GROUP, "Gateway", gateway_namespace, "", "Secret", ref.namespace, ref.name):
            return attrs.evolve(listener, resolved=(False, "RefNotPermitted",
                                                    f"certificate Secret {ref.namespace}/{ref.name}: no ReferenceGrant "
                                                    f"in namespace {ref.namespace} allows Gateways from namespace "
                                                    f"{gateway_namespace} to use it"))
        certificate, problem = inventory.certificate(ref.namespace, ref.name)
        if certificate is None:
            return attrs.evolve(listener, resolved=(False, "InvalidCertificateRef", f"{problem}; the listener "
                                                    "is closed (never served without TLS)"))
        found.append(certificate)
    if not found:
        return attrs.evolve(listener, resolved=(False, "InvalidCertificateRef", "tls.certificateRefs is empty: "
                                                "certificates from tls.options are not supported"))
    return attrs.evolve(listener, certificates=tuple(found))


def _mark_conflicts(listeners: list[Listener]) -> list[Listener]:
    """Mark every listener that is not distinct from another one on its port (all of them lose)."""
    by_port: dict[int, list[Listener]] = defaultdict(list)
    for listener in listeners:
        if listener.accepted[0]:
            by_port[listener.port].append(listener)
    conflicts: dict[int, tuple[str, str]] = {}
    for port, group in by_port.items():
        protocols = {entry.protocol for entry in group}
        if len(protocols) > 1:
            for entry in group:
                conflicts[entry.index] = ("ProtocolConflict", f"port {port} is used with protocols "
                                          f"{', '.join(sorted(protocols))}; one port carries one protocol")
            continue
        protocol = next(iter(protocols))
        if protocol in ("TCP", "UDP"):
            if len(group) > 1:
                for entry in group:
                    conflicts[entry.index] = ("ProtocolConflict", f"several {protocol} listeners use port {port}")
            continue
        by_host: dict[str, list[Listener]] = defaultdict(list)
        for entry in group:
            by_host[entry.hostname].append(entry)
        for host, same in by_host.items():
            if len(same) > 1:
                names = ", ".join(e.name for e in same)
                for entry in same:
                    conflicts[entry.index] = ("HostnameConflict", f"listeners {names} use port {port} with the "
                                              f"same hostname {host or '(any)'}")
    return [attrs.evolve(x, conflict=conflicts[x.index]) if x.index in conflicts else x for x in listeners]


@attrs.frozen
class GatewayInfo:
    """A Gateway of one of our classes, read and validated."""

    obj: KubeObject = attrs.field(eq=False)
    meta: Meta
    class_name: str
    listeners: tuple[Listener, ...]
    addresses: tuple[str, ...]
    #: (accepted, reason, message) of the Gateway itself.
    accepted: tuple[bool, str, str]
    #: Set when the Gateway cannot be served as a model Service (name taken or invalid).
    service_problem: str | None = None

    @property
    def namespace(self) -> str:
        """The Gateway's namespace."""
        return self.obj.namespace

    @property
    def name(self) -> str:
        """The Gateway's name."""
        return self.obj.name


def _addresses(spec: Fields) -> tuple[tuple[str, ...], tuple[bool, str, str] | None]:
    vips: list[str] = []
    for entry in spec.maps("addresses"):
        kind = entry.str("type", "IPAddress") or "IPAddress"
        value = entry.str("value") or ""
        if kind != "IPAddress":
            return (), (False, "UnsupportedAddress", f"address type {kind} is not supported (only IPAddress)")
        if not value:
            continue
        try:
            vips.append(str(ipaddress.ip_address(value)))
        except ValueError:
            raise FieldError(f"{entry.path}.value", f"{value!r} is not an IP address",
                             GatewayCode.INVALID_VALUE) from None
    return tuple(dict.fromkeys(vips)), None


def _assigned_addresses(status: Fields) -> tuple[str, ...]:
    """The IPAddress values of ``status.addresses`` (other types and non-IP values are skipped)."""
    vips: list[str] = []
    for entry in status.maps("addresses"):
        if (entry.str("type", "IPAddress") or "IPAddress") != "IPAddress":
            continue
        try:
            vips.append(str(ipaddress.ip_address(entry.str("value") or "")))
        except ValueError:
            continue  # status is written by a controller, not the user: an odd entry is not an input error
    return tuple(dict.fromkeys(vips))


#: Why a listener asked to verify client certificates is closed.
UNVERIFIED_CLIENTS = ("client certificate validation (spec.tls.frontend) is not supported yet: the listener is "
                      "closed rather than served without verifying clients")


def _validated_ports(spec: Fields) -> set[int] | None:
    """The ports whose TLS listeners ``spec.tls.frontend`` asks to verify client certificates (None: every port)."""
    frontend = spec.map("tls").map("frontend")
    if frontend.map("default").has("validation"):
        return None
    return {entry.int("port", 0) or 0 for entry in frontend.maps("perPort") if entry.map("tls").has("validation")}


def _close_unverified(listeners: list[Listener], ports: set[int] | None) -> list[Listener]:
    """Close the listeners terminating TLS on ``ports`` (None: all): meshcore cannot verify their clients."""
    out = []
    for listener in listeners:
        terminating = listener.protocol == "HTTPS" or (listener.protocol == "TLS" and listener.tls_mode == "Terminate")
        if terminating and (ports is None or listener.port in ports):
            listener = attrs.evolve(listener, accepted=(False, "UnsupportedValue", UNVERIFIED_CLIENTS))
        out.append(listener)
    return out


def read_gateway(obj: KubeObject, gateway_class: ClassInfo, grants: ReferenceGrants,
                 inventory: Inventory) -> GatewayInfo:
    """Read and validate a Gateway of one of our classes (``inventory`` holds the certificates)."""
    meta = read_meta(obj)
    spec = Fields.of(obj).map("spec", required=True)
    class_name = spec.req_str("gatewayClassName")
    entries = spec.maps("listeners", required=True)
    names: dict[str, str] = {}
    listeners = []
    for i, entry in enumerate(entries):
        listener = _read_listener(entry, i, obj.namespace)
        if listener.name in names:
            raise FieldError(f"{entry.path}.name", f"listener name {listener.name!r} is already used by "
                             f"{names[listener.name]}", GatewayCode.INVALID_VALUE)
        names[listener.name] = entry.path
        listener = _check_certs(_check_protocol(listener), obj.namespace, grants, inventory)
        listeners.append(listener)
    if not listeners:
        raise FieldError("spec.listeners", "at least one listener is required", FieldCode.MISSING)
    listeners = _close_unverified(_mark_conflicts(listeners), _validated_ports(spec))
    addresses, address_problem = _addresses(spec)
    if not addresses and address_problem is None:
        addresses = _assigned_addresses(Fields.of(obj).map("status"))
    if not gateway_class.accepted:
        accepted = (False, "Invalid", f"GatewayClass {gateway_class.name} is not accepted")
    elif address_problem is not None:
        accepted = address_problem
    elif not any(x.serving for x in listeners):
        accepted = (False, "ListenersNotValid", "no listener is valid")
    elif not all(x.serving for x in listeners):
        bad = ", ".join(x.name for x in listeners if not x.serving)
        accepted = (True, "ListenersNotValid", f"listeners {bad} are not valid; the others are accepted")
    else:
        accepted = (True, "Accepted", "all listeners are accepted")
    return GatewayInfo(obj, meta, class_name, tuple(listeners), addresses, accepted)
