"""Istio Gateways served on the Kubernetes Services that expose their workloads.

There are no gateway proxies: a Gateway is served where its workloads are reached. The
Services whose backends include a workload its ``selector`` picks (in any namespace) are
its frontends; a server is served on the ports of those Services whose number is the
server's port number (istiod listens on their target port) or, when none is, whose target
port on the gateway workloads is. An HTTP-family server gives that port
one L7 route table per hostname (server hosts ∩ hosts of the VirtualServices bound to
the Gateway, VirtualServices merged oldest first, their rules translated exactly as on
the mesh), so the node Envoy serves them as virtual hosts and answers 404 for other
hosts; TCP servers give an L4 table of the ``tcp`` rules, TLS passthrough servers an L4
table of the ``tls`` rules by SNI. An HTTPS server in mode SIMPLE terminates TLS with
the certificate of its ``credentialName`` Secret, looked up in the namespace of the
Service exposing the gateway workloads (where Istio's gateway deployment reads it), and
is then served as an HTTP server; when that Secret cannot serve, the server is not
served on that Service. Without workloads or a Service there is no address: the Gateway
is reported and not served.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from meshcore.kube import FieldError, Inventory, KubeObject, Report, field_diagnostic
from meshcore.model import (
    Certificate,
    DirectResponse,
    HttpRoute,
    ModelError,
    Protocol,
    Redirect,
    RouteKind,
    RouteTable,
    Service,
    ServicePort,
    ServiceRef,
    Source,
    TcpRoute,
    TlsTermination,
    Workload,
)

from ._codes import IstioCode
from ._common import age_key, host_matches, visible
from ._gateway import MESH, Gateway, Server, ServerHost, read_gateway
from ._virtualservice import VirtualService, http_routes, l4_routes

#: The status Envoy answers when no route matches; used for servers nothing is bound to.
NO_ROUTE_STATUS = 404


def intersect(server_host: str, vs_host: str) -> str | None:
    """The more specific of two host names when one covers the other (``None`` when disjoint)."""
    a, b = server_host.lower(), vs_host.lower()
    if host_matches(a, b):
        return b
    if host_matches(b, a):
        return a
    return None


def binds(host: ServerHost, vs: VirtualService, vs_host: str) -> str | None:
    """The hostname ``vs_host`` of ``vs`` is served under on ``host`` of a server, or ``None``."""
    if not host.admits(vs.obj.namespace):
        return None
    return intersect(host.dns, vs_host)


def _selector_text(gw: Gateway) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in gw.selector) + "}"


@attrs.frozen
class Frontend:
    """A Service port that reaches the gateway workloads on ``target`` (a server port number)."""

    service: Service
    port: ServicePort
    target: int


def frontends(gw: Gateway, workloads: Iterable[Workload], services: Iterable[Service],
              report: Report) -> list[Frontend]:
    """The Service ports exposing the workloads ``gw`` selects (reporting when there are none)."""
    if not gw.selector:
        report.warn(gw.obj, IstioCode.NOT_SUPPORTED, "a Gateway without selector applies to every workload; meshcore "
                    "serves a Gateway on the Services of the workloads it selects, so this one is not served",
                    "spec")
        return []
    selector = dict(gw.selector)
    selected = {w.ref for w in workloads if w.labels.matches(selector)}
    if not selected:
        report.warn(gw.obj, IstioCode.GATEWAY_NO_WORKLOAD, f"spec.selector {_selector_text(gw)} matches no workload in "
                    "any namespace: the Gateway applies nowhere", "spec.selector")
        return []
    out = []
    for service in services:
        if not service.vips:
            continue
        for port in service.ports:
            if port.protocol is Protocol.UDP:
                continue
            targets = sorted({b.port for b in port.backends if b.workload in selected})
            out += [Frontend(service, port, t) for t in targets]
    if not out:
        report.warn(gw.obj, IstioCode.GATEWAY_NO_SERVICE, f"no Service exposes the workloads selected by spec.selector "
                    f"{_selector_text(gw)}: without an address the Gateway is not served (expose them with a "
                    "Service, e.g. a LoadBalancer like istio-ingressgateway)", "spec.selector")
    return out


def serving_ports(fronts: Sequence[Frontend], number: int) -> list[Frontend]:
    """The frontend ports a server on port ``number`` is reached through, one per Service port.

    As istiod does, a number that is a port of a gateway Service means that Service port
    (its listener is on the target port); otherwise the number is the workloads' own port,
    reached through the Service ports targeting it.
    """
    chosen = [f for f in fronts if f.port.port == number] or [f for f in fronts if f.target == number]
    return list({(f.service.ref, f.port.port): f for f in chosen}.values())


@attrs.define
class _Port:
    """What the servers placed on one frontend Service port so far."""

    service: ServiceRef
    port: int
    family: str
    owner: str
    source: Source
    #: Server host name → the Gateway that claimed it on this port.
    claimed: dict[str, str] = attrs.field(factory=dict)
    #: Hostname → routes (L7), in binding order.
    http: dict[str, list[HttpRoute]] = attrs.field(factory=dict)
    tcp: list[TcpRoute] = attrs.field(factory=list)
    #: (hostname or "", VirtualService) pairs already placed, so a VirtualService is merged once per host.
    placed: set[tuple[str, int]] = attrs.field(factory=set)

    def tables(self) -> list[RouteTable]:
        """The route tables of this port (a 404 or refusing table when nothing is bound)."""
        if self.family == "HTTP":
            if not self.http:
                hosts = tuple(self.claimed)
                refuse = HttpRoute(name=f"Gateway {self.owner}: no VirtualService bound",
                                   direct_response=DirectResponse(NO_ROUTE_STATUS), source=self.source)
                return [RouteTable(self.service, self.port, RouteKind.L7, http=(refuse,), hostnames=hosts,
                                   source=self.source)]
            return [RouteTable(self.service, self.port, RouteKind.L7, http=tuple(routes) or (
                HttpRoute(name=f"Gateway {self.owner}: no route", direct_response=DirectResponse(NO_ROUTE_STATUS),
                          source=self.source),), hostnames=(host,), source=self.source)
                for host, routes in self.http.items()]
        routes = self.tcp or [TcpRoute(name=f"Gateway {self.owner}: no VirtualService bound", source=self.source)]
        return [RouteTable(self.service, self.port, RouteKind.L4, tcp=tuple(routes), source=self.source)]


class GatewayTables:
    """Builds the route tables of every served Gateway, oldest Gateway first."""

    def __init__(self, virtual_services: Sequence[VirtualService], report: Report) -> None:
        self.virtual_services = virtual_services
        self.report = report
        self.ports: dict[tuple[ServiceRef, int], _Port] = {}

    def bound(self, gw: Gateway) -> list[VirtualService]:
        """VirtualServices bound to ``gw`` and exported to its namespace, oldest first."""
        return [vs for vs in self.virtual_services
                if (gw.key in vs.gateways or any(gw.key in m.gateways for r in vs.http for m in r.matches)
                    or any(gw.key in m[2] for r in (*vs.tls, *vs.tcp) for m in r.matches))
                and visible(vs.exported, vs.obj.namespace, gw.obj.namespace)]

    def add(self, gw: Gateway, server: Server, front: Frontend) -> None:
        """Place ``server`` of ``gw`` on the frontend port ``front``."""
        key = (front.service.ref, front.port.port)
        where = f"port {front.port.port} of Service {front.service.ref}"
        state = self.ports.get(key)
        if state is None:
            state = self.ports[key] = _Port(front.service.ref, front.port.port, server.family, gw.key,
                                            gw.obj.source_at(server.path))
        if state.family != server.family:
            self.report.warn(gw.obj, IstioCode.GATEWAY_CONFLICT, f"{where} already serves {state.family} for Gateway "
                             f"{state.owner}; this {server.protocol} server cannot share it and is not served there",
                             f"{server.path}.port.protocol")
            return
        if server.family == "TCP" and state.owner != gw.key:
            self.report.warn(gw.obj, IstioCode.GATEWAY_CONFLICT, f"Gateway {state.owner} is older and also serves TCP "
                             f"on {where}; this server is not served there", f"{server.path}.port")
            return
        hosts = []
        for j, host in enumerate(server.hosts):
            owner = state.claimed.get(host.dns)
            if owner is not None and owner != gw.key:
                self.report.warn(gw.obj, IstioCode.GATEWAY_CONFLICT, f"Gateway {owner} is older and also serves host "
                                 f"{host.dns} on {where}; this server is ignored for that host",
                                 f"{server.path}.hosts[{j}]")
                continue
            state.claimed[host.dns] = gw.key
            hosts.append(host)
        if hosts:
            self._routes(gw, server, hosts, state)

    def _routes(self, gw: Gateway, server: Server, hosts: list[ServerHost], state: _Port) -> None:
        if server.family == "HTTP" and server.https_redirect:
            redirect = HttpRoute(name=f"Gateway {gw.key} server {server.name}: httpsRedirect",
                                 redirect=Redirect(scheme="https", status=301), source=gw.obj.source_at(server.path))
            for host in dict.fromkeys(h.dns for h in hosts):
                state.http.setdefault(host, [redirect])
            return
        for vs in self.bound(gw):
            label = f"Gateway {gw.key}: {vs.obj.namespace}/{vs.obj.name}"
            names = [n for vh in vs.hosts for h in hosts if (n := binds(h, vs, vh)) is not None]
            if not names:
                continue
            if server.family == "HTTP":
                routes = http_routes(vs, server.number, gw.key, label)
                for name in dict.fromkeys(names):
                    if (name, id(vs)) not in state.placed:
                        state.placed.add((name, id(vs)))
                        state.http.setdefault(name, []).extend(routes)
            elif ("", id(vs)) not in state.placed:
                state.placed.add(("", id(vs)))
                if server.family == "TCP":
                    state.tcp += l4_routes(vs, server.number, gw.key, label, tls=False)
                    continue
                for route in l4_routes(vs, server.number, gw.key, label, tcp=False):
                    # SNI names outside the server's hosts never reach this server.
                    sni = tuple(dict.fromkeys(n for s in route.sni for h in hosts if (n := binds(h, vs, s))))
                    if sni:
                        state.tcp.append(attrs.evolve(route, sni=sni))

    def tables(self) -> list[RouteTable]:
        """Every table built, by Service port."""
        return [t for _, state in sorted(self.ports.items()) for t in state.tables()]


def check_bindings(vs: VirtualService, gateways: dict[str, Gateway], report: Report) -> None:
    """Report hosts of ``vs`` that no server of a Gateway it binds to serves (istioctl's IST0132)."""
    for i, key in enumerate(vs.gateways):
        gw = gateways.get(key)
        if key == MESH or gw is None:
            continue
        if not visible(vs.exported, vs.obj.namespace, gw.obj.namespace):
            report.warn(vs.obj, IstioCode.VS_GATEWAY_HOST, f"this VirtualService is not exported to namespace "
                        f"{gw.obj.namespace} of Gateway {key}: nothing is routed through it", f"spec.gateways[{i}]")
            continue
        missing = [h for h in vs.hosts
                   if not any(binds(sh, vs, h) for s in gw.servers for sh in s.hosts)]
        if missing:
            report.warn(vs.obj, IstioCode.VS_GATEWAY_HOST,
                        f"host{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                        f"match{'' if len(missing) > 1 else 'es'} no server host of Gateway {key} (for VirtualServices "
                        f"of namespace {vs.obj.namespace}): nothing is routed for "
                        f"{'them' if len(missing) > 1 else 'it'} through that Gateway", f"spec.gateways[{i}]")


def _read(obj: KubeObject, report: Report) -> Gateway | None:
    try:
        return read_gateway(obj)
    except (FieldError, ModelError) as exc:
        report.items.append(field_diagnostic(obj, exc))
        return None


@attrs.frozen
class ServedGateways:
    """What serving the Gateways gives: route tables, and TLS terminations with their certificates."""

    tables: tuple[RouteTable, ...]
    terminations: tuple[TlsTermination, ...] = ()
    certificates: tuple[Certificate, ...] = ()


def _termination(gw: Gateway, server: Server, front: Frontend, inventory: Inventory,
                 report: Report) -> tuple[TlsTermination, Certificate] | None:
    """The TLS termination of an HTTPS server on one gateway Service port, or ``None`` (reported) when its
    certificate cannot serve."""
    namespace = front.service.namespace
    certificate, problem = inventory.certificate(namespace, server.credential)
    if certificate is None:
        report.warn(gw.obj, IstioCode.CREDENTIAL, f"server {server.name}: {problem}; the server is not served on port "
                    f"{front.port.port} of Service {front.service.ref} (never in clear text)",
                    f"{server.path}.tls.credentialName")
        return None
    names = server.dns_names
    hosts = () if "*" in names else names
    return TlsTermination(front.service.ref, front.port.port, hosts, (certificate.ref,),
                          source=gw.obj.source_at(f"{server.path}.tls")), certificate


def serve_gateways(objects: Sequence[KubeObject], virtual_services: Sequence[VirtualService], inventory: Inventory,
                   workloads: Sequence[Workload], report: Report) -> ServedGateways:
    """The route tables of every Gateway on the Service ports exposing its workloads (see the module documentation)."""
    gateways = [g for obj in sorted(objects, key=age_key) if (g := _read(obj, report)) is not None]
    builder = GatewayTables(virtual_services, report)
    terminations: dict[Any, TlsTermination] = {}
    certificates: list[Certificate] = []
    every_workload = (*inventory.workloads, *workloads)
    for gw in gateways:
        fronts = frontends(gw, every_workload, inventory.services, report)
        for server in gw.servers:
            reason = server.unserved_reason()
            if reason is not None:
                report.warn(gw.obj, IstioCode.NOT_SUPPORTED, f"server {server.name} (port {server.number}): {reason}",
                            server.path)
                continue
            mine = serving_ports(fronts, server.number)
            if fronts and not mine:
                names = ", ".join(dict.fromkeys(str(f.service.ref) for f in fronts))
                report.warn(gw.obj, IstioCode.GATEWAY_NO_SERVICE,
                            f"server {server.name}: no port of Service {names} is or targets port {server.number} of "
                            "the gateway workloads, so the server has no address and is not "
                            "served", f"{server.path}.port.number")
            for front in mine:
                if server.terminates:
                    found = _termination(gw, server, front, inventory, report)
                    if found is None:
                        continue
                    terminations.setdefault(found[0].key, found[0])
                    certificates.append(found[1])
                builder.add(gw, server, front)
    by_key = {g.key: g for g in gateways}
    for vs in virtual_services:
        check_bindings(vs, by_key, report)
    return ServedGateways(tuple(builder.tables()), tuple(terminations.values()), tuple(certificates))
