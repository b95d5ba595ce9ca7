"""Routes that depend on the client → one route configuration per set of clients that sees the same routes.

The node proxy is shared by every client on its node, and Envoy's route matching cannot
look at the client's address. So a listener whose routes carry
:class:`~meshcore.model.ClientMatch` conditions is split by client instead: each mesh
workload is classified by which of those conditions it satisfies, workloads with the
same answers share a *view* (a filter chain matching their addresses, with its own route
configuration holding exactly the routes those answers keep), and every other client —
addresses outside the mesh, workloads that answer like them, host-network workloads and
addresses workloads with different answers share — gets the listener's default chain. Routes without client conditions are in every view, in their place, so
first-match-wins holds for each client.

TCP routes with client conditions become filter chains whose source prefixes are those
clients' addresses (:func:`client_sources`), less those an earlier route took.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

import attrs

from ...model import ClientMatch, Workload
from .plan import ClientView, EnvoyRoute, EnvoyVirtualHost
from .sources import SourceSet

#: The answers of a client to a listener's client conditions, in condition order.
_Answers = tuple[bool, ...]


def _conditions(vhosts: Sequence[EnvoyVirtualHost]) -> tuple[ClientMatch, ...]:
    found = {r.match.clients for v in vhosts for r in v.routes if r.match.clients is not None}
    return tuple(sorted(found))


def _kept(vhosts: Sequence[EnvoyVirtualHost], answers: dict[ClientMatch, bool]) -> tuple[EnvoyVirtualHost, ...]:
    """``vhosts`` with the routes a client giving ``answers`` can match, their client conditions removed."""
    out = []
    for vhost in vhosts:
        routes: list[EnvoyRoute] = []
        for route in vhost.routes:
            clients = route.match.clients
            if clients is None:
                routes.append(route)
            elif answers[clients]:
                routes.append(attrs.evolve(route, match=attrs.evolve(route.match, clients=None)))
        out.append(attrs.evolve(vhost, routes=tuple(routes)))
    return tuple(out)


def _clients(workloads: Sequence[Workload]) -> list[Workload]:
    """The workloads whose connections are their own: not host-network or opted out (their address is the node's)."""
    return [w for w in workloads if w.proxy_mode.meshed]


@functools.lru_cache(maxsize=65536)
def _host_prefix(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


#: Client address groups by the answers they give, per tuple of conditions (listeners
#: with the same client conditions classify the clients once).
ClientGroups = dict[tuple[ClientMatch, ...], dict[_Answers, list[str]]]


def _groups(conditions: tuple[ClientMatch, ...], workloads: Sequence[Workload]) -> dict[_Answers, list[str]]:
    outsider: _Answers = tuple(c.admits(None, {}) for c in conditions)
    by_address: dict[str, set[_Answers]] = {}
    for workload in _clients(workloads):
        answers = tuple(c.admits(workload.namespace, workload.labels) for c in conditions)
        for address in workload.addresses:
            by_address.setdefault(_host_prefix(address), set()).add(answers)
    groups: dict[_Answers, list[str]] = {}
    for prefix, found in by_address.items():
        # An address shared by workloads that see different routes (host-network pods)
        # cannot be told apart: it gets what clients outside the mesh get.
        if len(found) == 1 and (answers := next(iter(found))) != outsider:
            groups.setdefault(answers, []).append(prefix)
    return groups


def split_by_client(
    vhosts: Sequence[EnvoyVirtualHost], workloads: Sequence[Workload], listener: str,
    cache: ClientGroups | None = None,
) -> tuple[tuple[EnvoyVirtualHost, ...], list[tuple[ClientView, tuple[EnvoyVirtualHost, ...]]]]:
    """The virtual hosts of the default chain, and each client view with its own virtual hosts.

    Without client conditions the hosts are returned as they are and there are no views.
    A view's route configuration is named ``<listener>/clients-<n>``. ``cache`` keeps the
    classification of ``workloads`` across listeners (for one and the same ``workloads``).
    """
    conditions = _conditions(vhosts)
    if not conditions:
        return tuple(vhosts), []
    cache = {} if cache is None else cache
    if conditions not in cache:
        cache[conditions] = _groups(conditions, workloads)
    groups = cache[conditions]
    outsider: _Answers = tuple(c.admits(None, {}) for c in conditions)
    default = _kept(vhosts, dict(zip(conditions, outsider, strict=True)))
    views = []
    for n, (answers, prefixes) in enumerate(sorted(groups.items())):
        view = ClientView(f"{listener}/clients-{n}", tuple(sorted(prefixes)))
        views.append((view, _kept(vhosts, dict(zip(conditions, answers, strict=True)))))
    return default, views


def client_sources(clients: ClientMatch | None, workloads: Sequence[Workload]) -> SourceSet:
    """The client addresses ``clients`` admits (everyone for ``None``): for TCP chains, matched on accept."""
    if clients is None:
        return SourceSet.everyone()
    # The same classification as HTTP views: shared and host-network addresses are nobody's.
    taken = SourceSet.of(_groups((attrs.evolve(clients, invert=False),), workloads).get((True,), []))
    return taken.complement() if clients.invert else taken
