"""The HTTP listeners of the node proxy's plan: route configurations from the route tables, and their checks.

An HTTP port gets a route configuration (virtual hosts from the tables' hostnames,
routes in table order, a model route with several alternative matches becomes one Envoy
route per match), the JWT and RBAC checks of what its routes reach (see :mod:`.checks`),
and its TLS terminations. Routes matching on the client split the listener into filter
chains by client address (see :mod:`.clients`); a route to consistent-hash clusters
carries their hash keys.

Gateway API semantics: a route's ``invalid_backends`` share is answered with its status
by an Envoy route placed before the route proper, with the same match and a
``runtime_fraction`` of exactly that share (requests it does not take fall through to
the forwarding route) — a weighted cluster without endpoints would answer 503, not the
500 the specification asks for.
"""

from __future__ import annotations

import attrs

from ...model import Diagnostic, DirectResponse, HttpMatch, HttpRoute, MatchKind, RouteKind, RouteTable, Severity
from .._codes import ProxyCode
from .checks import RouteChecks
from .clients import split_by_client
from .clusters import merged, weight
from .context import BuildContext, first_known
from .plan import ClusterWeight, EnvoyListener, EnvoyRoute, EnvoyRouteConfig, EnvoyVirtualHost, Origin, RouteMirror
from .ports import ProxiedPort

_INVALID_BODY = "the backend for this share of requests is invalid\n"


def http_listener(ctx: BuildContext, item: ProxiedPort, name: str) -> tuple[EnvoyListener, list[EnvoyRouteConfig]]:
    """An HTTP port's listener and its route configurations (the default one, then one per client view)."""
    tables = [t for t in item.tables if t.kind is RouteKind.L7]
    per_table = [(t, _routes(ctx, item, t, name)) for t in tables]
    # One virtual host per hostname with the routes of the tables naming it (each is
    # complete for its hostnames); tables without hostnames are the catch-all.
    def any_host(t: RouteTable) -> bool:
        return not t.hostnames or "*" in t.hostnames

    anyhost = [r for t, rs in per_table if any_host(t) for r in rs]
    by_host: dict[str, list[EnvoyRoute]] = {}
    for t, rs in per_table:
        for host in () if any_host(t) else t.hostnames:
            by_host.setdefault(host, []).extend(rs)
    groups: dict[tuple[EnvoyRoute, ...], list[str]] = {}
    for host, rs in by_host.items():
        groups.setdefault(tuple(rs), []).append(host)
    vhosts = [
        EnvoyVirtualHost(f"{name}/{hosts[0]}", tuple(hosts), routes)
        for routes, hosts in groups.items()
    ]
    if not tables:
        vhosts.append(EnvoyVirtualHost(f"{name}/*", ("*",), (_default_route(ctx, item, name),)))
    elif anyhost or not by_host:
        vhosts.append(EnvoyVirtualHost(f"{name}/*", ("*",), tuple(anyhost)))
    table_origins = tuple(
        Origin(f"route table of {t.service}:{t.port}", t.source) for t in tables
    )
    route_config = EnvoyRouteConfig(
        name, tuple(vhosts),
        table_origins + tuple(o for v in vhosts for r in v.routes for o in r.origins),
    )
    # Routes and mirrors may send to other services than the port's own: their
    # backends exempt the node proxy in the kernel, so every workload any of them may
    # reach is checked here (tokens and authorization alike).
    referenced = dict.fromkeys(
        c for v in vhosts for r in v.routes for c in (*(w.cluster for w in r.clusters), *(m.cluster for m in r.mirrors)))
    jwt, rbac = ctx.checks.listener(referenced)
    overrides: dict[frozenset[str], RouteChecks] = {}
    vhosts = [attrs.evolve(v, routes=tuple(ctx.checks.route_checks(r, rbac, jwt, overrides) for r in v.routes))
              for v in vhosts]
    # Checks are decided on all routes above, so every client view (a subset of
    # them) keeps the filters and per-route overrides its routes need.
    default, views = split_by_client(vhosts, ctx.local_clients, name, ctx.client_groups)
    route_configs = [attrs.evolve(route_config, virtual_hosts=default)]
    route_configs += [attrs.evolve(route_config, name=view.route_config, virtual_hosts=hosts)
                      for view, hosts in views]
    listener = EnvoyListener(
        name, item.service.ref, item.port.port, item.port.protocol, item.proxy_port,
        route_config=name, rbac=rbac, jwt=jwt, origins=ctx.listener_origins(item, tables)
        + tuple(o for p in (jwt.providers if jwt else ()) for o in p.origins)
        + tuple(o for f in rbac for p in f.policies for o in p.origins),
        client_views=tuple(view for view, _ in views), tls=ctx.server_tls(item),
    )
    return listener, route_configs


def _routes(ctx: BuildContext, item: ProxiedPort, table: RouteTable, listener: str) -> list[EnvoyRoute]:
    """A table's HTTP routes as Envoy routes, in table order (one per match, an invalid share first)."""
    out: list[EnvoyRoute] = []
    for i, route in enumerate(table.http):
        label = route.name or f"route-{i}"
        origin = Origin(
            f"HTTP route {i} ({route.name or 'unnamed'}) of {table.service}:{table.port}",
            first_known(route.source, table.source), _route_hints(route),
        )
        clusters = merged(
            weight(ctx.clusters.cluster(d, table.port, item.port.protocol, origin), d)
            for d in route.destinations if d.weight > 0
        )
        direct = route.direct_response
        invalid = route.invalid_backends
        if route.destinations and not clusters:
            if invalid is not None:
                direct = DirectResponse(invalid.status, _INVALID_BODY)
            else:
                ctx.warnings.append(Diagnostic(
                    ProxyCode.ZERO_WEIGHTS, Severity.WARNING,
                    f"{origin.what}: every destination has weight 0; requests get 500",
                    origin.source, "destinations",
                ))
                direct = DirectResponse(500, "no destination with a weight above 0\n")
        share = None
        if invalid is not None and clusters:
            valid = sum(c.weight for c in clusters)
            share = round(invalid.weight * 1_000_000 / (invalid.weight + valid))
        mirrors = tuple(
            RouteMirror(ctx.clusters.cluster(m.destination, table.port, item.port.protocol, origin), m.percent)
            for m in route.mirrors
        )
        for match in route.matches or (HttpMatch(),):
            if invalid is not None and share:
                # The invalid share first, matching that many requests per million; the
                # rest fall through to the same match forwarding to the valid backends,
                # which keep their relative weights.
                out.append(EnvoyRoute(
                    name=f"{listener}/{label}/invalid-backends", match=match,
                    direct_response=DirectResponse(invalid.status, _INVALID_BODY), per_million=share,
                    origins=(origin,),
                ))
            out.append(EnvoyRoute(
                name=f"{listener}/{label}", match=match, clusters=clusters, redirect=route.redirect,
                direct_response=direct, rewrite=route.rewrite, request_headers=route.request_headers,
                response_headers=route.response_headers, mirrors=mirrors, timeout_ms=route.timeout_ms,
                retries=route.retries, fault=route.fault, cors=route.cors, origins=(origin,),
                hash_policy=ctx.clusters.hash_policy(clusters, origin),
            ))
    return out


def _default_route(ctx: BuildContext, item: ProxiedPort, listener: str) -> EnvoyRoute:
    """Forward everything to the port's own backends (or its L4 weighted split)."""
    origin = Origin(f"service {item.service.ref} port {item.port.port}", item.service.source)
    clusters: tuple[ClusterWeight, ...] = ()
    for table in item.tables:
        if table.kind is RouteKind.L4 and table.tcp:
            clusters = merged(
                weight(ctx.clusters.cluster(d, table.port, item.port.protocol, origin), d)
                for d in table.tcp[0].destinations if d.weight > 0
            )
    if not clusters:
        clusters = (ClusterWeight(ctx.clusters.own_cluster(item), 1),)
    return EnvoyRoute(name=f"{listener}/default", clusters=clusters, origins=(origin,),
                      hash_policy=ctx.clusters.hash_policy(clusters, origin))


def _route_hints(route: HttpRoute) -> tuple[str, ...]:
    """Strings Envoy may quote when it rejects this route (regexes, header names, paths)."""
    hints: list[str] = []
    for m in route.matches:
        for sm in (m.path, m.authority, *(h.match for h in m.headers), *(q.match for q in m.query)):
            if sm is not None and sm.kind is MatchKind.REGEX:
                hints.append(sm.value)
    for mod in (route.request_headers, route.response_headers):
        hints.extend(name for name, _ in (*mod.set, *mod.add))
        hints.extend(mod.remove)
    if route.rewrite is not None:
        hints.extend(v for v in (route.rewrite.host, route.rewrite.path, route.rewrite.prefix) if v)
    return tuple(dict.fromkeys(h for h in hints if h))

