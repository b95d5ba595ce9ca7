"""The JWT and RBAC checks of listeners, routes and TCP chains: those of every workload they can reach.

An HTTP listener's JWT providers and RBAC filters are those of every workload its routes
and mirrors may send to, plus the clients' egress policies (see :mod:`.jwt`, :mod:`.rbac`,
:mod:`.egress`); each forwarding route narrows them to what it reaches (``EnvoyRoute.rbac``
/ ``jwt``), the listener's are the fallback. A TCP chain gets network RBAC, and the client
prefixes it admits on accept (see :mod:`.sources`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from ...model import Diagnostic, Severity, Snapshot
from .._codes import ProxyCode
from .clusters import Clusters
from .egress import EgressIndex
from .jwt import listener_jwt, route_jwt
from .plan import ClusterWeight, EnvoyJwt, EnvoyRbac, EnvoyRoute, Origin, RbacPolicy
from .rbac import ChainEndpoint, RbacIndex, listener_rbac, tcp_chain_rbac
from .sources import NotASourceSet, admitted_sources

#: A route's RBAC filters and JWT provider names where they differ from its listener's.
RouteChecks = tuple["tuple[EnvoyRbac, ...] | None", "tuple[str, ...] | None"]


@attrs.define
class Checks:
    """Decides the checks of what sends to ``clusters``; doubtful policies add warnings to ``warnings``."""

    snapshot: Snapshot
    clusters: Clusters
    rbac_index: RbacIndex
    egress: EgressIndex
    warnings: list[Diagnostic]

    def listener(self, referenced: Iterable[str]) -> tuple[EnvoyJwt | None, tuple[EnvoyRbac, ...]]:
        """An HTTP listener's JWT filter and RBAC filters, for every workload the ``referenced`` clusters reach."""
        destinations = self.clusters.endpoints(referenced)
        targets = [w for d in destinations if (w := self.rbac_index.by_name.get(d.workload)) is not None]
        jwt = listener_jwt(self.snapshot.request_authentications, list(dict.fromkeys(targets)),
                           len({d.workload or d.address for d in destinations}), self.warnings, flag_partial=False,
                           key_clusters=self.clusters.key_cluster)
        issuers = tuple(p.issuer for p in jwt.providers) if jwt is not None else ()
        # The listener's filters are the fallback (requests matching no route, redirects,
        # direct responses); each forwarding route overrides them with the filters of what
        # it reaches, so a client refused by one route's backends keeps the other routes.
        # Whether a policy selects only some backends matters per route (flagged there).
        rbac = listener_rbac(self.rbac_index, destinations, self.warnings, issuers, self.egress_denials(destinations),
                             flag_partial=False)
        return jwt, rbac

    def route_checks(self, route: EnvoyRoute, rbac: tuple[EnvoyRbac, ...], jwt: EnvoyJwt | None,
                     cache: dict[frozenset[str], RouteChecks]) -> EnvoyRoute:
        """The route with the JWT providers and RBAC filters of the workloads its clusters and mirrors reach
        (where they differ from the listener's ``jwt`` and ``rbac``)."""
        if not route.clusters:
            return route
        key = frozenset((*(w.cluster for w in route.clusters), *(m.cluster for m in route.mirrors)))
        if key not in cache:
            destinations = self.clusters.endpoints(sorted(key))
            targets = list(dict.fromkeys(w for d in destinations if (w := self.rbac_index.by_name.get(d.workload))))
            providers = route_jwt(self.snapshot.request_authentications, targets,
                                  len({d.workload or d.address for d in destinations}), self.warnings,
                                  key_clusters=self.clusters.key_cluster)
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
        endpoints = self.clusters.endpoints(c.cluster for c in clusters)
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


def _overrides(route: Sequence[EnvoyRbac], listener: Sequence[EnvoyRbac]) -> bool:
    """True when each of a route's filters can override one of the listener's (no more of an action than it has)."""
    return all(sum(f.action is a.action for f in route) <= sum(f.action is a.action for f in listener) for a in route)

