"""Route tables: merge attached routes per (Service, port) for the mesh and per (Gateway, port).

Gateway HTTP/HTTPS ports get one L7 table per hostname, like virtual hosts: the proxy
picks the table whose hostname matches the request's host most specifically (precise,
then the deepest wildcard, then the table without hostnames). Each table is complete for
its hostname: it holds the routes of the listener that owns that hostname (the most
specific listener matching it — listener isolation) whose hostnames cover it, the most
specific route hostname first. TLS ports (passthrough, or terminated by the node proxy
first) get one L4 table matching SNI; TCP and UDP ports one L4 table.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import attrs

from meshcore.model import ClientMatch, Destination, HttpMatch, HttpRoute, RouteKind, RouteTable, ServiceRef, TcpRoute

from ._build import Built
from ._gateway import GatewayInfo, Listener
from ._hostnames import ANY, most_specific, specificity
from ._precedence import L4Entry, L7Entry, l7_entry, ordered, ordered_l4
from ._routes import MESH_KIND_ORDER, RouteSpec


@attrs.frozen
class Placed:
    """A route attached to a table's parent: on a Service port, or on a listener with hostnames."""

    route: RouteSpec
    built: Built
    hostnames: tuple[str, ...] = (ANY,)
    #: The route hostname behind each of ``hostnames``: route precedence uses the route's own
    #: hostnames, not their intersection with the listener's.
    origins: tuple[str, ...] = (ANY,)

    def origin(self, host: str) -> str:
        """The route hostname behind one of ``hostnames``."""
        return dict(zip(self.hostnames, self.origins)).get(host, host)


def _l7_entries(placed: Placed, host: str = ANY) -> list[L7Entry]:
    return [l7_entry(model, placed.route.order_key, rule.rule.index, j, host)
            for rule in placed.built.http for j, model in enumerate(rule.routes)]


def _l4_entries(placed: Placed, sni: str = ANY, origin: str = ANY) -> list[L4Entry]:
    out = []
    for rule, tcp in placed.built.tcp:
        route = attrs.evolve(tcp, sni=(sni,)) if sni else tcp
        out.append(L4Entry(specificity(sni), 0, specificity(origin or sni), placed.route.order_key, rule.index, route))
    return out


@attrs.frozen
class MeshTables:
    """The mesh tables, and the routes that lost a Service port to a route kind of higher precedence."""

    tables: tuple[RouteTable, ...]
    #: (route ref, kind) → ports it lost, with the winning kind.
    lost: dict[tuple[str, str, str], list[tuple[int, str]]]
    #: Routes that never match because an older L4 route on the same port takes every connection.
    shadowed: tuple[tuple[RouteSpec, ServiceRef, int], ...]


def _http_for(route: HttpRoute, clients: ClientMatch | None) -> HttpRoute:
    if clients is None:
        return route
    return attrs.evolve(route, matches=tuple(attrs.evolve(m, clients=clients) for m in route.matches or (HttpMatch(),)))


def _tcp_for(route: TcpRoute, clients: ClientMatch | None) -> TcpRoute:
    return route if clients is None else attrs.evolve(route, clients=clients)


def mesh_tables(attached: dict[tuple[ServiceRef, int], list[Placed]]) -> MeshTables:
    """One table per Service port, from the routes of the winning route kind.

    Producer routes (in the Service's namespace) serve every client but those of a
    namespace with consumer routes (routes in another namespace naming the Service), which
    get their own namespace's routes instead; with consumer routes and no producer route,
    the other clients reach the Service as if it had no route.
    """
    tables = []
    lost: dict[tuple[str, str, str], list[tuple[int, str]]] = defaultdict(list)
    shadowed = []
    for (service, port), placed in sorted(attached.items()):
        kinds = {p.route.kind for p in placed}
        winner = next((k for k in MESH_KIND_ORDER if k in kinds), "UDPRoute")
        for p in placed:
            if p.route.kind != winner:
                lost[(p.route.kind, p.route.namespace, p.route.name)].append((port, winner))
        chosen = sorted((p for p in placed if p.route.kind == winner), key=lambda p: p.route.order_key)
        consumers = sorted({p.route.namespace for p in chosen if p.route.namespace != service.namespace})
        groups: list[tuple[str, ClientMatch | None]] = [(ns, ClientMatch(namespaces=(ns,))) for ns in consumers]
        groups.append((service.namespace, ClientMatch(namespaces=tuple(consumers), invert=True) if consumers else None))
        source = chosen[0].route.obj.source
        rest = Destination(service, port)
        if chosen[0].route.is_l7:
            http: list[HttpRoute] = []
            for ns, clients in groups:
                entries = [e for p in chosen if p.route.namespace == ns for e in _l7_entries(p)]
                http += [_http_for(r, clients) for r in ordered(entries)]
            if consumers and not any(p.route.namespace == service.namespace for p in chosen):
                http.append(HttpRoute(f"{service}: clients without consumer routes", destinations=(rest,),
                                      matches=(HttpMatch(clients=groups[-1][1]),), source=source))
            tables.append(RouteTable(service, port, RouteKind.L7, http=tuple(http), source=source))
        else:
            tcp: list[TcpRoute] = []
            for ns, clients in groups:
                group = [p for p in chosen if p.route.namespace == ns]
                shadowed += [(p.route, service, port) for p in group[1:]]
                entries4 = [e for p in group for e in _l4_entries(p)]
                tcp += [_tcp_for(r, clients) for r in ordered_l4(entries4)]
            if consumers and not any(p.route.namespace == service.namespace for p in chosen):
                tcp.append(TcpRoute(f"{service}: clients without consumer routes", destinations=(rest,),
                                    clients=groups[-1][1], source=source))
            tables.append(RouteTable(service, port, RouteKind.L4, tcp=tuple(tcp), source=source))
    return MeshTables(tuple(tables), dict(lost), tuple(shadowed))


def _owner(listeners: Sequence[Listener], host: str) -> Listener | None:
    best = most_specific([x.hostname for x in listeners], host)
    return next((x for x in listeners if x.hostname == best), None) if best is not None else None


def gateway_tables(gateway: GatewayInfo, placed: dict[str, list[Placed]]
                   ) -> tuple[list[RouteTable], list[tuple[RouteSpec, Listener]]]:
    """The tables of one Gateway (``placed``: routes per listener name) and the shadowed L4 routes."""
    ref = ServiceRef(gateway.namespace, gateway.name)
    serving = [x for x in gateway.listeners if x.serving]
    by_port: dict[int, list[Listener]] = defaultdict(list)
    for listener in serving:
        by_port[listener.port].append(listener)
    tables: list[RouteTable] = []
    shadowed: list[tuple[RouteSpec, Listener]] = []
    for port, listeners in sorted(by_port.items()):
        family = listeners[0].family
        source = gateway.obj.source_at(listeners[0].path)
        if family == "HTTP":
            for listener in listeners:
                attached = placed.get(listener.name, [])
                hosts = dict.fromkeys([listener.hostname, *(h for p in attached for h in p.hostnames)])
                for host in hosts:
                    if _owner(listeners, host) is not listener:
                        continue
                    entries = []
                    for p in attached:
                        best = most_specific(p.hostnames, host)
                        if best is not None:
                            entries += _l7_entries(p, p.origin(best))
                    tables.append(RouteTable(ref, port, RouteKind.L7, http=ordered(entries),
                                             hostnames=(host,) if host else (),
                                             source=gateway.obj.source_at(listener.path)))
        elif family == "TLS":
            entries4: list[L4Entry] = []
            for listener in listeners:
                for p in placed.get(listener.name, []):
                    for host in p.hostnames:
                        if _owner(listeners, host) is listener:
                            entries4 += _l4_entries(p, host, p.origin(host))
                if listener.hostname:
                    # Listener isolation: SNI names of this listener never fall through to another one.
                    refuse = TcpRoute(name=f"{ref}/{listener.name}: no matching route", sni=(listener.hostname,),
                                      source=gateway.obj.source_at(listener.path))
                    rank = specificity(listener.hostname)
                    entries4.append(L4Entry(rank, 1, rank, ((2, 0.0), "", ""), 0, refuse))
            tables.append(RouteTable(ref, port, RouteKind.L4, tcp=ordered_l4(entries4), source=source))
        else:
            chosen = sorted(placed.get(listeners[0].name, []), key=lambda p: p.route.order_key)
            shadowed += [(p.route, listeners[0]) for p in chosen[1:]]
            entries4 = [e for p in chosen for e in _l4_entries(p)]
            tables.append(RouteTable(ref, port, RouteKind.L4, tcp=ordered_l4(entries4), source=source))
    return tables, shadowed
