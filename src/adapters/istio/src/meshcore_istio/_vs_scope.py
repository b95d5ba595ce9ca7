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
per namespace (:func:`_scoped_tables`): a client sees only the VirtualServices its Sidecar
imports.

TLS and TCP routes are limited the same way (the node proxy tells their clients apart by
address when they connect); a connection no TLS/TCP route takes goes to the service itself,
as with Istio's default filter chain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

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

from ._codes import VS_CONFLICT
from ._sidecar import Sidecars
from ._virtualservice import VirtualService, http_routes, l4_routes

_R = TypeVar("_R", HttpRoute, TcpRoute)


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


def winners(candidates: Sequence[VirtualService], namespaces: Sequence[str]) -> dict[str, int]:
    """The index in ``candidates`` (oldest first) of the VirtualService each namespace's clients use; absent: none."""
    out = {}
    for ns in namespaces:
        ranked = [(rank, i) for i, vs in enumerate(candidates) if (rank := _rank(vs, ns)) is not None]
        if ranked:
            out[ns] = min(ranked)[1]
    return out


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


def _scoped_tables(candidates: Sequence[VirtualService], service: Service, known: Sequence[str],
                   sidecars: Sidecars, report: Report) -> list[RouteTable]:
    """As :func:`mesh_tables`, per Sidecar scope: a client sees a VirtualService only when its Sidecar imports it.

    A VirtualService is imported when an egress host names its namespace and one of its
    hosts, and the service itself is imported for that port; clients that see none reach
    the service unrouted, as do clients outside the mesh.
    """
    scopes = [(match, sidecar, ns) for ns in known for match, sidecar in sidecars.client_scopes(ns)]
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
        chosen = {i for _, i in picks if i is not None}
        won |= chosen
        if not chosen:
            continue
        first = candidates[min(chosen)]
        everywhere = len(chosen) == 1 and None not in {i for _, i in picks} and "*" in first.exported
        unrouted = Destination(service.ref, number)
        if port.protocol.is_http:
            http: list[HttpRoute] = []
            for match, i in picks:
                if everywhere:
                    http = http_routes(first, number)
                    break
                if i is None:
                    http.append(HttpRoute(f"{service.namespace}/{service.name}.unrouted", (HttpMatch(clients=match),),
                                          (unrouted,), source=first.obj.source))
                else:
                    http += _http_for(http_routes(candidates[i], number), match)
            if not everywhere:
                # Clients outside the mesh, and of namespaces not known here, see no VirtualService.
                http.append(HttpRoute(f"{service.namespace}/{service.name}.unrouted-elsewhere",
                                      (HttpMatch(clients=ClientMatch(namespaces=tuple(known), invert=True)),),
                                      (unrouted,), source=first.obj.source))
            tables.append(RouteTable(service.ref, number, RouteKind.L7, http=tuple(http), source=first.obj.source))
        else:
            tcp: list[TcpRoute] = []
            for match, i in picks:
                if everywhere:
                    tcp = l4_routes(first, number)
                    break
                if i is not None:
                    tcp += _tcp_for(l4_routes(candidates[i], number), match)
            if not tcp or tcp[-1].sni or tcp[-1].clients:
                tcp.append(_default_tcp(service, number, first))
            tables.append(RouteTable(service.ref, number, RouteKind.L4, tcp=tuple(tcp), source=first.obj.source))
    for i, vs in enumerate(candidates):
        if i not in won:
            report.warn(vs.obj, VS_CONFLICT, f"no client sees this VirtualService for {service.ref}: each sees an "
                        "older or closer one, or its Sidecar does not import it", _host_field(vs, service))
    return tables


def mesh_tables(candidates: Sequence[VirtualService], service: Service, namespaces: Sequence[str],
                report: Report, sidecars: Sidecars | None = None) -> list[RouteTable]:
    """The route tables of ``service`` from the mesh VirtualServices naming it (oldest first), per client namespace."""
    first = candidates[0]
    # Every namespace a candidate is exported to counts, even one without workloads yet.
    known = sorted({*namespaces, *(vs.obj.namespace for vs in candidates),
                    *(n for vs in candidates for n in vs.exported if n not in ("*", "."))})
    if sidecars is not None and sidecars.scope_routes:
        return _scoped_tables(candidates, service, known, sidecars, report)
    chosen = winners(candidates, known)
    used = [vs for i, vs in enumerate(candidates) if i in chosen.values()]
    for i, vs in enumerate(candidates[1:], 1):
        if i not in chosen.values():
            report.warn(vs.obj, VS_CONFLICT, f"VirtualService {first.obj.namespace}/{first.obj.name} is older "
                        f"and also routes {service.ref} for the clients this one is exported to; this one is "
                        "ignored for it", _host_field(vs, service))
    everywhere = len(used) == 1 and "*" in used[0].exported and len(chosen) == len(known)

    def per_client(routes_of: Callable[[VirtualService], list[_R]],
                   limit: Callable[[Sequence[_R], tuple[str, ...]], list[_R]], rest: Callable[[], _R]) -> list[_R]:
        """Each candidate's routes for the namespaces it wins, then the rest of the clients' route."""
        if everywhere:
            return routes_of(used[0])
        out: list[_R] = []
        for i, vs in enumerate(candidates):
            own = tuple(ns for ns, winner in chosen.items() if winner == i)
            if own:
                out += limit(routes_of(vs), own)
        return out + [rest()] if out else out

    claimed = sorted(chosen)
    tables = []
    for port in service.ports:
        number = port.port
        if port.protocol is Protocol.UDP:
            continue
        if port.protocol.is_http:
            http = per_client(lambda vs: http_routes(vs, number), lambda rs, own: _http_for(rs, ClientMatch(own)),
                              lambda: _everyone_else(service, number, claimed, used[0]))
            if http:
                tables.append(RouteTable(service.ref, number, RouteKind.L7, http=tuple(http),
                                         source=used[0].obj.source))
        else:
            tcp = per_client(lambda vs: l4_routes(vs, number), lambda rs, own: _tcp_for(rs, ClientMatch(own)),
                             lambda: _default_tcp(service, number, used[0]))
            if tcp and (tcp[-1].sni or tcp[-1].clients):
                tcp.append(_default_tcp(service, number, used[0]))
            if tcp:
                tables.append(RouteTable(service.ref, number, RouteKind.L4, tcp=tuple(tcp),
                                         source=used[0].obj.source))
    return tables
