"""Model route tables and policies → the EnvoyPlan for the ports handed to the node proxy.

One listener per proxied (service, port) on the port compile allocated; HTTP ports get a
route configuration (virtual hosts from the tables' hostnames, routes in table order, a
model route with several alternative matches becomes one Envoy route per match), a JWT
filter when request authentications select a workload any route or mirror sends to, and
RBAC filters for all of those workloads and the clients' egress policies (see
:mod:`.rbac`, :mod:`.egress`) — each forwarding route narrows both to what it
reaches (``EnvoyRoute.rbac`` / ``jwt``), the listener's are the fallback; routes matching on the client split the listener into
filter chains by client address (see :mod:`.clients`); TLS-by-SNI tables become L4 filter chains.
A port with TLS terminations gets them on its listener (HTTP) or on the chains of the
server names they cover (L4), with their certificates as SDS secrets ``tls/<ns>/<secret>``.
Every destination becomes an EDS
cluster ``<ns>/<svc>:<port>`` (``/<subset>`` for subsets) whose endpoints are the
service port's active backends, with the traffic policy in force for that port and
subset (load balancing, circuit breakers, outlier detection, upstream TLS); a route to
consistent-hash clusters carries their hash keys.

Gateway API semantics: a route's ``invalid_backends`` share is answered with its
status by an Envoy route placed before the route proper, with the same match and a
``runtime_fraction`` of exactly that share (requests it does not take fall through to
the forwarding route) — a weighted cluster without endpoints would answer 503, not the
500 the specification asks for. A TCP route's ``invalid_weight`` is a weighted cluster
``<ns>/<svc>:<port>/invalid-backends`` without endpoints: the TCP proxy closes those
connections at once (the socket-level balancer has no way to refuse a share).

Diagnostics are :class:`ProxyCode` warnings: a missing destination, all weights 0, mixed
hash keys, a TCP chain whose authorization does not reduce to client addresses; see
:mod:`.rbac` for the policy ones and :mod:`.raw` for raw configs.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Iterable, Sequence

import attrs

from ...model import (
    Backend,
    BackendState,
    Destination,
    Diagnostic,
    DirectResponse,
    HashKey,
    HashKeyKind,
    HttpMatch,
    HttpRoute,
    MatchKind,
    Protocol,
    Resolution,
    RouteKind,
    RouteTable,
    Service,
    ServicePort,
    ServiceRef,
    Severity,
    Snapshot,
    Source,
    Workload,
)
from .._codes import ProxyCode
from .plan import (
    ClusterWeight,
    Discovery,
    EnvoyCluster,
    EnvoyRbac,
    EnvoyEndpoint,
    EnvoyJwt,
    EnvoyListener,
    EnvoyPlan,
    EnvoyRoute,
    EnvoyRouteConfig,
    EnvoySecret,
    EnvoyVirtualHost,
    Origin,
    RawResource,
    RbacPolicy,
    RouteMirror,
    ServerTls,
    TcpChain,
    cluster_name,
    secret_name,
)

#: The subset name of a TCP route's cluster without endpoints (its share of connections is refused).
REFUSED_SUBSET = "invalid-backends"
_INVALID_BODY = "the backend for this share of requests is invalid\n"
from .clients import ClientGroups, client_sources, split_by_client
from .raw import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, RawPart, ServiceCluster, drop_collisions
from .egress import EgressIndex
from .jwt import listener_jwt, route_jwt
from .rbac import ChainEndpoint, RbacIndex, listener_rbac, tcp_chain_rbac
from .tcp_checks import serves_tcp
from .sources import NotASourceSet, SourceSet, admitted_sources
from .._plan import Decision


#: A route's RBAC filters and JWT provider names where they differ from its listener's.
_RouteChecks = tuple["tuple[EnvoyRbac, ...] | None", "tuple[str, ...] | None"]


@attrs.frozen
class ProxiedPort:
    """A service port compile hands to the node proxy, with its tables and listener port."""

    service: Service
    port: ServicePort
    proxy_port: int
    tables: tuple[RouteTable, ...]
    decision: Decision


def _merged(weights: Iterable[ClusterWeight]) -> tuple[ClusterWeight, ...]:
    """Weights per cluster and header changes, first appearance order (destinations may share a cluster)."""
    total: dict[ClusterWeight, int] = {}
    for w in weights:
        key = attrs.evolve(w, weight=0)
        total[key] = total.get(key, 0) + w.weight
    return tuple(attrs.evolve(key, weight=weight) for key, weight in total.items())


def _weight(cluster: str, destination: Destination) -> ClusterWeight:
    """A destination's weighted cluster, carrying its own header changes."""
    return ClusterWeight(cluster, destination.weight, destination.request_headers, destination.response_headers)


def _first_known(*sources: Source) -> Source:
    return next((s for s in sources if s != Source()), Source())


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


@attrs.define
class _Builder:
    snapshot: Snapshot
    node: str = ""
    clusters: dict[str, EnvoyCluster] = attrs.field(factory=dict)
    warnings: list[Diagnostic] = attrs.field(factory=list)
    client_groups: ClientGroups = attrs.field(factory=dict)
    secrets: dict[str, EnvoySecret] = attrs.field(factory=dict)
    rbac_index: RbacIndex = attrs.field(init=False)
    egress: EgressIndex = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.rbac_index = RbacIndex(self.snapshot)
        self.egress = EgressIndex(self.snapshot)

    @functools.cached_property
    def local_clients(self) -> tuple[Workload, ...]:
        """The workloads that connect to this node's proxy (all of them when the node is not known)."""
        return tuple(w for w in self.snapshot.workloads if not self.node or not w.node or w.node == self.node)

    def cluster(self, dest: Destination, default_port: int, protocol: Protocol, origin: Origin) -> str:
        """The cluster for a destination (created on first use)."""
        number = dest.port or default_port
        name = cluster_name(dest.service, number, dest.subset)
        if name in self.clusters:
            return name
        service = self.snapshot.service(dest.service)
        port = service.port(number) if service is not None else None
        if service is None or port is None:
            missing = f"service {dest.service}" if service is None else f"port {number} of service {dest.service}"
            self.warnings.append(Diagnostic(
                ProxyCode.MISSING_DESTINATION, Severity.WARNING,
                f"{origin.what} sends to {missing}, which does not exist; requests routed there get 503",
                origin.source, "destinations",
            ))
            self.clusters[name] = EnvoyCluster(name, dest.service, number, protocol, subset=dest.subset, origins=(origin,))
            return name
        backends = [b for b in port.backends if self._in_subset(b, dest)]
        traffic = self.snapshot.traffic_policy(dest.service, number, dest.subset)
        lb_policy = traffic.lb.policy if traffic is not None and traffic.lb is not None else service.lb_policy
        origins: tuple[Origin, ...] = (Origin(f"service {service.ref} port {number}", service.source),)
        if traffic is not None:
            origins += (Origin(f"traffic policy of {name}", traffic.source),)
        endpoints = tuple(_endpoint(b) for b in backends if b.state is BackendState.ACTIVE and b.weight > 0)
        discovery = Discovery.EDS
        if service.resolved_by_dns:
            # The proxy resolves the names itself; subsets select no names (they have no labels).
            endpoints = tuple(EnvoyEndpoint(h.hostname, h.port, h.weight) for h in port.hostname_backends
                              if h.weight > 0)
            # Envoy's LOGICAL_DNS takes one name; several (hosts without endpoints) are all resolved.
            one = service.resolution is Resolution.DNS_ROUND_ROBIN and len(endpoints) <= 1
            discovery = Discovery.LOGICAL_DNS if one else Discovery.STRICT_DNS
        self.clusters[name] = EnvoyCluster(
            name, dest.service, number, port.protocol, lb_policy, endpoints, dest.subset, origins, traffic, discovery,
        )
        return name

    def service_cluster(self, whole: ServiceCluster) -> str:
        """A raw config's ``<ns>/<svc>`` cluster: the active backends of the selected ports, each address once."""
        name = str(whole.service)
        service = self.snapshot.service(whole.service)
        ports = [p for n in whole.ports if service is not None and (p := service.port(n)) is not None]
        if service is None or not ports:
            self.warnings.append(Diagnostic(
                ProxyCode.MISSING_DESTINATION, Severity.WARNING,
                f"{whole.origin.what} sends to cluster {name}, but service "
                f"{whole.service} {'does not exist' if service is None else 'has none of the TCP ports selected'}; "
                "requests routed there get 503", whole.origin.source, "resources",
            ))
            self.clusters[name] = EnvoyCluster(name, whole.service, None, Protocol.TCP, origins=(whole.origin,))
            return name
        endpoints: dict[tuple[str, int], EnvoyEndpoint] = {}
        for port in ports:
            for b in port.backends:
                if b.state is BackendState.ACTIVE and b.weight > 0:
                    endpoints.setdefault((b.address, b.port), _endpoint(b))
        # Ports speaking different protocols get Envoy's default upstream (HTTP/1.1 for HTTP routes).
        protocol = ports[0].protocol if len({p.protocol for p in ports}) == 1 else Protocol.TCP
        traffic = whole.traffic
        lb_policy = traffic.lb.policy if traffic is not None and traffic.lb is not None else service.lb_policy
        listed = ", ".join(str(p.port) for p in ports)
        origins: tuple[Origin, ...] = (Origin(f"service {service.ref} ports {listed}", service.source), whole.origin)
        if traffic is not None:
            origins += (Origin(f"traffic policy of {name}", traffic.source),)
        self.clusters[name] = EnvoyCluster(name, whole.service, None, protocol, lb_policy, tuple(endpoints.values()),
                                           origins=origins, traffic=traffic)
        return name

    def hash_policy(self, clusters: Iterable[ClusterWeight], origin: Origin) -> tuple[HashKey, ...]:
        """The hash key of the consistent-hash clusters a route sends to (none when they disagree)."""
        keys = tuple(dict.fromkeys(k for c in clusters if (k := self.clusters[c.cluster].hash_key) is not None))
        if len(keys) > 1:
            # Envoy computes one hash per request from all of a route's hash policies, so
            # each cluster would hash on a mix of keys: hash on none rather than on a wrong one.
            self.warnings.append(Diagnostic(
                ProxyCode.MIXED_HASH_KEYS, Severity.WARNING,
                f"{origin.what} sends to clusters hashing on different keys ({', '.join(map(str, keys))}); "
                "their consistent hashing is not applied on this route", origin.source, "destinations",
            ))
            return ()
        return keys

    def _in_subset(self, backend: Backend, dest: Destination) -> bool:
        if not dest.subset_labels:
            return True
        workloads = self.rbac_index.workloads
        workload = workloads.get(backend.workload) if backend.workload is not None else None
        return workload is not None and all(workload.labels.get(k) == v for k, v in dest.subset_labels)

    def key_cluster(self, uri: str, origin: Origin) -> tuple[str | None, str]:
        """The cluster through which the node proxy fetches the key set at ``uri``, or ``None`` and why not.

        Only a Kubernetes Service named by its DNS name qualifies: a name nobody else in the
        mesh can claim (any namespace could declare a ServiceEntry for another host, and
        whoever serves the keys decides which tokens are valid).
        """
        parts = urllib.parse.urlsplit(uri)
        host = (parts.hostname or "").lower()
        try:
            number = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return None, "its port is not a number"
        service = _kubernetes_service(self.snapshot, host)
        if service is None:
            return None, (f"{host} is not the DNS name of a Kubernetes Service (<name>.<namespace>.svc...); the node "
                          "proxy fetches keys only from those")
        port = service.port(number)
        if port is None:
            return None, f"service {service.ref} has no TCP port {number}"
        name = self.cluster(Destination(service.ref, number), number, port.protocol, origin)
        traffic = self.clusters[name].traffic
        if parts.scheme == "https" and not (traffic is not None and traffic.tls is not None and traffic.tls.originates):
            return None, (f"https needs TLS to service {service.ref} port {number}, and no traffic policy "
                          "originates it")
        return name, ""

    def own_cluster(self, item: ProxiedPort) -> str:
        return self.cluster(
            Destination(item.service.ref, item.port.port), item.port.port, item.port.protocol,
            Origin(f"service {item.service.ref} port {item.port.port}", item.service.source),
        )

    def routes(self, item: ProxiedPort, table: RouteTable, listener: str) -> list[EnvoyRoute]:
        out: list[EnvoyRoute] = []
        for i, route in enumerate(table.http):
            label = route.name or f"route-{i}"
            origin = Origin(
                f"HTTP route {i} ({route.name or 'unnamed'}) of {table.service}:{table.port}",
                _first_known(route.source, table.source), _route_hints(route),
            )
            clusters = _merged(
                _weight(self.cluster(d, table.port, item.port.protocol, origin), d)
                for d in route.destinations if d.weight > 0
            )
            direct = route.direct_response
            invalid = route.invalid_backends
            if route.destinations and not clusters:
                if invalid is not None:
                    direct = DirectResponse(invalid.status, _INVALID_BODY)
                else:
                    self.warnings.append(Diagnostic(
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
                RouteMirror(self.cluster(m.destination, table.port, item.port.protocol, origin), m.percent)
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
                    hash_policy=self.hash_policy(clusters, origin),
                ))
        return out

    def default_route(self, item: ProxiedPort, listener: str) -> EnvoyRoute:
        """Forward everything to the port's own backends (or its L4 weighted split)."""
        origin = Origin(f"service {item.service.ref} port {item.port.port}", item.service.source)
        clusters: tuple[ClusterWeight, ...] = ()
        for table in item.tables:
            if table.kind is RouteKind.L4 and table.tcp:
                clusters = _merged(
                    _weight(self.cluster(d, table.port, item.port.protocol, origin), d)
                    for d in table.tcp[0].destinations if d.weight > 0
                )
        if not clusters:
            clusters = (ClusterWeight(self.own_cluster(item), 1),)
        return EnvoyRoute(name=f"{listener}/default", clusters=clusters, origins=(origin,),
                          hash_policy=self.hash_policy(clusters, origin))

    def http_listener(self, item: ProxiedPort, name: str) -> tuple[EnvoyListener, list[EnvoyRouteConfig]]:
        tables = [t for t in item.tables if t.kind is RouteKind.L7]
        per_table = [(t, self.routes(item, t, name)) for t in tables]
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
            vhosts.append(EnvoyVirtualHost(f"{name}/*", ("*",), (self.default_route(item, name),)))
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
        destinations = self.endpoints(referenced)
        targets = [w for d in destinations if (w := self.rbac_index.by_name.get(d.workload)) is not None]
        jwt = listener_jwt(self.snapshot.request_authentications, list(dict.fromkeys(targets)),
                           len({d.workload or d.address for d in destinations}), self.warnings, flag_partial=False,
                           key_clusters=self.key_cluster)
        issuers = tuple(p.issuer for p in jwt.providers) if jwt is not None else ()
        # The listener's filters are the fallback (requests matching no route, redirects,
        # direct responses); each forwarding route overrides them with the filters of what
        # it reaches, so a client refused by one route's backends keeps the other routes.
        # Whether a policy selects only some backends matters per route (flagged there).
        rbac = listener_rbac(self.rbac_index, destinations, self.warnings, issuers, self.egress_denials(destinations),
                             flag_partial=False)
        overrides: dict[frozenset[str], _RouteChecks] = {}
        vhosts = [attrs.evolve(v, routes=tuple(self.route_checks(r, rbac, jwt, overrides) for r in v.routes))
                  for v in vhosts]
        # Checks are decided on all routes above, so every client view (a subset of
        # them) keeps the filters and per-route overrides its routes need.
        default, views = split_by_client(vhosts, self.local_clients, name, self.client_groups)
        route_configs = [attrs.evolve(route_config, virtual_hosts=default)]
        route_configs += [attrs.evolve(route_config, name=view.route_config, virtual_hosts=hosts)
                          for view, hosts in views]
        listener = EnvoyListener(
            name, item.service.ref, item.port.port, item.port.protocol, item.proxy_port,
            route_config=name, rbac=rbac, jwt=jwt, origins=self._listener_origins(item, tables)
            + tuple(o for p in (jwt.providers if jwt else ()) for o in p.origins)
            + tuple(o for f in rbac for p in f.policies for o in p.origins),
            client_views=tuple(view for view, _ in views), tls=self.server_tls(item),
        )
        return listener, route_configs

    def server_tls(self, item: ProxiedPort) -> tuple[ServerTls, ...]:
        """The port's TLS terminations, each server name taken by the first that names it (the catch-all last)."""
        out: list[ServerTls] = []
        taken: set[str] = set()
        for term in self.snapshot.terminations(item.service.ref, item.port.port):
            names = tuple(n for n in term.hostnames if n not in taken)
            if term.hostnames and not names or not term.hostnames and "" in taken:
                continue
            taken.update(names or ("",))
            secrets = []
            for ref in term.certificates:
                certificate = self.snapshot.certificate(ref)
                if certificate is None:
                    continue  # the snapshot refuses terminations without their certificates
                name = secret_name(ref.namespace, ref.name)
                origin = Origin(f"certificate of Secret {ref} for {item.service.ref}:{item.port.port}",
                                _first_known(term.source, certificate.source))
                known = self.secrets.get(name)
                self.secrets[name] = EnvoySecret(name, certificate.chain, certificate.private_key,
                                                 (*(known.origins if known else ()), origin))
                secrets.append(name)
            out.append(ServerTls(names, tuple(secrets)))
        return tuple(out)

    def tcp_listener(self, item: ProxiedPort, name: str) -> EnvoyListener:
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
                                _first_known(route.source, table.source), route.sni)
                wanted = client_sources(route.clients, self.local_clients)
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
                    _weight(self.cluster(d, table.port, item.port.protocol, origin), d)
                    for d in route.destinations if d.weight > 0
                ]
                if route.invalid_weight or not weights:
                    # A share of the connections (or, without destinations, all of them) is
                    # refused: a cluster without endpoints closes them at once. A route that
                    # refuses still takes its connections, so it needs its chain.
                    weights.append(ClusterWeight(self.refusing_cluster(table, item, origin), route.invalid_weight or 1))
                clusters = _merged(weights)
                rbac = self.chain_rbac(clusters)
                admitted = self.chain_sources(rbac, origin)
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
                                           self.hashes_source_ip(clusters, origin), rbac, sources))
        terminations = self.server_tls(item)
        if terminations:
            chains = [c for chain in chains for c in _terminated(chain, terminations)]
        if not tables:
            # Proxied for its traffic policy alone: every connection goes to the port's own backends.
            clusters = (ClusterWeight(self.own_cluster(item), 1),)
            own = Origin(f"service {item.service.ref} port {item.port.port}", item.service.source)
            rbac = self.chain_rbac(clusters)
            chains.append(TcpChain(f"{name}/default", (), clusters, (own,), self.hashes_source_ip(clusters, own),
                                   rbac, self.chain_sources(rbac, own)))
        return EnvoyListener(
            name, item.service.ref, item.port.port, item.port.protocol, item.proxy_port,
            tcp=tuple(chains), origins=self._listener_origins(item, tables)
            + tuple(o for c in chains for f in c.rbac for p in f.policies for o in p.origins),
        )

    def endpoints(self, clusters: Iterable[str]) -> list[ChainEndpoint]:
        """Every endpoint of these clusters, once (what a listener or chain may send to)."""
        return list(dict.fromkeys(ChainEndpoint(e.workload, e.address, e.port)
                                  for c in clusters for e in self.clusters[c].endpoints))

    def route_checks(self, route: EnvoyRoute, rbac: tuple[EnvoyRbac, ...], jwt: EnvoyJwt | None,
                     cache: dict[frozenset[str], _RouteChecks]) -> EnvoyRoute:
        """The route with the JWT providers and RBAC filters of the workloads its clusters and mirrors reach
        (where they differ from the listener's ``jwt`` and ``rbac``)."""
        if not route.clusters:
            return route
        key = frozenset((*(w.cluster for w in route.clusters), *(m.cluster for m in route.mirrors)))
        if key not in cache:
            destinations = self.endpoints(sorted(key))
            targets = list(dict.fromkeys(w for d in destinations if (w := self.rbac_index.by_name.get(d.workload))))
            providers = route_jwt(self.snapshot.request_authentications, targets,
                                  len({d.workload or d.address for d in destinations}), self.warnings,
                                  key_clusters=self.key_cluster)
            own = listener_rbac(self.rbac_index, destinations, self.warnings, tuple(p.issuer for p in providers),
                                self.egress_denials(destinations))
            names = tuple(p.name for p in providers)
            own_jwt = None if providers == (jwt.providers if jwt is not None else ()) else names
            if own == rbac:
                cache[key] = (None, own_jwt)
            elif _overrides(own, rbac):
                cache[key] = (own, own_jwt)
            else:
                # Filters that cannot override the listener's: keep the listener's checks
                # whole, tokens included (its filters may read claims of all its issuers).
                cache[key] = (None, None)
        own_rbac, own_jwt = cache[key]
        return route if own_rbac is None and own_jwt is None else attrs.evolve(route, rbac=own_rbac, jwt=own_jwt)

    def egress_denials(self, destinations: Sequence[ChainEndpoint]) -> tuple[RbacPolicy, ...]:
        """DENY policies for the clients whose egress policies forbid reaching one of ``destinations``."""
        return self.egress.deny_policies(destinations, self.rbac_index.peers)

    def chain_rbac(self, clusters: Iterable[ClusterWeight]) -> tuple[EnvoyRbac, ...]:
        """The network RBAC of a TCP chain: the policies of the workloads its clusters' endpoints belong to,
        with the clients' egress policies forbidding any of them first."""
        endpoints = self.endpoints(c.cluster for c in clusters)
        return tcp_chain_rbac(self.rbac_index, endpoints, self.warnings, self.egress_denials(endpoints))

    def chain_sources(self, rbac: Sequence[EnvoyRbac], origin: Origin) -> tuple[str, ...] | None:
        """The client prefixes a TCP chain admits on accept (``None``: everyone), from its RBAC filters."""
        try:
            admitted = admitted_sources(rbac)
        except NotASourceSet as e:
            # Compile keeps such ports in the kernel (see ``inexpressible_sources``); should
            # one get here regardless, the chain admits nobody rather than everyone.
            self.warnings.append(Diagnostic(
                ProxyCode.TCP_AUTHORIZATION, Severity.WARNING,
                f"{origin.what}: {e}; the node proxy refuses every connection there", origin.source, "",
            ))
            return ()
        return None if admitted.is_everyone else admitted.cidrs()

    def hashes_source_ip(self, clusters: Iterable[ClusterWeight], origin: Origin) -> bool:
        """True when the clusters of a TCP chain hash connections by source IP (other keys need HTTP)."""
        return any(k.kind is HashKeyKind.SOURCE_IP for k in self.hash_policy(clusters, origin))

    def refusing_cluster(self, table: RouteTable, item: ProxiedPort, origin: Origin) -> str:
        """A cluster without endpoints: the TCP proxy closes connections sent there at once."""
        name = cluster_name(table.service, table.port, REFUSED_SUBSET)
        if name not in self.clusters:
            self.clusters[name] = EnvoyCluster(name, table.service, table.port, item.port.protocol,
                                               subset=REFUSED_SUBSET, origins=(origin,))
        return name

    def _listener_origins(self, item: ProxiedPort, tables: Sequence[RouteTable]) -> tuple[Origin, ...]:
        own = Origin(f"service {item.service.ref} port {item.port.port} ({item.decision.reason})", item.service.source)
        return (own, *(Origin(f"route table of {t.service}:{t.port}", t.source) for t in tables))


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


def _kubernetes_service(snapshot: Snapshot, host: str) -> Service | None:
    """The Kubernetes Service ``host`` names as ``<name>.<namespace>[.svc[.<domain>]]``, if there is one."""
    labels = host.split(".")
    if len(labels) < 2 or (len(labels) > 2 and labels[2] != "svc"):
        return None
    service = snapshot.service(ServiceRef(labels[1], labels[0]))
    fqdn = f"{labels[0]}.{labels[1]}.svc."
    if service is None or not any(h.startswith(fqdn) for h in service.hostnames):
        return None  # a ServiceEntry, not a Kubernetes Service
    if len(labels) > 3 and host not in service.hostnames:
        return None  # another cluster domain
    return service


def _overrides(route: Sequence[EnvoyRbac], listener: Sequence[EnvoyRbac]) -> bool:
    """True when each of a route's filters can override one of the listener's (no more of an action than it has)."""
    return all(sum(f.action is a.action for f in route) <= sum(f.action is a.action for f in listener) for a in route)


def _endpoint(backend: Backend) -> EnvoyEndpoint:
    workload = str(backend.workload) if backend.workload is not None else ""
    return EnvoyEndpoint(backend.address, backend.port, backend.weight, workload)


def refuses_share(table: RouteTable) -> bool:
    """True when an L4 table refuses a share of connections (invalid backends)."""
    return table.kind is RouteKind.L4 and any(r.invalid_weight for r in table.tcp)


def _is_tcp(item: ProxiedPort) -> bool:
    """An L4 listener: TLS-by-SNI or refusing tables and no L7 table (HTTP attributes need HTTP)."""
    return serves_tcp(item.port, item.tables)


def build_envoy_plan(snapshot: Snapshot, ports: Sequence[ProxiedPort], raw: RawPart | None = None,
                     node: str = "") -> EnvoyPlan:
    """The node proxy's configuration for ``ports`` (the ones compile decided need Envoy) and raw configs.

    ``node`` limits the clients told apart by address to that node's workloads (only they
    connect to its proxy); empty: every workload.
    """
    builder = _Builder(snapshot, node)
    listeners: list[EnvoyListener] = []
    route_configs: list[EnvoyRouteConfig] = []
    for item in ports:
        name = cluster_name(item.service.ref, item.port.port)
        if _is_tcp(item):
            listeners.append(builder.tcp_listener(item, name))
        else:
            listener, configs = builder.http_listener(item, name)
            listeners.append(listener)
            route_configs += configs
    raw_resources: tuple[RawResource, ...] = ()
    raw_warnings: list[Diagnostic] = []
    if raw is not None:
        for ref, number, origin in raw.mesh_clusters:
            if snapshot.service(ref) is not None:
                builder.cluster(Destination(ref, number), number, Protocol.HTTP, origin)
        for whole in raw.service_clusters:
            builder.service_cluster(whole)
        generated = {
            LISTENER_TYPE: {x.name for x in listeners}, ROUTE_TYPE: {x.name for x in route_configs},
            CLUSTER_TYPE: set(builder.clusters), ENDPOINT_TYPE: set(builder.clusters),
        }
        raw_resources, raw_warnings = drop_collisions(raw.resources, generated)
        raw_warnings = [*raw.warnings, *raw_warnings]
    return EnvoyPlan(
        listeners=tuple(sorted(listeners, key=lambda item: item.name)),
        route_configs=tuple(sorted(route_configs, key=lambda item: item.name)),
        clusters=tuple(sorted(builder.clusters.values(), key=lambda item: item.name)),
        raw=raw_resources,
        secrets=tuple(sorted(builder.secrets.values(), key=lambda item: item.name)),
        warnings=(*builder.warnings, *raw_warnings),
    )
