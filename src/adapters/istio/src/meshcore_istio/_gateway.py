"""Istio Gateway objects: read and validated as Istio's validation does, and gateway names resolved.

A Gateway picks its workloads with ``selector`` (in any namespace, Istio's default) and
lists ``servers``: a port (number, protocol, name), the hosts it exposes
(``[namespace/]dnsName``: ``./`` is the Gateway's namespace, ``*/`` or no prefix any
namespace) and TLS settings. Each server is classified by how meshcore can serve it:
HTTP-family servers get L7 route tables, TCP-family servers L4 tables, TLS passthrough
servers L4 tables by SNI; servers needing TLS termination are recognised but not served.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from meshcore.kube import FieldCode, FieldError, Fields, KubeObject

from ._codes import IstioCode

#: The name of the mesh "gateway": every sidecar (here: every client of the mesh).
MESH = "mesh"

#: Server protocols Istio accepts (compared upper-case) and the kind of table each needs.
PROTOCOL_FAMILIES: Mapping[str, str] = {
    "HTTP": "HTTP", "HTTP2": "HTTP", "GRPC": "HTTP", "GRPC-WEB": "HTTP",
    "HTTPS": "TLS", "TLS": "TLS",
    "TCP": "TCP", "MONGO": "TCP", "REDIS": "TCP", "MYSQL": "TCP",
    "UDP": "", "HTTP_PROXY": "",
}
_TLS_MODES = ("PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS = re.compile(r"^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]{0,251}[A-Za-z0-9])?$|^\*$")


def gateway_key(name: str, namespace: str) -> str:
    """A VirtualService's gateway reference as ``namespace/name`` (or ``mesh``), resolved as Istio does.

    ``ns/name`` is kept (``./name`` is the VirtualService's namespace); the legacy
    ``name.ns.svc.cluster.local`` form names ``ns/name``; a short name is in ``namespace``.
    """
    if name == MESH:
        return MESH
    if "/" in name:
        ns, _, gw = name.partition("/")
        return f"{namespace if ns in ('', '.') else ns}/{gw}"
    if "." in name:
        gw, ns = name.split(".")[:2]
        return f"{ns}/{gw}"
    return f"{namespace}/{name}"


@attrs.frozen
class ServerHost:
    """One ``hosts`` entry of a server: which namespaces' VirtualServices may bind, and the DNS name."""

    #: ``*`` any namespace, else the one namespace whose VirtualServices may bind.
    namespace: str
    dns: str

    def admits(self, namespace: str) -> bool:
        """True when VirtualServices of ``namespace`` may bind to this host."""
        return self.namespace in ("*", namespace)


@attrs.frozen
class Server:
    """One server of a Gateway, read and validated."""

    index: int
    number: int
    protocol: str
    name: str
    hosts: tuple[ServerHost, ...]
    tls_mode: str | None
    https_redirect: bool
    #: ``tls.credentialName``: the Secret (in the gateway Service's namespace) to terminate with.
    credential: str = ""

    @property
    def path(self) -> str:
        """The input path of this server."""
        return f"spec.servers[{self.index}]"

    @property
    def family(self) -> str:
        """``HTTP`` (L7 tables), ``TCP`` (L4), ``TLS`` (L4 by SNI, passthrough) or ``""`` (not served)."""
        family = PROTOCOL_FAMILIES[self.protocol]
        if self.terminates:
            return "HTTP"
        if family == "TLS":
            return "TLS" if self.tls_mode == "PASSTHROUGH" else ""
        return family

    @property
    def terminates(self) -> bool:
        """True for an HTTPS server the node proxy terminates with its ``credentialName`` certificate."""
        return self.protocol == "HTTPS" and self.tls_mode == "SIMPLE" and bool(self.credential)

    def unserved_reason(self) -> str | None:
        """Why meshcore cannot serve this server, or ``None`` when it can."""
        if self.protocol in ("UDP", "HTTP_PROXY"):
            return f"protocol {self.protocol} is not supported on gateways"
        if PROTOCOL_FAMILIES[self.protocol] == "TLS" and self.tls_mode != "PASSTHROUGH":
            if self.tls_mode == "AUTO_PASSTHROUGH":
                return "TLS mode AUTO_PASSTHROUGH (routing by cluster names in SNI) is not supported"
            if self.terminates:
                return None
            if self.tls_mode == "SIMPLE" and self.protocol == "HTTPS":
                return ("TLS termination needs tls.credentialName (certificates from files on the gateway are not "
                        "supported), so the server is not served (never in clear text)")
            return (f"TLS termination (mode {self.tls_mode} on a {self.protocol} server) is not supported, so the "
                    "server is not served (never in clear text)")
        return None

    @property
    def dns_names(self) -> tuple[str, ...]:
        """The DNS names of its hosts, without namespaces, deduplicated."""
        return tuple(dict.fromkeys(h.dns for h in self.hosts))


@attrs.frozen
class Gateway:
    """An Istio Gateway, read and validated."""

    obj: KubeObject = attrs.field(eq=False)
    selector: tuple[tuple[str, str], ...]
    servers: tuple[Server, ...]

    @property
    def key(self) -> str:
        """``namespace/name``, as VirtualServices name it."""
        return f"{self.obj.namespace}/{self.obj.name}"


def _host(raw: str, path: str, gateway_namespace: str) -> ServerHost:
    ns, slash, dns = raw.rpartition("/")
    if not slash:
        ns = "*"
    elif ns == ".":
        ns = gateway_namespace
    elif ns != "*" and not _LABEL.match(ns):
        raise FieldError(path, f"{raw!r}: the namespace part must be '*', '.' or a namespace name",
                         IstioCode.INVALID_VALUE)
    if not _DNS.match(dns):
        raise FieldError(path, f"{raw!r}: the host must be a DNS name, '*.' + DNS name or '*' (with an "
                         "optional namespace/ prefix)", IstioCode.INVALID_VALUE)
    return ServerHost(ns, dns.lower())


def _server(entry: Fields, index: int, namespace: str) -> Server:
    port = entry.map("port", required=True)
    number = port.int("number", required=True, minimum=1, maximum=65535)
    assert number is not None
    raw_protocol = port.req_str("protocol")
    protocol = raw_protocol.upper()
    if protocol not in PROTOCOL_FAMILIES:
        raise FieldError(f"{port.path}.protocol", f"invalid protocol {raw_protocol!r}; Istio accepts "
                         f"{', '.join(p for p in PROTOCOL_FAMILIES if p not in ('UDP', 'HTTP_PROXY'))}",
                         IstioCode.SERVER_PROTOCOL)
    name = port.str("name", "") or ""
    if not name:
        raise FieldError(f"{port.path}.name", "port name must be set", FieldCode.MISSING)
    raw_hosts = entry.strs("hosts")
    if not raw_hosts:
        raise FieldError(f"{entry.path}.hosts", "a server must have at least one host", IstioCode.INVALID_VALUE)
    hosts = tuple(_host(h, f"{entry.path}.hosts[{i}]", namespace) for i, h in enumerate(raw_hosts))
    tls = entry.map("tls")
    redirect = tls.bool("httpsRedirect")
    mode: str | None = None
    is_tls = PROTOCOL_FAMILIES[protocol] == "TLS"
    if is_tls:
        if not entry.has("tls"):
            raise FieldError(f"{entry.path}.tls", f"a {protocol} server must have TLS settings", FieldCode.MISSING)
        mode = tls.str("mode", "PASSTHROUGH", choices=_TLS_MODES)
    elif entry.has("tls"):
        # As Istio's validateServer: a plain-text HTTP server may carry httpsRedirect and a
        # passthrough mode (the default) without certificates; other servers no TLS at all.
        if PROTOCOL_FAMILIES[protocol] == "HTTP" or protocol == "HTTP_PROXY":
            plain_mode = tls.str("mode", "PASSTHROUGH", choices=_TLS_MODES) in ("PASSTHROUGH", "AUTO_PASSTHROUGH")
            certs = [k for k in ("caCertificates", "privateKey", "serverCertificate") if tls.str(k)]
            if not plain_mode or certs:
                raise FieldError(f"{entry.path}.tls", f"server cannot have TLS settings for plain text HTTP ports "
                                 f"(a {protocol} server may set only httpsRedirect; use protocol HTTPS or TLS)",
                                 IstioCode.INVALID_COMBINATION)
        else:
            raise FieldError(f"{entry.path}.tls", f"server cannot have TLS settings for non HTTPS/TLS ports "
                             f"({protocol})", IstioCode.INVALID_COMBINATION)
    return Server(index, number, protocol, name, hosts, mode, redirect, tls.str("credentialName", "") or "")


def read_gateway(obj: KubeObject) -> Gateway:
    """Read and validate one Gateway (an invalid server rejects the whole object, as Istio's validation does)."""
    spec = Fields.of(obj).map("spec", required=True)
    entries = spec.maps("servers")
    if not entries:
        raise FieldError("spec.servers", "a Gateway must have at least one server", FieldCode.MISSING)
    servers = []
    names: dict[str, str] = {}
    for i, entry in enumerate(entries):
        server = _server(entry, i, obj.namespace)
        if server.name in names:
            raise FieldError(f"{entry.path}.port.name", f"port name {server.name!r} is already used by "
                             f"{names[server.name]}; port names must be unique", IstioCode.INVALID_VALUE)
        names[server.name] = entry.path
        servers.append(server)
    selector = tuple(sorted(spec.str_map("selector").items()))
    return Gateway(obj, selector, tuple(servers))
