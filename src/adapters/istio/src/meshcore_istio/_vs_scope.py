"""Which VirtualService routes a service for the clients of each namespace, as Istio decides it.

A client sees the VirtualServices exported to its namespace (``exportTo``: ``*`` by
default, ``.`` for the VirtualService's own namespace, or namespace names). When several
name one service, Istio takes them in this order and uses the first: those private to the
client's own namespace (exported to it with ``.`` or its name, and not with ``*``), then
those exported to it by name, then those exported to every namespace — each group oldest
first. So one service may be routed by different
VirtualServices for different clients; their HTTP routes are put in one table, each
limited to the namespaces it wins (model ``ClientMatch``), followed by a route sending the
remaining clients — namespaces no VirtualService is exported to, and clients outside the
mesh — to the service as if it had none. When one VirtualService exported everywhere wins
every namespace, its routes apply to every client unchanged.

When Sidecars import only some hosts, the choice is made per Sidecar scope rather than
per namespace: a client sees only the VirtualServices its Sidecar imports.

TLS and TCP routes are limited the same way (the node proxy tells their clients apart by
address when they connect); a connection no TLS/TCP route takes goes to the service itself,
as with Istio's default filter chain.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from meshcore.kube import Report
from meshcore.model import (
    ClientMatch,
    Destination,
    HttpMatch,
    HttpRoute,
    Protocol,
    RouteKind,
    RouteTable,
    Service,
    TcpRoute,
)

from ._codes import IstioCode
from ._sidecar import Sidecars
from ._virtualservice import VirtualService, http_routes, l4_routes

def _rank(vs: VirtualService, namespace: str) -> int | None:
    """Istio's precedence of ``vs`` for clients of ``namespace`` (lower first), ``None`` when not exported there.

    Exported to every namespace (``*``, the default) is public, whatever else is listed;
    otherwise it is private to its own namespace when that is listed (``.`` or by name),
    and exported by name to the other namespaces listed.
    """
    if "*" in vs.exported:
        return 2
    if vs.obj.namespace == namespace and ("." in vs.exported or namespace in vs.exported):
        return 0
    if namespace in vs.exported:
        return 1
    return None


def _everyone_else(service: Service, port: int, claimed: Sequence[str], source_vs: VirtualService) -> HttpRoute:
    return HttpRoute(
        name=f"{service.namespace}/{service.name}.not-exported",
        matches=(HttpMatch(clients=ClientMatch(namespaces=tuple(claimed), invert=True)),),
        destinations=(Destination(service.ref, port),),
        source=source_vs.obj.source_at("spec.exportTo"),
    )


def _default_tcp(service: Service, port: int, source_vs: VirtualService) -> TcpRoute:
    """The connections no TLS/TCP route takes go to the service itself, as Istio's default filter chain sends them."""
    return TcpRoute(
        name=f"{service.namespace}/{service.name}.default",
        destinations=(Destination(service.ref, port),),
        source=source_vs.obj.source,
    )


def _host_field(vs: VirtualService, service: Service) -> str:
    index = next((i for i, h in enumerate(vs.hosts) if h in service.hostnames), None)
    return "spec.hosts" if index is None else f"spec.hosts[{index}]"


def _meet(scope: ClientMatch, own: ClientMatch | None) -> ClientMatch | None:
    """The clients of ``scope`` that ``own`` (a match's sourceNamespace/sourceLabels) also takes; ``None``: none can be."""
    if own is None:
        return scope
    namespaces = tuple(n for n in scope.namespaces if not own.namespaces or n in own.namespaces) \
        if scope.namespaces else own.namespaces
    labels = dict(scope.labels)
    for key, value in own.labels:
        if labels.setdefault(key, value) != value:
            return None
    if scope.namespaces and not namespaces:
        return None
    return ClientMatch(namespaces, labels=labels, exclude=(*scope.exclude, *own.exclude))


def _http_for(routes: Sequence[HttpRoute], scope: ClientMatch) -> list[HttpRoute]:
    out = []
    for route in routes:
        matches = tuple(attrs.evolve(m, clients=c) for m in route.matches or (HttpMatch(),)
                        if (c := _meet(scope, m.clients)) is not None)
        if matches:
            out.append(attrs.evolve(route, matches=matches))
    return out


def _tcp_for(routes: Sequence[TcpRoute], scope: ClientMatch) -> list[TcpRoute]:
    return [attrs.evolve(r, clients=c) for r in routes if (c := _meet(scope, r.clients)) is not None]


def _narrowed(picks: Sequence[tuple[ClientMatch, int | None]], index: int) -> list[ClientMatch]:
    """The client conditions of the scopes that picked ``index``; whole namespaces merged into one."""
    whole = sorted(n for m, i in picks if i == index and not m.labels and not m.exclude for n in m.namespaces)
    partial = [m for m, i in picks if i == index and (m.labels or m.exclude)]
    return ([ClientMatch(tuple(whole))] if whole else []) + partial


def mesh_tables(candidates: Sequence[VirtualService], service: Service, namespaces: Sequence[str],
                report: Report, sidecars: Sidecars | None = None) -> list[RouteTable]:
    """The route tables of ``service`` from the mesh VirtualServices naming it (oldest first), per client scope.

    A scope is a namespace's clients, or with Sidecars those taking one Sidecar: a client
    sees a VirtualService only when it is exported to its namespace and, with a Sidecar
    whose egress hosts are listed, when those import it (an egress host naming its
    namespace and one of its hosts) and the service on that port.
    """
    # Every namespace a candidate is exported to counts, even one without workloads yet.
    known = sorted({*namespaces, *(vs.obj.namespace for vs in candidates),
                    *(n for vs in candidates for n in vs.exported if n not in ("*", "."))})
    # Sidecars matter only when some import only some hosts; otherwise a scope is a namespace.
    index = sidecars if sidecars is not None and sidecars.scope_routes else Sidecars({}, {}, "")
    scopes = [(match, sidecar, ns) for ns in known for match, sidecar in index.client_scopes(ns)]
    won: set[int] = set()
    tables = []
    for port in service.ports:
        number = port.port
        if port.protocol is Protocol.UDP:
            continue
        picks: list[tuple[ClientMatch, int | None]] = []
        for match, sidecar, ns in scopes:
            ranked = [(rank, i) for i, vs in enumerate(candidates) if (rank := _rank(vs, ns)) is not None
                      and (sidecar is None or (sidecar.imports(service, number, ns)
                                               and sidecar.imports_config(vs.obj.namespace, vs.hosts, ns, number)))]
            picks.append((match, min(ranked)[1] if ranked else None))
        chosen = sorted({i for _, i in picks if i is not None})
        won.update(chosen)
        if not chosen:
            continue
        first = candidates[chosen[0]]
        everywhere = len(chosen) == 1 and all(i is not None for _, i in picks) and "*" in first.exported
        unrouted = Destination(service.ref, number)
        # Clients of whole namespaces that see no VirtualService, outside the mesh, or of a
        # namespace not known here reach the service unrouted (the last route); clients of
        # a Sidecar scope that sees none get their own route to it.
        seen = sorted({n for m, i in picks if i is not None or m.labels or m.exclude for n in m.namespaces})
        if port.protocol.is_http:
            http: list[HttpRoute] = []
            if everywhere:
                http = http_routes(first, number)
            else:
                for i in chosen:
                    for match in _narrowed(picks, i):
                        http += _http_for(http_routes(candidates[i], number), match)
                http += [HttpRoute(f"{service.namespace}/{service.name}.unrouted", (HttpMatch(clients=m),),
                                   (unrouted,), source=first.obj.source)
                         for m, i in picks if i is None and (m.labels or m.exclude)]
                if http:
                    http.append(_everyone_else(service, number, seen, first))
            if http:
                tables.append(RouteTable(service.ref, number, RouteKind.L7, http=tuple(http), source=first.obj.source))
        else:
            tcp: list[TcpRoute] = []
            if everywhere:
                tcp = l4_routes(first, number)
            else:
                for i in chosen:
                    for match in _narrowed(picks, i):
                        tcp += _tcp_for(l4_routes(candidates[i], number), match)
            # What no TLS/TCP route takes goes to the service itself (Istio's default chain).
            if tcp and (tcp[-1].sni or tcp[-1].clients):
                tcp.append(_default_tcp(service, number, first))
            if tcp:
                tables.append(RouteTable(service.ref, number, RouteKind.L4, tcp=tuple(tcp), source=first.obj.source))
    for i, vs in enumerate(candidates):
        if i not in won:
            report.warn(vs.obj, IstioCode.VS_CONFLICT, f"no client uses this VirtualService for {service.ref}: the "
                        "clients it is exported to use an older or closer one (or their Sidecar does not import it)",
                        _host_field(vs, service))
    return tables
