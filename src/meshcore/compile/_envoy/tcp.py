"""The TCP listeners of the node proxy's plan: one filter chain per server name and group of clients.

TLS-by-SNI and refusing tables become L4 filter chains, each with the network RBAC of
what its clusters reach and the client prefixes it admits on accept; a port with TLS
terminations gets them on the chains of the server names they cover. A TCP route's
``invalid_weight`` is a weighted cluster ``<ns>/<svc>:<port>/invalid-backends`` without
endpoints: the TCP proxy closes those connections at once (the socket-level balancer
has no way to refuse a share).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ...model import RouteKind
from .clients import client_sources
from .clusters import merged, weight
from .context import BuildContext, first_known
from .plan import ClusterWeight, EnvoyListener, Origin, ServerTls, TcpChain
from .ports import ProxiedPort
from .sources import SourceSet
from .tcp_checks import serves_tcp


def is_tcp(item: ProxiedPort) -> bool:
    """An L4 listener: TLS-by-SNI or refusing tables and no L7 table (HTTP attributes need HTTP)."""
    return serves_tcp(item.port, item.tables)



def tcp_listener(ctx: BuildContext, item: ProxiedPort, name: str) -> EnvoyListener:
    """A TCP port's listener: its chains by server name and client, TLS terminations split out."""
    chains: list[TcpChain] = []
    names_used: set[str] = set()
    tables = [t for t in item.tables if t.kind is RouteKind.L4]
    # Envoy picks a chain by server name first (an exact name, then a wildcard one, then
    # the chains without names) and never falls back to another name once one matches.
    # So every name the listener serves gets its own chains, made by walking the routes
    # that can take a connection with that name in table order — those naming it
    # (exactly or by wildcard) and those without names — and "" (no name, or one no
    # chain names) those without names. First match wins per name: the clients earlier
    # routes took for a name are not a later route's, a name taken for every client is
    # unreachable, and the chains of one name never share a client address (Envoy
    # refuses chains with identical matches).
    servers = sorted({s for t in tables for r in t.tcp for s in r.sni})
    claimed: dict[str, SourceSet] = {}
    for table in tables:
        for i, route in enumerate(table.tcp):
            origin = Origin(f"TCP route {i} ({route.name or 'unnamed'}) of {table.service}:{table.port}",
                            first_known(route.source, table.source), route.sni)
            wanted = client_sources(route.clients, ctx.local_clients)
            # Names whose remaining clients are the same share one chain.
            by_rest: dict[tuple[SourceSet, bool], list[str]] = {}
            for server in (*servers, ""):
                if not _takes_server(route.sni, server):
                    continue
                before = claimed.get(server, SourceSet())
                rest = wanted - before
                if rest.cidrs():
                    by_rest.setdefault((rest, server == ""), []).append(server)
                claimed[server] = before | wanted
            if not by_rest:
                continue
            weights = [
                weight(ctx.clusters.cluster(d, table.port, item.port.protocol, origin), d)
                for d in route.destinations if d.weight > 0
            ]
            if route.invalid_weight or not weights:
                # A share of the connections (or, without destinations, all of them) is
                # refused: a cluster without endpoints closes them at once. A route that
                # refuses still takes its connections, so it needs its chain.
                weights.append(ClusterWeight(ctx.clusters.refusing_cluster(table, item, origin), route.invalid_weight or 1))
            clusters = merged(weights)
            rbac = ctx.checks.chain_rbac(clusters)
            admitted = ctx.checks.chain_sources(rbac, origin)
            label = route.name or f"route-{i}"
            for n, ((rest, _), names) in enumerate(by_rest.items()):
                sources = admitted
                if not rest.is_everyone:
                    allowed = rest if admitted is None else rest & SourceSet.of(admitted)
                    if not allowed.cidrs():
                        continue  # none of its clients is admitted: they match no chain, and are closed
                    sources = allowed.cidrs()
                chain_name = f"{name}/{label}" + (f"/{n}" if len(by_rest) > 1 else "")
                if chain_name in names_used:
                    chain_name = f"{chain_name}#{len(chains)}"
                names_used.add(chain_name)
                chains.append(TcpChain(chain_name, tuple(s for s in names if s), clusters, (origin,),
                                       ctx.clusters.hashes_source_ip(clusters, origin), rbac, sources))
    terminations = ctx.server_tls(item)
    if terminations:
        chains = [c for chain in chains for c in _terminated(chain, terminations)]
    if not tables:
        # Proxied for its traffic policy alone: every connection goes to the port's own backends.
        clusters = (ClusterWeight(ctx.clusters.own_cluster(item), 1),)
        own = Origin(f"service {item.service.ref} port {item.port.port}", item.service.source)
        rbac = ctx.checks.chain_rbac(clusters)
        chains.append(TcpChain(f"{name}/default", (), clusters, (own,), ctx.clusters.hashes_source_ip(clusters, own),
                               rbac, ctx.checks.chain_sources(rbac, own)))
    return EnvoyListener(
        name, item.service.ref, item.port.port, item.port.protocol, item.proxy_port,
        tcp=tuple(chains), origins=ctx.listener_origins(item, tables)
        + tuple(o for c in chains for f in c.rbac for p in f.policies for o in p.origins),
    )



def _terminating(terminations: Sequence[ServerTls], server: str) -> ServerTls | None:
    """The termination taking connections for ``server`` ("": no name): by exact name, then wildcard, then any."""
    named = [t for t in terminations if server and server in t.server_names]
    wild = [t for t in terminations if server and any(
        n.startswith("*.") and server.endswith(n[1:]) for n in t.server_names)]
    anyname = [t for t in terminations if not t.server_names]
    return next(iter(named or wild or anyname), None)



def _terminated(chain: TcpChain, terminations: Sequence[ServerTls]) -> list[TcpChain]:
    """``chain`` split by the termination each of its server names falls under (names none takes pass through)."""
    groups: dict[ServerTls | None, list[str]] = {}
    for server in chain.sni or ("",):
        groups.setdefault(_terminating(terminations, server), []).append(server)
    if len(groups) == 1:
        return [attrs.evolve(chain, tls=next(iter(groups)))]
    return [attrs.evolve(chain, name=f"{chain.name}/{i}", sni=tuple(n for n in names if n), tls=tls)
            for i, (tls, names) in enumerate(groups.items())]



def _takes_server(sni: Sequence[str], server: str) -> bool:
    """True when a route for server names ``sni`` (none: any connection) can take a connection for ``server``.

    ``server`` "" stands for connections without a name, or with one no chain names.
    """
    if not sni:
        return True
    if not server:
        return False
    return any(p == server or (p.startswith("*.") and server.endswith(p[1:])) for p in sni)

