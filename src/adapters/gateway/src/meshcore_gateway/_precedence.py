"""Match precedence: the order of model routes in a table (the model's first match wins).

Each Gateway API match becomes its own model route so that matches of different rules
and routes interleave exactly as the specification orders them. Across every route on
a table, a match comes first when it has (in this order):

1. the most specific matching hostname (precise names before wildcards, longer first;
   gateways only — mesh routes ignore hostnames);
2. an ``Exact`` path; then the longest ``PathPrefix``; then a regular expression (their
   precedence is implementation-specific: longer patterns first, after every prefix
   longer than ``/``); then no path condition (prefix ``/``);
3. a method match;
4. the most header matches;
5. the most query parameter matches;

then the oldest route (``metadata.creationTimestamp``; routes without one come last),
then ``namespace/name`` alphabetically, then rule order and match order within the route.
For GRPCRoute the method match is a path match (exact service and method, then service
prefix, then method-only regular expression), which yields the order its specification
asks for: the longest matching service, then the longest method, then header matches.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from meshcore.model import HttpMatch, HttpRoute, MatchKind, TcpRoute

from ._hostnames import specificity

MatchKey = tuple[int, int, int, int, int]
_RANK = {MatchKind.EXACT: 0, MatchKind.PATH_PREFIX: 1, MatchKind.PREFIX: 1, MatchKind.REGEX: 2}


def match_key(match: HttpMatch) -> MatchKey:
    """Sort key of one match, most precedent first."""
    path = match.path
    if path is None or (path.kind is MatchKind.PATH_PREFIX and path.value == "/"):
        rank, length = 3, 0
    else:
        rank, length = _RANK.get(path.kind, 2), len(path.value)
    return (rank, -length, 0 if match.method else 1, -len(match.headers), -len(match.query))


RouteKey = tuple[tuple[int, float], str, str]


@attrs.frozen(order=True)
class L7Entry:
    """A model HTTP route with everything that orders it in a table."""

    host: tuple[int, int, int]
    match: MatchKey
    route_key: RouteKey
    rule: int
    index: int
    route: HttpRoute = attrs.field(eq=False, order=False)


def l7_entry(route: HttpRoute, route_key: RouteKey, rule: int, index: int, host: str = "") -> L7Entry:
    """An entry for ``route`` (one match), matched on ``host`` (``""``: any host)."""
    return L7Entry(specificity(host), match_key(route.matches[0]), route_key, rule, index, route)


def ordered(entries: Iterable[L7Entry]) -> list[HttpRoute]:
    """The model routes in precedence order."""
    return [e.route for e in sorted(entries)]


@attrs.frozen(order=True)
class L4Entry:
    """A model TCP route with its order: SNI specificity, then the route's own hostname, age, name, rule."""

    host: tuple[int, int, int]
    #: 0 for a route's own entry, 1 for a listener's refusal of the rest of its hostname.
    tail: int
    origin: tuple[int, int, int]
    route_key: RouteKey
    rule: int
    route: TcpRoute = attrs.field(eq=False, order=False)


def ordered_l4(entries: Iterable[L4Entry]) -> list[TcpRoute]:
    """The model TCP routes in precedence order."""
    return [e.route for e in sorted(entries)]
