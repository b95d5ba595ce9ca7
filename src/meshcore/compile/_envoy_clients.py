"""Routes that depend on the client → one route configuration per set of clients that sees the same routes.

The node proxy is shared by every client on its node, and Envoy's route matching cannot
look at the client's address. So a listener whose routes carry
:class:`~meshcore.model.ClientMatch` conditions is split by client instead: each mesh
workload is classified by which of those conditions it satisfies, workloads with the
same answers share a *view* (a filter chain matching their addresses, with its own route
configuration holding exactly the routes those answers keep), and every other client —
addresses outside the mesh and workloads that answer like them — gets the listener's
default chain. Routes without client conditions are in every view, in their place, so
first-match-wins holds for each client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import attrs

from ..model import ClientMatch, Workload
from ._envoy_plan import ClientView, EnvoyRoute, EnvoyVirtualHost

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


def _host_prefix(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def split_by_client(
    vhosts: Sequence[EnvoyVirtualHost], workloads: Sequence[Workload], listener: str,
) -> tuple[tuple[EnvoyVirtualHost, ...], list[tuple[ClientView, tuple[EnvoyVirtualHost, ...]]]]:
    """The virtual hosts of the default chain, and each client view with its own virtual hosts.

    Without client conditions the hosts are returned as they are and there are no views.
    A view's route configuration is named ``<listener>/clients-<n>``.
    """
    conditions = _conditions(vhosts)
    if not conditions:
        return tuple(vhosts), []
    outsider: _Answers = tuple(c.admits(None, {}) for c in conditions)
    groups: dict[_Answers, list[str]] = {}
    claimed: set[str] = set()
    for workload in sorted(workloads, key=lambda w: (w.namespace, w.name)):
        answers = tuple(c.admits(workload.namespace, workload.labels) for c in conditions)
        if answers == outsider:
            continue
        for address in workload.addresses:
            prefix = _host_prefix(address)
            # One address, one chain: Envoy refuses a listener whose chains overlap exactly.
            if prefix not in claimed:
                claimed.add(prefix)
                groups.setdefault(answers, []).append(prefix)
    default = _kept(vhosts, dict(zip(conditions, outsider, strict=True)))
    views = []
    for n, (answers, prefixes) in enumerate(sorted(groups.items())):
        view = ClientView(f"{listener}/clients-{n}", tuple(sorted(prefixes)))
        views.append((view, _kept(vhosts, dict(zip(conditions, answers, strict=True)))))
    return default, views
